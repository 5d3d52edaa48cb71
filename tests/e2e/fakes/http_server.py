"""A minimal legacy-era MCP server over HTTP (Python standard library only)
whose tools misbehave on request, for the gateway's fault tests.

Usage: http_server.py PORT. Tools: `ok` answers; `garbage` answers with a body
that is not JSON; `hang` never answers; `progress` streams two progress
notifications over SSE (with its `message` argument, or a `pad`-character
message, if asked),
pausing between them, then answers; `headers` returns
the headers of every request received so far (for the no-token-passthrough
test).
"""

import http.server
import json
import sys
import time

TOOLS = [
    {"name": name, "description": f"{name} (fault-test tool)", "inputSchema": {"type": "object"}}
    for name in ["ok", "garbage", "hang", "progress", "headers"]
]


SEEN_HEADERS = []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/json", headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(405, "")

    def do_DELETE(self):
        self.reply(200, "")

    def do_POST(self):
        SEEN_HEADERS.append(dict(self.headers.items()))
        message = json.loads(self.rfile.read(int(self.headers["content-length"])))
        method, id_ = message.get("method"), message.get("id")
        if id_ is None:
            return self.reply(202, "")
        if method == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "fault-http", "version": "1"}}
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": id_, "result": result}),
                              headers=[("mcp-session-id", "fault-session")])
        if method == "tools/list":
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": id_, "result": {"tools": TOOLS}}))
        if method == "tools/call":
            name = message["params"]["name"]
            if name == "headers":
                result = {"content": [{"type": "text", "text": json.dumps(SEEN_HEADERS)}], "isError": False}
                return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": id_, "result": result}))
            if name == "garbage":
                return self.reply(200, "<html>this is not JSON-RPC</html>")
            if name == "hang":
                time.sleep(60)
                return
            if name == "progress":
                token = message["params"].get("_meta", {}).get("progressToken")
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                arguments = message["params"].get("arguments", {})
                text = arguments.get("message") or "x" * arguments.get("pad", 0)
                for n in (1, 2):
                    event = {"jsonrpc": "2.0", "method": "notifications/progress",
                             "params": {"progressToken": token, "progress": n, "total": 2}}
                    if text:
                        event["params"]["message"] = text
                    self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                    self.wfile.flush()
                    time.sleep(0.3)
                done = {"jsonrpc": "2.0", "id": id_, "result": {"content": [{"type": "text", "text": "done"}]}}
                self.wfile.write(f"data: {json.dumps(done)}\n\n".encode())
                self.wfile.flush()
                self.close_connection = True
                return
            result = {"content": [{"type": "text", "text": "ok"}], "isError": False}
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": id_, "result": result}))
        error = {"code": -32601, "message": f"method not found: {method}"}
        return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": id_, "error": error}))


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()

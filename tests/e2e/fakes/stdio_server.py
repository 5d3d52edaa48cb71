"""A minimal MCP server on stdio (Python standard library only) whose tools
misbehave on request, for the gateway's fault tests.

Tools: `echo` answers; `crash` kills the process mid-call; `hang` never
answers; `log` sends a log message (its `log` argument, if any) before answering; `ask` asks the client to
sample (a server-to-client request) and returns the answer; `env` returns the
process's environment (for the no-token-passthrough test).
"""

import json
import os
import sys
import time

TOOLS = [
    {"name": name, "description": f"{name} (fault-test tool)", "inputSchema": {"type": "object"}}
    for name in ["echo", "crash", "hang", "log", "ask", "env"]
]


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main():
    pending_sampling = {}
    for line in sys.stdin:
        message = json.loads(line)
        method, id_ = message.get("method"), message.get("id")
        if method is None and id_ in pending_sampling:
            call_id = pending_sampling.pop(id_)
            text = message.get("result", {}).get("content", {}).get("text", "")
            send({"jsonrpc": "2.0", "id": call_id, "result": {"content": [{"type": "text", "text": f"sampled: {text}"}]}})
        elif method == "initialize":
            send({"jsonrpc": "2.0", "id": id_, "result": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}, "logging": {}},
                "serverInfo": {"name": "fault-server", "version": "1"}}})
        elif method == "tools/list":
            send({"jsonrpc": "2.0", "id": id_, "result": {"tools": TOOLS}})
        elif method == "tools/call":
            name = message["params"]["name"]
            if name == "crash":
                os._exit(3)
            if name == "hang":
                continue
            if name == "log":
                text = message["params"].get("arguments", {}).get("log", "working on it")
                send({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "info", "data": text}})
            if name == "ask":
                pending_sampling[f"s{id_}"] = id_
                send({"jsonrpc": "2.0", "id": f"s{id_}", "method": "sampling/createMessage", "params": {
                    "messages": [{"role": "user", "content": {"type": "text", "text": "2+2?"}}], "maxTokens": 10}})
                continue
            arguments = message["params"].get("arguments", {})
            if name == "env":
                arguments = dict(os.environ)
            send({"jsonrpc": "2.0", "id": id_, "result": {
                "content": [{"type": "text", "text": json.dumps(arguments)}], "isError": False}})
        elif id_ is not None and method is not None:
            send({"jsonrpc": "2.0", "id": id_, "result": {}})


if __name__ == "__main__":
    main()

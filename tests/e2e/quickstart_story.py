"""Drive a running quick-start gateway with the official Python MCP client and
check the story the README tells.

Usage: python quickstart_story.py http://127.0.0.1:8080/mcp [legacy|auto|2026-07-28]

Exits non-zero (with the failed check) if any part of the story does not hold.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def connect(url: str, key: str, mode: str):
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30.0, read=60.0))
    client = Client(streamable_http_client(url, http_client=http), mode=mode)
    return http, client


def text_of(result) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


async def main(url: str, mode: str) -> None:
    checks: list[str] = []

    def check(condition: bool, what: str) -> None:
        if not condition:
            raise SystemExit(f"FAILED: {what}")
        checks.append(what)

    # 1. The analyst cannot see or call write_workspace_file.
    http, client = await connect(url, "demo-acme-analyst", mode)
    async with http, client:
        tools = [t.name for t in (await client.list_tools()).tools]
        check("query_analytics_db" in tools, "the analyst sees query_analytics_db")
        check("write_workspace_file" not in tools, "the analyst does not see write_workspace_file")
        try:
            await client.call_tool("write_workspace_file", {"path": "x.txt", "content": "x"})
            check(False, "calling write_workspace_file as the analyst fails")
        except Exception as error:  # the gateway answers with a JSON-RPC error
            check("unknown tool" in str(error), f"calling a hidden tool is refused ({error})")

        # 3. The injection row comes back redacted, and only acme rows come back.
        result = await client.call_tool("query_analytics_db", {"query": "SELECT * FROM sales ORDER BY id"})
        rows = result.structured_content["rows"]
        check(rows and all(r["tenant"] == "acme" for r in rows), "the acme analyst gets only acme rows")
        body = text_of(result) + json.dumps(result.structured_content)
        check("Ignore all previous instructions" not in body, "the injection string is gone")
        check("[redacted by warden]" in body, "the injection span is marked as redacted")

    # 2. The engineer's query-then-write is blocked as a chain.
    http, client = await connect(url, "demo-acme-engineer", mode)
    async with http, client:
        tools = [t.name for t in (await client.list_tools()).tools]
        check("write_workspace_file" in tools, "the engineer sees write_workspace_file")
        await client.call_tool("query_analytics_db", {"query": "SELECT region, revenue FROM sales"})
        try:
            await client.call_tool("write_workspace_file", {"path": "export.csv", "content": "region,revenue"})
            check(False, "write after query is refused")
        except Exception as error:
            check("blocked chain" in str(error), f"write after query is a blocked chain ({error})")

    # 4. globex never sees acme rows.
    http, client = await connect(url, "demo-globex-analyst", mode)
    async with http, client:
        result = await client.call_tool("query_analytics_db", {"query": "SELECT * FROM sales"})
        rows = result.structured_content["rows"]
        check(rows and all(r["tenant"] == "globex" for r in rows), "the globex analyst gets only globex rows")
        check("acme" not in text_of(result), "no acme data in the text content either")

    for line in checks:
        print(f"ok   {line}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "auto"))

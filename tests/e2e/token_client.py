"""List a gateway's tools with the official Python MCP client and a bearer token.

Usage: python token_client.py URL TOKEN

Prints {"tools": [...]} on success, or {"error": "..."} (with the HTTP status
when there is one) and exits 1.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, token: str) -> int:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0))
    try:
        async with http, Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            tools = [tool.name for tool in (await client.list_tools()).tools]
            print(json.dumps({"tools": tools}))
            return 0
    except BaseException as error:  # noqa: BLE001 - report whatever the SDK raised
        print(json.dumps({"error": describe(error)}))
        return 1


def describe(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "; ".join(describe(e) for e in error.exceptions)
    return f"{type(error).__name__}: {error}"


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))

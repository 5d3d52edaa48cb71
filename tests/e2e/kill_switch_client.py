"""A client that stays connected while an operator pulls a kill switch: the
official Python MCP client lists the tools, waits for the gateway to say the
list changed, lists them again and calls the tool that was switched off.

Usage: python kill_switch_client.py URL KEY MODE TOOL ARGUMENTS_JSON
  MODE: legacy (a session and its GET stream) or 2026-07-28 (subscriptions/listen)

Prints one line per step, for the test driving it:
  tools <json list>       the tools listed at first
  ready                   listening for changes (pull the switch now)
  changed                 the gateway said the tool list changed
  tools <json list>       the tools listed after that
  refused <code> <text>   the call's JSON-RPC error (or: called <text>)
"""

import asyncio
import json
import sys

import anyio
import httpx2
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client


def say(*parts: str) -> None:
    print(*parts, flush=True)


async def main(url: str, key: str, mode: str, tool: str, arguments: dict) -> None:
    changed = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30.0, read=60.0))
    client = Client(streamable_http_client(url, http_client=http), mode=mode, message_handler=on_message)
    async with http, client:
        say("tools", json.dumps(sorted(t.name for t in (await client.list_tools()).tools)))
        if mode == "legacy":
            say("ready")
            with anyio.fail_after(20):
                await changed.wait()
        else:
            async with client.listen(tools_list_changed=True) as subscription:
                say("ready")
                with anyio.fail_after(20):
                    async for _event in subscription:
                        break
        say("changed")
        say("tools", json.dumps(sorted(t.name for t in (await client.list_tools()).tools)))
        try:
            result = await client.call_tool(tool, arguments)
            say("called", json.dumps(result.model_dump(mode="json", by_alias=True)))
        except Exception as error:  # the gateway's JSON-RPC error
            code = getattr(getattr(error, "error", None), "code", None)
            say("refused", str(code), str(error))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])))

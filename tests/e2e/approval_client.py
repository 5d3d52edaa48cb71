"""A client (the official Python MCP client) that answers Warden's approval
question through elicitation, as a person at the client would, and calls a
tool the policy asks about: on its legacy session, or in a 2026-07-28
input_required round.

Usage: python approval_client.py URL KEY TOOL ARGUMENTS_JSON ANSWER [MODE]
  ANSWER: approve (accept, approve = true), refuse (accept, approve =
  false), decline or cancel
  MODE: legacy (default) or 2026-07-28

Prints `asked <message>` for each question, then `result <json>` or
`refused <code> <message>`.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, key: str, tool: str, arguments: dict, answer: str, mode: str) -> None:
    async def on_elicit(_context, params: types.ElicitRequestParams) -> types.ElicitResult:
        print("asked", params.message, flush=True)
        if answer in ("approve", "refuse"):
            return types.ElicitResult(action="accept", content={"approve": answer == "approve"})
        return types.ElicitResult(action=answer)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=httpx2.Timeout(30.0, read=60.0))
    client = Client(streamable_http_client(url, http_client=http), mode=mode, elicitation_callback=on_elicit)
    async with http, client:
        try:
            result = await client.call_tool(tool, arguments)
            print("result", json.dumps(result.model_dump(mode="json", by_alias=True)), flush=True)
        except Exception as error:  # the gateway's JSON-RPC error
            code = getattr(getattr(error, "error", None), "code", None)
            print("refused", code, str(error), flush=True)


if __name__ == "__main__":
    mode = sys.argv[6] if len(sys.argv) > 6 else "legacy"
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5], mode))

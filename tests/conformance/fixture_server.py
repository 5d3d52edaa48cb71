"""Conformance fixture: an upstream MCP server for the official conformance suite.

Warden is tested by running `@modelcontextprotocol/conformance` twice: once
directly against this server and once against Warden with this server behind
it. Differences between the two runs are Warden's doing.

The server provides every tool, resource, resource template, prompt and
completion that the suite's *server* scenarios call, under the exact names and
with the exact results they check. It is built on the Python SDK's `MCPServer`
(PyPI `mcp` 2.x) and, like the SDK by default, speaks both protocol eras:

* 2025-11-25 and older: `initialize` handshake and `Mcp-Session-Id` sessions,
  with server-to-client requests (sampling, elicitation) sent mid-call;
* 2026-07-28: stateless requests carrying `_meta`, where the same questions
  come back as `input_required` results (MRTR) and change notifications go to
  `subscriptions/listen` streams.

Beyond the scored scenarios it also serves what some unscored ones need: an
event store for resumable SSE (`test_reconnection`), a tool whose argument is
mirrored into an `Mcp-Param-*` header (`test_header_param`) and a tool with a
JSON Schema 2020-12 input schema (`json_schema_2020_12_tool`). It does not
implement the tasks extension (SEP-2663).

Usage:
    python fixture_server.py --port 8931     # Streamable HTTP on http://127.0.0.1:8931/mcp
    python fixture_server.py --stdio         # stdio, for use as a spawned upstream
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import warnings
import wave
from typing import Annotated, Literal

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import (
    Context,
    Elicit,
    ElicitationResult,
    Resolve,
    Sample,
    UserMessage,
)
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver.prompts.base import Message
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.types import (
    AudioContent,
    CallToolResult,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field

# Sampling, elicitation, roots and logging are deprecated as of 2026-07-28, but
# the 2025-11-25 scenarios exercise exactly those features.
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

# A 1x1 PNG image.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


def _silent_wav() -> str:
    """A millisecond of 8 kHz mono silence as a base64 WAV file."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x00" * 8)
    return base64.b64encode(buffer.getvalue()).decode()


WAV_BASE64 = _silent_wav()


class InMemoryEventStore(EventStore):
    """Keeps every SSE event of the 2025-11-25 transport so a client can resume with Last-Event-ID."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(len(self._events) + 1)
        self._events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream_id = next((stream for stream, event_id, _ in self._events if event_id == last_event_id), None)
        if stream_id is None:
            return None
        for stream, event_id, message in self._events[int(last_event_id) :]:
            if stream == stream_id and message is not None:  # None marks a priming event
                await send_callback(EventMessage(message, event_id))
        return stream_id


# The `json-schema-2020-12` scenario checks that an inputSchema using the wider
# JSON Schema 2020-12 vocabulary reaches the client unchanged, so this tool's
# schema is given verbatim instead of being derived from the function signature.
JSON_SCHEMA_2020_12 = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


def json_schema_2020_12_tool(
    name: str = "",
    address: dict[str, str] | None = None,
    contactMethod: str | None = None,
    phone: str | None = None,
    email: str | None = None,
) -> CallToolResult:
    """Tool with JSON Schema 2020-12 features"""
    return CallToolResult(content=[TextContent(type="text", text=f"Contact for {name or 'nobody'} recorded.")])


mcp = MCPServer(
    "warden-conformance-fixture",
    version="1.0.0",
    tools=[Tool.from_function(json_schema_2020_12_tool).model_copy(update={"parameters": JSON_SCHEMA_2020_12})],
)


def _text(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)])


# --- Content tools (both eras) -------------------------------------------------


@mcp.tool()
def test_simple_text() -> CallToolResult:
    """Returns a single text content block."""
    return _text("This is a simple text response for testing.")


@mcp.tool()
def test_image_content() -> CallToolResult:
    """Returns a single PNG image content block."""
    return CallToolResult(content=[ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")])


@mcp.tool()
def test_audio_content() -> CallToolResult:
    """Returns a single WAV audio content block."""
    return CallToolResult(content=[AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")])


@mcp.tool()
def test_embedded_resource() -> CallToolResult:
    """Returns a single embedded text resource."""
    resource = TextResourceContents(
        uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
    )
    return CallToolResult(content=[EmbeddedResource(type="resource", resource=resource)])


@mcp.tool()
def test_multiple_content_types() -> CallToolResult:
    """Returns text, image and embedded resource content together."""
    resource = TextResourceContents(
        uri="test://mixed-content-resource", mime_type="application/json", text='{"test":"data","value":123}'
    )
    return CallToolResult(
        content=[
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG_BASE64, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=resource),
        ]
    )


@mcp.tool()
def test_error_handling() -> CallToolResult:
    """Always fails with a tool execution error (isError: true)."""
    return CallToolResult(
        content=[TextContent(type="text", text="This tool intentionally returns an error for testing")],
        is_error=True,
    )


@mcp.tool()
def test_header_param(
    region: Annotated[str, Field(description="Region", json_schema_extra={"x-mcp-header": "Region"})],
) -> CallToolResult:
    """Echoes `region`, which 2026-07-28 clients also send as the Mcp-Param-Region header (SEP-2243)."""
    return _text(f"Region: {region}")


# --- Notifications during a call -------------------------------------------------


@mcp.tool()
async def test_tool_with_logging(ctx: Context) -> CallToolResult:
    """Sends three info log messages 50 ms apart while running."""
    await ctx.info("Tool execution started")
    await anyio.sleep(0.05)
    await ctx.info("Tool processing data")
    await anyio.sleep(0.05)
    await ctx.info("Tool execution completed")
    return _text("Tool with logging executed successfully")


@mcp.tool()
async def test_logging_tool(ctx: Context) -> CallToolResult:
    """Logs one info message; on 2026-07-28 it is only sent if the request set a log level."""
    await ctx.info("test_logging_tool ran")
    return _text("Logged one message.")


@mcp.tool()
async def test_tool_with_progress(ctx: Context) -> CallToolResult:
    """Reports progress 0, 50 and 100 of 100, 50 ms apart, when given a progress token."""
    for step in (0, 50, 100):
        if step:
            await anyio.sleep(0.05)
        await ctx.report_progress(step, 100, f"Completed step {step} of 100")
    return _text("Progress reporting completed")


@mcp.tool()
async def test_reconnection(ctx: Context) -> CallToolResult:
    """Closes its SSE stream mid-call so the client must resume with Last-Event-ID (2025-11-25, SEP-1699)."""
    await ctx.close_sse_stream()
    await anyio.sleep(0.2)
    return _text("Reconnection test completed")


# The two trigger tools publish to 2026-07-28 `subscriptions/listen` streams
# only: on 2025-11-25 sessions MCPServer advertises `listChanged: false`, so
# nothing is sent there.


@mcp.tool()
async def test_trigger_tool_change(ctx: Context) -> CallToolResult:
    """Announces a tools list change to subscribers (the list itself never changes)."""
    await ctx.notify_tools_changed()
    return _text("Sent tools/list_changed.")


@mcp.tool()
async def test_trigger_prompt_change(ctx: Context) -> CallToolResult:
    """Announces a prompts list change to subscribers (the list itself never changes)."""
    await ctx.notify_prompts_changed()
    return _text("Sent prompts/list_changed.")


# --- Sampling and elicitation, era-transparent --------------------------------
#
# These tools take their input from a `Resolve(...)` resolver. The SDK asks the
# client the way the negotiated era requires: a mid-call server-to-client
# request on 2025-11-25, an `input_required` result on 2026-07-28. Either way it
# answers -32021 when the client did not declare the capability the question
# needs.


def _ask_llm(prompt: str) -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text=prompt))], max_tokens=100)


@mcp.tool()
async def test_sampling(prompt: str, reply: Annotated[CreateMessageResult, Resolve(_ask_llm)]) -> CallToolResult:
    """Asks the client's LLM to answer `prompt` (sampling/createMessage)."""
    answer = reply.content.text if isinstance(reply.content, TextContent) else "(non-text reply)"
    return _text(f"LLM response: {answer}")


def _ask_missing_capability() -> Sample:
    return Sample([SamplingMessage(role="user", content=TextContent(type="text", text="Say hello."))], max_tokens=50)


@mcp.tool()
async def test_missing_capability(
    reply: Annotated[CreateMessageResult, Resolve(_ask_missing_capability)],
) -> CallToolResult:
    """Needs the client's sampling capability; fails with -32021 if it was not declared."""
    return _text("The client declared sampling.")


class UserInfo(BaseModel):
    username: str = Field(description="User name")
    email: str = Field(description="Email address")


def _ask_user_info(message: str) -> Elicit[UserInfo]:
    return Elicit(message, UserInfo)


@mcp.tool()
async def test_elicitation(
    message: str, answer: Annotated[ElicitationResult[UserInfo], Resolve(_ask_user_info)]
) -> CallToolResult:
    """Asks the user for a username and email (elicitation/create), showing `message`."""
    content = answer.data.model_dump_json() if answer.action == "accept" else "{}"
    return _text(f"User response: action={answer.action}, content={content}")


class Sep1034Defaults(BaseModel):
    """Every primitive type with a default value (SEP-1034)."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: Literal["active", "inactive", "pending"] = Field(default="active", description="User status")
    verified: bool = Field(default=True, description="Verification status")


def _ask_sep1034() -> Elicit[Sep1034Defaults]:
    return Elicit("Please review your information", Sep1034Defaults)


@mcp.tool()
async def test_elicitation_sep1034_defaults(
    answer: Annotated[ElicitationResult[Sep1034Defaults], Resolve(_ask_sep1034)],
) -> CallToolResult:
    """Elicits a form whose fields all carry defaults (SEP-1034)."""
    content = answer.data.model_dump_json() if answer.action == "accept" else "{}"
    return _text(f"Elicitation completed: action={answer.action}, content={content}")


class Sep1330Enums(BaseModel):
    """The five enum shapes of SEP-1330. Values are plain strings so any option validates."""

    untitledSingle: str = Field(
        description="Untitled single-select", json_schema_extra={"enum": ["option1", "option2", "option3"]}
    )
    titledSingle: str = Field(
        description="Titled single-select",
        json_schema_extra={
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ]
        },
    )
    legacyEnum: str = Field(
        description="Legacy titled enum",
        json_schema_extra={"enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
    )
    untitledMulti: list[str] = Field(
        description="Untitled multi-select",
        json_schema_extra={"items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
    )
    titledMulti: list[str] = Field(
        description="Titled multi-select",
        json_schema_extra={
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            }
        },
    )


def _ask_sep1330() -> Elicit[Sep1330Enums]:
    return Elicit("Please pick some options", Sep1330Enums)


@mcp.tool()
async def test_elicitation_sep1330_enums(
    answer: Annotated[ElicitationResult[Sep1330Enums], Resolve(_ask_sep1330)],
) -> CallToolResult:
    """Elicits a form using every SEP-1330 enum schema variant."""
    content = answer.data.model_dump_json() if answer.action == "accept" else "{}"
    return _text(f"Elicitation completed: action={answer.action}, content={content}")


class UserName(BaseModel):
    name: str = Field(description="Your name")


def _ask_name() -> Elicit[UserName]:
    return Elicit("What is your name?", UserName)


@mcp.tool()
async def test_streaming_elicitation(answer: Annotated[UserName, Resolve(_ask_name)]) -> CallToolResult:
    """Elicits a name; on 2026-07-28 this must arrive as input_required, never as a request on the stream."""
    return _text(f"Hello, {answer.name}!")


# --- Hand-written multi-round-trip (MRTR) tools, 2026-07-28 -------------------
#
# These build `InputRequiredResult`s directly so the suite can check the wire
# shape: keys, requestState round-trips and multiple rounds. The SDK seals every
# requestState it sends and rejects a modified one before the tool runs.


def _elicit(message: str, properties: dict[str, dict[str, str]]) -> ElicitRequest:
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str, max_tokens: int) -> CreateMessageRequest:
    message = SamplingMessage(role="user", content=TextContent(type="text", text=text))
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=[message], max_tokens=max_tokens))


def _accepted(ctx: Context, key: str) -> dict[str, object] | None:
    """The content of an accepted elicitation answer under `key`, if the client sent one."""
    answer = (ctx.input_responses or {}).get(key)
    if isinstance(answer, ElicitResult) and answer.action == "accept":
        return answer.content or {}
    return None


@mcp.tool()
async def test_input_required_result_elicitation(ctx: Context) -> CallToolResult | InputRequiredResult:
    """MRTR: asks for the user's name with one elicitation."""
    answer = _accepted(ctx, "user_name")
    if answer is None:
        question = _elicit("What is your name?", {"name": {"type": "string"}})
        return InputRequiredResult(input_requests={"user_name": question})
    return _text(f"Hello, {answer.get('name', 'stranger')}!")


@mcp.tool()
async def test_input_required_result_sampling(ctx: Context) -> CallToolResult | InputRequiredResult:
    """MRTR: asks the client's LLM one question."""
    answer = (ctx.input_responses or {}).get("capital_question")
    if not isinstance(answer, CreateMessageResult):
        return InputRequiredResult(input_requests={"capital_question": _sample("What is the capital of France?", 100)})
    text = answer.content.text if isinstance(answer.content, TextContent) else "(non-text reply)"
    return _text(f"The model answered: {text}")


@mcp.tool()
async def test_input_required_result_list_roots(ctx: Context) -> CallToolResult | InputRequiredResult:
    """MRTR: asks for the client's roots."""
    answer = (ctx.input_responses or {}).get("client_roots")
    if answer is None:
        return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})
    return _text(f"The client has {len(getattr(answer, 'roots', []))} root(s).")


@mcp.tool()
async def test_input_required_result_request_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    """MRTR: round-trips a requestState alongside a confirmation."""
    if _accepted(ctx, "confirm") is not None and ctx.request_state == "awaiting-confirmation":
        return _text("state-ok: the echoed request state was verified.")
    return InputRequiredResult(
        input_requests={"confirm": _elicit("Please confirm", {"ok": {"type": "boolean"}})},
        request_state="awaiting-confirmation",
    )


@mcp.tool()
async def test_input_required_result_multiple_inputs(ctx: Context) -> CallToolResult | InputRequiredResult:
    """MRTR: asks for an elicitation, a sampling and the roots in one round."""
    if {"user_name", "greeting", "client_roots"} <= (ctx.input_responses or {}).keys():
        return _text("All three inputs received.")
    return InputRequiredResult(
        input_requests={
            "user_name": _elicit("What is your name?", {"name": {"type": "string"}}),
            "greeting": _sample("Write a short greeting.", 50),
            "client_roots": ListRootsRequest(),
        },
        request_state="awaiting-three-inputs",
    )


@mcp.tool()
async def test_input_required_result_multi_round(ctx: Context) -> CallToolResult | InputRequiredResult:
    """MRTR: two elicitation rounds, each with its own requestState, then completes."""
    state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
    if state["round"] == 1 and (step1 := _accepted(ctx, "step1")) is not None:
        return InputRequiredResult(
            input_requests={"step2": _elicit("Step 2: What is your favourite colour?", {"color": {"type": "string"}})},
            request_state=json.dumps({"round": 2, "name": step1.get("name")}),
        )
    if state["round"] == 2 and (step2 := _accepted(ctx, "step2")) is not None:
        return _text(f"{state.get('name')} likes {step2.get('color')}.")
    return InputRequiredResult(
        input_requests={"step1": _elicit("Step 1: What is your name?", {"name": {"type": "string"}})},
        request_state=json.dumps({"round": 1}),
    )


@mcp.tool()
async def test_input_required_result_tampered_state(ctx: Context) -> CallToolResult | InputRequiredResult:
    """MRTR: sends a requestState; the SDK rejects a modified echo with a JSON-RPC error."""
    if ctx.request_state == "untampered" and _accepted(ctx, "confirm") is not None:
        return _text("The request state was intact.")
    return InputRequiredResult(
        input_requests={"confirm": _elicit("Please confirm", {"ok": {"type": "boolean"}})},
        request_state="untampered",
    )


@mcp.tool()
async def test_input_required_result_capabilities(ctx: Context) -> CallToolResult | InputRequiredResult:
    """MRTR: asks only for inputs whose client capability this request declared."""
    capabilities = ctx.client_capabilities
    requests: dict[str, InputRequest] = {}
    if capabilities is not None and capabilities.sampling is not None:
        requests["greeting"] = _sample("Say hello.", 50)
    if capabilities is not None and capabilities.elicitation is not None:
        requests["user_name"] = _elicit("What is your name?", {"name": {"type": "string"}})
    if capabilities is not None and capabilities.roots is not None:
        requests["client_roots"] = ListRootsRequest()
    if not requests or requests.keys() <= (ctx.input_responses or {}).keys():
        return _text(f"Answered inputs: {sorted(requests)}")
    return InputRequiredResult(input_requests=requests, request_state="capability-gated")


# --- Resources -------------------------------------------------------------------


@mcp.resource("test://static-text", name="static-text", mime_type="text/plain")
def static_text() -> str:
    """A static text resource."""
    return "This is the content of the static text resource."


@mcp.resource("test://static-binary", name="static-binary", mime_type="image/png")
def static_binary() -> bytes:
    """A static binary resource (a PNG image)."""
    return base64.b64decode(PNG_BASE64)


@mcp.resource("test://template/{id}/data", name="template-data", mime_type="application/json")
def template_data(id: str) -> str:
    """A resource template; the id is substituted into the JSON content."""
    return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


@mcp.resource("test://watched-resource", name="watched-resource", mime_type="text/plain")
def watched_resource() -> str:
    """A resource clients may subscribe to (2025-11-25 resources/subscribe)."""
    return "Watched resource content"


# --- Prompts ---------------------------------------------------------------------


@mcp.prompt()
def test_simple_prompt() -> list[Message]:
    """A prompt without arguments."""
    return [UserMessage("This is a simple prompt for testing.")]


@mcp.prompt()
def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
    """A prompt with two required arguments."""
    return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]


@mcp.prompt()
def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
    """A prompt that embeds the resource named by resourceUri."""
    resource = TextResourceContents(
        uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
    )
    return [
        UserMessage(EmbeddedResource(type="resource", resource=resource)),
        UserMessage("Please process the embedded resource above."),
    ]


@mcp.prompt()
def test_prompt_with_image() -> list[Message]:
    """A prompt that includes an image."""
    return [
        UserMessage(ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")),
        UserMessage("Please analyze the image above."),
    ]


@mcp.prompt()
async def test_input_required_result_prompt(ctx: Context) -> list[Message] | InputRequiredResult:
    """MRTR from prompts/get: asks for context before rendering."""
    answer = _accepted(ctx, "user_context")
    if answer is None:
        question = _elicit("What context should the prompt use?", {"context": {"type": "string"}})
        return InputRequiredResult(input_requests={"user_context": question})
    return [UserMessage(f"Use the following context: {answer.get('context', '')}")]


# --- Completions ---------------------------------------------------------------

ARGUMENT_SUGGESTIONS = ["test", "testValue1", "testValue2", "example"]


@mcp.completion()
async def complete(
    ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument, context: CompletionContext | None
) -> Completion:
    """Suggests the fixed values that start with what was typed so far."""
    values = [value for value in ARGUMENT_SUGGESTIONS if value.startswith(argument.value)]
    return Completion(values=values, total=len(values), has_more=False)


# --- 2025-11-25 methods MCPServer has no decorator for -------------------------
#
# `logging/setLevel` and `resources/subscribe`/`unsubscribe` exist only in the
# handshake era; the SDK answers them with "method not found" on 2026-07-28.
# Registering them also makes the server advertise `logging` and
# `resources.subscribe`.


async def _acknowledge(ctx: ServerRequestContext, params: object) -> EmptyResult:
    """Accept the request; the fixture's resources never change, so there is nothing to track."""
    return EmptyResult()


lowlevel = mcp._lowlevel_server  # MCPServer has no public hook for these methods
lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, _acknowledge)
lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, _acknowledge)
lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, _acknowledge)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    transport = parser.add_mutually_exclusive_group(required=True)
    transport.add_argument("--port", type=int, help="serve Streamable HTTP on http://127.0.0.1:PORT/mcp")
    transport.add_argument("--stdio", action="store_true", help="serve over stdin/stdout")
    args = parser.parse_args()
    if args.stdio:
        mcp.run("stdio")
    else:
        # The event store makes 2025-11-25 SSE streams resumable; clients retry after 100 ms.
        mcp.run(
            "streamable-http",
            host="127.0.0.1",
            port=args.port,
            event_store=InMemoryEventStore(),
            retry_interval=100,
        )


if __name__ == "__main__":
    main()

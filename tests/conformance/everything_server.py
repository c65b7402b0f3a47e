"""The upstream MCP server the conformance suite's server scenarios talk to.

No published package carries the fixtures the scenarios expect (tools, resources and prompts
named ``test_*`` / ``test://...``, each described in the scenario's own requirements text), so
this module implements them on the official Python SDK (``mcp`` 2.x). The SDK serves both
protocol generations on one endpoint: the ``initialize`` handshake (through 2025-11-25) and the
stateless 2026-07-28 wire.

Run as a script: ``python everything_server.py PORT`` serves ``http://127.0.0.1:PORT/mcp``.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.mcpserver.resources import FunctionResource
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPError

# A 1x1 red PNG and a 44-byte silent WAV header: the smallest valid payloads of each kind.
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
WAV = base64.b64encode(b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00D\xac\x00\x00\x88X\x01\x00"
                       b"\x02\x00\x10\x00data\x00\x00\x00\x00").decode()

# The schema ``json-schema-2020-12`` expects to find, keyword for keyword, in ``tools/list``.
JSON_SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                          "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
    "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"},
                   "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                   "phone": {"type": "string"}, "email": {"type": "string"}},
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}

CUSTOM_HEADERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "priority": {"type": "integer", "x-mcp-header": "Priority"},
        "verbose": {"type": "boolean", "x-mcp-header": "Verbose"},
        "query": {"type": "string", "description": "not mirrored"},
    },
    "required": ["region", "priority", "query"],
}

SEP1034_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "John Doe"},
        "age": {"type": "integer", "default": 30},
        "score": {"type": "number", "default": 95.5},
        "status": {"type": "string", "enum": ["active", "inactive", "pending"], "default": "active"},
        "verified": {"type": "boolean", "default": True},
    },
}

SEP1330_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {"type": "string", "oneOf": [{"const": "value1", "title": "First Option"},
                                                     {"const": "value2", "title": "Second Option"},
                                                     {"const": "value3", "title": "Third Option"}]},
        "legacyEnum": {"type": "string", "enum": ["opt1", "opt2", "opt3"],
                       "enumNames": ["Option One", "Option Two", "Option Three"]},
        "untitledMulti": {"type": "array", "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
        "titledMulti": {"type": "array", "items": {"anyOf": [{"const": "value1", "title": "First Choice"},
                                                             {"const": "value2", "title": "Second Choice"},
                                                             {"const": "value3", "title": "Third Choice"}]}},
    },
}


class MemoryEventStore(EventStore):
    """Every SSE event kept in memory, so a client can resume a closed stream (Last-Event-ID)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, types.JSONRPCMessage | None]] = []  # (event id, stream id, message)

    async def store_event(self, stream_id: str, message: types.JSONRPCMessage | None) -> str:
        event_id = str(len(self.events) + 1)
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((s for e, s, _ in self.events if e == last_event_id), None)
        if stream is None:
            return None
        for event_id, s, message in self.events[int(last_event_id):]:
            if s == stream and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream


def build_server() -> MCPServer:
    server = MCPServer("cbst-conformance-upstream", version="1.0.0")
    _tools(server)
    _input_required(server)
    _diagnostics(server)
    _resources(server)
    _prompts(server)
    _extras(server)
    return server


def _tools(server: MCPServer) -> None:
    @server.tool()
    def test_simple_text() -> str:
        """Returns a simple text response."""
        return "This is a simple text response for testing."

    @server.tool()
    def test_image_content() -> list[types.ContentBlock]:
        """Returns an image."""
        return [types.ImageContent(type="image", data=PNG, mime_type="image/png")]

    @server.tool()
    def test_audio_content() -> list[types.ContentBlock]:
        """Returns an audio clip."""
        return [types.AudioContent(type="audio", data=WAV, mime_type="audio/wav")]

    @server.tool()
    def test_embedded_resource() -> list[types.ContentBlock]:
        """Returns an embedded resource."""
        return [types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."))]

    @server.tool()
    def test_multiple_content_types() -> list[types.ContentBlock]:
        """Returns text, an image and an embedded resource."""
        return [
            types.TextContent(type="text", text="Multiple content types test:"),
            types.ImageContent(type="image", data=PNG, mime_type="image/png"),
            types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
                uri="test://mixed-content-resource", mime_type="application/json",
                text=json.dumps({"test": "data", "value": 123}))),
        ]

    @server.tool()
    async def test_tool_with_logging(ctx: Context) -> str:
        """Sends three log messages while it runs."""
        for i, text in enumerate(("Tool execution started", "Tool processing data", "Tool execution completed")):
            if i:
                await anyio.sleep(0.05)
            await ctx.info(text)
        return "Tool with logging executed successfully"

    @server.tool()
    def test_error_handling() -> str:
        """Always fails."""
        raise RuntimeError("This tool intentionally returns an error for testing")

    @server.tool()
    async def test_tool_with_progress(ctx: Context) -> str:
        """Reports progress 0, 50 and 100 of 100."""
        for i, done in enumerate((0, 50, 100)):
            if i:
                await anyio.sleep(0.05)
            await ctx.report_progress(done, 100)
        return "Tool with progress executed successfully"

    @server.tool()
    async def test_sampling(prompt: str, ctx: Context) -> str:
        """Asks the client's LLM."""
        result = await ctx.session.create_message(
            [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
            max_tokens=100, related_request_id=ctx.request_id)
        content = result.content
        text = content.text if isinstance(content, types.TextContent) else str(content)
        return f"LLM response: {text}"

    @server.tool()
    async def test_elicitation(message: str, ctx: Context) -> str:
        """Asks the user for a username and an email address."""
        schema = {"type": "object", "required": ["username", "email"], "properties": {
            "username": {"type": "string", "description": "User's response"},
            "email": {"type": "string", "description": "User's email address"}}}
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        return f"User response: action={result.action}, content={json.dumps(result.content)}"

    @server.tool()
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        """Elicits a form whose fields all have defaults."""
        result = await ctx.session.elicit_form("Please review and update the form fields with defaults",
                                               SEP1034_SCHEMA, related_request_id=ctx.request_id)
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"

    @server.tool()
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        """Elicits a form with all five enum variants."""
        result = await ctx.session.elicit_form("Please select options from the enum fields",
                                               SEP1330_SCHEMA, related_request_id=ctx.request_id)
        return f"Elicitation completed: action={result.action}, content={json.dumps(result.content)}"

    @server.tool()
    def json_schema_2020_12_tool() -> str:
        """Tool with JSON Schema 2020-12 features"""
        return "ok"

    @server.tool()
    def test_custom_headers(region: str, priority: int, query: str, verbose: bool = False) -> str:
        """Arguments mirrored as Mcp-Param-* headers on 2026-07-28 (SEP-2243)."""
        return f"region={region} priority={priority} verbose={verbose} query={query}"

    # The advertised schemas carry what the SDK cannot derive from a signature: the scenario's
    # JSON Schema 2020-12 keywords, and the x-mcp-header annotations.
    server._tool_manager.get_tool("json_schema_2020_12_tool").parameters = JSON_SCHEMA_2020_12  # type: ignore[union-attr]
    server._tool_manager.get_tool("test_custom_headers").parameters = CUSTOM_HEADERS_SCHEMA  # type: ignore[union-attr]


def _ask(message: str, field: str, kind: str = "string") -> types.ElicitRequest:
    return types.ElicitRequest(params=types.ElicitRequestFormParams(message=message, requested_schema={
        "type": "object", "properties": {field: {"type": kind}}, "required": [field]}))


def _sample(text: str, max_tokens: int) -> types.CreateMessageRequest:
    return types.CreateMessageRequest(params=types.CreateMessageRequestParams(
        messages=[types.SamplingMessage(role="user", content=types.TextContent(type="text", text=text))],
        max_tokens=max_tokens))


ROOTS = types.ListRootsRequest()


def _answers(ctx: Context, *keys: str) -> dict[str, Any] | None:
    """The client's responses to ``keys`` as plain JSON, or None unless every key was answered."""
    given = ctx.input_responses or {}
    if not all(k in given for k in keys):
        return None
    return {k: given[k].model_dump(mode="json", by_alias=True, exclude_none=True) for k in keys}


def _text(answer: dict[str, Any]) -> str:
    content = answer.get("content")
    if isinstance(content, dict):
        return str(content.get("text", content))
    return json.dumps(content)


def _input_required(server: MCPServer) -> None:
    """2026-07-28 multi-round tools (SEP-2322): an ``InputRequiredResult``, then the answer on retry.

    The SDK seals ``requestState`` (integrity-protected), so a tampered state is refused for us.
    """

    @server.tool()
    def test_input_required_result_elicitation(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks the user's name, then greets them."""
        answers = _answers(ctx, "user_name")
        if answers is None or not isinstance(answers["user_name"].get("content"), dict):
            return types.InputRequiredResult(input_requests={"user_name": _ask("What is your name?", "name")})
        name = answers["user_name"]["content"].get("name", "")
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"Hello, {name}!")])

    @server.tool()
    def test_input_required_result_sampling(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks the client's LLM a question, then returns its answer."""
        answers = _answers(ctx, "capital_question")
        if answers is None:
            return types.InputRequiredResult(input_requests={
                "capital_question": _sample("What is the capital of France?", 100)})
        text = _text(answers["capital_question"])
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    @server.tool()
    def test_input_required_result_list_roots(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks the client's roots, then lists them."""
        answers = _answers(ctx, "client_roots")
        if answers is None:
            return types.InputRequiredResult(input_requests={"client_roots": ROOTS})
        uris = ", ".join(str(r.get("uri")) for r in answers["client_roots"].get("roots", []))
        return types.CallToolResult(content=[types.TextContent(type="text", text=f"Roots: {uris}")])

    @server.tool()
    def test_input_required_result_request_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks for confirmation, carrying state across the round."""
        answers = _answers(ctx, "confirm")
        if answers is None or ctx.request_state != "confirm-round-1":
            return types.InputRequiredResult(input_requests={"confirm": _ask("Please confirm", "ok", "boolean")},
                                             request_state="confirm-round-1")
        return types.CallToolResult(content=[types.TextContent(type="text", text="state-ok: confirmed")])

    @server.tool()
    def test_input_required_result_multiple_inputs(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks an elicitation, a sampling and the roots at once."""
        answers = _answers(ctx, "user_name", "greeting", "client_roots")
        if answers is None or ctx.request_state != "multiple-round-1":
            return types.InputRequiredResult(input_requests={
                "user_name": _ask("What is your name?", "name"), "greeting": _sample("Generate a greeting", 50),
                "client_roots": ROOTS}, request_state="multiple-round-1")
        return types.CallToolResult(content=[types.TextContent(type="text", text="All inputs received")])

    @server.tool()
    def test_input_required_result_multi_round(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Two rounds of questions before the answer."""
        if ctx.request_state == "multi-round-1" and _answers(ctx, "step1") is not None:
            return types.InputRequiredResult(input_requests={
                "step2": _ask("Step 2: What is your favorite color?", "color")}, request_state="multi-round-2")
        if ctx.request_state == "multi-round-2" and _answers(ctx, "step2") is not None:
            return types.CallToolResult(content=[types.TextContent(type="text", text="Multi-round complete")])
        return types.InputRequiredResult(input_requests={"step1": _ask("Step 1: What is your name?", "name")},
                                         request_state="multi-round-1")

    @server.tool()
    def test_input_required_result_tampered_state(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Round-trips integrity-protected state (the SDK refuses a tampered one)."""
        if ctx.request_state == "tamper-round-1":
            return types.CallToolResult(content=[types.TextContent(type="text", text="state verified")])
        return types.InputRequiredResult(input_requests={"confirm": _ask("Please confirm", "ok", "boolean")},
                                         request_state="tamper-round-1")

    @server.prompt()
    def test_input_required_result_prompt(ctx: Context) -> list[Message] | types.InputRequiredResult:
        """A prompt that first asks the user for context."""
        answers = _answers(ctx, "user_context")
        if answers is None:
            return types.InputRequiredResult(input_requests={
                "user_context": _ask("What context should the prompt use?", "context")})
        content = answers["user_context"].get("content") or {}
        return [UserMessage(content=f"Context: {content.get('context', '')}")]


def _diagnostics(server: MCPServer) -> None:
    """Hooks the scenarios use to provoke behaviour: capability errors, list changes, a closed stream."""

    @server.tool()
    def test_missing_capability(ctx: Context) -> str:
        """Needs the client's sampling capability (2026-07-28: -32021 when it is not declared)."""
        caps = ctx.client_capabilities
        if caps is None or caps.sampling is None:
            raise MCPError(types.MISSING_REQUIRED_CLIENT_CAPABILITY, "Missing required client capability: sampling",
                           {"requiredCapabilities": {"sampling": {}}})
        return "sampling is declared"

    @server.tool()
    def test_input_required_result_capabilities(ctx: Context) -> types.CallToolResult | types.InputRequiredResult:
        """Asks only for the inputs the client declared it can give."""
        if ctx.input_responses:
            return types.CallToolResult(content=[types.TextContent(type="text", text="inputs received")])
        caps = ctx.client_capabilities or types.ClientCapabilities()
        wanted: dict[str, types.InputRequest] = {}
        if caps.sampling is not None:
            wanted["question"] = _sample("What is the capital of France?", 100)
        if caps.elicitation is not None:
            wanted["user_name"] = _ask("What is your name?", "name")
        if caps.roots is not None:
            wanted["client_roots"] = ROOTS
        if not wanted:
            return types.CallToolResult(content=[types.TextContent(type="text", text="no input capability")])
        return types.InputRequiredResult(input_requests=wanted)

    async def flip_tool(ctx: Context) -> str:
        """Adds or removes a tool, then tells listeners the tool list changed."""
        if server._tool_manager.get_tool("test_ephemeral_tool") is None:
            server.add_tool(lambda: "ephemeral", name="test_ephemeral_tool", description="Comes and goes")
        else:
            server.remove_tool("test_ephemeral_tool")
        await ctx.notify_tools_changed()
        return "tool list changed"

    async def flip_prompt(ctx: Context) -> str:
        """Adds or removes a prompt, then tells listeners the prompt list changed."""
        from mcp.server.mcpserver.prompts.base import Prompt

        if "test_ephemeral_prompt" in {p.name for p in await server.list_prompts()}:
            server.remove_prompt("test_ephemeral_prompt")
        else:
            server.add_prompt(Prompt.from_function(lambda: "ephemeral", name="test_ephemeral_prompt",
                                                   description="Comes and goes"))
        await ctx.notify_prompts_changed()
        return "prompt list changed"

    server.add_tool(flip_tool, name="test_trigger_tool_change", description="Changes the tool list")
    server.add_tool(flip_prompt, name="test_trigger_prompt_change", description="Changes the prompt list")

    @server.tool()
    async def test_reconnection(ctx: Context) -> str:
        """Closes its SSE stream mid-call; the client resumes it (Last-Event-ID) for the result."""
        await anyio.sleep(0.05)
        await ctx.close_sse_stream()
        await anyio.sleep(0.3)
        return "Reconnection test completed"


def _resources(server: MCPServer) -> None:
    server.add_resource(FunctionResource(
        uri="test://static-text", name="static-text", description="A static text resource", mime_type="text/plain",
        fn=lambda: "This is the content of the static text resource."))
    server.add_resource(FunctionResource(
        uri="test://static-binary", name="static-binary", description="A static binary resource (PNG)",
        mime_type="image/png", fn=lambda: base64.b64decode(PNG)))
    server.add_resource(FunctionResource(
        uri="test://watched-resource", name="watched-resource", description="A resource clients may subscribe to",
        mime_type="text/plain", fn=lambda: "watched"))

    @server.resource("test://template/{id}/data", name="template-data", description="Data for an id",
                     mime_type="application/json")
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})


def _prompts(server: MCPServer) -> None:
    @server.prompt()
    def test_simple_prompt() -> str:
        """A prompt without arguments."""
        return "This is a simple prompt for testing."

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> str:
        """A prompt with two required arguments."""
        return f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
        """A prompt embedding the resource it is given."""
        return [UserMessage(content=types.EmbeddedResource(type="resource", resource=types.TextResourceContents(
                    uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."))),
                UserMessage(content="Please process the embedded resource above.")]

    @server.prompt()
    def test_prompt_with_image() -> list[Message]:
        """A prompt carrying an image."""
        return [UserMessage(content=types.ImageContent(type="image", data=PNG, mime_type="image/png")),
                UserMessage(content="Please analyze the image above.")]


def _extras(server: MCPServer) -> None:
    """Handlers registered on the low-level server: logging level, resource subscriptions, completion."""
    lowlevel = server._lowlevel_server

    async def empty(ctx: Any, params: Any) -> types.EmptyResult:
        return types.EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, empty)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, empty)
    lowlevel.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, empty)

    async def complete(ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        values = [v for v in ("paris", "park", "party") if v.startswith(params.argument.value)]
        return types.CompleteResult(completion=types.Completion(values=values, total=len(values), has_more=False))

    lowlevel.add_request_handler("completion/complete", types.CompleteRequestParams, complete)


if __name__ == "__main__":
    import uvicorn

    app = build_server().streamable_http_app(event_store=MemoryEventStore(), retry_interval=200)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")

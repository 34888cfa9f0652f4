"""OpenAI chat ⇄ the Bedrock Converse API (the codec of providers/bedrock.py): requests, whole
answers, usage, errors and streams, sans-IO."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from edge_agent.api.anthropic import error_type_for
from edge_agent.api.errors import ApiError
from edge_agent.api.sse import encode_event
from edge_agent.providers.base import Codec
from edge_agent.translate.common import (
    OPENAI_ONLY,
    call_arguments,
    chat_usage,
    image_url_of,
    openai_error,
    plain_error_message,
    refuse_unsupported,
    requested_max_tokens,
    stop_sequences,
    tool_function,
    tool_parameters,
    untranslatable,
    user_parts,
)
from edge_agent.translate.stream import (
    ChatChunkWriter,
    completion,
    tool_call_arguments,
    tool_call_start,
)

_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
# OpenAI chat fields that change the answer and that Converse cannot carry.
_OPENAI_ONLY = (
    *OPENAI_ONLY,
    "frequency_penalty",
    "presence_penalty",
    "reasoning_effort",
    "parallel_tool_calls",
    "response_format",
)


def _refuse(field: str, why: str = "") -> ApiError:
    return untranslatable(field, "OpenAI", "Amazon Bedrock Converse", why)


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


# =========================================================================== requests


def _text_parts(content: Any, path: str) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise _refuse(path, "expected a string or a list of text parts")
    texts = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text":
            raise _refuse(f"{path}[{i}]", "only text parts are allowed here")
        texts.append(str(part.get("text", "")))
    return texts


def _image(url: str, path: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        # Converse takes image bytes (or S3 objects), never a URL it would fetch.
        raise _refuse(path, "Bedrock takes images inline: send a base64 data: URL")
    head, sep, data = url.partition(",")
    media = head[5:].split(";")[0].lower()
    if not sep or ";base64" not in head:
        raise _refuse(path, "image data URLs must be base64-encoded")
    image_format = _IMAGE_FORMATS.get(media)
    if image_format is None:
        raise _refuse(path, f"image type {media!r}: Bedrock takes png, jpeg, gif or webp")
    # A blob in Bedrock's JSON protocol is a base64 string: the data passes unchanged.
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _image_part(part: dict[str, Any], where: str) -> dict[str, Any]:
    return _image(image_url_of(part, where, _refuse), f"{where}.image_url.url")


def _user_blocks(content: Any, path: str) -> list[dict[str, Any]]:
    return user_parts(content, path, _refuse, {"image_url": _image_part}, "Converse")


def _tool_uses(calls: Any, path: str) -> list[dict[str, Any]]:
    blocks = []
    for i, call in enumerate(calls or []):
        where = f"{path}[{i}]"
        if not isinstance(call, dict) or call.get("type", "function") != "function":
            raise _refuse(where, "only function tool calls translate")
        function = call.get("function") or {}
        arguments = call_arguments(function, where, _refuse)
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": str(call.get("id", "")),
                    "name": str(function.get("name", "")),
                    "input": arguments,
                }
            }
        )
    return blocks


def _tool_spec(tool: Any, path: str) -> dict[str, Any]:
    function = tool_function(tool, path, _refuse)
    spec: dict[str, Any] = {
        "name": function.get("name"),
        "inputSchema": {"json": tool_parameters(function)},
    }
    if function.get("description"):
        spec["description"] = function["description"]
    return {"toolSpec": spec}


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice is None:
        return None  # Bedrock's default is auto
    if choice == "auto":
        return {"auto": {}}
    if choice == "required":
        return {"any": {}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if isinstance(name, str) and name:
            return {"tool": {"name": name}}
    raise _refuse("tool_choice")


def chat_to_converse(chat: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Converse request body (the model goes in the path)."""
    refuse_unsupported(chat, _OPENAI_ONLY, _refuse)
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    history_has_tools = False

    def append(role: str, blocks: list[dict[str, Any]]) -> None:
        # Converse wants alternating turns: same-role neighbours merge, and tool results
        # (OpenAI's "tool" role) join the user turn.
        if not blocks:
            return  # an empty turn would be refused (blank content)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    raw_messages = chat.get("messages")
    if not isinstance(raw_messages, list):
        raise ApiError(400, "'messages' must be a list.", param="messages")
    for i, message in enumerate(raw_messages):
        path = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"'{path}' must be an object.", param=path)
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system += [{"text": t} for t in _text_parts(content, f"{path}.content") if t]
        elif role == "user":
            append("user", _user_blocks(content, f"{path}.content"))
        elif role == "assistant":
            if message.get("function_call"):
                raise _refuse(f"{path}.function_call", "use tool_calls")
            blocks = [{"text": t} for t in _text_parts(content, f"{path}.content") if t]
            uses = _tool_uses(message.get("tool_calls"), f"{path}.tool_calls")
            history_has_tools = history_has_tools or bool(uses)
            append("assistant", blocks + uses)
        elif role == "tool":
            history_has_tools = True
            text = "\n".join(_text_parts(content, f"{path}.content"))
            result = {
                "toolUseId": str(message.get("tool_call_id", "")),
                # Converse refuses blank text, and a tool may well return nothing.
                "content": [{"text": text}] if text else [{"json": {}}],
            }
            append("user", [{"toolResult": result}])
        else:
            raise _refuse(f"{path}.role", f"role {role!r} has no Converse counterpart")

    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system

    config: dict[str, Any] = {}
    max_tokens = requested_max_tokens(chat)
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        config["maxTokens"] = max_tokens
    temperature = chat.get("temperature")
    if temperature is not None:
        if isinstance(temperature, int | float) and temperature > 1:
            raise _refuse("temperature", "Bedrock accepts 0 to 1")
        config["temperature"] = temperature
    if chat.get("top_p") is not None:
        config["topP"] = chat["top_p"]
    stop = stop_sequences(chat)
    if stop is not None:
        config["stopSequences"] = stop
    if config:
        out["inferenceConfig"] = config

    tools = chat.get("tools")
    choice = chat.get("tool_choice")
    if choice == "none":
        if history_has_tools:
            raise _refuse(
                "tool_choice",
                "Converse has no 'none' choice, and a conversation with tool calls must "
                "declare its tools, which would let the model call them",
            )
        tools = None  # without tools the model cannot call one: what "none" means
    if tools:
        if not isinstance(tools, list):
            raise _refuse("tools", "expected a list")
        tool_config: dict[str, Any] = {
            "tools": [_tool_spec(t, f"tools[{i}]") for i, t in enumerate(tools)]
        }
        converse_choice = _tool_choice(choice)
        if converse_choice is not None:
            tool_config["toolChoice"] = converse_choice
        out["toolConfig"] = tool_config
    elif choice not in (None, "none", "auto"):
        raise ApiError(400, "'tool_choice' needs 'tools'.", param="tool_choice")
    return out


# =========================================================================== answers


def openai_usage(usage: Any) -> dict[str, Any] | None:
    """Converse usage → OpenAI usage (prompt tokens count cache reads and writes too)."""
    if not isinstance(usage, dict):
        return None
    cached = int(usage.get("cacheReadInputTokens") or 0)
    prompt = int(usage.get("inputTokens") or 0) + cached
    prompt += int(usage.get("cacheWriteInputTokens") or 0)
    completion = int(usage.get("outputTokens") or 0)
    return chat_usage(prompt, completion, cached)


def converse_to_completion(body: dict[str, Any], model: str) -> dict[str, Any]:
    """A Converse answer as an OpenAI chat completion."""
    output = body.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append(
                {
                    "id": use.get("toolUseId"),
                    "type": "function",
                    "function": {
                        "name": use.get("name"),
                        "arguments": orjson.dumps(use.get("input", {})).decode(),
                    },
                }
            )
        elif isinstance(block.get("reasoningContent"), dict):
            text = (block["reasoningContent"].get("reasoningText") or {}).get("text")
            if isinstance(text, str):
                reasoning.append(text)
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        reply["tool_calls"] = calls
    if reasoning:
        reply["reasoning_content"] = "".join(reasoning)  # the field vLLM/DeepSeek use
    finish = _FINISH.get(str(body.get("stopReason") or ""), "stop")
    return completion(_new_id(), model, reply, finish, openai_usage(body.get("usage")))


def error_to_openai(status: int, body: bytes) -> bytes:
    """Bedrock's `{"message": ...}` error body (the type is in a header) as OpenAI's."""
    return openai_error(plain_error_message(body, ("message", "Message")), error_type_for(status))


# =========================================================================== streams

_EXCEPTION_STATUS = {
    "validationException": 400,
    "throttlingException": 429,
    "modelStreamErrorException": 424,
    "internalServerException": 500,
    "serviceUnavailableException": 503,
}


class ConverseStreamToChat(ChatChunkWriter):
    """Converse-stream event frames (binary) → OpenAI chat.completion.chunk SSE events.

    Frames are decoded by botocore's `EventStreamBuffer`, which keeps partial frames
    between feeds and checks both CRCs.
    """

    def __init__(
        self, model: str, include_usage: bool, now: Callable[[], float] = time.time
    ) -> None:
        super().__init__(model, include_usage, now, _new_id())
        self._frames = EventStreamBuffer()
        self._tools: dict[int, int] = {}  # Converse block index → OpenAI tool index
        self._stopped = False
        self._broken = False  # a corrupt frame: nothing after it can be trusted

    @staticmethod
    def _error(message: str, status: int, code: str | None) -> bytes:
        error = {"message": message, "type": error_type_for(status), "param": None, "code": code}
        return encode_event(orjson.dumps({"error": error}))

    def feed(self, chunk: bytes) -> bytes:
        if self._broken or self.finished:
            return b""
        self._frames.add_data(chunk)
        out = bytearray()
        try:
            for frame in self._frames:
                out += self._frame(frame.headers, frame.payload)
        except ParserError as exc:
            self._broken = True
            out += self._error(f"The provider's event stream is corrupt: {exc}", 502, None)
        return bytes(out)

    def _frame(self, headers: Mapping[str, Any], payload: bytes) -> bytes:
        kind = headers.get(":message-type", "event")
        try:
            data = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        if kind == "exception":
            name = str(headers.get(":exception-type", ""))
            message = data.get("message") or data.get("Message") or "The provider's stream failed."
            return self._error(str(message), _EXCEPTION_STATUS.get(name, 500), name or None)
        if kind == "error":
            code = str(headers.get(":error-code", "")) or None
            message = str(headers.get(":error-message", "")) or "The provider's stream failed."
            return self._error(message, 500, code)
        return self._event(str(headers.get(":event-type", "")), data)

    def _event(self, name: str | None, data: Any) -> bytes:
        if name == "messageStart":
            return self._chunk({"role": "assistant", "content": ""})
        if name == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return b""
            index = self._tools[data.get("contentBlockIndex", 0)] = len(self._tools)
            return self._chunk(tool_call_start(index, use.get("toolUseId"), use.get("name")))
        if name == "contentBlockDelta":
            delta = data.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]})
            use = delta.get("toolUse")
            if isinstance(use, dict):
                index = self._tools.get(data.get("contentBlockIndex", 0))
                if index is None:
                    return b""  # input for a tool that never started: nothing to attach it to
                return self._chunk(tool_call_arguments(index, str(use.get("input", ""))))
            reasoning = delta.get("reasoningContent")
            if isinstance(reasoning, dict) and isinstance(reasoning.get("text"), str):
                return self._chunk({"reasoning_content": reasoning["text"]})
            return b""
        if name == "messageStop":
            self._stopped = True
            finish = _FINISH.get(str(data.get("stopReason") or ""), "stop")
            return self._chunk({}, finish)
        if name == "metadata":
            self.usage = openai_usage(data.get("usage"))
            if not self._stopped:
                return b""  # metadata always follows messageStop; without it, no end
            return self._end()
        return b""  # contentBlockStop and future event types


# =========================================================================== codec


#: Converse ⇄ OpenAI chat.
CODEC = Codec(
    request_from_chat=lambda chat, model: chat_to_converse(chat),  # the model is in the path
    response_to_chat=converse_to_completion,
    stream_to_chat=ConverseStreamToChat,
    error_to_chat=error_to_openai,
)

"""Server-Sent Events for OpenAI streaming: parse, assemble, replay.

- `SSEParser` turns response body chunks (split anywhere) into events, following the
  WHATWG event-stream rules.
- `StreamAssembler` rebuilds the complete chat.completion / text_completion from a
  stream so a streamed cache miss can be stored.
- `replay_stream` does the reverse for a cache hit answered with `stream: true`.
All of it observes live traffic, so parsing never raises on any input bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from edge_agent.api.openai import Endpoint


@dataclass(slots=True)
class SSEEvent:
    data: str
    event: str | None = None  # None when the stream gave no (or an empty) event type


class SSEParser:
    """Incremental event-stream parser: feed bytes, get the events they complete."""

    __slots__ = ("_buf", "_data", "_event", "_skip_lf", "_started", "last_event_id", "retry")

    def __init__(self) -> None:
        self._buf = bytearray()  # an unterminated line carried over to the next feed
        self._skip_lf = False  # the last feed ended in \r: a leading \n completes \r\n
        self._started = False  # the leading BOM (if any) has been handled
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry: int | None = None  # reconnection time (ms) announced by the server

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if b"\n" not in chunk and b"\r" not in chunk:
            # No line ends yet: just accumulate (keeps long lines linear, not quadratic).
            self._buf += chunk
            return []
        if self._buf:
            self._buf += chunk
            data = bytes(self._buf)
            self._buf.clear()
        else:
            data = chunk if type(chunk) is bytes else bytes(chunk)
        # bytes.splitlines breaks on exactly \n, \r and \r\n: the event-stream line ends.
        lines = data.splitlines()
        if data.endswith(b"\r"):
            self._skip_lf = True
        elif not data.endswith(b"\n"):
            self._buf += lines.pop()  # unterminated: wait for the rest
        if not self._started and lines:
            self._started = True
            if lines[0].startswith(b"\xef\xbb\xbf"):
                lines[0] = lines[0][3:]  # a leading BOM is not part of the first line
        events: list[SSEEvent] = []
        data_lines = self._data
        for line in lines:
            if not line:  # blank line: dispatch
                if data_lines:
                    events.append(SSEEvent("\n".join(data_lines), self._event or None))
                    data_lines = self._data = []
                self._event = ""
            elif line.startswith(b"data:"):  # the common case, kept first and short
                value = line[6:] if line[5:6] == b" " else line[5:]
                data_lines.append(value.decode("utf-8", "replace"))
            elif line[0] != 0x3A:  # lines starting with ":" are comments (keep-alives)
                self._field(line)
        return events

    def _field(self, line: bytes) -> None:
        name, colon, raw = line.partition(b":")
        if colon and raw[:1] == b" ":
            raw = raw[1:]
        value = raw.decode("utf-8", "replace")
        if name == b"data":  # "data" without a colon
            self._data.append(value)
        elif name == b"event":
            self._event = value
        elif name == b"id":
            if "\x00" not in value:
                self.last_event_id = value
        elif name == b"retry" and raw.isdigit():
            self.retry = int(raw)
        # any other field is ignored, as the standard requires


def encode_event(data: str | bytes, event: str | None = None) -> bytes:
    """One event on the wire: optional `event:` line, `data:` line(s), blank line."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    head = b""
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError(f"event type must be a single line, got {event!r}")
        head = b"event: " + event.encode("utf-8") + b"\n"
    if b"\n" not in raw and b"\r" not in raw:
        return head + b"data: " + raw + b"\n\n"
    # A line break inside data becomes one `data:` line per line; parsers join them with \n.
    parts = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return head + b"".join(b"data: " + part + b"\n" for part in parts) + b"\n"


# --------------------------------------------------------------------------- assembling


def _is_index(value: Any) -> bool:
    return type(value) is int and value >= 0


class _ToolCall:
    __slots__ = ("arguments", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.arguments: list[str] = []


class _Choice:
    __slots__ = (
        "content",
        "finish_reason",
        "function_call",
        "logprobs",
        "refusal",
        "role",
        "tool_calls",
    )

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: list[str] = []  # chat deltas or completion text pieces
        self.refusal: list[str] = []
        self.tool_calls: dict[int, _ToolCall] = {}
        self.function_call: _ToolCall | None = None  # legacy `function_call` deltas
        self.finish_reason: str | None = None
        self.logprobs: dict[str, list[Any] | None] | None = None


# Streamed logprobs arrive as list fragments per chunk; these are the lists to concatenate.
_CHAT_LOGPROB_LISTS = ("content", "refusal")
_COMPLETION_LOGPROB_LISTS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


class StreamAssembler:
    """Rebuilds the complete response from an OpenAI stream (chat or completions).

    `failed` latches on anything that makes the assembled result untrustworthy; the
    caller then simply does not cache.
    """

    __slots__ = (
        "_choices",
        "_created",
        "_id",
        "_model",
        "_parser",
        "_service_tier",
        "_system_fingerprint",
        "_usage",
        "done",
        "endpoint",
        "failed",
    )

    def __init__(self, endpoint: Endpoint) -> None:
        if endpoint is not Endpoint.CHAT and endpoint is not Endpoint.COMPLETIONS:
            raise ValueError(f"only chat and completions stream, not {endpoint}")
        self.endpoint = endpoint
        self.done = False
        self.failed = False
        self._parser = SSEParser()
        self._id: str | None = None
        self._created: int | None = None
        self._model: str | None = None
        self._system_fingerprint: str | None = None
        self._service_tier: str | None = None
        self._usage: dict[str, Any] | None = None
        self._choices: dict[int, _Choice] = {}

    def feed(self, chunk: bytes) -> None:
        for event in self._parser.feed(chunk):
            if self.done:
                continue  # anything after [DONE] is not part of the answer
            if event.event == "error":
                self.failed = True
            elif event.data == "[DONE]":
                self.done = True
            elif not self.failed:
                self._apply(event.data)

    def _apply(self, data: str) -> None:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.failed = True
            return
        if type(obj) is not dict or "error" in obj:
            self.failed = True
            return
        if self._id is None and type(obj.get("id")) is str:
            self._id = obj["id"]
        if self._created is None and type(obj.get("created")) is int:
            self._created = obj["created"]
        if self._model is None and type(obj.get("model")) is str:
            self._model = obj["model"]
        if self._system_fingerprint is None and type(obj.get("system_fingerprint")) is str:
            self._system_fingerprint = obj["system_fingerprint"]
        if self._service_tier is None and type(obj.get("service_tier")) is str:
            self._service_tier = obj["service_tier"]
        usage = obj.get("usage")
        if type(usage) is dict:
            self._usage = usage
        choices = obj.get("choices")
        if choices is None:
            return
        if type(choices) is not list:
            self.failed = True
            return
        chat = self.endpoint is Endpoint.CHAT
        for position, choice in enumerate(choices):
            ok = type(choice) is dict and (
                self._chat_choice(choice, position) if chat else self._text_choice(choice, position)
            )
            if not ok:
                self.failed = True
                return

    def _choice(self, choice: dict[str, Any], position: int) -> _Choice | None:
        index = choice.get("index", position)
        if not _is_index(index):
            return None
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Choice()
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            if type(finish_reason) is not str:
                return None
            state.finish_reason = finish_reason
        return state

    def _chat_choice(self, choice: dict[str, Any], position: int) -> bool:
        state = self._choice(choice, position)
        if state is None:
            return False
        delta = choice.get("delta")
        if delta is None:
            delta = {}
        elif type(delta) is not dict:
            return False
        role = delta.get("role")
        if role is not None:
            if type(role) is not str:
                return False
            state.role = state.role or role
        for key, parts in (("content", state.content), ("refusal", state.refusal)):
            piece = delta.get(key)
            if piece is not None:
                if type(piece) is not str:
                    return False
                parts.append(piece)
        tool_calls = delta.get("tool_calls")
        if tool_calls is not None:
            if type(tool_calls) is not list:
                return False
            for j, call in enumerate(tool_calls):
                if type(call) is not dict:
                    return False
                index = call.get("index", j)
                if not _is_index(index):
                    return False
                merged = state.tool_calls.get(index)
                if merged is None:
                    merged = state.tool_calls[index] = _ToolCall()
                if not _merge_call(merged, call):
                    return False
        function_call = delta.get("function_call")
        if function_call is not None:
            if state.function_call is None:
                state.function_call = _ToolCall()
            if not _merge_function(state.function_call, function_call):
                return False
        return _merge_logprobs(state, choice.get("logprobs"), _CHAT_LOGPROB_LISTS)

    def _text_choice(self, choice: dict[str, Any], position: int) -> bool:
        state = self._choice(choice, position)
        if state is None:
            return False
        text = choice.get("text")
        if text is not None:
            if type(text) is not str:
                return False
            state.content.append(text)
        return _merge_logprobs(state, choice.get("logprobs"), _COMPLETION_LOGPROB_LISTS)

    def result(self) -> dict[str, Any] | None:
        """The assembled response, or None unless the stream ended cleanly and completely."""
        if not self.done or self.failed or not self._choices:
            return None
        count = len(self._choices)
        if any(i not in self._choices for i in range(count)):
            return None  # a gap in choice indexes: some choice never arrived
        choices = []
        for i in range(count):
            state = self._choices[i]
            if state.finish_reason is None:
                return None
            if self.endpoint is Endpoint.CHAT:
                choices.append(
                    {
                        "index": i,
                        "message": _chat_message(state),
                        "logprobs": state.logprobs,
                        "finish_reason": state.finish_reason,
                    }
                )
            else:
                choices.append(
                    {
                        "index": i,
                        "text": "".join(state.content),
                        "logprobs": state.logprobs,
                        "finish_reason": state.finish_reason,
                    }
                )
        chat = self.endpoint is Endpoint.CHAT
        out: dict[str, Any] = {
            "id": self._id or "",
            "object": "chat.completion" if chat else "text_completion",
            "created": self._created or 0,
            "model": self._model or "",
        }
        if self._system_fingerprint is not None:
            out["system_fingerprint"] = self._system_fingerprint
        if self._service_tier is not None:
            out["service_tier"] = self._service_tier
        out["choices"] = choices
        if self._usage is not None:
            out["usage"] = self._usage
        return out


def _merge_call(merged: _ToolCall, call: dict[str, Any]) -> bool:
    for key in ("id", "type"):
        value = call.get(key)
        if value is not None:
            if type(value) is not str:
                return False
            if not getattr(merged, key):  # atomic: the first non-empty value wins
                setattr(merged, key, value)
    function = call.get("function")
    return function is None or _merge_function(merged, function)


def _merge_function(merged: _ToolCall, function: Any) -> bool:
    if type(function) is not dict:
        return False
    name = function.get("name")
    if name is not None:
        if type(name) is not str:
            return False
        # Names are sent whole (some servers repeat them on every delta): do not concatenate.
        if not merged.name:
            merged.name = name
    arguments = function.get("arguments")
    if arguments is not None:
        if type(arguments) is not str:
            return False
        merged.arguments.append(arguments)
    return True


def _merge_logprobs(state: _Choice, logprobs: Any, lists: tuple[str, ...]) -> bool:
    if logprobs is None:
        return True
    if type(logprobs) is not dict:
        return False
    if state.logprobs is None:
        state.logprobs = dict.fromkeys(lists)
    merged = state.logprobs
    for key in lists:
        piece = logprobs.get(key)
        if piece is None:
            continue
        if type(piece) is not list:
            return False
        so_far = merged[key]
        if so_far is None:
            merged[key] = list(piece)
        else:
            so_far.extend(piece)
    return True


def _chat_message(state: _Choice) -> dict[str, Any]:
    content = "".join(state.content)
    message: dict[str, Any] = {"role": state.role or "assistant", "content": content}
    if state.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id or "",
                "type": call.type or "function",
                "function": {"name": call.name or "", "arguments": "".join(call.arguments)},
            }
            for _, call in sorted(state.tool_calls.items())
        ]
    if state.function_call is not None:
        call = state.function_call
        message["function_call"] = {"name": call.name or "", "arguments": "".join(call.arguments)}
    if state.refusal:
        message["refusal"] = "".join(state.refusal)
    # The non-streamed answer has null content when the model answered otherwise.
    if not content and (state.tool_calls or state.function_call or state.refusal):
        message["content"] = None
    return message


# --------------------------------------------------------------------------- replay


def replay_stream(endpoint: Endpoint, completion: dict[str, Any], include_usage: bool) -> bytes:
    """The SSE body OpenAI would send for `stream: true`, from a complete stored response.

    Raises ValueError for a malformed entry (the caller answers it as a cache miss).
    """
    choices = completion.get("choices")
    if type(choices) is not list or not all(type(c) is dict for c in choices):
        raise ValueError("completion has no 'choices' list of objects")
    chat = endpoint is Endpoint.CHAT
    if not chat and endpoint is not Endpoint.COMPLETIONS:
        raise ValueError(f"only chat and completions stream, not {endpoint}")

    head: dict[str, Any] = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
    }
    for key in ("system_fingerprint", "service_tier"):
        if key in completion:
            head[key] = completion[key]

    chunks: list[dict[str, Any]] = []
    for position, choice in enumerate(choices):
        index = choice.get("index", position)
        if chat:
            chunks.extend(_chat_chunks(head, choice, index))
        else:
            chunks.extend(_text_chunks(head, choice, index))
    if include_usage:
        for chunk in chunks:
            chunk["usage"] = None
        chunks.append({**head, "choices": [], "usage": completion.get("usage")})

    # Each chunk is serialised once by orjson (which never emits raw newlines) and framed.
    body = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks]
    body.append(b"data: [DONE]\n\n")
    return b"".join(body)


def _chat_chunks(head: dict[str, Any], choice: dict[str, Any], index: int) -> list[dict[str, Any]]:
    message = choice.get("message")
    if type(message) is not dict:
        raise ValueError("chat completion choice has no 'message' object")

    def chunk(delta: dict[str, Any], logprobs: Any = None, finish: Any = None) -> dict[str, Any]:
        return {
            **head,
            "choices": [
                {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            ],
        }

    out = [chunk({"role": message.get("role", "assistant"), "content": ""})]
    delta: dict[str, Any] = {}
    content = message.get("content")
    if content:
        delta["content"] = content
    tool_calls = message.get("tool_calls")
    if tool_calls:
        if type(tool_calls) is not list or not all(type(c) is dict for c in tool_calls):
            raise ValueError("'tool_calls' is not a list of objects")
        delta["tool_calls"] = [
            {
                "index": j,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": call.get("function", {}),
            }
            for j, call in enumerate(tool_calls)
        ]
    if message.get("function_call") is not None:
        delta["function_call"] = message["function_call"]
    if message.get("refusal") is not None:
        delta["refusal"] = message["refusal"]
    logprobs = choice.get("logprobs")
    if delta or logprobs is not None:
        out.append(chunk(delta, logprobs))
    out.append(chunk({}, None, choice.get("finish_reason")))
    return out


def _text_chunks(head: dict[str, Any], choice: dict[str, Any], index: int) -> list[dict[str, Any]]:
    def chunk(text: str, logprobs: Any, finish: Any) -> dict[str, Any]:
        return {
            **head,
            "choices": [
                {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
            ],
        }

    return [
        chunk(choice.get("text", ""), choice.get("logprobs"), None),
        chunk("", None, choice.get("finish_reason")),
    ]

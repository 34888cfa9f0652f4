"""Stream translation machinery: a provider's stream bytes in, the client's SSE bytes
out, chunk by chunk (no buffering); the OpenAI chunk writer every provider stream
becomes; chaining two translators."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from edge_agent.api.sse import SSEParser, encode_event


class StreamTranslator:
    """Provider stream bytes in, client SSE bytes out, chunk by chunk (no buffering).

    Subclasses implement `_event` for SSE sources, or override `feed` for others.
    """

    def __init__(self) -> None:
        self._parser = SSEParser()
        self.usage: dict[str, Any] | None = None  # OpenAI-shaped, once the stream told it
        self.finished = False  # the stream reached its proper end

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        for event in self._parser.feed(chunk):
            out += self._event(event.event, event.data)
        return bytes(out)

    def finish(self) -> bytes:
        """Bytes owed at the end of the provider's stream (for schemas that end a stream
        by closing it rather than with a final event)."""
        return b""

    def _event(self, name: str | None, data: str) -> bytes:
        raise NotImplementedError


def event_object(data: str) -> dict[str, Any] | None:
    """An SSE event's JSON object; None for anything else (a "[DONE]" some look-alike
    servers add, a keep-alive, a malformed line: skipped, never a crash)."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


class ChatChunkWriter(StreamTranslator):
    """What every provider-stream → OpenAI translator writes: chat.completion.chunk events,
    then, at the proper end, the usage chunk (when the client asked for it) and [DONE]."""

    def __init__(
        self,
        model: str,
        include_usage: bool,
        now: Callable[[], float] = time.time,
        chunk_id: str = "chatcmpl-",
    ) -> None:
        super().__init__()
        self._model = model
        self._include_usage = include_usage
        self._created = int(now())
        self._id = chunk_id

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }
        return encode_event(orjson.dumps(body))

    def _end(self) -> bytes:
        """The stream's proper end: marks it finished (so it may be cached)."""
        self.finished = True
        out = b""
        if self._include_usage and self.usage is not None:
            body = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": self.usage,
            }
            out = encode_event(orjson.dumps(body))
        return out + encode_event("[DONE]")


def tool_call_start(index: int, call_id: Any, name: Any, arguments: str = "") -> dict[str, Any]:
    """The chunk delta that opens streamed tool call `index` (its id and name; the
    arguments, usually none yet, follow in `tool_call_arguments` deltas)."""
    call = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return {"tool_calls": [call]}


def tool_call_arguments(index: int, arguments: Any) -> dict[str, Any]:
    """The chunk delta that carries the next piece of streamed tool call `index`'s
    arguments."""
    return {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}


def completion(
    chunk_id: str,
    model: str,
    message: dict[str, Any],
    finish_reason: str | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """An OpenAI chat.completion with one choice (every provider answer ends as one)."""
    out: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
    }
    if usage is not None:
        out["usage"] = usage
    return out


class Chain(StreamTranslator):
    """Two translators in a row: provider → OpenAI chunks → the client's schema."""

    def __init__(self, first: StreamTranslator, second: StreamTranslator) -> None:
        super().__init__()
        self.first, self.second = first, second

    def feed(self, chunk: bytes) -> bytes:
        out = self.second.feed(self.first.feed(chunk))
        self._sync()
        return out

    def finish(self) -> bytes:
        out = self.second.feed(self.first.finish()) + self.second.finish()
        self._sync()
        return out

    def _sync(self) -> None:
        self.usage = self.first.usage  # OpenAI-shaped: the pivot's
        self.finished = self.second.finished

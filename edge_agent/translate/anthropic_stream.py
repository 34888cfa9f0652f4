"""OpenAI chat streams ⇄ Anthropic Messages streams, event by event."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from edge_agent.api.sse import encode_event
from edge_agent.translate.anthropic import (
    FINISH_FROM_ANTHROPIC,
    STOP_FROM_OPENAI,
    anthropic_usage,
    openai_usage,
)
from edge_agent.translate.common import str_or_empty
from edge_agent.translate.stream import (
    ChatChunkWriter,
    StreamTranslator,
    event_object,
    tool_call_arguments,
    tool_call_start,
)


class MessagesStreamToChat(ChatChunkWriter):
    """Anthropic Messages events → OpenAI chat.completion.chunk events."""

    def __init__(self, model: str, include_usage: bool, now: Callable[[], float] = time.time):
        super().__init__(model, include_usage, now)
        self._tool_index: dict[int, int] = {}  # Anthropic block index → OpenAI tool index
        self._input: dict[str, Any] = {}
        self._finish: str | None = None

    def _event(self, name: str | None, data: str) -> bytes:
        event = event_object(data)
        if event is None:
            return b""
        kind = event.get("type") or name
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = f"chatcmpl-{message.get('id', '')}"
            self._input = message.get("usage") or {}
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tool_index[event.get("index", 0)] = len(self._tool_index)
                return self._chunk(tool_call_start(index, block.get("id"), block.get("name")))
            if block.get("type") == "text" and block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if dtype == "input_json_delta":
                index = self._tool_index.get(event.get("index", 0), 0)
                return self._chunk(tool_call_arguments(index, delta.get("partial_json", "")))
            if dtype == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            return b""
        if kind == "message_delta":
            delta = event.get("delta") or {}
            self._finish = FINISH_FROM_ANTHROPIC.get(str_or_empty(delta.get("stop_reason")), "stop")
            usage = {**self._input, **(event.get("usage") or {})}
            self.usage = openai_usage(usage)
            return self._chunk({}, self._finish)
        if kind == "message_stop":
            return self._end()
        if kind == "error":
            error = event.get("error") or {}
            body = {
                "error": {
                    "message": error.get("message", "The provider's stream failed."),
                    "type": error.get("type", "api_error"),
                    "param": None,
                    "code": None,
                }
            }
            return encode_event(orjson.dumps(body))
        return b""  # ping and future event types


class ChatStreamToMessages(StreamTranslator):
    """OpenAI chat.completion.chunk events → Anthropic Messages events."""

    def __init__(self, model: str) -> None:
        super().__init__()
        self._model = model
        self._started = False
        self._block = -1  # index of the open Anthropic block, -1 when none
        self._block_kind: str | None = None
        self._tools: dict[int, int] = {}  # OpenAI tool index → Anthropic block index
        self._stop: str | None = None
        self._sent_stop = False

    @staticmethod
    def _ev(name: str, body: dict[str, Any]) -> bytes:
        return encode_event(orjson.dumps({"type": name, **body}), name)

    def _start(self, chunk_id: str) -> bytes:
        self._started = True
        message = {
            "id": chunk_id if chunk_id.startswith("msg_") else f"msg_{chunk_id}",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return self._ev("message_start", {"message": message})

    def _close_block(self) -> bytes:
        if self._block_kind is None:
            return b""
        self._block_kind = None
        return self._ev("content_block_stop", {"index": self._block})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block += 1
        self._block_kind = kind
        return out + self._ev("content_block_start", {"index": self._block, "content_block": block})

    def _event(self, name: str | None, data: str) -> bytes:
        if data.strip() == "[DONE]":
            return self._end()
        chunk = event_object(data)
        if chunk is None:
            return b""
        if isinstance(chunk.get("error"), dict):
            error = chunk["error"]
            body = {"error": {"type": "api_error", "message": str(error.get("message", ""))}}
            return self._ev("error", body)
        out = bytearray()
        if not self._started:
            out += self._start(str(chunk.get("id", "")))
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._block_kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += self._ev(
                    "content_block_delta",
                    {"index": self._block, "delta": {"type": "text_delta", "text": text}},
                )
            for call in delta.get("tool_calls") or []:
                index = call.get("index", 0)
                function = call.get("function") or {}
                if index not in self._tools:
                    block = {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    out += self._open("tool_use", block)
                    self._tools[index] = self._block
                args = function.get("arguments")
                if args:
                    if self._tools[index] != self._block:
                        # Anthropic blocks cannot interleave; OpenAI never sends it.
                        continue
                    out += self._ev(
                        "content_block_delta",
                        {
                            "index": self._block,
                            "delta": {"type": "input_json_delta", "partial_json": args},
                        },
                    )
            if choice.get("finish_reason"):
                self._stop = STOP_FROM_OPENAI.get(str_or_empty(choice["finish_reason"]), "end_turn")
        return bytes(out)

    def _end(self) -> bytes:
        if self._sent_stop:
            return b""
        self._sent_stop = True
        self.finished = True
        out = bytearray()
        if not self._started:
            out += self._start("")
        out += self._close_block()
        usage = anthropic_usage(self.usage)
        out += self._ev(
            "message_delta",
            {
                "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": None},
                "usage": {
                    "output_tokens": usage["output_tokens"],
                    "input_tokens": usage["input_tokens"],
                },
            },
        )
        out += self._ev("message_stop", {})
        return bytes(out)

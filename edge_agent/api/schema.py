"""The client's API schema, chosen once per request from its endpoint.

Everything that depends on which API the client speaks — parsing its requests, its error
envelope, reading usage from its answers, reassembling and replaying its streams,
deciding whether an answer is complete — is a method here, so the request path never
compares schema names. `OPENAI` serves chat completions, completions and embeddings;
`ANTHROPIC` the Messages API.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from edge_agent.api import anthropic, openai
from edge_agent.api.errors import ApiError
from edge_agent.api.openai import Endpoint, ParsedRequest
from edge_agent.api.sse import StreamAssembler, encode_event, replay_stream
from edge_agent.translate import anthropic as to_anthropic
from edge_agent.translate import anthropic_stream
from edge_agent.translate import common as translate_common
from edge_agent.translate import stream as translate_stream


class Assembler(Protocol):
    """Reassembles a streamed answer into the whole answer the cache stores."""

    def feed(self, chunk: bytes) -> None: ...

    def result(self) -> dict[str, Any] | None: ...


class ClientSchema:
    """OpenAI's API (the pivot every translation goes through)."""

    name = "openai"  # as provider adapters name the schema they speak

    def speaks(self, provider_schema: str) -> bool:
        """Whether a provider speaking `provider_schema` needs no translation."""
        return provider_schema == self.name

    def parse(self, endpoint: Endpoint, raw: bytes) -> ParsedRequest:
        return openai.parse_request(endpoint, raw)

    def error_body(self, exc: ApiError) -> bytes:
        return exc.body()

    def stream_error(self, exc: ApiError) -> bytes:
        """An error as the last event of a stream already under way."""
        return encode_event(self.error_body(exc))

    def usage(self, usage: object) -> object:
        """This schema's usage object, OpenAI-shaped (what the meters read)."""
        return usage

    def usage_of(self, body: bytes) -> object:
        """The OpenAI-shaped usage of a whole JSON answer in this schema, or None."""
        try:
            usage = orjson.loads(body).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return self.usage(usage)

    def assembler(self, endpoint: Endpoint) -> Assembler | None:
        if endpoint in (Endpoint.CHAT, Endpoint.COMPLETIONS):
            return StreamAssembler(endpoint)
        return None

    def is_complete(self, endpoint: Endpoint, answer: Any) -> bool:
        return openai.is_complete_response(endpoint, answer)

    def replay(self, req: ParsedRequest, answer: dict[str, Any]) -> bytes:
        """A stored whole answer as the stream the client asked for (ValueError: cannot)."""
        return replay_stream(req.endpoint, answer, req.include_usage)

    # ---- to and from OpenAI chat, the pivot of every translation ---------------------
    def to_chat(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return body

    def from_chat(self, chat: dict[str, Any], model: str) -> dict[str, Any]:
        return chat

    def from_chat_error(self, status: int, error: bytes) -> bytes:
        return error

    def from_chat_stream(
        self, to_chat: translate_stream.StreamTranslator | None, model: str
    ) -> translate_stream.StreamTranslator:
        """The client's stream from a chat stream (`to_chat`, None: the provider's own
        stream is chat already)."""
        assert to_chat is not None, "an OpenAI client of an OpenAI provider needs no translator"
        return to_chat

    needs_usage_chunk = False  # its stream needs the chat stream's usage chunk

    def provider_error(self, status: int, body: bytes) -> bytes | None:
        """A provider's error answer in this schema (status unchanged); None when it
        already is. Plain text, an HTML page or a framework's {"detail": ...} would
        break the client's SDK."""
        if _has_error_envelope(body):
            return None
        message = translate_common.error_message(body)
        kind = "api_error" if status >= 500 else "invalid_request_error"
        return translate_common.openai_error(message, kind, "upstream_error")


class AnthropicSchema(ClientSchema):
    """Anthropic's Messages API."""

    name = "anthropic"

    def parse(self, endpoint: Endpoint, raw: bytes) -> ParsedRequest:
        return anthropic.parse_request(raw)

    def error_body(self, exc: ApiError) -> bytes:
        return anthropic.error_body(exc)

    def stream_error(self, exc: ApiError) -> bytes:
        return encode_event(self.error_body(exc), "error")

    def usage(self, usage: object) -> object:
        return to_anthropic.openai_usage(usage) if isinstance(usage, dict) else usage

    def assembler(self, endpoint: Endpoint) -> Assembler | None:
        return anthropic.MessagesAssembler()

    def is_complete(self, endpoint: Endpoint, answer: Any) -> bool:
        return anthropic.is_complete_message(answer)

    def replay(self, req: ParsedRequest, answer: dict[str, Any]) -> bytes:
        return anthropic.replay_stream(answer)

    def to_chat(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        return to_anthropic.messages_to_chat(body, model)

    def from_chat(self, chat: dict[str, Any], model: str) -> dict[str, Any]:
        return to_anthropic.completion_to_message(chat, model)

    def from_chat_error(self, status: int, error: bytes) -> bytes:
        return to_anthropic.error_to_anthropic(status, error)

    def from_chat_stream(
        self, to_chat: translate_stream.StreamTranslator | None, model: str
    ) -> translate_stream.StreamTranslator:
        to_messages = anthropic_stream.ChatStreamToMessages(model)
        return to_messages if to_chat is None else translate_stream.Chain(to_chat, to_messages)

    needs_usage_chunk = True  # message_delta carries the output tokens

    def provider_error(self, status: int, body: bytes) -> bytes | None:
        if _has_error_envelope(body, anthropic=True):
            return None
        return to_anthropic.error_to_anthropic(status, body)


def _has_error_envelope(body: bytes, *, anthropic: bool = False) -> bool:
    # {"error": {"message": ...}}; Anthropic's adds "type": "error". OpenAI SDKs read
    # Anthropic's envelope too.
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(parsed, dict):
        return False
    error = parsed.get("error")
    if not (isinstance(error, dict) and isinstance(error.get("message"), str)):
        return False
    return not anthropic or parsed.get("type") == "error"


OPENAI = ClientSchema()
ANTHROPIC = AnthropicSchema()


def schema_for(endpoint: Endpoint) -> ClientSchema:
    return ANTHROPIC if endpoint is Endpoint.MESSAGES else OPENAI

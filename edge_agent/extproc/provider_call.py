"""The provider side of one request attempt, sans-IO.

A `ProviderCall` knows one target: it turns the client's request into what that provider
takes (path, credentials, body in the provider's schema) and the provider's answer back
into the client's schema (whole bodies, errors, SSE chunk by chunk), and meters the
usage it reads. The downstream `Exchange` uses one when it routes a request to a single
target itself; the upstream `Attempt` (attempt.py) uses one per failover attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import orjson

from edge_agent.api import errors
from edge_agent.api.errors import TOO_DEEP, ApiError
from edge_agent.api.openai import Endpoint, ParsedRequest
from edge_agent.api.schema import schema_for
from edge_agent.extproc.decisions import EVENT_STREAM, JSON
from edge_agent.identity.settings import DEFAULT_TENANT
from edge_agent.providers.headers import CLIENT_ONLY_HEADERS
from edge_agent.routing.health import parse_retry_after
from edge_agent.translate import stream as translate_stream

if TYPE_CHECKING:
    from edge_agent.agent import Agent
    from edge_agent.routing.router import Target

log = logging.getLogger("edge_agent.extproc.provider_call")

PROVIDER_HEADER = "x-edge-agent-provider"  # who answered: provider name...
MODEL_HEADER = "x-edge-agent-model"  # ...and the provider's model
# Set by the upstream filter when it counted the answer's usage itself (stripped downstream).
METERED_HEADER = "x-edge-agent-metered"
# Every header some provider's credentials use: reset on each attempt, so a retry never
# carries the previous provider's key (Envoy keeps upstream header changes across tries).
CREDENTIAL_HEADERS = (*CLIENT_ONLY_HEADERS, "x-envoy-original-host")


class ProviderCall:
    __slots__ = (
        "_stream_settled",
        "agent",
        "endpoint",
        "failed",
        "foreign_error",
        "label",
        "request",
        "schema",
        "stream_out",
        "target",
        "tenant",
        "translate_body",
        "translating",
        "used",
    )

    def __init__(
        self,
        agent: Agent,
        target: Target,
        request: ParsedRequest,
        label: str,
        tenant: str = DEFAULT_TENANT,
    ) -> None:
        self.agent = agent
        self.target = target
        self.request = request
        self.endpoint = request.endpoint
        self.schema = schema_for(request.endpoint)  # the client's
        self.label = label  # the client-facing model (metric label)
        self.tenant = tenant  # the caller's tenant (metric label, bounded)
        self.used: tuple[int, int, float] | None = None  # what the answer's usage said
        # The provider speaks another schema than the client: every answer is translated,
        # through the OpenAI chat format (the pivot) when neither side speaks it.
        self.translating = False
        self.translate_body = False  # a whole answer (JSON or error) to translate
        self.stream_out: translate_stream.StreamTranslator | None = None
        self.failed = False  # the answer could not be translated: the client got an error
        # An error answer in the client's own schema, read to check it really is.
        self.foreign_error = False
        self._stream_settled = False  # a translated stream's end (or break) was counted

    # ---- request -----------------------------------------------------------------------
    def request_changes(self, query: str, raw: bytes) -> tuple[list[tuple[str, str]], bytes | None]:
        """(headers to set, new body or None): path, credentials and the provider's body."""
        req, target = self.request, self.target
        adapter = target.adapter
        endpoint = self.endpoint
        try:
            if self.schema.speaks(adapter.schema):
                body = (
                    orjson.dumps({**req.body, "model": target.model})
                    if target.model != req.model
                    else None
                )
            elif endpoint in (Endpoint.CHAT, Endpoint.MESSAGES):
                chat = self.schema.to_chat(req.body, target.model)
                if adapter.codec is None:
                    body = orjson.dumps({**chat, "model": target.model})
                else:
                    body = orjson.dumps(adapter.codec.request_from_chat(chat, target.model))
                endpoint, self.translating = Endpoint.CHAT, True
            else:
                raise errors.invalid_request(
                    f"Model '{req.model}' is served by provider '{target.provider.name}' "
                    f"(type {target.provider.type}), which has no counterpart of "
                    f"/v1/{self.endpoint.value.replace('.', '/')}. Use a model served by a "
                    "provider that has one.",
                    code="unsupported_endpoint",
                )
        except orjson.JSONEncodeError as exc:
            if "recursion" in str(exc).lower():
                # orjson reads 1024 nesting levels but writes only 254.
                raise TOO_DEEP from None
            raise self._malformed(exc) from None
        except (TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
            # Shallow validation let through a field of the wrong shape (a string where
            # the API wants an object, ...): refuse it, never fail the request with a 500.
            raise self._malformed(exc) from None
        path = adapter.upstream_path(endpoint, target.model, query, req.stream)
        headers = [
            (":path", path),
            *adapter.auth_headers(target.api_key, path=path, body=raw if body is None else body),
        ]
        if self.translating:
            headers.append(("accept-encoding", "identity"))  # compressed: untranslatable
        return headers, body

    def _malformed(self, exc: Exception) -> ApiError:
        log.info("cannot translate a request for %s: %r", self.target.key, exc)
        return errors.invalid_request(
            f"The request cannot be translated for provider '{self.target.provider.name}' "
            f"(type {self.target.provider.type}): a field has the wrong shape ({exc}). "
            "Check the request against the API reference.",
            code="malformed_request",
        )

    # ---- answer ------------------------------------------------------------------------
    def response_headers(
        self, status: str, headers: Mapping[str, str]
    ) -> tuple[list[tuple[str, str]], list[str], bool | None]:
        """(set, remove, body wanted: None = no, False = whole body, True = streamed)."""
        target = self.target
        set_headers = [(PROVIDER_HEADER, target.provider.name), (MODEL_HEADER, target.model)]
        remove: list[str] = []
        want: bool | None = None
        identity = headers.get("content-encoding", "identity").lower() == "identity"
        if self.translating and identity:
            content_type = headers.get("content-type", "")
            if status == "200" and self.request.stream and not content_type.startswith(JSON):
                self.stream_out = self._stream_translator()
                remove.append("content-length")  # the length changes
                set_headers.append(("content-type", EVENT_STREAM))
                want = True
            else:
                self.translate_body = True  # answers and errors alike
                want = False
        elif identity and status.isascii() and status.isdigit() and int(status) >= 400:
            # Errors are small; a plain-text or HTML one is put in the client's schema.
            self.foreign_error = True
            want = False
        return set_headers, remove, want

    def body_headers(self) -> list[tuple[str, str]]:
        """Headers for a whole body this call replaced (they are still held by Envoy)."""
        if self.failed:
            return [(":status", "502"), ("content-type", JSON)]
        return [("content-type", JSON)]

    def answered(self, status: str, headers: Mapping[str, str], elapsed: float) -> bool:
        """The provider's answer arrived `elapsed` s after it was sent: its latency and
        its target's health. True when it counts as the target's failure."""
        self.agent.metrics.upstream_seconds.labels(self.target.provider.name).observe(elapsed)
        return report_outcome(self.target, status, headers, elapsed, self.request.stream)

    def abandon(self) -> None:
        """The exchange ended before a translated stream did (the client left, or Envoy
        reset the stream after an error event): that stream is broken."""
        if self.stream_out is not None and not self._stream_settled:
            self._stream_settled = True
            if not self.stream_out.finished:
                self.agent.metrics.broken_streams.labels(self.target.key).inc()

    def _stream_translator(self) -> translate_stream.StreamTranslator:
        model = self.target.model
        codec = self.target.adapter.codec
        include_usage = self.schema.needs_usage_chunk or self.request.include_usage
        to_chat = codec.stream_to_chat(model, include_usage) if codec is not None else None
        return self.schema.from_chat_stream(to_chat, model)

    def response_body(self, chunk: bytes, end_of_stream: bool, status: str) -> bytes | None:
        """The chunk as the client must see it (None: unchanged)."""
        if self.stream_out is not None:
            if self.failed:
                return b""  # the stream already ended with an error event
            try:
                out = self.stream_out.feed(chunk)
                if end_of_stream:
                    out += self.stream_out.finish()
            except Exception as exc:  # a provider's malformed stream must not crash us
                log.warning(
                    "provider %s sent a stream the agent cannot translate: %r", self.target.key, exc
                )
                self.failed = True
                out = self.schema.stream_error(self._untranslatable())
            if (end_of_stream or self.failed) and not self._stream_settled:
                self._stream_settled = True
                self.count_usage(self.stream_out.usage if not self.failed else None)
                if self.failed or not self.stream_out.finished:
                    self.agent.metrics.broken_streams.labels(self.target.key).inc()
            return out
        if self.foreign_error:
            if not end_of_stream:
                return b""  # buffered: one message; a partial one is held back to the end
            code = int(status) if status.isascii() and status.isdigit() else 502
            return self.schema.provider_error(code, chunk)
        if self.translate_body:
            try:
                return self._translate_whole(chunk, status)
            except Exception as exc:  # a provider's malformed answer must not crash us
                log.warning(
                    "provider %s sent an answer the agent cannot translate: %r",
                    self.target.key,
                    exc,
                )
                self.failed = True
                return self.schema.error_body(self._untranslatable())
        return None

    def _untranslatable(self) -> ApiError:
        return ApiError(
            502,
            f"The provider '{self.target.provider.name}' sent an answer the gateway cannot "
            "translate to this API; retry, or use another model.",
            type="api_error",
            code="bad_provider_answer",
        )

    def _translate_whole(self, body: bytes, status: str) -> bytes:
        codec = self.target.adapter.codec
        if status != "200":
            code = int(status) if status.isascii() and status.isdigit() else 502
            error = codec.error_to_chat(code, body) if codec is not None else body
            return self.schema.from_chat_error(code, error)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            log.warning("provider %s sent a 200 answer that is not JSON", self.target.provider.name)
            return body
        if not isinstance(parsed, dict):
            return body
        model = self.target.model
        chat = codec.response_to_chat(parsed, model) if codec is not None else parsed
        self.count_usage(chat.get("usage"))
        return orjson.dumps(self.schema.from_chat(chat, model))

    def count_usage(self, usage: object) -> tuple[int, int, float] | None:
        """Tokens and cost of one provider answer, from its OpenAI-shaped usage; kept in
        `used` (input tokens, output tokens, USD) for the limits' settlement."""
        m = self.agent.metrics
        target = self.target
        provider = target.provider.name
        tokens = tokens_of(usage)
        if tokens is None:
            m.usage_missing.labels(self.label, provider).inc()
            return None
        m.tokens.labels(self.label, provider, "input", self.tenant).inc(tokens[0])
        m.tokens.labels(self.label, provider, "output", self.tenant).inc(tokens[1])
        price = target.provider.model(target.model)
        cost = price.cost_usd(*tokens) if price is not None else 0.0
        self.used = (tokens[0], tokens[1], cost)
        if price is None or not price.priced:
            m.usage_unpriced.labels(self.label, provider).inc()
        else:
            m.cost.labels(self.label, provider, self.tenant).inc(cost)
        return self.used


# Answers that say the target itself is broken (a revoked key, a wrong model or
# deployment name), unlike other 4xx, which are about the request.
TARGET_FAULTS = frozenset({401, 403, 404})


def report_outcome(
    target: Target, status: str, headers: Mapping[str, str], elapsed: float, streamed: bool
) -> bool:
    """Feed a provider's answer to its target's health; True when it counts as a failure."""
    code = int(status) if status.isascii() and status.isdigit() else 0
    if code == 429 or code >= 500 or code in TARGET_FAULTS:
        retry_after = parse_retry_after(headers.get("retry-after"), time.time())
        target.health.on_failure("rate_limited" if code == 429 else "status", code, retry_after)
        return True
    # For a stream the headers come with its first token: that time is its TTFT.
    target.health.on_success(elapsed, elapsed if streamed else None)
    return False


def tokens_of(usage: object) -> tuple[int, int] | None:
    """(input, output) from an OpenAI-shaped usage object; None when absent or malformed."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
    if type(prompt) is not int or type(completion) is not int or prompt < 0 or completion < 0:
        return None
    return prompt, completion

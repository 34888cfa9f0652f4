"""Cache keys and the rules for what must not be cached.

Key = tenant + endpoint + client-facing model + the normalized request minus the fields
that do not change the answer + what else the agent forwards that can change it (the
query string, and headers such as `anthropic-beta`: see `VARY_HEADERS` and
docs/operations.md). The client-facing model (not the target it was routed to) is used: a
model alias declares its targets equivalent, so a repeat is a hit whichever target
answered first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from edge_agent.api.openai import Endpoint, ParsedRequest

# Fields that change how the answer is delivered or billed, not what it says.
_NEUTRAL_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})

BYPASS_HEADER = "x-edge-agent-cache"  # request header value "bypass" skips the cache

# Forwarded request headers that switch a provider's behaviour (beta features: longer
# outputs, other tool versions, ...). Config `cache.vary_headers` adds more. Every other
# forwarded header is transport, tracing or SDK telemetry (docs/operations.md lists them).
VARY_HEADERS = ("anthropic-beta", "openai-beta")


def request_variant(query: str, headers: Mapping[str, str], names: Iterable[str]) -> list[str]:
    """What besides the body reaches the provider and can change its answer.

    The raw query string (the agent forwards it as sent; reordering its parameters is not
    assumed harmless) and each of `names` the client sent, as name=value. Empty for the
    common request, whose key then stays what it was before variants existed.
    """
    out = [f"?{query}"] if query else []
    for name in names:
        value = headers.get(name)
        if value is not None:
            out.append(f"{name}={value.strip()}")
    return out


def _normalize_content(content: Any) -> Any:
    # [{"type": "text", "text": "hi"}] and "hi" say the same thing. Only a single part:
    # joining several would make ["foo", "bar"] collide with "foobar".
    if isinstance(content, list) and len(content) == 1:
        part = content[0]
        if (
            isinstance(part, dict)
            and len(part) == 2
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ):
            return part["text"]
    return content


def _normalize_messages(messages: list[Any]) -> list[Any]:
    out = []
    for m in messages:
        if isinstance(m, dict) and "content" in m:
            content = _normalize_content(m["content"])
            if content is not m["content"]:
                m = {**m, "content": content}
        out.append(m)
    return out


def cache_key(tenant: str, req: ParsedRequest, variant: list[str] | None = None) -> str:
    """The exact tier's key; `variant` from `request_variant`."""
    fields = {k: v for k, v in req.body.items() if k not in _NEUTRAL_FIELDS}
    if req.endpoint in (Endpoint.CHAT, Endpoint.MESSAGES):
        fields["messages"] = _normalize_messages(fields["messages"])
    parts: list[Any] = [tenant, str(req.endpoint), fields]
    if variant:
        parts.append(variant)
    material = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(material).hexdigest()


@dataclass(frozen=True, slots=True)
class CachePolicy:
    lookup: bool  # may the answer come from the cache?
    store: bool  # may the provider's answer be stored?
    reason: str | None = None  # why not, when either is False


CACHEABLE = CachePolicy(lookup=True, store=True)


def cache_policy(
    req: ParsedRequest, headers: Mapping[str, str], *, allow_nonzero_temperature: bool
) -> CachePolicy:
    """What the cache may do for this request (HTTP cache-control semantics apply)."""
    if headers.get(BYPASS_HEADER, "").strip().lower() == "bypass":
        return CachePolicy(False, False, "bypass header")
    if req.n > 1:
        return CachePolicy(False, False, "n > 1")
    if req.temperature and not allow_nonzero_temperature:
        return CachePolicy(False, False, "temperature > 0")
    cache_control = headers.get("cache-control", "").lower()
    if "no-store" in cache_control:
        return CachePolicy(False, False, "cache-control: no-store")
    if "no-cache" in cache_control:
        # no-cache asks for a fresh answer; that answer may still refresh the cache.
        return CachePolicy(False, True, "cache-control: no-cache")
    return CACHEABLE


_INSTRUCTION_ROLES = frozenset({"system", "developer"})


def _user_text(message: Any) -> str | None:
    """The text of a user turn, or None when it is not plain text (images, audio...)."""
    if not isinstance(message, dict) or message.get("role") != "user":
        return None
    content = _normalize_content(message.get("content"))
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return "\n".join(p["text"] for p in content)
    return None


def semantic_scope(
    tenant: str,
    req: ParsedRequest,
    *,
    history: str = "partition",
    max_chars: int = 800,
    variant: list[str] | None = None,
) -> tuple[str, str] | None:
    """(partition, text to embed) for a request the semantic tier may serve, else None.

    The last user turn is what gets compared; everything else that shapes the answer
    (model, instructions, tools, parameters and, with history="partition", the earlier
    turns) must be identical, so it goes into the partition hash.
    """
    if req.endpoint not in (Endpoint.CHAT, Endpoint.MESSAGES):
        return None
    messages = req.body["messages"]
    text = _user_text(messages[-1])
    if not text or not text.strip() or len(text) > max_chars:
        return None
    earlier = _normalize_messages(messages[:-1])
    if history != "partition":
        earlier = [
            m for m in earlier if isinstance(m, dict) and m.get("role") in _INSTRUCTION_ROLES
        ]
    fields = {k: v for k, v in req.body.items() if k not in _NEUTRAL_FIELDS and k != "messages"}
    parts: list[Any] = [tenant, str(req.endpoint), fields, earlier]
    if variant:
        parts.append(variant)
    material = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(material).hexdigest(), text

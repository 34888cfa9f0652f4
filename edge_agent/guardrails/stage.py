"""Stage: the built-in guardrails on the request, after parsing and before every cache.

Deny rules refuse a prompt that matches them. PII is looked for in every text the client
sent (message contents, system prompts, completions' prompts, embeddings' inputs, tool
arguments and results); `redact` replaces each finding with its type in the body itself,
which is then what the caches key on and what every provider (failover attempts
included) receives, so a cached answer never carries one caller's data to another;
`block` refuses with the types found. Only types and counts are reported, never values.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from edge_agent.api.errors import ApiError
from edge_agent.guardrails.pii import Detector, redact
from edge_agent.guardrails.settings import GuardrailsConfig

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange

# Structure, not text a person wrote: never scanned (and base64 image data would only
# cost time and find look-alikes).
_NOT_TEXT = frozenset(
    {
        "model",
        "role",
        "type",
        "id",
        "tool_call_id",
        "tool_use_id",
        "object",
        "url",
        "data",
        "media_type",
        "encoding_format",
        "detail",
    }
)


class Guardrails:
    """The compiled guardrails of the config (one per agent process)."""

    def __init__(self, config: GuardrailsConfig) -> None:
        pii = config.pii
        self.action = pii.action
        self.detector = Detector(pii.entities, pii.phone_region) if pii.action != "off" else None
        self.deny = [(rule.name, re.compile(rule.regex)) for rule in config.deny]


def _texts(node: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every string in the body that is text, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _NOT_TEXT:
                continue
            if isinstance(value, str):
                yield node, key
            else:
                yield from _texts(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, str):
                yield node, i
            else:
                yield from _texts(value)


def check(ex: Exchange) -> None:
    guardrails = ex.agent.guardrails
    req = ex.request
    assert guardrails is not None and req is not None and ex.endpoint is not None
    metrics = ex.agent.metrics
    places = list(_texts(req.body))
    for name, pattern in guardrails.deny:
        if any(pattern.search(container[key]) for container, key in places):
            metrics.guardrail_refusals.labels("deny", name, ex.tenant_label).inc()
            raise ApiError(
                400,
                f"The request was refused by the gateway's policy (rule '{name}'). "
                "Remove what the rule forbids and retry, or ask the gateway's operator.",
                code="denied_by_policy",
            )
    detector = guardrails.detector
    if detector is None:
        return None
    counts: Counter[str] = Counter()
    body = req.body if guardrails.action == "block" else None
    for container, key in places:
        text = container[key]
        findings = detector.find(text)
        if not findings:
            continue
        counts.update(f.entity for f in findings)
        if guardrails.action == "redact":
            container[key] = redact(text, findings)
    if not counts:
        return None
    ex.findings = dict(counts)
    for entity, n in counts.items():
        metrics.guardrail_findings.labels(
            entity, "request", guardrails.action, ex.tenant_label
        ).inc(n)
    if body is not None:  # block
        metrics.guardrail_refusals.labels("pii", "-", ex.tenant_label).inc()
        found = ", ".join(f"{entity} ({n})" for entity, n in sorted(counts.items()))
        raise ApiError(
            400,
            f"The request contains personal data this gateway does not send to model "
            f"providers: {found}. Remove it and retry.",
            code="pii_detected",
        )
    # Redacted in place: the body every later stage, cache and provider sees.
    ex.raw = orjson.dumps(req.body)
    ex.request = ex.schema.parse(ex.endpoint, ex.raw)
    ex.body_changed = True
    return None

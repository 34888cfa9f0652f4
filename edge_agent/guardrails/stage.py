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
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from edge_agent.api.errors import ApiError
from edge_agent.guardrails.external import CheckerClient, ExternalCheck, Verdict
from edge_agent.guardrails.pii import Detector, redact
from edge_agent.guardrails.settings import GuardrailsConfig
from edge_agent.pipeline.effects import Effect

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
        self.external = config.external
        self.checker = CheckerClient(config.external) if config.external is not None else None


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


def check(ex: Exchange) -> Generator[Effect, Any, None]:
    agent = ex.agent
    tenant = ex.caller.tenant
    # A tenant's own block (present, even when off) replaces the global one.
    guardrails = agent.tenant_guardrails.get(tenant, agent.guardrails)
    if guardrails is None:  # this tenant's own block turns them off
        return None
    req = ex.request
    assert req is not None and ex.endpoint is not None
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
    changed = False
    if guardrails.checker is not None and places:
        changed = yield from _external(ex, guardrails, places)
    detector = guardrails.detector
    if detector is None:
        if changed:
            _rewrite(ex)
        return None
    counts: Counter[str] = Counter()
    for container, key in places:
        text = container[key]
        findings = detector.find(text)
        if not findings:
            continue
        counts.update(f.entity for f in findings)
        if guardrails.action == "redact":
            container[key] = redact(text, findings)
    if not counts:
        if changed:
            _rewrite(ex)
        return None
    ex.findings = dict(counts)
    for entity, n in counts.items():
        metrics.guardrail_findings.labels(
            entity, "request", guardrails.action, ex.tenant_label
        ).inc(n)
    if guardrails.action == "block":
        metrics.guardrail_refusals.labels("pii", "-", ex.tenant_label).inc()
        found = ", ".join(f"{entity} ({n})" for entity, n in sorted(counts.items()))
        raise ApiError(
            400,
            f"The request contains personal data this gateway does not send to model "
            f"providers: {found}. Remove it and retry.",
            code="pii_detected",
        )
    _rewrite(ex)
    return None


def _rewrite(ex: Exchange) -> None:
    """Redacted in place: the body every later stage, cache and provider sees."""
    req = ex.request
    assert req is not None and ex.endpoint is not None
    ex.raw = orjson.dumps(req.body)
    ex.request = ex.schema.parse(ex.endpoint, ex.raw)
    ex.body_changed = True


def _external(
    ex: Exchange, guardrails: Guardrails, places: list[tuple[Any, Any]]
) -> Generator[Effect, Any, bool]:
    """The operator's checker on every text; True when it replaced some."""
    assert guardrails.external is not None
    metrics = ex.agent.metrics
    assert guardrails.checker is not None
    verdicts: list[Verdict] = yield ExternalCheck(
        tuple(container[key] for container, key in places), ex.caller.tenant, guardrails.checker
    )
    if any(v.action == "error" for v in verdicts):
        if guardrails.external.on_error == "open":
            metrics.guardrail_refusals.labels("checker_down_open", "-", ex.tenant_label).inc()
            return False
        metrics.guardrail_refusals.labels("checker_down", "-", ex.tenant_label).inc()
        raise ApiError(
            503,
            "The gateway's content checker did not answer in time, and requests are not "
            "sent unchecked. Retry later.",
            type="api_error",
            code="guardrail_unavailable",
        )
    blocked = next((v for v in verdicts if v.action == "block"), None)
    if blocked is not None:
        metrics.guardrail_refusals.labels("external", "-", ex.tenant_label).inc()
        why = f": {blocked.reason}" if blocked.reason else ""
        raise ApiError(
            400,
            f"The request was refused by the gateway's content checker{why}.",
            code="blocked_by_guardrail",
        )
    changed = False
    for (container, key), verdict in zip(places, verdicts, strict=True):
        if verdict.action == "redact" and verdict.text is not None:
            container[key] = verdict.text
            changed = True
    return changed

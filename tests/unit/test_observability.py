"""Observability without Envoy: the request record, spans (in-memory exporter), the log
formats, the tracing settings' environment fallbacks, the bounded export queue, and the
Envoy access-log/tracer config."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.envoy import telemetry as envoy_telemetry
from edge_agent.envoy.bootstrap import build_bootstrap
from edge_agent.extproc.decisions import BodyMode, Continue, Respond
from edge_agent.extproc.exchange import Exchange
from edge_agent.telemetry import logs
from edge_agent.telemetry.observe import requests_log
from edge_agent.telemetry.settings import TracingConfig
from edge_agent.telemetry.tracing import Tracing

ENV = {"KEY_A": "sk-a-provider-secret"}
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_agent(exporter: SpanExporter | None = None, **extra: Any) -> Agent:
    config = parse_config(
        {
            "providers": [
                {
                    "name": "a",
                    "type": "anthropic",
                    "base_url": "http://127.0.0.1:1",
                    "api_key_env": "KEY_A",
                    "models": [{"name": "claude-x", "input_per_mtok": 1, "output_per_mtok": 1}],
                },
            ],
            "models": [{"name": "m", "targets": ["a/claude-x"]}],
            "cache": {"semantic": {"enabled": False}},
            "telemetry": {"tracing": {"enabled": exporter is not None}},
            **extra,
        }
    )
    agent = Agent(config, environ=ENV)
    if exporter is not None:
        assert agent.observer is not None
        agent.observer.tracing = Tracing(
            config.telemetry.tracing, {}, agent.metrics, exporter=exporter
        )
    return agent


def request(agent: Agent, body: dict[str, Any], parent: str | None = PARENT) -> Exchange:
    ex = Exchange(agent, parent)
    headers = {
        ":method": "POST",
        ":path": "/v1/chat/completions",
        "content-type": "application/json",
        "x-request-id": "req-1",
        "authorization": "Bearer sk-client-secret",
    }
    assert isinstance(ex.request_headers(headers, False), Continue)
    ex.request_body(orjson.dumps(body))
    return ex


def anthropic_answer(text: str) -> bytes:
    return orjson.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-x-2026",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 11, "output_tokens": 7},
        }
    )


def spans_by_name(exporter: InMemorySpanExporter, agent: Agent) -> dict[str, ReadableSpan]:
    assert agent.observer is not None and agent.observer.tracing is not None
    agent.observer.tracing.force_flush()
    return {s.name: s for s in exporter.get_finished_spans()}


def test_a_translated_answer_makes_genai_spans_with_the_providers_usage() -> None:
    exporter = InMemorySpanExporter()
    agent = make_agent(exporter)
    ex = request(agent, {"model": "m", "messages": [{"role": "user", "content": "otters"}]})
    body = anthropic_answer("sea otters hold hands")
    decision = ex.response_headers(
        {":status": "200", "content-type": "application/json", "content-length": str(len(body))}
    )
    assert decision.response_body_mode is BodyMode.BUFFERED
    ex.response_body(body, True)
    ex.close()
    spans = spans_by_name(exporter, agent)
    root, call = spans["chat m"], spans["chat claude-x"]
    assert f"{root.context.trace_id:032x}" == PARENT.split("-")[1]
    assert root.parent is not None and f"{root.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert call.parent is not None and call.parent.span_id == root.context.span_id
    attrs = dict(root.attributes or {})
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.usage.input_tokens"] == 11
    assert attrs["gen_ai.usage.output_tokens"] == 7
    # The answer in the client's schema (translated to OpenAI chat): its facts.
    assert list(attrs["gen_ai.response.finish_reasons"]) == ["stop"]
    assert dict(call.attributes or {})["gen_ai.request.model"] == "claude-x"
    everything = json.dumps([dict(s.attributes or {}) for s in spans.values()])
    assert "otters" not in everything and "sk-" not in everything


def test_capture_content_records_prompt_and_answer_text() -> None:
    exporter = InMemorySpanExporter()
    agent = make_agent(exporter, telemetry={"tracing": {"enabled": True, "capture_content": True}})
    ex = request(agent, {"model": "m", "messages": [{"role": "user", "content": "otters"}]})
    body = anthropic_answer("sea otters hold hands")
    ex.response_headers(
        {":status": "200", "content-type": "application/json", "content-length": str(len(body))}
    )
    ex.response_body(body, True)
    ex.close()
    attrs = dict(spans_by_name(exporter, agent)["chat m"].attributes or {})
    assert "otters" in attrs["gen_ai.input.messages"]
    assert attrs["gen_ai.output.messages"] == "sea otters hold hands"


def test_an_unsampled_parent_costs_no_trail() -> None:
    exporter = InMemorySpanExporter()
    agent = make_agent(exporter)
    unsampled = PARENT[:-2] + "00"
    ex = request(agent, {"model": "m", "messages": [{"role": "user", "content": "x"}]}, unsampled)
    assert ex.trace is None
    ex.close()
    assert spans_by_name(exporter, agent) == {}


def test_refusals_are_logged_with_their_reason_and_never_the_prompt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = make_agent()
    with caplog.at_level(logging.INFO, logger=requests_log.name):
        ex = request(agent, {"model": "nope", "messages": [{"role": "user", "content": "otters"}]})
        ex.close()
    [record] = [r for r in caplog.records if r.name == requests_log.name]
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["status"] == "404" and fields["refusal"] == "model_not_found"
    assert fields["request_id"] == "req-1" and fields["tenant"] == "default"
    assert "provider" not in fields and "input_tokens" not in fields
    line = logs.JsonFormatter().format(record)
    assert json.loads(line)["refusal"] == "model_not_found"
    assert "otters" not in line and "sk-" not in line


def test_no_signal_configured_means_no_observer() -> None:
    agent = make_agent(telemetry={"request_log": False})
    assert agent.observer is None


def test_json_and_text_formats() -> None:
    record = logging.LogRecord(
        "edge_agent.x", logging.WARNING, "f.py", 1, "hello %s", ("you",), None
    )
    record.fields = {"model": "m", "latency_ms": 1.5, "tenant": "team a"}  # type: ignore[attr-defined]
    out = json.loads(logs.JsonFormatter(worker=2).format(record))
    assert out["message"] == "hello you" and out["level"] == "warning"
    assert out["worker"] == 2 and out["model"] == "m" and out["latency_ms"] == 1.5
    assert out["time"].endswith("Z")
    text = logs.TextFormatter().format(record)
    assert text.endswith('hello you model=m latency_ms=1.5 tenant="team a"')


def test_tracing_settings_follow_the_otel_environment() -> None:
    cfg = TracingConfig(enabled=True)
    r = cfg.resolved({})
    assert (r.endpoint, r.protocol, r.service_name) == (
        "http://127.0.0.1:4317",
        "grpc",
        "llm-edge-agent",
    )
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector:4318/",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": "gw",
    }
    r = cfg.resolved(env)
    assert (r.endpoint, r.protocol, r.service_name, r.tls) == (
        "https://collector:4318/v1/traces",
        "http/protobuf",
        "gw",
        True,
    )
    # The signal-specific variable is taken as is; the config wins over both.
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://traces:9999/custom"
    assert cfg.resolved(env).endpoint == "http://traces:9999/custom"
    mine = TracingConfig(enabled=True, endpoint="http://mine:4317", protocol="grpc")
    assert mine.resolved(env).endpoint == "http://mine:4317"
    with pytest.raises(ValueError, match="not supported"):
        cfg.resolved({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


class _Stuck(SpanExporter):
    """An exporter that blocks until released: the collector is slow."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.got = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        self.got += len(spans)
        return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.release.set()


def test_a_full_export_queue_drops_and_counts_never_blocks() -> None:
    stuck = _Stuck()
    agent = make_agent()
    config = TracingConfig(enabled=True, max_queue=64)
    tracing = Tracing(config, {}, agent.metrics, exporter=stuck)
    for i in range(500):
        span = tracing.start(f"s{i}", None, 0)
        assert span is not None  # sample_ratio 1
        span.end()
    stuck.release.set()
    tracing.shutdown()

    def count(outcome: str) -> float:
        value = agent.metrics.registry.get_sample_value(
            "edge_agent_trace_spans_total", {"outcome": outcome}
        )
        return value or 0.0

    # Taken: at most a queue (64) waiting and one batch (64) in the stuck export.
    assert count("dropped") >= 500 - 2 * 64
    assert count("dropped") + count("export_failed") == 500
    assert count("export_failed") == stuck.got


def test_bootstrap_access_log_and_tracer() -> None:
    base = {
        "providers": [{"name": "a", "type": "openai", "base_url": "http://127.0.0.1:1"}],
        "models": [{"name": "m", "targets": ["a/x"]}],
    }
    off = build_bootstrap(parse_config(base), {})
    hcm = off["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    assert "access_log" not in hcm["typed_config"] and "tracing" not in hcm["typed_config"]
    on = parse_config(
        {
            **base,
            "envoy": {"access_log": {"enabled": True}},
            "telemetry": {"tracing": {"enabled": True, "endpoint": "https://otel.example:4317"}},
        }
    )
    boot = build_bootstrap(on, {})
    typed = boot["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    [log] = typed["access_log"]
    assert log["name"] == "envoy.access_loggers.stdout"
    fmt = log["typed_config"]["log_format"]["json_format"]
    assert fmt["cache"] == "%DYNAMIC_METADATA(edge_agent:cache)%"
    assert "%REQ(:PATH)%" not in json.dumps(fmt)  # provider paths and queries stay out
    ext_proc = typed["http_filters"][0]["typed_config"]
    assert ext_proc["metadata_options"] == {"receiving_namespaces": {"untyped": ["edge_agent"]}}
    tracer = typed["tracing"]["provider"]["typed_config"]
    assert tracer["grpc_service"]["envoy_grpc"]["cluster_name"] == envoy_telemetry.OTLP_CLUSTER
    [otlp] = [c for c in boot["static_resources"]["clusters"] if c["name"] == "edge_agent_otlp"]
    assert otlp["type"] == "STRICT_DNS"
    assert otlp["transport_socket"]["typed_config"]["sni"] == "otel.example"
    to_file = parse_config({**base, "envoy": {"access_log": {"enabled": True, "path": "/x.log"}}})
    [log] = envoy_telemetry.access_logs(to_file)
    assert log["typed_config"]["path"] == "/x.log"


def test_circuit_state_and_budgets_are_exported() -> None:
    agent = make_agent(
        tenants=[{"name": "team-a", "budget": {"usd_per_day": 5, "usd_per_month": 100}}],
        auth={"required": False},
    )
    registry = agent.metrics.registry

    def state() -> float | None:
        return registry.get_sample_value(
            "edge_agent_target_circuit_state", {"target": "a/claude-x"}
        )

    assert state() == 0
    target = agent.router.target("a/claude-x")
    assert target is not None
    for _ in range(target.health.policy.failure_threshold):
        target.health.on_failure("status", 500)
    assert state() == 2
    for period, usd in (("day", 5), ("month", 100)):
        labels = {"tenant": "team-a", "period": period}
        assert registry.get_sample_value("edge_agent_budget_usd", labels) == usd


async def test_a_semantic_hit_traces_its_lookup_steps() -> None:
    from tests.unit.test_exchange_semantic import Q1, Q2, answer, make, run

    agent, _ = make()
    assert agent.observer is not None
    exporter = InMemorySpanExporter()
    agent.observer.tracing = Tracing(TracingConfig(enabled=True), {}, agent.metrics, exporter)
    await answer(agent, Q1)
    ex, hit = await run(agent, Q2)
    assert isinstance(hit, Respond)
    assert ex.cache_result == "semantic-hit"  # type: ignore[attr-defined]
    ex.close()  # type: ignore[attr-defined]
    agent.observer.tracing.force_flush()
    spans = exporter.get_finished_spans()
    [root] = [
        s for s in spans if (s.attributes or {}).get("edge_agent.cache.result") == "semantic-hit"
    ]
    assert root.attributes is not None and root.attributes["edge_agent.cache.score"] > 0.9
    mine = {s.name: s for s in spans if s.context.trace_id == root.context.trace_id}
    lookup = mine["cache.lookup semantic"]
    assert lookup.parent is not None and lookup.parent.span_id == root.context.span_id
    for step in ("cache.semantic.embed", "cache.semantic.search", "cache.semantic.verify"):
        assert mine[step].parent is not None
        assert mine[step].parent.span_id == lookup.context.span_id
        assert lookup.start_time <= mine[step].start_time <= mine[step].end_time
    assert (mine["cache.lookup exact"].attributes or {})["edge_agent.cache.hit"] is False


def test_a_shared_tier_lookup_is_a_client_span() -> None:
    from edge_agent.pipeline.base import Pending
    from edge_agent.pipeline.effects import SharedLease, SharedLookup

    exporter = InMemorySpanExporter()
    agent = make_agent(exporter)
    agent.shared = object()  # type: ignore[assignment]  # only its presence matters here
    ex = Exchange(agent, PARENT)
    ex.request_headers({":method": "POST", ":path": "/v1/chat/completions"}, False)
    step = ex.request_body(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    )
    seen = []
    while isinstance(step, Pending):
        seen.append(type(step.effect))
        # Nothing in Redis; another process leads, and its answer never comes.
        step = step.send(False if isinstance(step.effect, SharedLease) else None)
    assert SharedLookup in seen and isinstance(step, Continue)
    ex.close()
    spans = spans_by_name(exporter, agent)
    shared = spans["cache.lookup shared"]
    assert shared.kind.name == "CLIENT"
    assert dict(shared.attributes or {}) == {
        "db.system.name": "redis",
        "edge_agent.cache.hit": False,
    }
    assert shared.parent is not None and shared.parent.span_id == spans["chat m"].context.span_id


def test_what_the_client_sent_is_bounded_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    agent = make_agent()
    with caplog.at_level(logging.INFO, logger=requests_log.name):
        ex = request(
            agent, {"model": "m" * 100_000, "messages": [{"role": "user", "content": "x"}]}
        )
        ex.close()
    [record] = [r for r in caplog.records if r.name == requests_log.name]
    assert len(logs.JsonFormatter().format(record)) < 2000


def test_the_installed_otlp_protos_are_opentelemetry_protos() -> None:
    # xds-protos ships an older copy of these files; `make install` reinstalls
    # opentelemetry-proto last so the exporters find what they need.
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope"), (
        "opentelemetry-proto's files were overwritten (by xds-protos?): run "
        ".venv/bin/pip install --no-deps --force-reinstall opentelemetry-proto"
    )
    # Envoy's own protos that import them still load.
    import envoy.extensions.access_loggers.open_telemetry.v3.logs_service_pb2  # noqa: F401


def test_text_log_values_cannot_forge_lines_or_fields() -> None:
    record = logging.LogRecord("edge_agent.requests", logging.INFO, "f.py", 1, "request", (), None)
    forged = "x\n2026-01-01 INFO edge_agent.requests: request status=200\ttenant=admin"
    record.fields = {"model": forged, "tenant": "a=b", "ok": "plain"}  # type: ignore[attr-defined]
    line = logs.TextFormatter().format(record)
    assert "\n" not in line and "\t" not in line
    assert line.endswith(f' model={json.dumps(forged)} tenant="a=b" ok=plain')


async def test_closing_the_tracer_never_waits_past_its_bound() -> None:
    stuck = _Stuck()
    agent = make_agent()
    tracing = Tracing(TracingConfig(enabled=True, max_queue=64), {}, agent.metrics, stuck)
    for i in range(10):
        span = tracing.start(f"s{i}", None, 0)
        assert span is not None
        span.end()
    await tracing.close(0.2)  # returns although the collector never answers
    assert not stuck.release.is_set()
    stuck.release.set()


def test_an_unsampled_chain_gets_no_attempt_spans() -> None:
    from edge_agent.extproc.attempt import TARGET_ATTRIBUTE
    from edge_agent.extproc.attempt_log import ATTEMPT_KEY_HEADER

    exporter = InMemorySpanExporter()
    agent = make_agent(exporter)
    headers = {":method": "POST", ":path": "/v1/chat/completions", "traceparent": PARENT}
    attributes = {TARGET_ATTRIBUTE: "a/claude-x"}
    # Begun by an Exchange whose request was not sampled: no span, whatever the header.
    key = agent.attempts.begin("/v1/chat/completions", "", "default", None)
    attempt = agent.attempt()
    attempt.request_headers({**headers, ATTEMPT_KEY_HEADER: key}, False, attributes)
    assert attempt.trace is None
    # Begun by a sampled one: a child of its span.
    key = agent.attempts.begin("/v1/chat/completions", "", "default", PARENT)
    attempt = agent.attempt()
    attempt.request_headers({**headers, ATTEMPT_KEY_HEADER: key}, False, attributes)
    assert attempt.trace is not None
    assert attempt.trace.parent is not None and attempt.trace.parent.span_id == int(
        PARENT.split("-")[2], 16
    )

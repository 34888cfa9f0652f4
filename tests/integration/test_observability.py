"""Traces, JSON logs and Envoy's access log through real Envoy + agent, exported to an
OTLP receiver on 127.0.0.1 (tests/fakes/otlp.py): one trace per request that continues
the caller's traceparent, GenAI attributes with the provider's own usage, a cache hit
and a failover visible in the trace, and requests that never wait for the collector."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.fakes.otlp import OtlpReceiver, ReceivedSpan
from tests.helpers import (
    Gateway,
    free_port,
    http,
    listen_block,
    metric_value,
    post_json,
    running_gateway,
    started_fakes,
    wait_for,
)

KEYS = {"PRIMARY_KEY": "sk-primary-secret-0001", "SECONDARY_KEY": "sk-secondary-secret-0002"}
CLIENT_KEY = "sk-client-never-logged-0003"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SERVER = 2  # OTLP span kinds
CLIENT = 3


def traceparent(span_id: str = "00f067aa0ba902b7", trace_id: str = TRACE_ID) -> str:
    return f"00-{trace_id}-{span_id}-01"


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeOpenAI]]:
    threads = {
        "primary": FakeOpenAIThread(name="primary", api_key=KEYS["PRIMARY_KEY"]),
        "secondary": FakeOpenAIThread(name="secondary", api_key=KEYS["SECONDARY_KEY"]),
    }
    with started_fakes(threads) as started:
        yield started


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    rx = OtlpReceiver().start()
    try:
        yield rx
    finally:
        rx.stop()


def _config(fakes: dict[str, FakeOpenAI], tracing: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "listen": listen_block(),
        "providers": [
            {
                "name": "primary",
                "type": "openai",
                "base_url": fakes["primary"].url,
                "api_key_env": "PRIMARY_KEY",
                "models": [{"name": "p-chat", "input_per_mtok": 1.0, "output_per_mtok": 2.0}],
            },
            {
                "name": "secondary",
                "type": "openai",
                "base_url": fakes["secondary"].url,
                "api_key_env": "SECONDARY_KEY",
                "models": [{"name": "s-chat", "input_per_mtok": 3.0, "output_per_mtok": 4.0}],
            },
        ],
        "models": [
            {"name": "solo", "targets": ["primary/p-chat"]},
            {
                "name": "pair",
                "strategy": "priority",
                "targets": ["primary/p-chat", "secondary/s-chat"],
            },
        ],
        "cache": {"semantic": {"enabled": False}},
        "log_format": "json",
        "telemetry": {"tracing": {"enabled": True, **tracing}},
        **extra,
    }


@pytest.fixture(scope="module")
def gw(
    fakes: dict[str, FakeOpenAI],
    receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("observability")
    config = _config(
        fakes,
        {"endpoint": f"http://127.0.0.1:{receiver.grpc_port}", "protocol": "grpc"},
        envoy={"access_log": {"enabled": True, "path": str(tmp / "access.log")}},
    )
    with running_gateway(tmp, config, dict(KEYS)) as gateway:
        yield gateway


@pytest.fixture(autouse=True)
def clean(fakes: dict[str, FakeOpenAI]) -> None:
    for fake in fakes.values():
        fake.reset()


def chat(gw: Gateway, model: str, text: str, parent: str | None = None, **extra: Any) -> Any:
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    if parent is not None:
        headers["traceparent"] = parent
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return post_json(f"{gw.url}/v1/chat/completions", body, headers)


def by_request(spans: list[ReceivedSpan], request_id: str) -> ReceivedSpan | None:
    return next((s for s in spans if s.attributes.get("edge_agent.request_id") == request_id), None)


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id]


def request_lines(gw: Gateway) -> list[dict[str, Any]]:
    out = []
    for line in gw.logs().splitlines():
        if line.startswith("{") and '"edge_agent.requests"' in line:
            out.append(json.loads(line))
    return out


def access_lines(gw: Gateway) -> list[dict[str, Any]]:
    path = Path(gw.config["envoy"]["access_log"]["path"])
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_chat_request_is_one_trace_with_genai_attributes(
    gw: Gateway, receiver: OtlpReceiver, fakes: dict[str, FakeOpenAI]
) -> None:
    prompt = "the secret prompt text: tell me about otters"
    reply = chat(gw, "solo", prompt, traceparent(), max_tokens=64, temperature=0)
    assert reply.status == 200, reply.body
    usage = reply.json()["usage"]

    def done(spans: list[ReceivedSpan]) -> bool:
        mine = [s for s in spans if s.trace_id == TRACE_ID]
        root = next((s for s in mine if s.name == "chat solo"), None)
        # Envoy's own spans come with its tracer's flush (every 5 s).
        return root is not None and any(s.service == "llm-edge-agent-envoy" for s in mine)

    spans = [s for s in receiver.wait_for(done) if s.trace_id == TRACE_ID]
    root = next(s for s in spans if s.name == "chat solo")
    assert root.kind == SERVER
    assert root.attributes["edge_agent.request_id"]  # Envoy's x-request-id
    a = root.attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "solo"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.temperature"] == 0.0
    # The provider's usage, exactly.
    assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    expected_cost = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert a["edge_agent.cost_usd"] == pytest.approx(expected_cost)
    assert a["gen_ai.response.model"] == reply.json()["model"]
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["edge_agent.cache.result"] == "miss"
    assert a["edge_agent.provider"] == "primary"
    assert a["http.response.status_code"] == 200
    # The provider call is a client span under the request, with the provider's model.
    call = next(s for s in children(spans, root) if s.kind == CLIENT)
    assert call.name == "chat p-chat"
    assert call.attributes["gen_ai.request.model"] == "p-chat"
    assert call.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert any(s.name == "cache.lookup exact" for s in children(spans, root))
    # One trace with Envoy's span: the agent's request span descends from it, and Envoy's
    # ingress span continues the caller's span.
    envoy = [s for s in spans if s.service == "llm-edge-agent-envoy"]
    assert any(s.parent_span_id == "00f067aa0ba902b7" for s in envoy)
    by_id = {s.span_id: s for s in spans}
    ancestor = by_id.get(root.parent_span_id)
    while ancestor is not None and ancestor.service != "llm-edge-agent-envoy":
        ancestor = by_id.get(ancestor.parent_span_id)
    assert ancestor is not None, "the agent's span does not descend from Envoy's"
    # No prompt text on any span without capture_content; no key anywhere.
    for s in spans:
        text = json.dumps(s.attributes)
        assert "otters" not in text
        assert CLIENT_KEY not in text and KEYS["PRIMARY_KEY"] not in text


def test_a_cache_hit_is_visible_in_its_trace(gw: Gateway, receiver: OtlpReceiver) -> None:
    text = f"cache me {time.monotonic_ns()}"
    assert chat(gw, "solo", text).status == 200
    hit = chat(gw, "solo", text, traceparent("1111111111111111"))
    assert hit.status == 200 and hit.headers["x-edge-agent-cache"] == "hit"

    def found(spans: list[ReceivedSpan]) -> bool:
        return any(
            s.parent_span_id == "1111111111111111" and s.service == "llm-edge-agent-envoy"
            for s in spans
        ) and any(s.attributes.get("edge_agent.cache.result") == "hit" for s in spans)

    spans = receiver.wait_for(found)
    root = next(
        s
        for s in spans
        if s.trace_id == TRACE_ID and s.attributes.get("edge_agent.cache.result") == "hit"
    )
    assert root.attributes["edge_agent.cache.saved_usd"] > 0
    lookups = [s for s in children(spans, root) if s.name == "cache.lookup exact"]
    assert [s.attributes["edge_agent.cache.hit"] for s in lookups] == [True]
    # Served from the cache: no provider call, no tokens used.
    assert not [s for s in children(spans, root) if s.kind == CLIENT]
    assert "gen_ai.usage.input_tokens" not in root.attributes


def test_a_failover_is_visible_in_its_trace(
    gw: Gateway, receiver: OtlpReceiver, fakes: dict[str, FakeOpenAI]
) -> None:
    fakes["primary"].fail_next(503, count=1)
    reply = chat(gw, "pair", f"fail over {time.monotonic_ns()}", traceparent("2222222222222222"))
    assert reply.status == 200, reply.body
    usage = reply.json()["usage"]

    def found(spans: list[ReceivedSpan]) -> bool:
        roots = [s for s in spans if s.trace_id == TRACE_ID and s.name == "chat pair"]
        return bool(roots) and len([s for s in spans if s.name.startswith("attempt ")]) >= 2

    spans = receiver.wait_for(found)
    root = next(s for s in spans if s.trace_id == TRACE_ID and s.name == "chat pair")
    attempts = sorted(
        (s for s in children(spans, root) if s.name.startswith("attempt ")),
        key=lambda s: s.attributes["edge_agent.failover.attempt"],
    )
    assert [s.attributes["edge_agent.provider"] for s in attempts] == ["primary", "secondary"]
    assert attempts[0].attributes["http.response.status_code"] == 503
    assert attempts[0].attributes["error.type"] == "503"
    assert attempts[0].status_code == 2  # STATUS_CODE_ERROR
    assert attempts[1].attributes["http.response.status_code"] == 200
    assert attempts[1].attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert root.attributes["edge_agent.provider"] == "secondary"
    assert root.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]


def test_a_stream_has_its_time_to_first_token(gw: Gateway, receiver: OtlpReceiver) -> None:
    reply = chat(
        gw, "solo", f"stream {time.monotonic_ns()}", traceparent("3333333333333333"), stream=True
    )
    assert reply.status == 200 and b"data: [DONE]" in reply.body

    def found(spans: list[ReceivedSpan]) -> bool:
        return any(s.name == "gen_ai.first_token" and s.trace_id == TRACE_ID for s in spans)

    spans = receiver.wait_for(found)
    first = next(s for s in spans if s.name == "gen_ai.first_token" and s.trace_id == TRACE_ID)
    call = next(s for s in spans if s.span_id == first.parent_span_id)
    assert call.kind == CLIENT
    assert 0 < call.attributes["gen_ai.response.time_to_first_chunk"] < 10
    assert call.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert first.end_ns >= first.start_ns


def test_json_log_lines_carry_the_trace_and_no_secret(gw: Gateway) -> None:
    prompt = f"log line prompt {time.monotonic_ns()} about badgers"
    reply = chat(gw, "solo", prompt, traceparent("4444444444444444"))
    assert reply.status == 200
    refused = chat(gw, "no-such-model", "refused prompt about weasels")
    assert refused.status == 404

    def logged() -> bool:
        return sum(1 for r in request_lines(gw) if r.get("trace_id") == TRACE_ID) >= 1

    wait_for(logged, 10, "request log lines")
    for line in gw.logs().splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)  # every JSON line parses
        assert {"time", "level", "logger", "message"} <= record.keys()
    lines = request_lines(gw)
    text = "\n".join(json.dumps(r) for r in lines)
    for secret in (CLIENT_KEY, *KEYS.values(), "badgers", "weasels"):
        assert secret not in text
    mine = next(r for r in lines if r.get("span_id") and r["trace_id"] == TRACE_ID)
    assert mine["level"] == "info" and mine["message"] == "request"
    assert {"request_id", "tenant", "model", "provider", "status", "cache", "latency_ms"} <= set(
        mine
    )
    assert [r for r in lines if r.get("refusal") == "model_not_found" and r["status"] == "404"]


def test_the_access_log_tells_the_agents_decisions(gw: Gateway) -> None:
    text = f"access {time.monotonic_ns()}"
    # Told apart in the log by their trace ids (the agent's metadata carries them).
    miss_trace, hit_trace = "a" * 32, "b" * 32
    miss = chat(gw, "solo", text, traceparent(trace_id=miss_trace))
    hit = chat(gw, "solo", text, traceparent(trace_id=hit_trace))
    assert miss.status == 200 and hit.headers["x-edge-agent-cache"] == "hit"
    usage = miss.json()["usage"]

    def logged() -> bool:  # Envoy flushes its access log about once a second
        return {miss_trace, hit_trace} <= {line.get("trace_id") for line in access_lines(gw)}

    wait_for(logged, 10, "access log lines")
    lines = {line["trace_id"]: line for line in access_lines(gw) if line.get("trace_id")}
    first, second = lines[miss_trace], lines[hit_trace]
    assert first["cache"] == "miss" and second["cache"] == "hit"
    assert first["input_tokens"] == usage["prompt_tokens"]
    assert first["output_tokens"] == usage["completion_tokens"]
    assert first["provider"] == "primary" and first["status"] == 200
    assert first["model"] == "solo" and first["tenant"] == "default"
    assert first["request_id"] and first["path"] == "/v1/chat/completions"
    assert second["saved_usd"] > 0 and second["upstream_cluster"] is None
    raw = Path(gw.config["envoy"]["access_log"]["path"]).read_text()
    assert CLIENT_KEY not in raw and KEYS["PRIMARY_KEY"] not in raw and text not in raw


def test_otlp_over_http_protobuf(
    fakes: dict[str, FakeOpenAI], receiver: OtlpReceiver, tmp_path: Path
) -> None:
    config = _config(
        fakes,
        {"endpoint": f"http://127.0.0.1:{receiver.http_port}", "protocol": "http/protobuf"},
    )
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    with running_gateway(tmp_path, config, dict(KEYS)) as gw:
        reply = chat(gw, "solo", "over http", f"00-{trace_id}-00f067aa0ba902b7-01")
        assert reply.status == 200

        def found(spans: list[ReceivedSpan]) -> bool:
            mine = [s for s in spans if s.trace_id == trace_id]
            return any(s.name == "chat solo" for s in mine) and any(
                s.service == "llm-edge-agent-envoy" for s in mine
            )

        receiver.wait_for(found)


def test_requests_never_wait_for_a_collector_that_is_down(
    fakes: dict[str, FakeOpenAI], tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config = _config(fakes, {"endpoint": dead, "protocol": "grpc", "export_timeout_s": 1})
    with running_gateway(tmp_path, config, dict(KEYS)) as gw:
        for i in range(20):
            reply = chat(gw, "solo", f"collector down {i}", traceparent())
            assert reply.status == 200, reply.body

        def counted() -> bool:
            text = gw.metrics()
            return metric_value(text, "edge_agent_trace_spans_total", outcome="export_failed") > 0

        wait_for(counted, 20, "failed exports counted")
        assert metric_value(gw.metrics(), "edge_agent_trace_spans_total", outcome="exported") == 0
        assert http("GET", f"{gw.admin_url}/healthz", timeout=5).status == 200

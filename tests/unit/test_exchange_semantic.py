"""The Exchange's semantic step, sans-IO: the lookup effect, serving, shadow, failures."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from edge_agent.agent import Agent
from edge_agent.cache.semantic import SemanticTier
from edge_agent.config import parse_config
from edge_agent.extproc.decisions import Continue, Respond
from edge_agent.pipeline.base import Pending
from edge_agent.pipeline.effects import SemanticLookup
from tests.helpers import chat_completion
from tests.unit.test_semantic_tier import TableEmbedder, near, unit

Q1 = "What is the capital city of France?"
Q2 = "Which city is the capital of France?"
ANSWER = chat_completion("Paris", model="x", prompt_tokens=1000, completion_tokens=500)


def make(mode: str = "serve") -> tuple[Agent, TableEmbedder]:
    emb = TableEmbedder()
    base = unit(5)
    emb.table = {Q1: base, Q2: near(base, 0.97)}
    config = parse_config(
        {
            "providers": [
                {
                    "name": "p",
                    "type": "openai",
                    "base_url": "http://127.0.0.1:1",
                    "models": [{"name": "pm", "input_per_mtok": 2.0, "output_per_mtok": 8.0}],
                }
            ],
            "models": [{"name": "m", "targets": ["p/pm"]}],
            "cache": {"semantic": {"mode": mode}},
        }
    )
    tier = SemanticTier(emb, max_entries=10, ttl_s=60, threshold=0.9, use_verifier=True)
    return Agent(config, environ={}, semantic=tier), emb


async def run(agent: Agent, text: str, **extra: object) -> tuple[object, object]:
    ex = agent.exchange()
    ex.request_headers({":method": "POST", ":path": "/v1/chat/completions"}, False)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": text}], **extra})
    step = ex.request_body(body)
    if isinstance(step, Pending):
        # serve mode waits for the lookup; shadow mode starts it and goes on
        assert isinstance(step.effect, SemanticLookup)
        assert step.effect.beside == (agent.semantic_mode == "shadow")
        step = step.send(await step.effect.perform(agent))
    return ex, step


async def landed(ex: object) -> None:
    """Wait for a lookup the request did not wait for, and for its callbacks."""
    pending = ex.semantic_pending  # type: ignore[attr-defined]
    if pending is not None:
        await pending
    await asyncio.sleep(0)


async def answer(agent: Agent, text: str) -> None:
    ex, step = await run(agent, text)
    assert isinstance(step, Continue)
    ex.response_headers(  # type: ignore[attr-defined]
        {":status": "200", "content-type": "application/json", "content-length": str(len(ANSWER))}
    )
    ex.response_body(ANSWER, True)  # type: ignore[attr-defined]
    await landed(ex)


async def test_paraphrase_served_with_score_header_json_and_sse() -> None:
    agent, _ = make()
    await answer(agent, Q1)
    _, hit = await run(agent, Q2)
    assert isinstance(hit, Respond)
    headers = dict(hit.headers)
    assert headers["x-edge-agent-cache"] == "semantic-hit"
    assert float(headers["x-edge-agent-cache-score"]) == pytest_approx(0.97)
    assert hit.body == ANSWER
    _, streamed = await run(agent, Q2, stream=True)
    assert isinstance(streamed, Respond)
    assert dict(streamed.headers)["content-type"] == "text/event-stream"
    assert b"Paris" in streamed.body and streamed.body.endswith(b"data: [DONE]\n\n")


async def test_shadow_mode_routes_and_counts_savings() -> None:
    agent, _ = make("shadow")
    await answer(agent, Q1)
    ex, step = await run(agent, Q2)
    assert isinstance(step, Continue)  # not served
    await landed(ex)
    samples = {s.name: s.value for s in agent.metrics.semantic_shadow_saved.collect()[0].samples}
    # 1000 input tokens at $2/M + 500 output tokens at $8/M
    assert samples["edge_agent_semantic_shadow_saved_usd_total"] == pytest_approx(0.006)


async def test_embedder_failure_routes_normally() -> None:
    agent, emb = make()
    emb.fail = True
    _, step = await run(agent, Q1)
    assert isinstance(step, Continue)
    outcomes = {
        s.labels["outcome"]: s.value
        for s in agent.metrics.semantic_lookups.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert outcomes == {"error": 1.0}


async def test_bypassed_requests_never_reach_the_semantic_tier() -> None:
    agent, emb = make()
    _, step = await run(agent, Q1, temperature=0.9)
    assert isinstance(step, Continue) and emb.calls == 0


def pytest_approx(x: float):  # type: ignore[no-untyped-def]
    import pytest

    return pytest.approx(x, abs=1e-3)


async def test_an_exact_hit_never_reaches_the_semantic_tier() -> None:
    agent, emb = make()
    await answer(agent, Q1)
    calls = emb.calls
    _, hit = await run(agent, Q1)
    assert isinstance(hit, Respond) and dict(hit.headers)["x-edge-agent-cache"] == "hit"
    assert emb.calls == calls


class RecordingShared:
    """The shared tier's request-path surface, recording the order of its writes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def get(self, key: str) -> None:
        return None

    async def acquire_lease(self, key: str, ttl_s: float) -> bool:
        return True

    def put(self, key: str, body: bytes, **_: object) -> None:
        self.calls.append(("put", key))

    def release_lease(self, key: str) -> None:
        self.calls.append(("release", key))


async def answered_while_the_lookup_waits() -> tuple[Agent, RecordingShared, asyncio.Event, Any]:
    """Shadow mode with a shared tier: a request routed, answered and complete while
    its lookup waits on `gate` (the embedder is held)."""
    agent, emb = make("shadow")
    shared = RecordingShared()
    agent.attach_shared(shared)  # type: ignore[arg-type]
    gate = asyncio.Event()
    table_embed = emb.embed

    async def slow_embed(texts):  # type: ignore[no-untyped-def]
        await gate.wait()
        return await table_embed(texts)

    emb.embed = slow_embed  # type: ignore[method-assign]
    ex = agent.exchange()
    ex.request_headers({":method": "POST", ":path": "/v1/chat/completions"}, False)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": Q1}]})
    step = ex.request_body(body)
    while isinstance(step, Pending):
        step = step.send(await step.effect.perform(agent))
    assert isinstance(step, Continue) and ex.lease  # it leads: it holds the lease
    ex.response_headers(
        {":status": "200", "content-type": "application/json", "content-length": str(len(ANSWER))}
    )
    ex.response_body(ANSWER, True)
    return agent, shared, gate, ex


async def test_shadow_lookup_defers_the_shared_put_and_the_lease_release_after_it() -> None:
    """With the lookup still running when the answer is complete, the shared put waits
    for its vector; the cross-process lease must not be released before that put, or
    another process's waiter finds neither lease nor entry and calls the provider too."""
    agent, shared, gate, ex = await answered_while_the_lookup_waits()
    ex.close()  # the stream ends before the lookup lands
    await asyncio.sleep(0)
    assert shared.calls == []  # neither the put nor the release yet
    gate.set()
    await landed(ex)
    await asyncio.sleep(0)
    key = ex.key
    assert shared.calls == [("put", key), ("release", key)]
    assert agent.semantic is not None and len(agent.semantic) == 1  # stored with its vector


async def test_a_purge_while_the_lookup_runs_is_not_undone_by_the_deferred_store() -> None:
    """The exact tier is written at once, the semantic and shared tiers once the lookup
    lands: a purge in between (erasure) must not see the answer come back through them;
    the lease is still released."""
    agent, shared, gate, ex = await answered_while_the_lookup_waits()
    ex.close()
    assert agent.cache is not None and agent.cache.purge() == 1  # the erasure lands now
    gate.set()
    await landed(ex)
    await asyncio.sleep(0)
    assert shared.calls == [("release", ex.key)]  # no put: nothing comes back
    assert agent.semantic is not None and len(agent.semantic) == 0

"""The semantic tier's load shedding: the rules (sans-IO), the tier, and the pipeline
stage with a saturated embedder."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from edge_agent.cache.embedders import EmbedderError
from edge_agent.cache.semantic import SemanticTier
from edge_agent.cache.shedding import Shedder
from edge_agent.extproc.decisions import Continue
from edge_agent.pipeline.base import Pending
from tests.unit.test_exchange_semantic import make
from tests.unit.test_semantic_tier import DIM, unit


def test_queue_rule_sheds_beyond_max_pending_until_one_is_done() -> None:
    s = Shedder(max_pending=2, max_cpu_share=None)
    assert s.admit(0.0, 0.0) is None and s.admit(0.0, 0.0) is None
    assert s.admit(0.0, 0.0) == "queue"
    s.done()
    assert s.admit(0.0, 0.0) is None
    assert s.pending == 2


def test_cpu_rule_charges_spent_cpu_and_refills_at_the_share() -> None:
    s = Shedder(max_pending=100, max_cpu_share=0.5)  # half a core: 0.25 s of credit
    assert s.admit(0.0, 0.0) is None
    # The lookup spent 0.3 s of CPU: 0.05 s in debt, none admitted.
    assert s.admit(0.0, 0.3) == "cpu"
    assert s.admit(0.05, 0.3) == "cpu"  # +0.025 s back: still in debt
    assert s.admit(0.2, 0.3) is None  # +0.1 s by now: credit again
    # Idle time refills to the burst at most, never beyond.
    for _ in range(3):
        s.done()
    assert s.admit(100.0, 0.3) is None
    assert s.admit(100.0, 0.3 + 0.26) == "cpu"  # more than the 0.25 s burst at once


def test_no_cpu_cap_means_only_the_queue_rule() -> None:
    s = Shedder(max_pending=1, max_cpu_share=None)
    assert s.admit(0.0, 1e6) is None
    assert s.admit(0.0, 2e6) == "queue"


class GatedEmbedder:
    """An embedder that never answers until the test lets it: a saturated one."""

    id = "gated"
    dim = DIM
    cpu_s = 0.0

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        await self.gate.wait()
        if not texts:
            raise EmbedderError("no texts")
        return np.vstack([unit(hash(t) % 1000) for t in texts])

    async def close(self) -> None:
        pass


async def test_tier_releases_its_slot_when_a_lookup_ends() -> None:
    emb = GatedEmbedder()
    tier = SemanticTier(emb, max_entries=10, ttl_s=60, max_pending=1)
    assert tier.admit() is None
    running = asyncio.ensure_future(tier.lookup("p", "a question", admitted=True))
    await asyncio.sleep(0)
    assert tier.admit() == "queue"
    emb.gate.set()
    assert (await running).vector is not None
    assert tier.admit() is None
    await tier.close()


async def test_saturated_embedder_requests_go_on_and_shed_lookups_are_counted() -> None:
    """Shadow mode (the default): the request never waits for the lookup; once
    max_pending lookups are in flight, further ones are shed and counted."""
    agent, _ = make("shadow")
    emb = GatedEmbedder()
    assert agent.semantic is not None
    agent.semantic.embedder = emb
    agent.semantic.shedder = Shedder(max_pending=2, max_cpu_share=None)
    tasks = []
    for i in range(5):
        ex = agent.exchange()
        ex.request_headers({":method": "POST", ":path": "/v1/chat/completions"}, False)
        body = b'{"model":"m","messages":[{"role":"user","content":"question %d"}]}' % i
        step = ex.request_body(body)
        if isinstance(step, Pending):  # admitted: the lookup starts, the request goes on
            step = step.send(await step.effect.perform(agent))
            tasks.append(ex.semantic_pending)
        assert isinstance(step, Continue)  # routed at once, embedder or not
    await asyncio.sleep(0)  # the lookups start
    assert len(tasks) == 2 and emb.calls == 2
    emb.gate.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(0)
    assert agent.semantic.shedder.pending == 0
    outcomes = {
        s.labels["outcome"]: s.value
        for s in agent.metrics.semantic_lookups.collect()[0].samples
        if s.name.endswith("_total")
    }
    assert outcomes == {"shed_queue": 3.0, "miss": 2.0}  # the 3 shed by the queue rule


async def test_the_tier_charges_its_own_steps_on_the_event_loop() -> None:
    """Stores and inline searches run on the event loop: their CPU time is the tier's,
    so the CPU share bounds them too (the loop's wake-ups in between are not)."""
    emb = GatedEmbedder()
    emb.gate.set()
    tier = SemanticTier(emb, max_entries=1000, ttl_s=60, use_verifier=False)
    for i in range(200):
        tier.store("p", f"entry {i}", unit(i), None, b"{}")
    stored = tier.loop_cpu.s
    assert stored > 0
    await tier.lookup("p", "a question")
    assert tier.loop_cpu.s > stored  # the inline search and the steps around it
    assert tier.cpu_s == emb.cpu_s + tier.verify_cpu.s + tier.loop_cpu.s + tier.worker_cpu.s
    await tier.close()


async def test_searches_on_the_worker_thread_are_charged_too() -> None:
    """A partition past 2,000 entries is searched and updated on the worker thread:
    that time is the tier's as well."""
    emb = GatedEmbedder()
    emb.gate.set()
    tier = SemanticTier(emb, max_entries=5000, ttl_s=60, use_verifier=False)
    for i in range(2100):
        tier.store("p", f"entry {i}", unit(i), None, b"{}")
    await tier.lookup("p", "a question")  # offloaded: waits for the queued adds too
    assert tier.worker_cpu.s > 0
    assert tier.cpu_s == emb.cpu_s + tier.verify_cpu.s + tier.loop_cpu.s + tier.worker_cpu.s
    await tier.close()


async def test_a_lookup_that_times_out_after_embedding_keeps_its_vector() -> None:
    """Late in the verifier: no hit, but the answer can still be stored."""
    emb = GatedEmbedder()
    emb.gate.set()
    tier = SemanticTier(emb, max_entries=10, ttl_s=60, threshold=0.5, lookup_timeout_s=0.05)
    vector = (await emb.embed(["q"]))[0]
    tier.store("p", "q", vector, None, b"{}")

    def slow_verify(*args: object) -> object:
        import time

        time.sleep(0.2)
        raise AssertionError("not reached in time")

    tier._verify = slow_verify  # type: ignore[method-assign,assignment]
    result = await tier.lookup("p", "q")
    assert result.timed_out and result.hit is None and result.vector is not None
    await tier.close()


async def test_serve_mode_parses_the_query_while_it_is_embedded() -> None:
    """eager_signatures (mode serve): the lookup returns the query's signature even with
    no candidate, so the stored entry comes parsed and a later hit pays no parse."""
    emb = GatedEmbedder()
    emb.gate.set()
    eager = SemanticTier(emb, max_entries=10, ttl_s=60, eager_signatures=True)
    lazy = SemanticTier(emb, max_entries=10, ttl_s=60)
    assert (await eager.lookup("p", "How tall is Everest?")).signature is not None
    assert (await lazy.lookup("p", "How tall is Everest?")).signature is None
    await eager.close()
    await lazy.close()

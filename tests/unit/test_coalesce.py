"""Coalescing identical misses: followers wait for the leader's stored answer."""

from __future__ import annotations

import orjson

from edge_agent.agent import Agent
from edge_agent.cache.coalesce import Flights
from edge_agent.config import parse_config
from edge_agent.extproc.decisions import Continue, Respond
from edge_agent.pipeline.base import Pending
from edge_agent.pipeline.effects import WaitFor
from tests.helpers import chat_completion

CONFIG = {
    "providers": [{"name": "p", "type": "openai", "base_url": "http://127.0.0.1:1"}],
    "models": [{"name": "m", "targets": ["p/x"]}],
    "cache": {"semantic": {"enabled": False}},
}
BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "same"}]})


def start(agent: Agent, body: bytes = BODY) -> tuple[object, object]:
    ex = agent.exchange()
    ex.request_headers({":method": "POST", ":path": "/v1/chat/completions"}, False)
    return ex, ex.request_body(body)


def test_followers_get_the_leaders_stored_answer() -> None:
    agent = Agent(parse_config(CONFIG), environ={})
    leader, first = start(agent)
    assert isinstance(first, Continue)  # goes upstream
    _, wait = start(agent)
    assert isinstance(wait, Pending) and isinstance(wait.effect, WaitFor)
    got: list[bytes | None] = []
    wait.effect.flight.add_waiter(got.append)
    answer = chat_completion("shared")
    leader.response_headers(  # type: ignore[attr-defined]
        {":status": "200", "content-type": "application/json", "content-length": str(len(answer))}
    )
    leader.response_body(answer, True)  # type: ignore[attr-defined]
    assert got == [answer]
    reply = wait.send(answer)  # the wait's result goes back into the pipeline
    assert isinstance(reply, Respond) and reply.body == answer
    assert dict(reply.headers)["x-edge-agent-cache"] == "coalesced"
    assert len(agent.flights or Flights()) == 0


def test_a_failed_leader_releases_followers_at_once() -> None:
    agent = Agent(parse_config(CONFIG), environ={})
    leader, _ = start(agent)
    _, wait = start(agent)
    assert isinstance(wait, Pending) and isinstance(wait.effect, WaitFor)
    got: list[bytes | None] = []
    wait.effect.flight.add_waiter(got.append)
    leader.response_headers({":status": "503"})  # type: ignore[attr-defined]
    assert got == [None]  # released at the error's headers, not after the whole answer
    _, step = start(agent)
    assert isinstance(step, Continue)  # a new leader


def test_an_abandoned_leader_releases_followers() -> None:
    agent = Agent(parse_config(CONFIG), environ={})
    leader, _ = start(agent)
    _, wait = start(agent)
    got: list[bytes | None] = []
    assert isinstance(wait, Pending) and isinstance(wait.effect, WaitFor)
    wait.effect.flight.add_waiter(got.append)
    leader.close()  # type: ignore[attr-defined]
    assert got == [None]


def test_uncacheable_requests_never_wait() -> None:
    agent = Agent(parse_config(CONFIG), environ={})
    start(agent)
    hot = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "same"}], "n": 2})
    _, step = start(agent, hot)
    assert isinstance(step, Continue)


def test_shared_fill_dedupes_semantic_entries_and_purges_by_key() -> None:
    import time as _time

    import numpy as np

    from edge_agent.cache.exact import ExactCache
    from edge_agent.cache.records import PurgeFilter, SemanticPart, SharedEntry
    from edge_agent.cache.shared import SharedCache
    from tests.unit.test_semantic_tier import TableEmbedder, make_tier

    embedder = TableEmbedder()
    tier = make_tier(embedder)
    exact = ExactCache(10, 60.0)
    shared = SharedCache.__new__(SharedCache)  # the local side only: no Redis needed
    shared.exact, shared.semantic = exact, tier
    vector = np.ones(embedder.dim, dtype=np.float32) / np.sqrt(embedder.dim)
    part = SemanticPart.from_array(tier.namespace, "p", "question", vector)
    entry = SharedEntry(
        key="k1", body=b"{}", expires_at=_time.time() + 30, model="m", semantic=part
    )
    for _ in range(3):  # a Redis hit, the sync event, a repeat: one FAISS entry
        shared.fill(entry)
    assert len(tier) == 1 and len(exact) == 1
    assert shared.apply_purge(PurgeFilter(tenant="nobody")) == 0  # never "everything"
    assert len(exact) == 1
    assert shared.purge_local(key="k1") == 2  # exact and semantic
    assert len(tier) == 0 and len(exact) == 0


def test_entries_with_shorter_remaining_lives_expire_first() -> None:
    import numpy as np

    from edge_agent.cache import verify
    from tests.helpers import Clock
    from tests.unit.test_semantic_tier import TableEmbedder, make_tier

    clock = Clock()
    tier = make_tier(TableEmbedder(), clock)
    v = np.ones(TableEmbedder.dim, dtype=np.float32) / np.sqrt(TableEmbedder.dim)
    sig = verify.signature("q")
    tier.store("p", "long", v, sig, b"a", key="a", ttl_s=600)
    tier.store("p", "short", v, sig, b"b", key="b", ttl_s=1)  # synced, half its life spent
    clock.now += 2
    tier.store("p", "new", v, sig, b"c", key="c")
    assert len(tier) == 2  # the short one expired although it was inserted later

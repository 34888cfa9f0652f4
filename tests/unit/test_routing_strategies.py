from __future__ import annotations

import random
from collections import Counter

import pytest

from edge_agent.routing.health import TargetHealth
from edge_agent.routing.strategies import (
    STRATEGIES,
    Candidate,
    LeastLatency,
    LowestCost,
    Needs,
    Priority,
    RoundRobin,
    Weighted,
    capability_filter,
    claim_first,
    estimate_tokens,
    plan,
    split_available,
)
from tests.helpers import Clock


def cand(key: str, index: int, clock: Clock | None = None, **kw: object) -> Candidate:
    health = TargetHealth(key, clock=clock or Clock())
    return Candidate(key=key, index=index, health=health, **kw)  # type: ignore[arg-type]


def keys(cands: list[Candidate]) -> list[str]:
    return [c.key for c in cands]


def trip(c: Candidate) -> None:
    for _ in range(5):
        c.health.on_failure("status", 500)


NEEDS = Needs()

# -- filtering -------------------------------------------------------------------


def test_estimate_tokens() -> None:
    assert estimate_tokens(0) == 0
    assert estimate_tokens(1) == 1
    assert estimate_tokens(4) == 1
    assert estimate_tokens(5) == 2
    assert estimate_tokens(400) == 100


def test_capability_filter_reasons() -> None:
    cands = [
        cand("a/undeclared", 0),
        cand("b/text", 1, capabilities=frozenset({"json"})),
        cand(
            "c/all", 2, capabilities=frozenset({"tools", "vision", "json"}), context_window=128000
        ),
        cand("d/none", 3, capabilities=frozenset()),
        cand("e/small", 4, context_window=8192),
    ]
    kept, rejected = capability_filter(
        cands, Needs(tools=True, prompt_tokens=150000, max_output_tokens=4096)
    )
    assert keys(kept) == ["a/undeclared"]
    assert rejected == {
        "b/text": "no 'tools' capability",
        "c/all": "prompt ~150000 tokens + max_tokens 4096 exceed the context window 128000",
        "d/none": "no 'tools' capability",
        "e/small": "prompt ~150000 tokens + max_tokens 4096 exceed the context window 8192",
    }


def test_capability_filter_several_missing_and_prompt_only() -> None:
    cands = [cand("a/x", 0, capabilities=frozenset({"json"}), context_window=100)]
    kept, rejected = capability_filter(cands, Needs(tools=True, vision=True, prompt_tokens=101))
    assert kept == []
    assert rejected == {
        "a/x": "no 'tools' or 'vision' capabilities; "
        "prompt ~101 tokens exceeds the context window 100"
    }


def test_capability_filter_boundary_fits_exactly() -> None:
    cands = [cand("a/x", 0, context_window=1000)]
    kept, _ = capability_filter(cands, Needs(prompt_tokens=900, max_output_tokens=100))
    assert keys(kept) == ["a/x"]
    kept, _ = capability_filter(cands, Needs(prompt_tokens=901, max_output_tokens=100))
    assert kept == []


# -- health split ----------------------------------------------------------------


def test_split_available_keeps_order_and_does_not_take_probes() -> None:
    clock = Clock()
    a, b, c = (cand(k, i, clock) for i, k in enumerate(["p/a", "p/b", "p/c"]))
    trip(a)
    trip(c)
    clock.now += 30  # a and c are half-open now
    ready, blocked = split_available([a, b, c])
    assert keys(ready) == ["p/a", "p/b", "p/c"]
    assert blocked == []
    # Peeking again still sees both probes free.
    assert a.health.peek() and c.health.peek()
    # Claiming takes only the first target's probe.
    assert claim_first([a, b, c]) is a
    assert not a.health.peek()
    assert c.health.peek()
    ready, blocked = split_available([a, b, c])
    assert keys(ready) == ["p/b", "p/c"] and keys(blocked) == ["p/a"]


def test_claim_first_none_when_all_blocked() -> None:
    a = cand("p/a", 0)
    trip(a)
    assert claim_first([a]) is None


def test_plan_combines_filter_order_and_health() -> None:
    a = cand("p/a", 0)
    b = cand("p/b", 1, capabilities=frozenset())
    c = cand("p/c", 2)
    a.health.on_failure("rate_limited", 429, retry_after_s=2)
    got = plan(Priority(), [a, b, c], Needs(tools=True))
    assert keys(got.ordered) == ["p/c"]
    assert got.unavailable == {"p/a": "cooling down for 2.0 s more after 429 (Retry-After)"}
    assert got.rejected == {"p/b": "no 'tools' capability"}


# -- strategies ------------------------------------------------------------------


def test_registry() -> None:
    assert set(STRATEGIES) == {
        "round_robin",
        "weighted",
        "priority",
        "least_latency",
        "lowest_cost",
    }
    for name, factory in STRATEGIES.items():
        assert factory().name == name
    # Fresh state per factory call.
    assert STRATEGIES["round_robin"]() is not STRATEGIES["round_robin"]()


def test_priority_uses_configured_order() -> None:
    cands = [cand("p/c", 2), cand("p/a", 0), cand("p/b", 1)]
    assert keys(Priority().order(cands, NEEDS)) == ["p/a", "p/b", "p/c"]


def test_round_robin_rotates() -> None:
    cands = [cand("p/a", 0), cand("p/b", 1), cand("p/c", 2)]
    rr = RoundRobin()
    got = [keys(rr.order(cands, NEEDS)) for _ in range(4)]
    assert got == [
        ["p/a", "p/b", "p/c"],
        ["p/b", "p/c", "p/a"],
        ["p/c", "p/a", "p/b"],
        ["p/a", "p/b", "p/c"],
    ]
    assert rr.order([], NEEDS) == []


def test_weighted_is_smooth_and_deterministic() -> None:
    cands = [cand("p/a", 0, weight=5), cand("p/b", 1, weight=1), cand("p/c", 2, weight=1)]
    w = Weighted()
    firsts = [w.order(cands, NEEDS)[0].key[-1] for _ in range(7)]
    assert "".join(firsts) == "aabacaa"  # interleaved, not "aaaaabc"


def test_weighted_distribution_over_100_picks() -> None:
    cands = [
        cand("p/a", 0, weight=5),
        cand("p/b", 1, weight=3),
        cand("p/c", 2, weight=2),
        cand("p/spare", 3, weight=0),
    ]
    w = Weighted()
    picks = Counter()
    for _ in range(100):
        ordered = w.order(cands, NEEDS)
        assert len(ordered) == 4 and ordered[-1].key == "p/spare"
        picks[ordered[0].key] += 1
    assert picks == {"p/a": 50, "p/b": 30, "p/c": 20}


def test_weighted_only_zero_weights_fall_back_to_configured_order() -> None:
    cands = [cand("p/b", 1, weight=0), cand("p/a", 0, weight=0)]
    assert keys(Weighted().order(cands, NEEDS)) == ["p/a", "p/b"]


def test_least_latency_explores_unmeasured_first_then_orders_by_ewma() -> None:
    a, b, c = cand("p/a", 0), cand("p/b", 1), cand("p/c", 2)
    a.health.on_success(0.5)
    c.health.on_success(0.2)
    ll = LeastLatency(explore_every=0)
    assert keys(ll.order([a, b, c], NEEDS)) == ["p/b", "p/c", "p/a"]
    b.health.on_success(0.3)
    assert keys(ll.order([a, b, c], NEEDS)) == ["p/c", "p/b", "p/a"]


def test_least_latency_uses_ttft_for_streams() -> None:
    a, b = cand("p/a", 0), cand("p/b", 1)
    a.health.on_success(1.0, ttft_s=0.1)  # slow overall, quick first token
    b.health.on_success(0.5, ttft_s=0.4)
    ll = LeastLatency(explore_every=0)
    assert keys(ll.order([a, b], Needs())) == ["p/b", "p/a"]
    assert keys(ll.order([a, b], Needs(stream=True))) == ["p/a", "p/b"]


def simulate(
    ll: LeastLatency,
    cands: list[Candidate],
    latency: dict[str, float],
    clock: Clock,
    n: int,
) -> list[str]:
    """Send n sequential requests to the first ordered candidate; report latency."""
    chosen: list[str] = []
    for _ in range(n):
        ready, _ = split_available(ll.order(cands, NEEDS))
        target = claim_first(ready)
        assert target is not None
        start = clock()
        clock.now += latency[target.key]
        target.health.on_success(clock() - start)
        chosen.append(target.key)
    return chosen


def test_least_latency_shifts_traffic_to_a_5x_faster_target() -> None:
    clock = Clock()
    slow, fast = cand("p/slow", 0, clock), cand("p/fast", 1, clock)
    ll = LeastLatency(explore_every=20, rng=random.Random(7))
    chosen = simulate(ll, [slow, fast], {"p/slow": 0.5, "p/fast": 0.1}, clock, 40)
    assert chosen[:2] == ["p/slow", "p/fast"]  # both measured once first
    tail = Counter(chosen[2:])
    assert tail["p/fast"] >= 36  # only the exploration picks (1 in 20) go slow
    assert tail["p/slow"] == 38 - tail["p/fast"]


def test_least_latency_notices_a_target_that_became_faster() -> None:
    clock = Clock()
    a, b = cand("p/a", 0, clock), cand("p/b", 1, clock)
    ll = LeastLatency(explore_every=5, rng=random.Random(1))
    latency = {"p/a": 0.5, "p/b": 0.2}
    first = Counter(simulate(ll, [a, b], latency, clock, 30))
    assert first["p/b"] > first["p/a"]
    latency["p/a"] = 0.02  # a got 10x faster; only exploration can reveal it
    later = simulate(ll, [a, b], latency, clock, 60)
    assert Counter(later[-20:])["p/a"] >= 16


def test_least_latency_without_exploring_never_picks_the_slow_one() -> None:
    clock = Clock()
    slow, fast = cand("p/slow", 0, clock), cand("p/fast", 1, clock)
    chosen = simulate(
        LeastLatency(explore_every=0), [slow, fast], {"p/slow": 0.5, "p/fast": 0.1}, clock, 50
    )
    assert chosen.count("p/slow") == 1  # the initial measurement only


def test_least_latency_rejects_negative_explore_every() -> None:
    with pytest.raises(ValueError):
        LeastLatency(explore_every=-1)


def test_lowest_cost_prefers_cheaper_and_puts_unknown_price_last() -> None:
    unknown = cand("p/unknown", 0)  # 0/0: price not configured
    pricey = cand("p/gpt-4o", 1, input_per_mtok=2.5, output_per_mtok=10.0)
    cheap = cand("p/mini", 2, input_per_mtok=0.15, output_per_mtok=0.6)
    cheap_twin = cand("p/mini-2", 3, input_per_mtok=0.15, output_per_mtok=0.6)
    needs = Needs(prompt_tokens=1000)
    order = LowestCost().order([unknown, pricey, cheap_twin, cheap], needs)
    assert keys(order) == ["p/mini", "p/mini-2", "p/gpt-4o", "p/unknown"]
    # 1000 * 0.15 + 256 (default output) * 0.6, per million
    assert LowestCost.estimate(cheap, needs) == pytest.approx(0.0003036)
    assert LowestCost.estimate(unknown, needs) is None


def test_lowest_cost_output_weight_depends_on_max_tokens() -> None:
    # cheap input / pricey output vs. the opposite: the answer flips with max_tokens.
    in_cheap = cand("p/in-cheap", 0, input_per_mtok=1.0, output_per_mtok=20.0)
    out_cheap = cand("p/out-cheap", 1, input_per_mtok=5.0, output_per_mtok=2.0)
    lc = LowestCost()
    short = Needs(prompt_tokens=10000, max_output_tokens=10)
    long = Needs(prompt_tokens=10000, max_output_tokens=10000)
    assert lc.order([in_cheap, out_cheap], short)[0].key == "p/in-cheap"
    assert lc.order([in_cheap, out_cheap], long)[0].key == "p/out-cheap"

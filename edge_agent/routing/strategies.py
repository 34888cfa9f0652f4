"""Routing strategies: order a model's candidate targets by preference (sans-IO).

The flow for one request:

1. `capability_filter` drops targets that cannot serve it (tools/vision/json,
   context window) and says why for each;
2. a strategy's `order()` ranks all remaining candidates (first = preferred, the
   rest = failover order). Strategies ignore health on purpose, so that one policy
   (below) applies to all of them;
3. `split_available` moves currently unusable targets to the back, keeping order.
   It only *peeks* at health, so it never claims a half-open probe;
4. `claim_first` walks that order and calls `TargetHealth.available()` until one
   target accepts: only the target actually tried takes the half-open probe. Call
   `available()` the same way on each failover target when (and only if) you move
   to it.

`plan()` bundles the four steps for the common case.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from edge_agent.routing.health import TargetHealth

CAPABILITIES: tuple[str, ...] = ("tools", "vision", "json")

# Output length assumed for cost ranking when the request sets no max_tokens.
DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True, kw_only=True)
class Candidate:
    key: str  # "provider/model"
    index: int  # position in the model route's configured targets
    health: TargetHealth = field(compare=False)
    weight: float = 1.0
    input_per_mtok: float = 0.0  # 0/0 means the price is unknown (see LowestCost)
    output_per_mtok: float = 0.0
    capabilities: frozenset[str] | None = None  # None: not declared, not filtered
    context_window: int | None = None  # None: not declared, not filtered


@dataclass(frozen=True, kw_only=True)
class Needs:
    tools: bool = False
    vision: bool = False
    json: bool = False
    prompt_tokens: int = 0  # an estimate, see estimate_tokens
    max_output_tokens: int | None = None
    stream: bool = False  # rank by time-to-first-token where it is known


def estimate_tokens(chars: int, chars_per_token: float = 4.0) -> int:
    """~4 characters per token (or as given), rounded up: any non-empty text is >= 1."""
    return math.ceil(chars / chars_per_token) if chars > 0 else 0


def capability_filter(
    cands: Sequence[Candidate], needs: Needs
) -> tuple[list[Candidate], dict[str, str]]:
    """Keep the candidates able to serve `needs`; map each rejected key to why."""
    wanted = [c for c in CAPABILITIES if getattr(needs, c)]
    output = needs.max_output_tokens or 0
    total = needs.prompt_tokens + output
    kept: list[Candidate] = []
    rejected: dict[str, str] = {}
    for cand in cands:
        problems: list[str] = []
        if cand.capabilities is not None:
            missing = [c for c in wanted if c not in cand.capabilities]
            if len(missing) == 1:
                problems.append(f"no '{missing[0]}' capability")
            elif missing:
                problems.append(f"no {' or '.join(repr(m) for m in missing)} capabilities")
        if cand.context_window is not None and total > cand.context_window:
            prompt = f"prompt ~{needs.prompt_tokens} tokens"
            if needs.max_output_tokens:
                prompt += f" + max_tokens {needs.max_output_tokens}"
                verb = "exceed"
            else:
                verb = "exceeds"
            problems.append(f"{prompt} {verb} the context window {cand.context_window}")
        if problems:
            rejected[cand.key] = "; ".join(problems)
        else:
            kept.append(cand)
    return kept, rejected


def split_available(ordered: Sequence[Candidate]) -> tuple[list[Candidate], list[Candidate]]:
    """(usable now, unusable now), each in the given order. Uses `peek()`: no side effects."""
    ready: list[Candidate] = []
    blocked: list[Candidate] = []
    for cand in ordered:
        (ready if cand.health.peek() else blocked).append(cand)
    return ready, blocked


def claim_first(ordered: Sequence[Candidate]) -> Candidate | None:
    """The first candidate whose `available()` accepts (claiming a half-open probe)."""
    for cand in ordered:
        if cand.health.available():
            return cand
    return None


class Strategy(Protocol):
    name: str

    def order(self, cands: Sequence[Candidate], needs: Needs) -> list[Candidate]:
        """All of `cands`, most preferred first."""
        ...


def _by_index(cands: Sequence[Candidate]) -> list[Candidate]:
    return sorted(cands, key=lambda c: c.index)


class Priority:
    """Configured order: the first target unless it is unusable."""

    name: str = "priority"

    def order(self, cands: Sequence[Candidate], needs: Needs) -> list[Candidate]:
        return _by_index(cands)


class RoundRobin:
    """Rotate the starting target on each call; failover continues in configured order."""

    name: str = "round_robin"

    def __init__(self) -> None:
        self._calls = 0

    def order(self, cands: Sequence[Candidate], needs: Needs) -> list[Candidate]:
        ordered = _by_index(cands)
        if not ordered:
            return []
        start = self._calls % len(ordered)
        self._calls += 1
        return ordered[start:] + ordered[:start]


class Weighted:
    """Smooth weighted round-robin (as in nginx): deterministic and evenly interleaved.

    Each call adds every positive weight to its target's running score, picks the
    highest score and subtracts the total from it. Over any run of sum(weights) calls
    each target is first exactly `weight` times, without bursts. Weight-0 targets are
    never chosen first: they only serve as failover, after all weighted ones.
    """

    name: str = "weighted"

    def __init__(self) -> None:
        self._score: dict[str, float] = {}

    def order(self, cands: Sequence[Candidate], needs: Needs) -> list[Candidate]:
        weighted = [c for c in _by_index(cands) if c.weight > 0]
        spare = [c for c in _by_index(cands) if c.weight <= 0]
        if not weighted:
            return spare
        total = 0.0
        for c in weighted:
            self._score[c.key] = self._score.get(c.key, 0.0) + c.weight
            total += c.weight
        # max() keeps the first of equal scores, i.e. the lower index: deterministic.
        best = max(weighted, key=lambda c: self._score[c.key])
        self._score[best.key] -= total
        # Failover order: whoever would be picked next.
        rest = sorted(
            (c for c in weighted if c is not best),
            key=lambda c: (-self._score[c.key], c.index),
        )
        return [best, *rest, *spare]


class LeastLatency:
    """Fastest measured target first (EWMA latency, or EWMA TTFT for streams).

    Targets with no measurement yet come first, to get one. Every `explore_every`-th
    call puts a random non-best target first, so one that got faster since its last
    measurement is noticed (0 disables exploring).
    """

    name: str = "least_latency"

    def __init__(self, explore_every: int = 20, rng: random.Random | None = None) -> None:
        if explore_every < 0:
            raise ValueError(f"explore_every must be >= 0, got {explore_every}")
        self.explore_every = explore_every
        self._rng = rng if rng is not None else random.Random()
        self._calls = 0

    @staticmethod
    def _metric(cand: Candidate, stream: bool) -> float | None:
        # Per candidate: a target without TTFT samples yet falls back to total latency.
        h = cand.health
        if stream and h.ewma_ttft_s is not None:
            return h.ewma_ttft_s
        return h.ewma_latency_s

    def order(self, cands: Sequence[Candidate], needs: Needs) -> list[Candidate]:
        self._calls += 1
        unmeasured: list[Candidate] = []
        measured: list[tuple[float, int, Candidate]] = []
        for c in _by_index(cands):
            m = self._metric(c, needs.stream)
            if m is None:
                unmeasured.append(c)
            else:
                measured.append((m, c.index, c))
        measured.sort(key=lambda t: (t[0], t[1]))
        ranked = [c for _, _, c in measured]
        explore = (
            not unmeasured
            and len(ranked) > 1
            and self.explore_every > 0
            and self._calls % self.explore_every == 0
        )
        if explore:
            pick = ranked.pop(1 + self._rng.randrange(len(ranked) - 1))
            ranked.insert(0, pick)
        return unmeasured + ranked


class LowestCost:
    """Cheapest estimated request first; ties by configured order.

    Estimated cost = prompt_tokens * input_per_mtok + output * output_per_mtok
    (per million), output being max_tokens or 256 when unset. A target whose input
    and output prices are both 0 has an *unknown* price (0 is the config default),
    and unknown is not free: such targets sort after every priced one. To prefer a
    genuinely free target (self-hosted), give it a tiny price or use `priority`.
    """

    name: str = "lowest_cost"

    @staticmethod
    def estimate(cand: Candidate, needs: Needs) -> float | None:
        """USD for this request, or None when the price is unknown."""
        if cand.input_per_mtok == 0 and cand.output_per_mtok == 0:
            return None
        out = needs.max_output_tokens or DEFAULT_OUTPUT_TOKENS
        return (needs.prompt_tokens * cand.input_per_mtok + out * cand.output_per_mtok) / 1_000_000

    def order(self, cands: Sequence[Candidate], needs: Needs) -> list[Candidate]:
        def key(c: Candidate) -> tuple[bool, float, int]:
            cost = self.estimate(c, needs)
            return (cost is None, cost or 0.0, c.index)

        return sorted(cands, key=key)


STRATEGIES: dict[str, Callable[[], Strategy]] = {
    RoundRobin.name: RoundRobin,
    Weighted.name: Weighted,
    Priority.name: Priority,
    LeastLatency.name: LeastLatency,
    LowestCost.name: LowestCost,
}


@dataclass(frozen=True, slots=True)
class RoutePlan:
    ordered: list[Candidate]  # usable now, preferred first; failover follows the list
    unavailable: dict[str, str]  # key → health reason (circuit open, cooling down…)
    rejected: dict[str, str]  # key → capability / context-window reason


def plan(strategy: Strategy, cands: Sequence[Candidate], needs: Needs) -> RoutePlan:
    """Filter, order and split by health; claims nothing (see `claim_first`)."""
    kept, rejected = capability_filter(cands, needs)
    ready, blocked = split_available(strategy.order(kept, needs))
    unavailable = {c.key: c.health.reason() or "unavailable" for c in blocked}
    return RoutePlan(ordered=ready, unavailable=unavailable, rejected=rejected)

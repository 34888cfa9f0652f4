"""Load shedding for the semantic tier: when to skip a lookup instead of queueing it.

A semantic lookup costs milliseconds of CPU (embedding the prompt, the verifier's
parse) against well under one for everything else a request needs. Under load that
work must not cost the gateway its throughput: a lookup the tier cannot afford is
skipped (counted as `shed`) and the request goes on as if the tier were off for it.
Two rules, both per process:

- **Queue**: at most `max_pending` lookups in flight. One more would wait behind the
  others, so its answer (or its store) comes late: the embedder cannot keep up.
- **CPU share**: the lookups' own CPU time (measured on the embedder and verifier
  threads, and for their own steps on the event loop) may use at most `max_cpu_share`
  of one core, as a token bucket holding half a second's worth of that share. This is
  what keeps the tier from taking the cores Envoy and the event loop need while the
  embedder still "keeps up". A lookup is charged once it has run, so the bucket can go
  into debt; none is admitted until the debt is paid back.

Sans-IO: the caller passes the clock and the CPU seconds spent so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BURST_S = 0.5  # the bucket holds this many seconds' worth of the CPU share


@dataclass(slots=True)
class Shedder:
    max_pending: int
    max_cpu_share: float | None  # None: no CPU cap (only the queue rule)
    # CPU seconds already accounted for: the spenders' total when shedding starts.
    spent_s: float = 0.0
    pending: int = 0
    burst_s: float = field(init=False)  # CPU seconds of credit at most
    _credit: float = field(init=False)
    _at: float | None = None  # clock of the last refill

    def __post_init__(self) -> None:
        self.burst_s = (self.max_cpu_share or 0.0) * BURST_S
        self._credit = self.burst_s

    def admit(self, now: float, cpu_spent_s: float) -> str | None:
        """None to run a lookup now (then `done()` when it ends), else why it is shed:
        "queue" or "cpu". `cpu_spent_s`: the lookups' CPU seconds so far (cumulative)."""
        if self.pending >= self.max_pending:
            return "queue"
        if self.max_cpu_share is not None:
            elapsed = 0.0 if self._at is None else max(0.0, now - self._at)
            used = max(0.0, cpu_spent_s - self.spent_s)
            self._at, self.spent_s = now, max(self.spent_s, cpu_spent_s)
            self._credit = min(self.burst_s, self._credit + elapsed * self.max_cpu_share - used)
            if self._credit <= 0:
                return "cpu"
        self.pending += 1
        return None

    def done(self) -> None:
        self.pending = max(0, self.pending - 1)


class CpuMeter:
    """CPU time (the thread's own, not wall time) of the work done in `with meter:`.

    One meter per thread that does the work: `+=` on a float is not atomic across
    threads, and a meter is never entered twice at once.
    """

    __slots__ = ("_started", "s")

    def __init__(self) -> None:
        self.s = 0.0
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.thread_time()

    def __exit__(self, *_: object) -> None:
        self.s += time.thread_time() - self._started

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`, metered: what an executor runs on the meter's thread."""
        with self:
            return fn(*args)

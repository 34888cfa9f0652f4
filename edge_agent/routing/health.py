"""Per-target health: circuit breaker, 429/503 cooldown and EWMA latency (sans-IO).

One `TargetHealth` per routing target ("provider/model"). The exchange reports every
upstream outcome (`on_success` / `on_failure` / `on_cancel`); routing asks `peek()`
(side-effect free) to order candidates and `available()` (claims the half-open probe)
at the moment it actually sends a request to a target.

Breaker states:

- ``closed``: traffic flows. Opens after `failure_threshold` consecutive failures, or
  when at least `error_ratio` of the last `window` outcomes failed (once `min_requests`
  outcomes are in the window; checked as each failure is recorded).
- ``open``: no traffic for `open_s`, then ``half_open``.
- ``half_open``: exactly one probe request at a time. Success closes, an ill-health
  failure re-opens. A probe that never reports (request aborted, outcome lost) is
  released after `open_s`, so a target can't stay stuck half-open.

A cooldown (429, or 503, with Retry-After honoured up to `max_retry_after_s`) blocks a
target independently of the breaker. A 429 only sets the cooldown: rate limiting says
the provider is healthy but busy, so it must not trip the breaker. A 503 is both a
cooldown and a failure.

Not thread-safe by design: the agent runs one event loop, and every method is
synchronous and short.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Literal, get_args

State = Literal["closed", "open", "half_open"]
#: A state as the edge_agent_target_circuit_state gauge's value (worse is higher).
CIRCUIT_STATES: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}
FailureKind = Literal["status", "rate_limited", "connect", "timeout"]
_FAILURE_KINDS: frozenset[str] = frozenset(get_args(FailureKind))

# RFC 9110 delay-seconds is an integer; some providers send "1.5", so accept a decimal.
# ASCII only: str.isdigit() would also accept other scripts' digits.
_DELAY_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    failure_threshold: int = 5
    error_ratio: float = 0.5
    window: int = 20
    min_requests: int = 10
    open_s: float = 30.0
    max_retry_after_s: float = 300.0
    default_cooldown_s: float = 1.0
    ewma_alpha: float = 0.2

    def __post_init__(self) -> None:
        # Fail at config load, not on the first failing request.
        problems: list[str] = []
        if self.failure_threshold < 1:
            problems.append(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        if not 0.0 < self.error_ratio <= 1.0:
            problems.append(f"error_ratio must be in (0, 1], got {self.error_ratio}")
        if self.window < 1:
            problems.append(f"window must be >= 1, got {self.window}")
        if not 1 <= self.min_requests <= self.window:
            problems.append(
                f"min_requests must be in [1, window={self.window}], got {self.min_requests}"
            )
        if not self.open_s > 0:
            problems.append(f"open_s must be > 0, got {self.open_s}")
        if not self.max_retry_after_s >= 0:
            problems.append(f"max_retry_after_s must be >= 0, got {self.max_retry_after_s}")
        if not self.default_cooldown_s >= 0:
            problems.append(f"default_cooldown_s must be >= 0, got {self.default_cooldown_s}")
        if not 0.0 < self.ewma_alpha <= 1.0:
            problems.append(f"ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        if problems:
            raise ValueError("; ".join(problems))


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait according to a Retry-After header value, or None.

    Accepts delay-seconds ("120", and the non-standard "1.5") and an HTTP-date
    (relative to `now_epoch`, Unix seconds; a date in the past gives 0.0). Negative,
    empty or malformed values give None. Never raises. The result is not capped:
    the caller applies its own ceiling (`HealthPolicy.max_retry_after_s`).
    """
    if value is None:
        return None
    try:
        text = value.strip()
        if not text:
            return None
        if _DELAY_RE.fullmatch(text):
            return float(text)  # a 400-digit value gives inf, which any cap handles
        when = parsedate_to_datetime(text)
        if when is None:  # older Pythons returned None instead of raising
            return None
        if when.tzinfo is None:  # "-0000" means UTC with unknown origin: take it as UTC
            when = when.replace(tzinfo=UTC)
        delta = when.timestamp() - now_epoch
        return max(0.0, delta) if math.isfinite(delta) else None
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.1f} s"


class TargetHealth:
    """Health of one routing target; `clock` returns monotonic seconds."""

    def __init__(
        self,
        key: str,
        policy: HealthPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.key = key
        self.policy = policy if policy is not None else HealthPolicy()
        self._clock = clock
        self._state: State = "closed"
        self._open_until = 0.0
        self._open_why = ""
        self._probe_at: float | None = None  # when the half-open probe was handed out
        self._cooldown_until = 0.0
        self._cooldown_why = ""
        self._consecutive = 0
        # True = failure. Rate limits are not recorded: they are not ill health.
        self._recent: deque[bool] = deque(maxlen=self.policy.window)
        self.successes = 0
        self.failures = 0
        self.rate_limited = 0
        self._last_failure: tuple[str, int | None, float] | None = None
        self.ewma_latency_s: float | None = None
        self.ewma_ttft_s: float | None = None

    # -- queries -------------------------------------------------------------------

    @property
    def state(self) -> State:
        self._refresh(self._clock())
        return self._state

    def peek(self) -> bool:
        """Would `available()` return True now? Never claims the half-open probe."""
        now = self._clock()
        self._refresh(now)
        return self._admits(now)

    def available(self) -> bool:
        """True if a request may be sent now; in half_open this claims the single probe.

        Call it only for the target you are about to send to: the probe it takes is
        held until `on_success` / `on_failure` / `on_cancel` (or released after
        `open_s` if none ever comes).
        """
        now = self._clock()
        self._refresh(now)
        if not self._admits(now):
            return False
        if self._state == "half_open":
            self._probe_at = now
        return True

    def reason(self) -> str | None:
        """Why the target is unavailable right now, for logs and 503 messages."""
        now = self._clock()
        self._refresh(now)
        if self._state == "open":
            return f"circuit open for {_fmt_s(self._open_until - now)} more after {self._open_why}"
        if now < self._cooldown_until:
            return (
                f"cooling down for {_fmt_s(self._cooldown_until - now)} more "
                f"after {self._cooldown_why}"
            )
        if self._state == "half_open" and self._probe_held(now):
            return "circuit half-open: waiting for the outcome of the probe request"
        return None

    def error_ratio(self) -> float | None:
        """Failure share among the recent window, None before any outcome."""
        if not self._recent:
            return None
        return sum(self._recent) / len(self._recent)

    # -- outcomes ------------------------------------------------------------------

    def on_success(self, latency_s: float, ttft_s: float | None = None) -> None:
        now = self._clock()
        self._refresh(now)
        # A success while open is a straggler sent before the breaker opened; one
        # lucky answer is not proof of recovery, so the open period runs its course.
        if self._state == "half_open":
            self._close()  # first, so the probe's success starts the fresh window
        self.successes += 1
        self._consecutive = 0
        self._recent.append(False)
        self.ewma_latency_s = self._ewma(self.ewma_latency_s, latency_s)
        if ttft_s is not None:
            self.ewma_ttft_s = self._ewma(self.ewma_ttft_s, ttft_s)

    def on_failure(
        self, kind: FailureKind, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        if kind not in _FAILURE_KINDS:
            raise ValueError(f"unknown failure kind {kind!r}; expected one of {_FAILURE_KINDS}")
        now = self._clock()
        self._refresh(now)
        self.failures += 1
        self._last_failure = (kind, status, now)
        rate_limited = kind == "rate_limited" or status == 429
        if rate_limited or status == 503:
            self._cool_down(now, 429 if rate_limited else 503, retry_after_s)
        if rate_limited:
            self.rate_limited += 1
            # The probe got an answer from a live provider: free it for the next try
            # after the cooldown instead of re-opening.
            if self._state == "half_open":
                self._probe_at = None
            return
        self._consecutive += 1
        self._recent.append(True)
        if self._state == "half_open":
            self._open(now, f"the half-open probe failed ({self._describe_last()})")
        elif self._state == "closed":
            if self._consecutive >= self.policy.failure_threshold:
                self._open(
                    now,
                    f"{self._consecutive} consecutive failures (last: {self._describe_last()})",
                )
            elif len(self._recent) >= self.policy.min_requests:
                failed = sum(self._recent)
                if failed / len(self._recent) >= self.policy.error_ratio:
                    self._open(
                        now,
                        f"{failed} of the last {len(self._recent)} requests failed "
                        f"(last: {self._describe_last()})",
                    )
        # While open, late failures from requests sent earlier do not extend the period.

    def on_cancel(self) -> None:
        """The request ended without an outcome (client went away): free the probe."""
        if self._state == "half_open":
            self._probe_at = None

    # -- admin ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """JSON-ready view for /admin/routing."""
        now = self._clock()
        self._refresh(now)
        ratio = self.error_ratio()
        last: dict[str, object] | None = None
        if self._last_failure is not None:
            kind, status, at = self._last_failure
            last = {"kind": kind, "status": status, "ago_s": round(now - at, 3)}
        return {
            "key": self.key,
            "state": self._state,
            "available": self._admits(now),
            "reason": self.reason(),
            "consecutive_failures": self._consecutive,
            "error_ratio": None if ratio is None else round(ratio, 4),
            "window_requests": len(self._recent),
            "cooldown_remaining_s": round(max(0.0, self._cooldown_until - now), 3),
            "open_remaining_s": (
                round(self._open_until - now, 3) if self._state == "open" else 0.0
            ),
            "probe_in_flight": self._state == "half_open" and self._probe_held(now),
            "ewma_latency_ms": _ms(self.ewma_latency_s),
            "ewma_ttft_ms": _ms(self.ewma_ttft_s),
            "successes": self.successes,
            "failures": self.failures,
            "rate_limited": self.rate_limited,
            "last_failure": last,
        }

    # -- internals -----------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        # The open → half_open transition is lazy: nothing ticks, time is read on use.
        if self._state == "open" and now >= self._open_until:
            self._state = "half_open"
            self._probe_at = None

    def _probe_held(self, now: float) -> bool:
        # A probe that never reported is forgotten after open_s.
        return self._probe_at is not None and now - self._probe_at < self.policy.open_s

    def _admits(self, now: float) -> bool:
        if self._state == "open" or now < self._cooldown_until:
            return False
        return not (self._state == "half_open" and self._probe_held(now))

    def _open(self, now: float, why: str) -> None:
        self._state = "open"
        self._open_until = now + self.policy.open_s
        self._open_why = why
        self._probe_at = None

    def _close(self) -> None:
        self._state = "closed"
        self._probe_at = None
        self._consecutive = 0
        # Pre-outage failures must not re-trip the ratio rule right after recovery.
        self._recent.clear()

    def _cool_down(self, now: float, status: int, retry_after_s: float | None) -> None:
        if retry_after_s is None or math.isnan(retry_after_s):
            seconds, why = self.policy.default_cooldown_s, f"{status}"
        else:
            seconds, why = retry_after_s, f"{status} (Retry-After)"
        seconds = min(max(0.0, seconds), self.policy.max_retry_after_s)
        until = now + seconds
        if until >= self._cooldown_until:  # never shorten a cooldown already running
            self._cooldown_until = until
            self._cooldown_why = why

    def _ewma(self, prev: float | None, sample: float) -> float:
        sample = max(0.0, sample)  # guard against a caller's clock going backwards
        if prev is None:
            return sample
        a = self.policy.ewma_alpha
        return a * sample + (1.0 - a) * prev

    def _describe_last(self) -> str:
        if self._last_failure is None:
            return "unknown"
        kind, status, _ = self._last_failure
        return f"{kind} {status}" if status is not None else kind


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)

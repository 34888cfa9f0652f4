from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from edge_agent.routing.health import HealthPolicy, TargetHealth, parse_retry_after
from tests.helpers import Clock


def make(policy: HealthPolicy | None = None) -> tuple[TargetHealth, Clock]:
    clock = Clock()
    return TargetHealth("openai/gpt-4o", policy, clock=clock), clock


def trip(h: TargetHealth, n: int = 5) -> None:
    for _ in range(n):
        h.on_failure("status", 502)


# -- breaker ---------------------------------------------------------------------


def test_opens_after_consecutive_failures() -> None:
    h, clock = make()
    trip(h, 4)
    assert h.available() and h.state == "closed"
    h.on_failure("timeout")
    assert h.state == "open"
    assert not h.available() and not h.peek()
    clock.now += 17.7
    assert h.reason() == "circuit open for 12.3 s more after 5 consecutive failures (last: timeout)"


def test_success_resets_the_consecutive_count() -> None:
    h, _ = make(HealthPolicy(error_ratio=1.0))  # isolate the consecutive rule
    for _ in range(3):
        trip(h, 4)
        h.on_success(0.1)
    assert h.state == "closed"
    assert h.snapshot()["consecutive_failures"] == 0


def test_opens_by_error_ratio_once_min_requests_seen() -> None:
    h, _ = make()
    for _ in range(4):  # S F S F ...: never 2 failures in a row
        h.on_success(0.1)
        h.on_failure("connect")
    h.on_success(0.1)
    assert h.state == "closed"  # 4 of 9: below min_requests anyway
    h.on_failure("connect")  # 5 of 10 = 0.5
    assert h.state == "open"
    assert h.reason() is not None
    assert "5 of the last 10 requests failed (last: connect)" in str(h.reason())


def test_error_ratio_below_threshold_stays_closed() -> None:
    h, _ = make()
    for _ in range(10):  # 2 failures per 5 outcomes = 0.4 over a full window
        h.on_success(0.1)
        h.on_failure("status", 500)
        h.on_success(0.1)
        h.on_success(0.1)
        h.on_failure("status", 500)
    assert h.state == "closed"
    assert h.error_ratio() == pytest.approx(0.4)


def test_half_open_allows_exactly_one_probe_and_success_closes() -> None:
    h, clock = make()
    trip(h)
    clock.now += 29.9
    assert h.state == "open" and not h.peek()
    clock.now += 0.2
    assert h.state == "half_open"
    assert h.peek() and h.peek()  # peeking never takes the probe
    assert h.available() is True  # the probe
    assert h.available() is False
    assert not h.peek()
    assert h.reason() == "circuit half-open: waiting for the outcome of the probe request"
    h.on_success(0.2)
    assert h.state == "closed"
    assert all(h.available() for _ in range(5))
    # Old failures were forgotten: one more failure must not re-open via the ratio rule.
    h.on_failure("status", 500)
    assert h.state == "closed"


def test_failure_in_half_open_reopens() -> None:
    h, clock = make()
    trip(h)
    clock.now += 30
    assert h.available()
    h.on_failure("connect")
    assert h.state == "open"
    assert h.reason() == "circuit open for 30.0 s more after the half-open probe failed (connect)"
    clock.now += 30
    assert h.state == "half_open" and h.available()


def test_lost_probe_is_released_after_open_s() -> None:
    h, clock = make()
    trip(h)
    clock.now += 30
    assert h.available()  # probe handed out, never reported
    clock.now += 29.9
    assert not h.available()
    clock.now += 0.2
    assert h.available()  # released: a new probe
    assert not h.available()


def test_cancel_releases_the_probe() -> None:
    h, clock = make()
    trip(h)
    clock.now += 30
    assert h.available()
    h.on_cancel()
    assert h.available()


def test_success_while_open_does_not_close() -> None:
    h, _ = make()
    trip(h)
    h.on_success(0.1)  # a straggler sent before the breaker opened
    assert h.state == "open"


# -- cooldown --------------------------------------------------------------------


def test_429_retry_after_cooldown_then_available() -> None:
    h, clock = make()
    h.on_failure("rate_limited", 429, retry_after_s=2.0)
    assert not h.available() and not h.peek()
    clock.now += 0.2
    assert h.reason() == "cooling down for 1.8 s more after 429 (Retry-After)"
    clock.now += 1.7
    assert not h.available()
    clock.now += 0.2
    assert h.available()
    assert h.reason() is None
    assert h.state == "closed"


def test_429_without_retry_after_uses_default_cooldown() -> None:
    h, clock = make(HealthPolicy(default_cooldown_s=1.0))
    h.on_failure("rate_limited", 429)
    assert h.reason() == "cooling down for 1.0 s more after 429"
    clock.now += 1.0
    assert h.available()


def test_retry_after_is_capped() -> None:
    h, _ = make(HealthPolicy(max_retry_after_s=60))
    h.on_failure("rate_limited", 429, retry_after_s=float("inf"))
    assert h.snapshot()["cooldown_remaining_s"] == 60.0


def test_a_shorter_retry_after_does_not_shorten_a_cooldown() -> None:
    h, _ = make()
    h.on_failure("rate_limited", 429, retry_after_s=10)
    h.on_failure("rate_limited", 429, retry_after_s=1)
    assert h.snapshot()["cooldown_remaining_s"] == 10.0


def test_429_alone_never_opens_the_breaker() -> None:
    h, clock = make()
    for _ in range(200):
        h.on_failure("rate_limited", 429, retry_after_s=0.5)
        clock.now += 0.5
    assert h.state == "closed"
    assert h.available()
    snap = h.snapshot()
    assert snap["consecutive_failures"] == 0
    assert snap["error_ratio"] is None
    assert snap["failures"] == 200 and snap["rate_limited"] == 200


def test_status_kind_with_429_is_a_rate_limit_too() -> None:
    h, _ = make()
    for _ in range(10):
        h.on_failure("status", 429)
    assert h.state == "closed"


def test_503_cools_down_and_counts_toward_the_breaker() -> None:
    h, clock = make()
    h.on_failure("status", 503, retry_after_s=3)
    assert h.reason() == "cooling down for 3.0 s more after 503 (Retry-After)"
    clock.now += 3
    assert h.available()
    trip(h, 4)
    assert h.state == "open"


def test_429_on_the_half_open_probe_frees_it_without_reopening() -> None:
    h, clock = make()
    trip(h)
    clock.now += 30
    assert h.available()
    h.on_failure("rate_limited", 429, retry_after_s=1)
    assert h.state == "half_open"
    assert not h.available()  # cooling down
    clock.now += 1
    assert h.available()  # a new probe


# -- measurements and snapshot ---------------------------------------------------


def test_ewma_latency_and_ttft() -> None:
    h, _ = make(HealthPolicy(ewma_alpha=0.5))
    assert h.ewma_latency_s is None and h.ewma_ttft_s is None
    h.on_success(1.0)
    assert h.ewma_latency_s == 1.0 and h.ewma_ttft_s is None
    h.on_success(2.0, ttft_s=0.4)
    assert h.ewma_latency_s == pytest.approx(1.5)
    assert h.ewma_ttft_s == pytest.approx(0.4)
    h.on_success(3.0, ttft_s=0.2)
    assert h.ewma_latency_s == pytest.approx(2.25)
    assert h.ewma_ttft_s == pytest.approx(0.3)


def test_snapshot_is_json_ready() -> None:
    h, clock = make()
    h.on_success(0.25, ttft_s=0.05)
    trip(h)
    clock.now += 10
    snap = h.snapshot()
    json.dumps(snap)  # must not raise
    assert snap["state"] == "open"
    assert snap["available"] is False
    assert snap["open_remaining_s"] == 20.0
    assert snap["cooldown_remaining_s"] == 0.0
    assert snap["consecutive_failures"] == 5
    assert snap["error_ratio"] == pytest.approx(5 / 6, abs=1e-4)
    assert snap["ewma_latency_ms"] == 250.0
    assert snap["ewma_ttft_ms"] == 50.0
    assert snap["successes"] == 1 and snap["failures"] == 5
    assert snap["last_failure"] == {"kind": "status", "status": 502, "ago_s": 10.0}
    assert str(snap["reason"]).startswith("circuit open for 20.0 s more after 5 consecutive")


def test_unknown_failure_kind_is_a_programming_error() -> None:
    h, _ = make()
    with pytest.raises(ValueError, match="unknown failure kind"):
        h.on_failure("oops")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"error_ratio": 0.0},
        {"error_ratio": 1.5},
        {"window": 5, "min_requests": 6},
        {"open_s": 0},
        {"ewma_alpha": 0},
        {"default_cooldown_s": -1},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HealthPolicy(**kwargs)  # type: ignore[arg-type]


# -- Retry-After parsing ---------------------------------------------------------

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("Wed, 01 Jan 2025 12:00:30 GMT", 30.0),
        ("Wed, 01 Jan 2025 11:59:00 GMT", 0.0),  # in the past: retry now
        (None, None),
        ("", None),
        ("   ", None),
        ("-5", None),
        ("-1.5", None),
        ("abc", None),
        ("1e3", None),
        ("1.", None),
        (".5", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are not delay-seconds
        ("Wed, 32 Jan 2025 12:00:30 GMT", None),
        ("Wed, 01 Foo 2025 12:00:30 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    got = parse_retry_after(value, NOW)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_parse_retry_after_http_date_round_trip() -> None:
    when = datetime.fromtimestamp(NOW + 90, tz=UTC)
    assert parse_retry_after(format_datetime(when, usegmt=True), NOW) == pytest.approx(90.0)


def test_recovery_forgets_pre_outage_failures() -> None:
    h, clock = make()
    for _ in range(5):
        h.on_success(0.1)
    trip(h)  # window: 5 successes + 5 failures
    clock.now += 30
    assert h.available()
    h.on_success(0.1)
    assert h.state == "closed" and h.error_ratio() == 0.0
    h.on_failure("status", 500)  # would be 6 of 12 if the old window were kept
    assert h.state == "closed"

"""Limits through the sans-IO exchange: admission, the gate before a provider call,
headers, refusals in the client's schema, settlement."""

from __future__ import annotations

from typing import Any

import orjson

from edge_agent.agent import Agent
from edge_agent.config import parse_config
from edge_agent.extproc.decisions import Continue, Respond
from edge_agent.identity.keys import hash_key
from edge_agent.pipeline.base import Pending
from tests.helpers import chat_completion

KEY = "sk-ea-limits-000000000000000000000000000"
CLOCK = [1_800_000_000.0]


def agent(tenant: dict[str, Any], key: dict[str, Any] | None = None) -> Agent:
    config = parse_config(
        {
            "providers": [
                {
                    "name": "p",
                    "type": "openai",
                    "base_url": "http://127.0.0.1:1",
                    "api_key_env": "KEY_P",
                    "models": [{"name": "x", "input_per_mtok": 1000.0, "output_per_mtok": 1000.0}],
                }
            ],
            "models": [{"name": "m", "targets": ["p/x"]}],
            "cache": {"semantic": {"enabled": False}},
            "auth": {"required": True},
            "tenants": [
                {
                    "name": "t",
                    **tenant,
                    "keys": [{"name": "k", "sha256": hash_key(KEY), **(key or {})}],
                }
            ],
        }
    )
    a = Agent(config, environ={"KEY_P": "sk-p"})
    assert a.limiter is not None
    a.limiter.clock = lambda: CLOCK[0]
    return a


def run(a: Agent, content: str = "hi", **body: Any) -> tuple[Any, Any]:
    ex = a.exchange()
    h = {":method": "POST", ":path": "/v1/chat/completions", "authorization": f"Bearer {KEY}"}
    first = ex.request_headers(h, end_of_stream=False)
    assert isinstance(first, Continue)
    payload = {"model": "m", "messages": [{"role": "user", "content": content}], **body}
    decision = ex.request_body(orjson.dumps(payload))
    while isinstance(decision, Pending):  # the local ledger answers at once
        import asyncio

        result = asyncio.run(decision.effect.perform(a))
        decision = decision.send(result)
    return ex, decision


def answer(ex: Any, usage: tuple[int, int]) -> None:
    body = chat_completion("ok", prompt_tokens=usage[0], completion_tokens=usage[1])
    ex.response_headers({":status": "200", "content-type": "application/json"})
    ex.response_body(body, end_of_stream=True)
    ex.close()


def test_the_sixth_request_in_a_minute_is_a_429_with_openais_headers() -> None:
    a = agent({"limits": {"requests_per_minute": 5}})
    for i in range(5):
        ex, decision = run(a, f"q{i}", max_tokens=5)
        assert isinstance(decision, Continue)
        answer(ex, (3, 2))
    _, refused = run(a, "q6", max_tokens=5)
    assert isinstance(refused, Respond) and refused.status == 429
    headers = dict(refused.headers)
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["retry-after"] == "12"
    names = [k for k, _ in refused.headers]
    assert len(names) == len(set(names))  # each header once
    error = orjson.loads(refused.body)["error"]
    assert error["code"] == "rate_limit_exceeded" and "tenant 't'" in error["message"]


def test_success_carries_the_headers_and_a_hit_counts_as_a_request() -> None:
    a = agent({"limits": {"requests_per_minute": 3, "tokens_per_minute": 10_000}})
    ex, decision = run(a, "same", max_tokens=10)
    answer(ex, (5, 5))
    _, hit = run(a, "same", max_tokens=10)
    assert isinstance(hit, Respond) and dict(hit.headers)["x-edge-agent-cache"] == "hit"
    assert dict(hit.headers)["x-ratelimit-remaining-requests"] == "1"
    ex, decision = run(a, "other", max_tokens=10)
    assert isinstance(decision, Continue)
    resp = ex.response_headers({":status": "200", "content-type": "application/json"})
    assert dict(resp.set_headers)["x-ratelimit-remaining-requests"] == "0"


def test_a_request_that_cannot_reserve_its_tokens_is_refused_before_the_provider() -> None:
    a = agent({"limits": {"tokens_per_minute": 100}})
    _, refused = run(a, "long", max_tokens=500)
    assert isinstance(refused, Respond) and refused.status == 429
    assert orjson.loads(refused.body)["error"]["type"] == "tokens"
    # A short one fits, and the unused part of its reservation comes back at once.
    ex, decision = run(a, "short", max_tokens=60)
    assert isinstance(decision, Continue)
    answer(ex, (10, 2))
    ex, decision = run(a, "short again", max_tokens=60)
    assert isinstance(decision, Continue)


def test_a_spent_budget_is_insufficient_quota_but_a_hit_still_serves() -> None:
    # $1000 per million tokens: a request of ~30 tokens reserves ~$0.03.
    a = agent({"budget": {"usd_per_day": 0.05}})
    ex, decision = run(a, "cached question", max_tokens=5)
    assert isinstance(decision, Continue)
    answer(ex, (20, 20))  # cost 0.04
    _, refused = run(a, "new question", max_tokens=5)
    assert isinstance(refused, Respond) and refused.status == 429
    error = orjson.loads(refused.body)["error"]
    assert (
        error["code"] == "insufficient_quota" and "daily budget of tenant 't'" in error["message"]
    )
    assert "resets at" in error["message"]
    _, hit = run(a, "cached question", max_tokens=5)
    assert isinstance(hit, Respond) and hit.status == 200


def test_an_error_answer_refunds_everything() -> None:
    a = agent({"limits": {"tokens_per_minute": 100}})
    ex, decision = run(a, "x", max_tokens=70)
    assert isinstance(decision, Continue)
    ex.response_headers({":status": "500", "content-type": "application/json"})
    ex.response_body(b'{"error": {"message": "boom"}}', end_of_stream=True)
    ex.close()
    _, again = run(a, "y", max_tokens=70)
    assert isinstance(again, Continue)


def test_a_keys_own_limit_applies_on_top_of_its_tenants() -> None:
    a = agent({"limits": {"requests_per_minute": 100}}, {"limits": {"requests_per_minute": 1}})
    ex, _decision = run(a, "a", max_tokens=5)
    answer(ex, (1, 1))
    _, refused = run(a, "b", max_tokens=5)
    assert isinstance(refused, Respond) and refused.status == 429
    assert "key 'k'" in orjson.loads(refused.body)["error"]["message"]


# ---- found in review ----------------------------------------------------------------
def test_a_stream_nobody_reads_keeps_its_concurrency_slot_until_it_ends() -> None:
    a = agent({"limits": {"concurrent_requests": 1}})
    ex, decision = run(a, "stream", max_tokens=5, stream=True, temperature=1)
    assert isinstance(decision, Continue)
    resp = ex.response_headers({":status": "200", "content-type": "text/event-stream"})
    assert resp.response_body_mode is None  # not read: the stream flows past the agent
    _, second = run(a, "other", max_tokens=5)
    assert isinstance(second, Respond) and second.status == 429  # the slot is still held
    ex.close()
    _, third = run(a, "third", max_tokens=5)
    assert isinstance(third, Continue)


def test_a_request_sent_then_abandoned_keeps_its_reservation() -> None:
    a = agent({"limits": {"tokens_per_minute": 100}})
    ex, decision = run(a, "x", max_tokens=70)
    assert isinstance(decision, Continue)
    ex.close()  # the client went away after the request was sent
    _, again = run(a, "y", max_tokens=70)
    assert isinstance(again, Respond) and again.status == 429


def test_a_request_larger_than_a_minute_says_so() -> None:
    a = agent({"limits": {"tokens_per_minute": 100}})
    _, refused = run(a, "x", max_tokens=500)
    assert isinstance(refused, Respond) and refused.status == 429
    assert "Request too large" in orjson.loads(refused.body)["error"]["message"]
    assert "retry-after" not in dict(refused.headers)
    names = [k for k, _ in refused.headers]
    assert names.count("x-ratelimit-limit-tokens") == 1  # once, not once per source
    assert len(names) == len(set(names))


def test_an_admission_redis_answers_too_late_is_undone() -> None:
    import asyncio

    from edge_agent.limits.ledger import Ask, LocalLedger, Scope, Settle, Verdict

    class Slow:
        def __init__(self) -> None:
            self.inner = LocalLedger()
            self.settled: list[Settle] = []

        async def admit(self, ask: Ask) -> Verdict:
            await asyncio.sleep(0.2)
            return self.inner.admit(ask)

        async def settle(self, settle: Settle) -> None:
            self.settled.append(settle)
            self.inner.settle(settle)

        async def spent(self, scope: str, now: float) -> tuple[float, float]:
            return self.inner.spent(scope, now)

    a = agent({"limits": {"concurrent_requests": 1}})
    assert a.limiter is not None
    slow = Slow()
    a.limiter.attach(slow)

    async def scenario() -> None:
        ask = Ask("late", (Scope("t:t", concurrent_requests=1),), 10, 0.0, CLOCK[0])
        verdict, local = await a.limiter.admit(ask)  # 50 ms deadline: decided locally
        assert local and verdict.admitted
        await asyncio.sleep(0.4)  # Redis grants it late; the agent gives it all back
        assert [s.request_id for s in slow.settled] == ["late"]
        assert slow.settled[0].release and slow.settled[0].tokens_refund == 10

    asyncio.run(scenario())

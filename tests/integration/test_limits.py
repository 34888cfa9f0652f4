"""Limits and budgets through real Envoy with the SDKs: requests per minute, tokens per
minute with up-front reservation, budgets, one window shared by two gateways on one
Redis, and Redis killed under load."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from edge_agent.demo.upstream import FakeOpenAI
from edge_agent.identity.keys import hash_key
from tests.conftest import PROVIDER_KEYS, two_provider_config
from tests.helpers import Gateway, http, listen_block, post_json, running_gateway
from tests.redis_support import RedisServer

RPM_KEY = "sk-ea-rpm-five-0000000000000000000000000"
TPM_KEY = "sk-ea-tpm-000000000000000000000000000000"
BUDGET_KEY = "sk-ea-budget-000000000000000000000000000"
SHARED_KEY = "sk-ea-shared-window-0000000000000000000000"
BURST_KEY = "sk-ea-burst-000000000000000000000000000000"
CHAIN_KEY = "sk-ea-chain-000000000000000000000000000000"
ADMIN = "limits-admin-token"
ENV = {**PROVIDER_KEYS, "EDGE_ADMIN_TOKEN": ADMIN}


def config(providers: dict[str, FakeOpenAI], **extra: Any) -> dict[str, Any]:
    return two_provider_config(
        providers,
        auth={"required": True},
        admin={"token_env": "EDGE_ADMIN_TOKEN"},
        tenants=[
            {
                "name": "rpm",
                "keys": [
                    {
                        "name": "five",
                        "sha256": hash_key(RPM_KEY),
                        "limits": {"requests_per_minute": 5},
                    }
                ],
            },
            {
                "name": "tpm",
                "limits": {"tokens_per_minute": 300},
                "keys": [{"name": "t", "sha256": hash_key(TPM_KEY)}],
            },
            {
                # alpha-chat costs $1 / $2 per million tokens: ~$0.0001 per request here.
                "name": "thrifty",
                "budget": {"usd_per_day": 0.0003},
                "keys": [{"name": "b", "sha256": hash_key(BUDGET_KEY)}],
            },
            {
                "name": "shared",
                "limits": {"requests_per_minute": 8},
                "keys": [{"name": "s", "sha256": hash_key(SHARED_KEY)}],
            },
            {
                "name": "chain",
                "limits": {"tokens_per_minute": 300},
                "keys": [{"name": "c", "sha256": hash_key(CHAIN_KEY)}],
            },
            {
                "name": "burst",
                "limits": {"requests_per_minute": 20},
                "keys": [{"name": "b", "sha256": hash_key(BURST_KEY)}],
            },
        ],
        **extra,
    )


@pytest.fixture(scope="module")
def limited(
    providers: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("limits"), config(providers), ENV) as gw:
        yield gw


def ask(gw: Gateway, key: str, text: str, **extra: Any) -> Any:
    return post_json(
        f"{gw.url}/v1/chat/completions",
        {"model": "gpt-alpha", "messages": [{"role": "user", "content": text}], **extra},
        {"authorization": f"Bearer {key}"},
    )


def test_the_sixth_request_in_a_minute_is_refused_with_openais_headers(
    limited: Gateway, unique: str
) -> None:
    client = openai.OpenAI(base_url=f"{limited.url}/v1", api_key=RPM_KEY, max_retries=0)
    for i in range(5):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-alpha", max_tokens=5, messages=[{"role": "user", "content": f"{unique} {i}"}]
        )
        assert raw.headers["x-ratelimit-limit-requests"] == "5"
        assert raw.headers["x-ratelimit-remaining-requests"] == str(4 - i)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(
            model="gpt-alpha", max_tokens=5, messages=[{"role": "user", "content": unique}]
        )
    headers = err.value.response.headers
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-reset-requests"]
    assert err.value.code == "rate_limit_exceeded"


def test_a_key_made_at_run_time_has_its_own_limits(limited: Gateway, unique: str) -> None:
    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    made = http(
        "POST",
        f"{limited.admin_url}/admin/keys",
        b'{"tenant": "rpm", "name": "one-a-minute", "limits": {"requests_per_minute": 1}}',
        headers,
    )
    assert made.status == 201, made.body
    key = made.json()["key"]
    assert made.json()["limits"] == {"requests_per_minute": 1}
    assert ask(limited, key, unique, max_tokens=5).status == 200
    refused = ask(limited, key, unique + " again", max_tokens=5)
    assert refused.status == 429 and "key 'one-a-minute'" in refused.json()["error"]["message"]
    bad = http(
        "POST",
        f"{limited.admin_url}/admin/keys",
        b'{"tenant": "rpm", "name": "x", "limits": {"requests_per_minute": 0}}',
        headers,
    )
    assert bad.status == 400 and "limits.requests_per_minute" in bad.json()["error"]


def test_a_reservation_that_cannot_fit_never_reaches_the_provider(
    limited: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    refused = ask(limited, TPM_KEY, unique, max_tokens=1000)  # more than 300 per minute
    assert refused.status == 429 and refused.json()["error"]["type"] == "tokens"
    assert not fresh["alpha"].requests
    # ~250 reserved (the prompt's estimate + 200), a few used: the rest is back at once,
    # so another ~250 fits right away (without the refund only ~50 would be left).
    first = ask(limited, TPM_KEY, unique + " a", max_tokens=200)
    assert first.status == 200, first.body
    assert first.json()["usage"]["total_tokens"] < 50
    again = ask(limited, TPM_KEY, unique + " b", max_tokens=200)
    assert again.status == 200, again.body


def test_a_failover_chains_usage_settles_its_reservation(limited: Gateway, unique: str) -> None:
    # "both" has two targets: a failover chain, whose usage its upstream attempt reads.
    # (JSON answers: a stream's usage is read only when it is translated, docs/limits.md.)
    for i in range(3):
        reply = post_json(
            f"{limited.url}/v1/chat/completions",
            {
                "model": "both",
                "max_tokens": 200,
                "temperature": 1,  # not cached: only the limits want the usage
                "messages": [{"role": "user", "content": f"{unique} {i}"}],
            },
            {"authorization": f"Bearer {CHAIN_KEY}"},
        )
        # ~250 reserved each time from 300 a minute: only the refunds make room.
        assert reply.status == 200, (i, reply.body)


def test_a_spent_budget_is_insufficient_quota_but_hits_still_serve(
    limited: Gateway, unique: str
) -> None:
    statuses = []
    for i in range(40):
        reply = ask(limited, BUDGET_KEY, f"{unique} {i}", max_tokens=20)
        statuses.append(reply.status)
        if reply.status == 429:
            error = reply.json()["error"]
            assert error["code"] == "insufficient_quota"
            assert "daily budget of tenant 'thrifty'" in error["message"]
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    hit = ask(limited, BUDGET_KEY, f"{unique} 0", max_tokens=20)
    assert hit.status == 200 and hit.headers["x-edge-agent-cache"] == "hit"
    headers = {"authorization": f"Bearer {ADMIN}"}
    time.sleep(0.2)  # recorded at each request's end
    report = http("GET", f"{limited.admin_url}/admin/spend?tenant=thrifty", headers=headers)
    assert report.status == 200, report.body
    body = report.json()
    [row] = body["rows"]
    assert row["key"] == "b" and row["model"] == "gpt-alpha"
    assert row["cost_usd"] > 0 and row["input_tokens"] > 0 and row["saved_usd"] > 0
    assert row["requests"] == len(statuses)  # the refused one did not count; the hit did
    assert body["budgets"]["thrifty"]["usd_per_day"] == 0.0003
    assert 0 < body["budgets"]["thrifty"]["usd_today"] <= 0.0003


@pytest.mark.redis
def test_two_gateways_on_one_redis_enforce_one_window(
    providers: dict[str, FakeOpenAI],
    tmp_path: Path,
    redis_url: str,
    prefix: str,
    unique: str,
) -> None:
    def cfg() -> dict[str, Any]:
        c = config(
            providers,
            cache={
                "semantic": {"enabled": False},
                "redis": {"url": redis_url, "key_prefix": prefix},
            },
        )
        c["listen"] = listen_block()
        return c

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_gateway(tmp_path / "a", cfg(), ENV) as one,
        running_gateway(tmp_path / "b", cfg(), ENV) as two,
    ):
        statuses = [ask(one, SHARED_KEY, f"{unique} one {i}").status for i in range(5)]
        statuses += [ask(two, SHARED_KEY, f"{unique} two {i}").status for i in range(5)]
        assert statuses.count(429) == 2, statuses
        # 50 at once, spread over both gateways, against a window of 20: no overshoot
        # (beyond what the bucket refills while they run: 20 per minute).
        fake = providers["alpha"]
        fake.reset()
        gws = [one, two] * 25
        started = time.monotonic()
        with ThreadPoolExecutor(50) as pool:
            results = list(
                pool.map(lambda i: ask(gws[i], BURST_KEY, f"{unique} burst {i}").status, range(50))
            )
        refilled = int((time.monotonic() - started) * 20 / 60)
        assert set(results) <= {200, 429}
        assert 20 <= results.count(200) <= 20 + refilled, results.count(200)
        assert len(fake.requests) == results.count(200)  # a refused one never went upstream


@pytest.mark.redis
def test_redis_killed_under_load_fails_no_request(
    providers: dict[str, FakeOpenAI], tmp_path: Path, private_redis: RedisServer, unique: str
) -> None:
    c = config(
        providers,
        cache={
            "semantic": {"enabled": False},
            "redis": {"url": private_redis.url, "timeout_ms": 50},
        },
    )
    with running_gateway(tmp_path, c, ENV) as gw:
        stop = threading.Event()
        failures: list[int] = []
        done = [0]

        def load() -> None:
            i = 0
            while not stop.is_set():
                status = ask(
                    gw, TPM_KEY, f"{unique} load {threading.get_ident()} {i}", max_tokens=5
                ).status
                if status not in (200, 429):
                    failures.append(status)
                done[0] += 1
                i += 1

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        private_redis.stop()
        time.sleep(1.5)
        # Meanwhile the process enforces its own share: the 6th request of "five" fails.
        assert [ask(gw, RPM_KEY, f"{unique} {i}", max_tokens=5).status for i in range(6)][-1] == 429
        private_redis.start()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join(10)
        assert not failures, failures[:10]
        assert done[0] > 20

        def fallbacks() -> float:
            return sum(
                float(line.split()[-1])
                for line in gw.metrics().splitlines()
                if line.startswith("edge_agent_limits_fallback_total")
            )

        during = fallbacks()
        assert during > 0
        # Redis is back: the shared ledger decides again (no more fallbacks).
        for i in range(5):
            assert ask(gw, TPM_KEY, f"{unique} after {i}", max_tokens=5).status in (200, 429)
        assert fallbacks() == during


def test_the_anthropic_sdk_sees_a_rate_limit_error(limited: Gateway, unique: str) -> None:
    import anthropic

    headers = {"authorization": f"Bearer {ADMIN}", "content-type": "application/json"}
    made = http(
        "POST",
        f"{limited.admin_url}/admin/keys",
        b'{"tenant": "rpm", "name": "claude", "limits": {"requests_per_minute": 1}}',
        headers,
    )
    client = anthropic.Anthropic(base_url=limited.url, api_key=made.json()["key"], max_retries=0)
    message = [{"role": "user", "content": unique}]
    assert client.messages.create(model="gpt-alpha", max_tokens=5, messages=message).content
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model="gpt-alpha", max_tokens=5, messages=message)
    assert err.value.response.headers["retry-after"]

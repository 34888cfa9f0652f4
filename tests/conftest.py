"""Shared fixtures: fake providers on 127.0.0.1 and a real gateway (Envoy + agent)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.helpers import Gateway, listen_block, started_fakes, write_config
from tests.redis_support import REDIS_URL, RedisServer, unavailable

PROVIDER_KEYS = {"ALPHA_KEY": "sk-alpha-provider-key", "BETA_KEY": "sk-beta-provider-key"}
CLIENT_KEY = "sk-client-key-never-forwarded"


@pytest.fixture(scope="session")
def providers() -> Iterator[dict[str, FakeOpenAI]]:
    threads = {
        "alpha": FakeOpenAIThread(name="alpha", api_key=PROVIDER_KEYS["ALPHA_KEY"]),
        "beta": FakeOpenAIThread(name="beta", api_key=PROVIDER_KEYS["BETA_KEY"]),
    }
    with started_fakes(threads) as fakes:
        yield fakes


def two_provider_config(fakes: dict[str, FakeOpenAI], **extra: Any) -> dict[str, Any]:
    """Two OpenAI-style providers on 127.0.0.1, each with its own key."""
    return {
        "listen": listen_block(),
        "providers": [
            {
                "name": "alpha",
                "type": "openai",
                "base_url": fakes["alpha"].url,
                "api_key_env": "ALPHA_KEY",
                "models": [
                    {"name": "alpha-chat", "input_per_mtok": 1.0, "output_per_mtok": 2.0},
                    {"name": "alpha-embed"},
                    {"name": "alpha-instruct"},
                ],
            },
            {
                # SDK-style base URL with /v1: the agent must not double it.
                "name": "beta",
                "type": "openai_compatible",
                "base_url": fakes["beta"].url + "/v1",
                "api_key_env": "BETA_KEY",
                "models": [{"name": "beta-chat"}],
            },
        ],
        "models": [
            {"name": "gpt-alpha", "targets": ["alpha/alpha-chat"]},
            {"name": "beta-chat", "targets": ["beta/beta-chat"]},
            {"name": "both", "targets": ["alpha/alpha-chat", "beta/beta-chat"]},
            {"name": "embed", "targets": ["alpha/alpha-embed"]},
            {"name": "instruct", "targets": ["alpha/alpha-instruct"]},
        ],
        # The shared gateway tests the exact tier with look-alike prompts
        # ("<test name>-<pid>"); the semantic tier has its own gateway and tests.
        "cache": {"semantic": {"enabled": False}},
        **extra,
    }


@pytest.fixture(scope="session")
def gateway(
    providers: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("gateway")
    config = two_provider_config(providers)
    gw = Gateway(config, write_config(tmp, config), dict(PROVIDER_KEYS))
    gw.start()
    try:
        yield gw
    finally:
        code = gw.stop()
        # A clean SIGTERM stop is part of the contract of `edge-agent run`.
        assert code == 0, f"edge-agent run exited {code}:\n{gw.logs()}"


@pytest.fixture
def fresh(providers: dict[str, FakeOpenAI]) -> dict[str, FakeOpenAI]:
    for fake in providers.values():
        fake.reset()
    return providers


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A prompt no other test sends, so cache state never leaks between tests."""
    return f"{request.node.name}-{os.getpid()}"


# ---- real Redis (tests/redis_support.py) ----------------------------------------------
@pytest.fixture
def redis_url() -> str:
    try:
        with redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1) as r:
            r.ping()
    except (redis.RedisError, OSError) as exc:
        unavailable(f"Redis not reachable at {REDIS_URL} ({exc!r})")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    with redis.Redis.from_url(redis_url) as r:
        # Hash-tagged keys ({<prefix>:keys}, {<prefix>:rl}:...) start with the brace.
        for pattern in (f"{name}:*", f"{{{name}:*"):
            for key in r.scan_iter(match=pattern, count=1000):
                r.delete(key)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("no redis-server binary on PATH")
    assert binary is not None
    server = RedisServer(binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()

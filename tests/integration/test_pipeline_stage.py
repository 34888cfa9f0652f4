"""A stage added by one file (tests/example_stage.py) and one line of config, through
real Envoy: it runs after parsing, before the caches, in the client's error shape."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.demo.upstream import FakeOpenAI
from tests.conftest import PROVIDER_KEYS, two_provider_config
from tests.helpers import Gateway, listen_block, post_json, running_gateway, write_config


@pytest.fixture(scope="module")
def staged(
    providers: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = two_provider_config(providers)
    config["pipeline"] = {
        "guardrails": ["tests.example_stage:refuse_flagged"],  # the line
        "response": ["tests.example_response_stage:redact"],  # and a response stage's
    }
    with running_gateway(tmp_path_factory.mktemp("stage"), config, dict(PROVIDER_KEYS)) as gw:
        yield gw


def test_the_stage_refuses_before_cache_and_provider(
    staged: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    payload = {"model": "gpt-alpha", "messages": [{"role": "user", "content": unique}]}
    url = f"{staged.url}/v1/chat/completions"
    assert post_json(url, payload).headers["x-edge-agent-cache"] == "miss"
    assert post_json(url, payload).headers["x-edge-agent-cache"] == "hit"
    refused = post_json(url, payload, {"x-example-refuse": "1"})  # would be a hit
    assert refused.status == 403
    assert refused.json()["error"]["code"] == "example_refused"
    assert len(fresh["alpha"].requests) == 1


def test_the_stage_answers_in_the_clients_schema(
    staged: Gateway, fresh: dict[str, FakeOpenAI]
) -> None:
    payload = {
        "model": "gpt-alpha",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
    }
    refused = post_json(f"{staged.url}/v1/messages", payload, {"x-example-refuse": "1"})
    assert refused.status == 403
    body = refused.json()
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert not fresh["alpha"].requests


def test_a_response_stage_sees_the_answer_before_it_is_stored(
    staged: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    payload = {"model": "gpt-alpha", "messages": [{"role": "user", "content": f"{unique} secret"}]}
    url = f"{staged.url}/v1/chat/completions"
    first = post_json(url, payload)
    text = first.json()["choices"][0]["message"]["content"]
    assert "[gone]" in text and "secret" not in text
    assert first.json()["usage"]["total_tokens"] > 0  # still metered, still JSON
    again = post_json(url, payload)  # from the cache: the stored answer was the redacted one
    assert again.headers["x-edge-agent-cache"] == "hit"
    assert again.json() == first.json()
    streamed = post_json(url, {**payload, "messages": [{"role": "user", "content": "secret s"}]})
    assert b"secret" not in streamed.body
    sse = post_json(
        url, {**payload, "stream": True, "messages": [{"role": "user", "content": "x secret"}]}
    )
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert b"[gone]" in sse.body and b"secret" not in sse.body
    assert len(fresh["alpha"].requests) == 3


def test_a_stage_that_cannot_be_loaded_stops_the_start(tmp_path: Path) -> None:
    config = {
        "listen": listen_block(),
        "providers": [{"name": "p", "type": "openai_compatible", "base_url": "http://127.0.0.1:9"}],
        "models": [{"name": "m", "targets": ["p/x"]}],
        "pipeline": {"policy": ["tests.no_such_module:stage"]},
    }
    path = write_config(tmp_path, config)
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "pipeline.policy[0]" in proc.stderr and "no_such_module" in proc.stderr
    assert "Traceback" not in proc.stderr

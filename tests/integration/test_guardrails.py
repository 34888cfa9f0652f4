"""Guardrails through real Envoy + agent: personal data redacted before it reaches the
provider (the fake records what it received) or refused; deny rules; the cache follows
the redacted prompt."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edge_agent.demo.upstream import FakeOpenAI, FakeOpenAIThread
from tests.helpers import (
    Gateway,
    free_port,
    listen_block,
    metric_value,
    post_json,
    running_gateway,
)

KEY = "sk-guard-provider-key"
EMAIL = "jane.doe@example.com"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"  # passes Luhn
BAD_CARD = "4111 1111 1111 1112"  # fails Luhn: not a card number
IBAN = "GB82 WEST 1234 5698 7654 32"
SECRETS = (EMAIL, PHONE, CARD, IBAN)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    thread = FakeOpenAIThread(name="guard", api_key=KEY)
    started = thread.start()
    try:
        yield started
    finally:
        thread.stop()


def _config(fake: FakeOpenAI, action: str, **extra: Any) -> dict[str, Any]:
    return {
        "listen": listen_block(),
        "providers": [
            {
                "name": "p",
                "type": "openai",
                "base_url": fake.url,
                "api_key_env": "GUARD_KEY",
                "models": [{"name": "p-chat"}],
            },
            {
                "name": "q",
                "type": "openai",
                "base_url": fake.url,
                "api_key_env": "GUARD_KEY",
                "models": [{"name": "q-chat"}],
            },
        ],
        "models": [
            # The client's name is the provider's: the agent would not rewrite the body.
            {"name": "p-chat", "targets": ["p/p-chat"]},
            # A failover chain: every attempt must get the redacted body too.
            {"name": "chain", "strategy": "priority", "targets": ["p/p-chat", "q/q-chat"]},
        ],
        "cache": {"semantic": {"enabled": False}},
        "guardrails": {
            "pii": {"action": action, "phone_region": "GB"},
            "deny": [{"name": "no-private-keys", "regex": "(?i)BEGIN (RSA|OPENSSH) PRIVATE KEY"}],
        },
        **extra,
    }


@pytest.fixture(scope="module")
def redacting(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("guard-redact")
    with running_gateway(tmp, _config(fake, "redact"), {"GUARD_KEY": KEY}) as gw:
        yield gw


@pytest.fixture(scope="module")
def blocking(fake: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp: Path = tmp_path_factory.mktemp("guard-block")
    with running_gateway(tmp, _config(fake, "block"), {"GUARD_KEY": KEY}) as gw:
        yield gw


def chat(gw: Gateway, text: str, model: str = "p-chat", **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return post_json(f"{gw.url}/v1/chat/completions", body)


def prompt(tag: str) -> str:
    return (
        f"[{tag}] Write to {EMAIL} or call {PHONE}. Charge card {CARD}, not {BAD_CARD}; "
        f"refunds to IBAN {IBAN}."
    )


def test_personal_data_never_reaches_the_provider(redacting: Gateway, fake: FakeOpenAI) -> None:
    fake.reset()
    reply = chat(redacting, prompt(f"redact-{uuid.uuid4().hex}"))
    assert reply.status == 200, reply.body
    [seen] = fake.requests
    sent = seen.body.decode()
    for secret in SECRETS:
        assert secret not in sent
    for entity in ("<EMAIL_ADDRESS>", "<PHONE_NUMBER>", "<CREDIT_CARD>", "<IBAN_CODE>"):
        assert entity in sent
    assert BAD_CARD in sent  # fails Luhn: left alone
    text = redacting.metrics()
    assert metric_value(text, "edge_agent_guardrail_findings_total", entity="CREDIT_CARD") >= 1
    # The log line counts the types, never the values.
    logs = redacting.logs()
    assert "CREDIT_CARD:1" in logs and CARD not in logs and EMAIL not in logs


def test_every_failover_attempt_gets_the_redacted_body(
    redacting: Gateway, fake: FakeOpenAI
) -> None:
    fake.reset()
    fake.fail_next(503, count=1)  # the first target fails: the second attempt follows
    reply = chat(redacting, prompt(f"chain-{uuid.uuid4().hex}"), model="chain")
    assert reply.status == 200, reply.body
    assert len(fake.requests) == 2
    for seen in fake.requests:
        for secret in SECRETS:
            assert secret not in seen.body.decode()


def test_the_cache_follows_what_the_provider_saw(redacting: Gateway, fake: FakeOpenAI) -> None:
    fake.reset()
    tag = f"cache-{uuid.uuid4().hex}"
    first = chat(redacting, f"[{tag}] My address is {EMAIL}; summarise my rights.")
    other = chat(redacting, f"[{tag}] My address is john.roe@example.org; summarise my rights.")
    assert first.status == 200 and other.status == 200
    # The same prompt once redacted: one provider call, and the cached answer (given to
    # another person) holds nobody's address, since the provider never saw one.
    assert other.headers["x-edge-agent-cache"] == "hit"
    assert len(fake.requests) == 1
    assert EMAIL not in other.body.decode()


def test_block_names_the_types_found_never_the_values(blocking: Gateway, fake: FakeOpenAI) -> None:
    fake.reset()
    reply = chat(blocking, prompt(f"block-{uuid.uuid4().hex}"))
    assert reply.status == 400
    error = reply.json()["error"]
    assert error["code"] == "pii_detected"
    for entity in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE"):
        assert entity in error["message"]
    for secret in SECRETS:
        assert secret not in reply.body.decode()
    assert not fake.requests
    clean = chat(blocking, f"nothing personal here {uuid.uuid4().hex}")
    assert clean.status == 200


def test_deny_rules_refuse_naming_the_rule(redacting: Gateway, fake: FakeOpenAI) -> None:
    fake.reset()
    reply = chat(redacting, "-----BEGIN RSA PRIVATE KEY-----\nMIIEow...\nplease fix")
    assert reply.status == 400
    error = reply.json()["error"]
    assert error["code"] == "denied_by_policy" and "no-private-keys" in error["message"]
    assert "MIIEow" not in reply.body.decode()
    assert not fake.requests


# -- the operator's own checker -------------------------------------------------------


class _Checker(BaseHTTPRequestHandler):
    """allow, except: "forbidden" → block, "rewrite me" → redact, "slow" → too late."""

    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append(payload)
        text = payload["text"]
        if "slow" in text:
            time.sleep(1.0)
        if "forbidden" in text:
            answer = {"action": "block", "reason": "topic not allowed here"}
        elif "rewrite me" in text:
            answer = {"action": "redact", "text": text.replace("rewrite me", "[rewritten]")}
        else:
            answer = {"action": "allow"}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def checker() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Checker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/check"
    finally:
        server.shutdown()
        server.server_close()


def _checked(fake: FakeOpenAI, url: str, on_error: str) -> dict[str, Any]:
    config = _config(fake, "off")
    config["guardrails"] = {"external": {"url": url, "timeout_ms": 300, "on_error": on_error}}
    return config


def test_the_external_checker_allows_blocks_and_rewrites(
    fake: FakeOpenAI, checker: str, tmp_path: Path
) -> None:
    with running_gateway(tmp_path, _checked(fake, checker, "closed"), {"GUARD_KEY": KEY}) as gw:
        fake.reset()
        _Checker.seen.clear()
        assert chat(gw, f"hello {uuid.uuid4().hex}").status == 200
        assert _Checker.seen[-1]["direction"] == "request"
        assert _Checker.seen[-1]["tenant"] == "default"
        refused = chat(gw, "a forbidden topic")
        assert refused.status == 400
        error = refused.json()["error"]
        assert error["code"] == "blocked_by_guardrail" and "topic not allowed" in error["message"]
        fake.reset()
        assert chat(gw, f"please rewrite me {uuid.uuid4().hex}").status == 200
        [seen] = fake.requests
        assert b"rewrite me" not in seen.body and b"[rewritten]" in seen.body
        # Too late is a failure: closed refuses with 503.
        late = chat(gw, "slow one")
        assert late.status == 503 and late.json()["error"]["code"] == "guardrail_unavailable"


@pytest.mark.parametrize(("on_error", "status"), [("open", 200), ("closed", 503)])
def test_a_checker_that_is_down(
    fake: FakeOpenAI, tmp_path: Path, on_error: str, status: int
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/check"
    with running_gateway(tmp_path, _checked(fake, dead, on_error), {"GUARD_KEY": KEY}) as gw:
        reply = chat(gw, f"hello {uuid.uuid4().hex}")
        assert reply.status == status, reply.body

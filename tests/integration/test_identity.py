"""Who is calling, through real Envoy: virtual keys with both SDKs, model access per
tenant, runtime keys, and tenant isolation in every cache tier (adversarial)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from edge_agent.demo.upstream import FakeOpenAI
from edge_agent.identity.keys import hash_key
from tests.conftest import PROVIDER_KEYS, two_provider_config
from tests.helpers import Gateway, http, listen_block, metric_value, post_json, running_gateway

KEY_A = "sk-ea-team-a-key-for-tests-000000000000000"
KEY_B = "sk-ea-team-b-key-for-tests-000000000000000"
KEY_P1 = "sk-ea-pool-1-key-for-tests-00000000000000"
KEY_P2 = "sk-ea-pool-2-key-for-tests-00000000000000"
ADMIN_TOKEN = "admin-token-for-tests"
QUESTION = "What is the capital city of France?"
PARAPHRASE = "Which city is the capital of France?"


def _tenants() -> list[dict[str, Any]]:
    return [
        {
            "name": "team-a",
            "models": ["gpt-alpha", "both"],
            "keys": [{"name": "a-bot", "sha256": hash_key(KEY_A)}],
        },
        {"name": "team-b", "keys": [{"name": "b-bot", "sha256": hash_key(KEY_B)}]},
        {"name": "pool-1", "cache": "shared", "keys": [{"name": "p1", "sha256": hash_key(KEY_P1)}]},
        {"name": "pool-2", "cache": "shared", "keys": [{"name": "p2", "sha256": hash_key(KEY_P2)}]},
    ]


def secured_config(providers: dict[str, FakeOpenAI], **cache: Any) -> dict[str, Any]:
    return two_provider_config(
        providers,
        auth={"required": True},
        tenants=_tenants(),
        admin={"token_env": "EDGE_ADMIN_TOKEN"},
        cache={"semantic": {"enabled": True, "mode": "serve"}, **cache},
    )


ENV = {**PROVIDER_KEYS, "EDGE_ADMIN_TOKEN": ADMIN_TOKEN}


@pytest.fixture(scope="module")
def secured(
    providers: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = secured_config(providers)
    with running_gateway(tmp_path_factory.mktemp("identity"), config, ENV) as gw:
        yield gw


def chat(
    gw: Gateway,
    text: str,
    key: str | None,
    model: str = "gpt-alpha",
    system: str | None = None,
    **extra: Any,
) -> Any:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    payload = {"model": model, "messages": messages, **extra}
    return post_json(f"{gw.url}/v1/chat/completions", payload, headers)


def cache_of(reply: Any) -> str:
    return str(reply.headers["x-edge-agent-cache"])


VARIANTS = [
    (QUESTION, {}),
    (QUESTION, {"stream": True}),
    (PARAPHRASE, {}),
    (PARAPHRASE, {"stream": True}),
]


def admin(gw: Gateway, method: str, path: str, body: Any = None) -> Any:
    import orjson

    data = orjson.dumps(body) if body is not None else None
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
    return http(method, f"{gw.admin_url}{path}", data, headers)


# ---- keys with the SDKs ------------------------------------------------------------------
def test_openai_sdk_without_a_key_or_with_a_wrong_one_gets_401(secured: Gateway) -> None:
    for key in ("", "sk-ea-wrong-key", "not-even-our-shape"):
        client = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(
                model="gpt-alpha", messages=[{"role": "user", "content": "hi"}]
            )
        assert key not in str(err.value) or key == ""
    missing = chat(secured, "hi", None)
    assert missing.status == 401
    assert "no credentials" in missing.json()["error"]["message"]
    assert missing.json()["error"]["type"] == "authentication_error"


def test_anthropic_sdk_without_a_valid_key_gets_401(secured: Gateway) -> None:
    client = anthropic.Anthropic(base_url=secured.url, api_key="sk-ea-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as err:
        client.messages.create(
            model="gpt-alpha", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert "sk-ea-wrong" not in str(err.value)


def test_a_valid_key_works_and_the_provider_sees_only_its_own_key(
    secured: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    client = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=KEY_A, max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-alpha", messages=[{"role": "user", "content": unique}]
    )
    assert answer.choices[0].message.content
    claude = anthropic.Anthropic(base_url=secured.url, api_key=KEY_B, max_retries=0)
    reply = claude.messages.create(
        model="gpt-alpha", max_tokens=5, messages=[{"role": "user", "content": unique + "!"}]
    )
    assert reply.content
    seen = fresh["alpha"].requests
    assert len(seen) == 2
    for request in seen:
        assert request.headers["authorization"] == f"Bearer {PROVIDER_KEYS['ALPHA_KEY']}"
        assert "x-api-key" not in request.headers
        assert KEY_A not in str(request.headers) and KEY_B not in str(request.headers)


def test_a_model_the_tenant_may_not_use_is_403_and_not_listed(secured: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=KEY_A, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.create(
            model="beta-chat", messages=[{"role": "user", "content": "hi"}]
        )
    assert "beta-chat" in str(err.value)
    assert sorted(m.id for m in client.models.list()) == ["both", "gpt-alpha"]
    everything = openai.OpenAI(base_url=f"{secured.url}/v1", api_key=KEY_B, max_retries=0)
    assert "beta-chat" in {m.id for m in everything.models.list()}
    assert http("GET", f"{secured.url}/v1/models").status == 401


# ---- keys made at run time ---------------------------------------------------------------
def test_runtime_keys_are_made_listed_and_revoked(secured: Gateway, unique: str) -> None:
    made = admin(secured, "POST", "/admin/keys", {"tenant": "team-b", "name": "laptop"})
    assert made.status == 201, made.body
    key, key_id = made.json()["key"], made.json()["id"]
    assert key.startswith("sk-ea-")
    assert chat(secured, unique, key).status == 200
    listed = admin(secured, "GET", "/admin/keys")
    assert listed.status == 200
    mine = [k for k in listed.json()["keys"] if k["id"] == key_id]
    assert mine and mine[0]["tenant"] == "team-b" and mine[0]["last_used_at"]
    assert key not in listed.body.decode() and "sha256" not in listed.body.decode()
    assert admin(secured, "DELETE", f"/admin/keys/{key_id}").status == 200
    assert chat(secured, unique, key).status == 401
    # Changes need the admin token; bad input is answered precisely.
    assert http("GET", f"{secured.admin_url}/admin/keys").status == 401
    bad = admin(secured, "POST", "/admin/keys", {"tenant": "nobody", "name": "x"})
    assert bad.status == 400 and "tenant" in bad.json()["error"]
    past = admin(secured, "POST", "/admin/keys", {"tenant": "team-b", "name": "x", "expires_at": 1})
    assert past.status == 400 and "passed" in past.json()["error"]
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "content-type": "application/json"}
    for raw in (b"NaN", b"Infinity", b"1e400", b"99999999999999"):
        body = b'{"tenant": "team-b", "name": "x", "expires_at": ' + raw + b"}"
        odd = http("POST", f"{secured.admin_url}/admin/keys", body, headers)
        assert odd.status == 400 and "ten years" in odd.json()["error"], (raw, odd.body)


def test_an_expired_runtime_key_is_refused(secured: Gateway, unique: str) -> None:
    soon = time.time() + 1.0
    made = admin(
        secured, "POST", "/admin/keys", {"tenant": "team-b", "name": "brief", "expires_at": soon}
    )
    assert made.status == 201
    key = made.json()["key"]
    assert chat(secured, unique, key).status == 200
    time.sleep(max(0.0, soon - time.time()) + 0.1)
    assert chat(secured, unique, key).status == 401


# ---- isolation (adversarial) ---------------------------------------------------------------
def test_tenants_never_get_each_others_answers(
    secured: Gateway, fresh: dict[str, FakeOpenAI], unique: str
) -> None:
    # Each variant in a conversation of its own (the system prompt), so the only answer
    # the cache could serve is team-a's.
    for i, (text, extra) in enumerate(VARIANTS):
        system = f"You are terse. ({unique}-{i})"
        assert cache_of(chat(secured, QUESTION, KEY_A, system=system)) == "miss"
        # The control: team-a itself is served this variant from the cache...
        assert cache_of(chat(secured, text, KEY_A, system=system, **extra)).endswith("hit")
        # ...and team-b, asking exactly the same, is not.
        assert cache_of(chat(secured, text, KEY_B, system=system, **extra)) == "miss", text
    # Nothing crossed: every team-b request went to the provider.
    assert len(fresh["alpha"].requests) == 2 * len(VARIANTS)


def test_shared_tenants_share_one_pool(secured: Gateway, unique: str) -> None:
    q = f"{QUESTION} ({unique})"
    assert chat(secured, q, KEY_P1).headers["x-edge-agent-cache"] == "miss"
    assert chat(secured, q, KEY_P2).headers["x-edge-agent-cache"] == "hit"
    assert chat(secured, q, KEY_B).headers["x-edge-agent-cache"] == "miss"  # isolated


def test_purging_one_tenant_leaves_the_others(secured: Gateway, unique: str) -> None:
    q = f"{QUESTION} ({unique})"
    chat(secured, q, KEY_A)
    chat(secured, q, KEY_B)
    purged = admin(secured, "DELETE", "/admin/cache?tenant=team-a")
    assert purged.status == 200 and purged.json()["purged_here"] >= 1
    assert chat(secured, q, KEY_A).headers["x-edge-agent-cache"] == "miss"
    assert chat(secured, q, KEY_B).headers["x-edge-agent-cache"] == "hit"


def test_metrics_carry_the_tenant(secured: Gateway, unique: str) -> None:
    chat(secured, unique, KEY_A)
    text = secured.metrics()
    assert metric_value(text, "edge_agent_requests_total", tenant="team-a") >= 1
    assert metric_value(text, "edge_agent_tokens_total", tenant="team-a") >= 1
    assert KEY_A not in text and hash_key(KEY_A) not in text


# ---- fuzzed credentials ----------------------------------------------------------------------
def test_fuzzed_credentials_are_401_and_never_crash(secured: Gateway, unique: str) -> None:
    rng = random.Random(13)
    values = [
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "bearer " + "A" * 7000,
        "Bearer eyJ.eyJ.sig",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "Bearer " + ".".join("eyJ" + "x" * rng.randrange(50) for _ in range(3)),
    ]
    for _ in range(20):
        raw = bytes(rng.randrange(0x21, 0x7F) for _ in range(rng.randrange(1, 300)))
        values.append("Bearer " + raw.decode())
    for value in values:
        reply = post_json(
            f"{secured.url}/v1/chat/completions",
            {"model": "gpt-alpha", "messages": [{"role": "user", "content": unique}]},
            {"authorization": value},
        )
        assert reply.status in (401, 431), (value[:40], reply.status, reply.body[:200])
        if reply.status == 401:
            assert reply.json()["error"]["code"] == "invalid_api_key"
    headers = {"x-api-key": "k" * 20_000}
    too_big = post_json(
        f"{secured.url}/v1/chat/completions", {"model": "gpt-alpha", "messages": []}, headers
    )
    assert too_big.status in (401, 431)
    assert http("GET", f"{secured.admin_url}/healthz").status == 200
    assert chat(secured, unique, KEY_A).status == 200  # still serving


# ---- two gateways, one Redis ---------------------------------------------------------------
@pytest.mark.redis
def test_revocation_and_isolation_across_gateways_on_one_redis(
    providers: dict[str, FakeOpenAI], tmp_path: Path, redis_url: str, prefix: str, unique: str
) -> None:
    def config() -> dict[str, Any]:
        c = secured_config(providers, redis={"url": redis_url, "key_prefix": prefix})
        c["listen"] = listen_block()
        return c

    first_dir, second_dir = tmp_path / "one", tmp_path / "two"
    first_dir.mkdir()
    second_dir.mkdir()
    with (
        running_gateway(first_dir, config(), ENV) as one,
        running_gateway(second_dir, config(), ENV) as two,
    ):
        made = admin(one, "POST", "/admin/keys", {"tenant": "team-b", "name": "shared"})
        assert made.status == 201
        key, key_id = made.json()["key"], made.json()["id"]
        deadline = time.monotonic() + 5
        while chat(two, unique, key).status != 200:
            assert time.monotonic() < deadline, "the key never reached the second gateway"
            time.sleep(0.1)
        for i, (text, extra) in enumerate(VARIANTS):
            system = f"You are terse. ({unique}-{i})"
            assert cache_of(chat(one, QUESTION, KEY_A, system=system)) == "miss"
            time.sleep(0.5)  # the shared tier carries it to the other gateway
            assert cache_of(chat(two, text, KEY_A, system=system, **extra)).endswith("hit")
            assert cache_of(chat(two, text, KEY_B, system=system, **extra)) == "miss", text
        # Revoked on one: refused on both within a second.
        assert admin(one, "DELETE", f"/admin/keys/{key_id}").status == 200
        revoked_at = time.monotonic()
        while chat(two, unique, key).status != 401:
            assert time.monotonic() - revoked_at < 1.0, "revocation took over 1 s"
            time.sleep(0.05)
        assert chat(one, unique, key).status == 401


def test_check_config_warns_about_an_open_gateway(tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    config = {
        "listen": {**listen_block(), "envoy": "0.0.0.0:18080"},
        "providers": [{"name": "p", "type": "openai", "base_url": "http://127.0.0.1:9"}],
        "models": [{"name": "m", "targets": ["p/x"]}],
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "check-config", "-c", str(path), "--skip-envoy"],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )
    assert out.returncode == 0
    assert "auth.required is false" in out.stderr


# ---- mesh identity through Envoy ------------------------------------------------------------
SPIFFE_A = "spiffe://cluster.local/ns/team-a/sa/chatbot"
XFCC = "x-forwarded-client-cert"


@pytest.mark.parametrize("mesh", [True, False])
def test_the_mesh_identity_is_read_only_when_enabled_and_never_forwarded(
    providers: dict[str, FakeOpenAI], tmp_path: Path, mesh: bool, unique: str
) -> None:
    config = two_provider_config(
        providers,
        auth={"required": True, "mesh": {"enabled": mesh, "tenants": {SPIFFE_A: "team-a"}}},
        tenants=_tenants(),
    )
    # What the sidecar in front appends last names the caller; earlier elements (here a
    # forged one naming team-a's peer on the other side) are never read.
    verified = f"By=spiffe://cluster.local/ns/llm/sa/gw;Hash=ab;URI={SPIFFE_A}"
    forged = f"URI={SPIFFE_A},By=spiffe://cluster.local/ns/llm/sa/gw;URI=spiffe://x/ns/y/sa/z"
    with running_gateway(tmp_path, config, ENV) as gw:
        fake = providers["alpha"]
        fake.reset()
        reply = post_json(
            f"{gw.url}/v1/chat/completions",
            {"model": "gpt-alpha", "messages": [{"role": "user", "content": unique}]},
            {XFCC: verified},
        )
        # Disabled, Envoy drops a client's XFCC (SANITIZE) and the agent never reads it.
        assert reply.status == (200 if mesh else 401), reply.body
        assert chat(gw, unique, None, **{}).status == 401
        refused = post_json(
            f"{gw.url}/v1/chat/completions",
            {"model": "beta-chat", "messages": [{"role": "user", "content": unique}]},
            {XFCC: verified},
        )
        assert refused.status == (403 if mesh else 401)  # team-a may not use beta-chat
        forged_reply = post_json(
            f"{gw.url}/v1/chat/completions",
            {"model": "gpt-alpha", "messages": [{"role": "user", "content": unique}]},
            {XFCC: forged},
        )
        assert forged_reply.status == 401
        assert all(XFCC not in r.headers for r in fake.requests)


def test_the_keys_cli_makes_lists_and_revokes_through_the_admin_api(
    secured: Gateway, unique: str
) -> None:
    import subprocess
    import sys

    env = {**os.environ, **ENV}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "keys", *args, "-c", str(secured.config_path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )

    made = cli("create", "--tenant", "team-b", "--name", "from-cli")
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("key: ")[1].split()[0]
    key_id = made.stdout.split("id: ")[1].split()[0]
    assert chat(secured, unique, key).status == 200
    listed = cli("list")
    assert listed.returncode == 0 and key_id in listed.stdout and key not in listed.stdout
    assert cli("revoke", key_id).returncode == 0
    assert chat(secured, unique, key).status == 401
    refused = cli("create", "--tenant", "nobody", "--name", "x")
    assert refused.returncode == 1 and "tenant" in refused.stderr
    # Without the admin token the agent refuses, and the CLI says so.
    env.pop("EDGE_ADMIN_TOKEN")
    denied = cli("list")
    assert denied.returncode == 1 and "401" in denied.stderr

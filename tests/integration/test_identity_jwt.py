"""JWT bearer tokens through real Envoy and both SDKs, against a real JWKS server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from edge_agent.demo.upstream import FakeOpenAI
from tests.conftest import PROVIDER_KEYS, two_provider_config
from tests.helpers import Gateway, post_json, running_gateway
from tests.jwks_server import AUDIENCE, ISSUER, JwksServer, claims, ec_key, rsa_key

RSA = rsa_key("rsa-1")
EC = ec_key("ec-1")


@pytest.fixture(scope="module")
def idp() -> Iterator[JwksServer]:
    """The JWKS server on a loop of its own (the gateway is a subprocess)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = JwksServer(RSA, EC)
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


@pytest.fixture(scope="module")
def jwt_gateway(
    providers: dict[str, FakeOpenAI], idp: JwksServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = two_provider_config(
        providers,
        auth={
            "required": True,
            "jwt": [
                {
                    "issuer": ISSUER,
                    "jwks_url": idp.jwks_url,
                    "audiences": [AUDIENCE],
                    "min_refresh_interval_s": 2,
                }
            ],
        },
        tenants=[{"name": "acme", "models": ["gpt-alpha"]}],
    )
    with running_gateway(tmp_path_factory.mktemp("jwt"), config, dict(PROVIDER_KEYS)) as gw:
        yield gw


def ask(gw: Gateway, token: str, model: str = "gpt-alpha") -> Any:
    return post_json(
        f"{gw.url}/v1/chat/completions",
        {"model": model, "messages": [{"role": "user", "content": "hi"}]},
        {"authorization": f"Bearer {token}"},
    )


def test_a_valid_rs256_token_works_with_both_sdks(
    jwt_gateway: Gateway, fresh: dict[str, FakeOpenAI]
) -> None:
    token = RSA.sign(claims())
    client = openai.OpenAI(base_url=f"{jwt_gateway.url}/v1", api_key=token, max_retries=0)
    answer = client.chat.completions.create(
        model="gpt-alpha", messages=[{"role": "user", "content": "hello jwt"}]
    )
    assert answer.choices[0].message.content
    claude = anthropic.Anthropic(base_url=jwt_gateway.url, api_key=EC.sign(claims()), max_retries=0)
    assert claude.messages.create(
        model="gpt-alpha", max_tokens=5, messages=[{"role": "user", "content": "hello ec"}]
    ).content
    for request in fresh["alpha"].requests:
        assert token not in str(request.headers)
        assert request.headers["authorization"] == f"Bearer {PROVIDER_KEYS['ALPHA_KEY']}"
    # The token's tenant is what it may use.
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(
            model="beta-chat", messages=[{"role": "user", "content": "x"}]
        )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: RSA.sign(claims(time.time() - 3600)), "expired"),
        (lambda: RSA.sign(claims(audience="someone-else")), "audience"),
        (lambda: rsa_key("rsa-1").sign(claims()), "signature"),
        (lambda: RSA.sign(claims(issuer="https://evil.test/")), "issuer"),
        (lambda: RSA.sign(claims(tenant="not-configured")), "tenant"),
        (lambda: RSA.sign(claims(tenant=None)), "no tenant"),
    ],
)
def test_bad_tokens_are_401_saying_why(jwt_gateway: Gateway, token: Any, reason: str) -> None:
    value = token()
    reply = ask(jwt_gateway, value)
    assert reply.status == 401, reply.body
    message = reply.json()["error"]["message"]
    assert reason in message and value not in message


def test_a_rotated_signing_key_is_fetched_on_first_sight(
    jwt_gateway: Gateway, idp: JwksServer
) -> None:
    new = rsa_key("rsa-2")
    idp.rotate(new)
    time.sleep(2.1)  # past the refresh interval since the keys were loaded at start
    before = idp.hits
    assert ask(jwt_gateway, new.sign(claims())).status == 200
    assert idp.hits == before + 1
    # A flood of unknown kids does not make the gateway hammer the IdP.
    for i in range(10):
        assert ask(jwt_gateway, rsa_key(f"random-{i}").sign(claims())).status == 401
    assert idp.hits <= before + 2

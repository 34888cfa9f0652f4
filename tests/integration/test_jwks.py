"""JWKS fetching against a real HTTP identity provider (tests/jwks_server.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge_agent.identity.jwks import JwksFetcher
from edge_agent.identity.jwt import (
    REFRESH_MIN_INTERVAL_S,
    JwtIssuer,
    JwtVerifier,
    Refused,
    Verified,
)
from tests.jwks_server import AUDIENCE, ISSUER, JwksServer, claims, ec_key, jwks, rsa_key

RSA = rsa_key("rsa-1")
RSA_NEW = rsa_key("rsa-2")
EC = ec_key("ec-1")
STRANGER = rsa_key("stranger")  # signs tokens with made-up kids
LATER = REFRESH_MIN_INTERVAL_S + 1


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeFetcher = Callable[..., JwksFetcher]


@pytest.fixture
async def idp() -> AsyncIterator[JwksServer]:
    async with JwksServer(RSA) as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def make_fetcher(clock: Clock) -> AsyncIterator[MakeFetcher]:
    made: list[JwksFetcher] = []

    def make(*, fetcher: dict[str, Any] | None = None, **issuer: Any) -> JwksFetcher:
        config = JwtIssuer(ISSUER, audiences=(AUDIENCE,), **issuer)
        made.append(JwksFetcher(JwtVerifier([config]), clock=clock, **(fetcher or {})))
        return made[-1]

    yield make
    for f in made:
        await f.close()


async def test_warm_loads_keys(idp: JwksServer, make_fetcher: MakeFetcher, clock: Clock) -> None:
    idp.keys = [RSA, EC]
    fetcher = make_fetcher(jwks_url=idp.jwks_url)
    await fetcher.warm()
    assert idp.hits == 1
    for key in (RSA, EC):
        result = await fetcher.check(key.sign(claims(clock.now)))
        assert isinstance(result, Verified), result
        assert (result.subject, result.tenant) == ("user-1", "acme")
    assert idp.hits == 1


async def test_rotation_is_fetched_on_a_new_kid(
    idp: JwksServer, make_fetcher: MakeFetcher, clock: Clock
) -> None:
    fetcher = make_fetcher(jwks_url=idp.jwks_url)
    await fetcher.warm()
    idp.rotate(RSA_NEW, keep_old=False)
    clock.advance(LATER)
    result = await fetcher.check(RSA_NEW.sign(claims(clock.now)))
    assert isinstance(result, Verified), result
    assert idp.hits == 2
    # The retired key is gone with the new key set.
    old = await fetcher.check(RSA.sign(claims(clock.now)))
    assert isinstance(old, Refused) and old.code == "unknown_key"
    assert idp.hits == 2


async def test_random_kids_cannot_hammer_the_idp(
    idp: JwksServer, make_fetcher: MakeFetcher, clock: Clock
) -> None:
    fetcher = make_fetcher(jwks_url=idp.jwks_url)
    await fetcher.warm()
    idp.rotate(RSA_NEW)
    idp.delay_s = 0.2  # the concurrent checks below all arrive while it fetches
    clock.advance(LATER)

    def stranger() -> str:
        return STRANGER.sign(claims(clock.now), {"kid": uuid.uuid4().hex})

    flood = [stranger() for _ in range(50)]
    results = await asyncio.gather(
        fetcher.check(RSA_NEW.sign(claims(clock.now))), *(fetcher.check(t) for t in flood)
    )
    assert isinstance(results[0], Verified), results[0]  # the real rotation got through
    assert all(isinstance(r, Refused) and r.code == "unknown_key" for r in results[1:])
    assert idp.hits == 2  # one fetch for all 51
    for _ in range(20):
        clock.advance(1)
        assert isinstance(await fetcher.check(stranger()), Refused)
    assert idp.hits == 2
    clock.advance(LATER)
    await fetcher.check(stranger())
    assert idp.hits == 3


async def test_idp_down_at_start(
    idp: JwksServer, make_fetcher: MakeFetcher, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    idp.status = 503
    fetcher = make_fetcher(jwks_url=idp.jwks_url)
    with caplog.at_level(logging.WARNING, "edge_agent.identity.jwks"):
        await fetcher.warm()  # does not raise
    assert "HTTP 503" in caplog.text and "refused until its keys load" in caplog.text
    token = RSA.sign(claims(clock.now))
    result = await fetcher.check(token)
    assert isinstance(result, Refused) and result.code == "keys_unavailable"
    assert idp.hits == 1
    idp.status = 200
    clock.advance(LATER)
    assert isinstance(await fetcher.check(RSA.sign(claims(clock.now))), Verified)
    assert idp.hits == 2


async def test_nobody_listening(
    make_fetcher: MakeFetcher, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with JwksServer(RSA) as gone:
        url = gone.jwks_url
    fetcher = make_fetcher(jwks_url=url)
    with caplog.at_level(logging.WARNING, "edge_agent.identity.jwks"):
        await fetcher.warm()
    assert "cannot connect to 127.0.0.1" in caplog.text


async def test_slow_idp_times_out(
    idp: JwksServer, make_fetcher: MakeFetcher, caplog: pytest.LogCaptureFixture
) -> None:
    idp.delay_s = 2
    fetcher = make_fetcher(jwks_url=idp.jwks_url, fetcher={"timeout_s": 0.2})
    assert await fetcher.refresh(ISSUER) == "no answer within 0.2 s"


@pytest.mark.parametrize("chunked", [False, True])
async def test_oversize_jwks(
    idp: JwksServer,
    make_fetcher: MakeFetcher,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    chunked: bool,
) -> None:
    fetcher = make_fetcher(jwks_url=idp.jwks_url, fetcher={"max_bytes": 64 * 1024})
    await fetcher.warm()
    idp.body, idp.chunked = b" " * (256 * 1024) + jwks(RSA), chunked
    clock.advance(600)
    with caplog.at_level(logging.WARNING, "edge_agent.identity.jwks"):
        reason = await fetcher.refresh(ISSUER)
    assert reason == "the JWKS is larger than 65536 bytes"
    assert "keeping its previous keys" in caplog.text
    assert isinstance(await fetcher.check(RSA.sign(claims(clock.now))), Verified)


async def test_non_json_jwks(
    idp: JwksServer, make_fetcher: MakeFetcher, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    idp.body = b"<html>maintenance</html>"
    fetcher = make_fetcher(jwks_url=idp.jwks_url)
    with caplog.at_level(logging.WARNING, "edge_agent.identity.jwks"):
        await fetcher.warm()
    assert "the JWKS is not JSON" in caplog.text
    idp.body = b'{"keys": [{"kty": "oct", "k": "AAAA", "kid": "h"}]}'
    clock.advance(LATER)
    reason = await fetcher.refresh(ISSUER)
    assert reason is not None and "no usable signing key" in reason and "'oct'" in reason


async def test_logs_leave_out_url_credentials(
    idp: JwksServer, make_fetcher: MakeFetcher, caplog: pytest.LogCaptureFixture
) -> None:
    idp.status = 500
    url = idp.jwks_url.replace("http://", "http://user:pa55word@") + "?access_token=t0k3n"
    fetcher = make_fetcher(jwks_url=url)
    with caplog.at_level(logging.DEBUG, "edge_agent.identity.jwks"):
        await fetcher.warm()
    assert "HTTP 500" in caplog.text and idp.jwks_url in caplog.text
    assert "pa55word" not in caplog.text and "t0k3n" not in caplog.text


async def test_max_age_and_periodic_refresh(
    idp: JwksServer, make_fetcher: MakeFetcher, clock: Clock
) -> None:
    idp.max_age = 1000
    fetcher = make_fetcher(jwks_url=idp.jwks_url)
    await fetcher.warm()
    assert fetcher.verifier.next_due() == clock.now + 1000
    clock.advance(999)
    await fetcher.refresh_due()
    assert idp.hits == 1
    clock.advance(1)
    await fetcher.refresh_due()
    assert idp.hits == 2


async def test_run_loads_keys_in_the_background(idp: JwksServer, make_fetcher: MakeFetcher) -> None:
    fetcher = make_fetcher(jwks_url=idp.jwks_url)
    task = asyncio.create_task(fetcher.run())
    try:
        for _ in range(100):
            if fetcher.verifier.has_keys(ISSUER):
                break
            await asyncio.sleep(0.02)
        assert fetcher.verifier.has_keys(ISSUER) and idp.hits == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_caller_that_gives_up_does_not_cancel_the_fetch(
    idp: JwksServer, make_fetcher: MakeFetcher, clock: Clock
) -> None:
    idp.delay_s = 0.2
    fetcher = make_fetcher(jwks_url=idp.jwks_url)
    impatient = asyncio.create_task(fetcher.refresh(ISSUER))
    await asyncio.sleep(0.05)
    impatient.cancel()
    patient = await fetcher.refresh(ISSUER)  # joins the fetch under way
    assert patient is None and fetcher.verifier.has_keys(ISSUER)
    assert idp.hits == 1


async def test_jwks_file(tmp_path: Path, make_fetcher: MakeFetcher, clock: Clock) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(jwks(RSA, EC))
    fetcher = make_fetcher(jwks_file=str(path))
    await fetcher.warm()
    assert isinstance(await fetcher.check(EC.sign(claims(clock.now))), Verified)

    missing = make_fetcher(jwks_file=str(tmp_path / "nope.json"))
    assert (
        await missing.refresh(ISSUER, force=True)
        == "cannot read the file (No such file or directory)"
    )
    result = await missing.check(RSA.sign(claims(clock.now)))
    assert isinstance(result, Refused) and result.code == "keys_unavailable"

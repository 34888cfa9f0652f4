"""An identity provider for tests: signing keys (cryptography), tokens (PyJWT) and a real
JWKS endpoint (aiohttp on 127.0.0.1, a free port) that can rotate keys, fail, and counts
the requests it gets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from edge_agent.demo.runner import FakeServer

ISSUER = "https://idp.test/"
AUDIENCE = "llm-gateway"
JWKS_PATH = "/.well-known/jwks.json"


@dataclass(frozen=True)
class SigningKey:
    """A private key with its kid and algorithm; `jwk()` is its public half."""

    kid: str
    alg: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = field(repr=False)

    def jwk(self, **extra: Any) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            doc = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            doc = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**doc, "kid": self.kid, "alg": self.alg, "use": "sig", **extra}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        """A token with these claims; `headers` add to or override {"kid": kid} (a None
        value leaves that header out)."""
        header = {k: v for k, v in {"kid": self.kid, **(headers or {})}.items() if v is not None}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=header)


def rsa_key(kid: str, alg: str = "RS256", bits: int = 2048) -> SigningKey:
    return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))


def ec_key(kid: str, alg: str = "ES256") -> SigningKey:
    curve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
    return SigningKey(kid, alg, ec.generate_private_key(curve))


def jwks(*keys: SigningKey) -> bytes:
    return orjson.dumps({"keys": [k.jwk() for k in keys]})


def claims(
    now: float | None = None,
    *,
    issuer: str = ISSUER,
    audience: str | list[str] | None = AUDIENCE,
    lifetime_s: float = 300,
    **extra: Any,
) -> dict[str, Any]:
    """Typical OIDC access-token claims, valid from `now` for `lifetime_s`."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {
        "iss": issuer,
        "sub": "user-1",
        "iat": int(now),
        "exp": int(now + lifetime_s),
        "tenant": "acme",
    }
    if audience is not None:
        out["aud"] = audience
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


class JwksServer(FakeServer):
    """Serves `keys` as a JWKS at `url`. Tests may change at any time: `keys` (or
    `rotate`), `status`, `body` (raw bytes instead of the key set), `delay_s`, `max_age`
    (a Cache-Control max-age) and `chunked`. `hits` counts what it received."""

    def __init__(self, *keys: SigningKey, host: str = "127.0.0.1") -> None:
        super().__init__(name="idp", host=host, port=0, record=False)
        self.keys: list[SigningKey] = list(keys)
        self.status = 200
        self.body: bytes | None = None
        self.max_age: int | None = None
        self.chunked = False  # no Content-Length: the client must count what it reads
        self.hits = 0

    @property
    def jwks_url(self) -> str:
        return f"{self.url}{JWKS_PATH}"

    def rotate(self, new: SigningKey, *, keep_old: bool = True) -> None:
        """Publish `new`; with keep_old the previous keys stay (a graceful rotation)."""
        self.keys = [*self.keys, new] if keep_old else [new]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.hits += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.path != JWKS_PATH:
            return web.Response(status=404)
        headers = {"Content-Type": "application/json"}
        if self.max_age is not None:
            headers["Cache-Control"] = f"public, max-age={self.max_age}"
        body = self.body if self.body is not None else jwks(*self.keys)
        if not self.chunked:
            return web.Response(status=self.status, body=body, headers=headers)
        response = web.StreamResponse(status=self.status, headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        for start in range(0, len(body), 65536):
            await response.write(body[start : start + 65536])
        await response.write_eof()
        return response

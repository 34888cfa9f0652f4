"""JWT bearer tokens (OIDC), sans-IO: which issuer, which key, and whether to trust it.

`JwtVerifier.check(token, now)` answers `Verified`, `Refused` (a fixed sentence that is
safe to send to the client: never the token nor a claim's value) or `NeedKeys`: the
issuer's key set (JWKS) must be fetched first, by the I/O side (`identity/jwks.py`), and
the token checked again. PyJWT does the JOSE work; this module decides which algorithms
and keys it may use. The algorithm comes from the issuer's config and the key's type,
never from the token alone: a JWKS issuer gets only asymmetric algorithms that match the
key (so an RSA public key is never an HMAC secret), and HS256 only an issuer configured
with a secret.

Key fetches are rate limited per issuer: `refreshing()` grants at most one per
`REFRESH_MIN_INTERVAL_S`, so tokens naming random key ids cannot make the gateway hammer
the identity provider; meanwhile they are refused without any I/O.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import (
    InvalidAlgorithmError,
    InvalidAudienceError,
    InvalidIssuerError,
    InvalidJTIError,
    InvalidKeyError,
    InvalidSignatureError,
    InvalidSubjectError,
    MissingRequiredClaimError,
    PyJWTError,
)

log = logging.getLogger("edge_agent.identity.jwt")

# Real tokens are a few KiB; anything bigger is refused before it is parsed.
MAX_TOKEN_CHARS = 16 * 1024
VERIFIED_CACHE = 10_000  # verified tokens kept until they expire
MAX_JWKS_BYTES = 1 << 20
MAX_KEYS = 64  # per issuer: bounds the work a (broken) JWKS can cause
MIN_RSA_BITS = 2048
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key is at least as long as the hash
# At most one JWKS fetch per issuer per this (unknown key ids, retries after failures).
REFRESH_MIN_INTERVAL_S = 30.0
# Keys are re-fetched this often when the IdP's Cache-Control says nothing, its max-age
# clamped to these bounds (rotation is seen within the hour, the IdP is not polled).
REFRESH_PERIOD_S = 600.0
REFRESH_PERIOD_BOUNDS_S = (300.0, 3600.0)
# A fetch that has not reported back by then is forgotten (the fetcher times out sooner).
PENDING_MAX_S = 15.0
# Timestamps beyond this (about 31 million years) are nonsense, not dates.
_MAX_TIMESTAMP = 1e15

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256"})
_EC_ALGORITHMS: tuple[tuple[type[ec.EllipticCurve], str], ...] = (
    (ec.SECP256R1, "ES256"),
    (ec.SECP384R1, "ES384"),
)
_ASYMMETRIC = _RSA_ALGORITHMS | {alg for _, alg in _EC_ALGORITHMS}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_B64_ANY = re.compile(r"[A-Za-z0-9_\-+/]*")

# What a client is told, by code. `{claim}` is a claim's name (fixed or from the
# config), never its value.
REASONS: dict[str, str] = {
    "malformed": "the token is not a well-formed JWT",
    "too_large": "the token is too large",
    "untrusted_issuer": "the token's issuer is not trusted by this gateway",
    "algorithm": "the token's algorithm is not accepted",
    "unknown_key": "the token's signing key is unknown",
    "keys_unavailable": "the gateway cannot get the token issuer's signing keys right now",
    "bad_signature": "the token's signature does not verify",
    "expired": "the token has expired",
    "not_yet_valid": "the token is not valid yet",
    "audience": "the token's audience is not accepted by this gateway",
    "missing_claim": "the token lacks the claim '{claim}'",
    "bad_claim": "the token's claim '{claim}' is not valid",
}


@dataclass(frozen=True)
class JwtIssuer:
    """One trusted issuer: where its keys come from and which claims say who calls."""

    issuer: str
    audiences: tuple[str, ...] = ()  # any one must be in `aud`; empty: `aud` unchecked
    tenant_claim: str = "tenant"  # dotted paths walk nested objects ("org.team")
    subject_claim: str = "sub"
    jwks_url: str | None = None
    jwks_file: str | None = None
    secret: bytes | None = field(default=None, repr=False)  # HS256 instead of a JWKS
    leeway_s: float = 30.0  # clock skew allowed for exp, nbf and iat
    # Fetches of the JWKS at most this often (an unknown kid asks for one).
    min_refresh_interval_s: float = REFRESH_MIN_INTERVAL_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "audiences", tuple(self.audiences))
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        sources = [s for s in ("jwks_url", "jwks_file", "secret") if getattr(self, s)]
        if len(sources) != 1:
            raise ValueError(
                f"issuer {self.issuer!r}: give exactly one of jwks_url, jwks_file or a "
                f"secret, got {', '.join(sources) or 'none'}"
            )
        if self.secret is not None and len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"issuer {self.issuer!r}: the HS256 secret must be at least "
                f"{MIN_SECRET_BYTES} bytes, got {len(self.secret)}"
            )
        if not (self.leeway_s >= 0 and math.isfinite(self.leeway_s)):
            raise ValueError(f"issuer {self.issuer!r}: leeway_s must be >= 0")

    @property
    def uses_jwks(self) -> bool:
        return self.secret is None


@dataclass(frozen=True, slots=True)
class Verified:
    issuer: str
    subject: str
    tenant: str | None
    expires_at: float
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class NeedKeys:
    """Fetch this issuer's JWKS (`JwksFetcher.refresh`), then check the token again."""

    issuer: str


@dataclass(frozen=True, slots=True)
class Refused:
    code: str  # a key of REASONS, for metrics and logs
    reason: str  # for the client

    @classmethod
    def because(cls, code: str, claim: str | None = None) -> Refused:
        return cls(code, REASONS[code].format(claim=claim))


@dataclass(frozen=True, slots=True)
class ClaimIdentity:
    subject: str
    tenant: str | None


class JwksError(ValueError):
    """A key set that cannot be used at all; the message is for the operator."""


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    algorithms: frozenset[str]
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(slots=True)
class _Issuer:
    config: JwtIssuer
    keys: dict[str | None, list[_Key]] | None = None  # None: never loaded
    next_refresh: float = -math.inf
    last_attempt: float = -math.inf
    pending_since: float | None = None  # a fetch was granted and has not reported back


# -- claims -------------------------------------------------------------------------------


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at `path`, None when absent: the key itself when the claims have it
    (namespaced claims are URLs, dots and all), else a walk through nested objects."""
    if path in claims:
        return claims[path]
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def identity_from_claims(
    claims: Mapping[str, Any], *, tenant_claim: str = "tenant", subject_claim: str = "sub"
) -> ClaimIdentity | Refused:
    """Who the claims name: a non-empty string subject (required) and tenant (optional)."""
    subject = claim_at(claims, subject_claim)
    if subject is None:
        return Refused.because("missing_claim", subject_claim)
    if not isinstance(subject, str) or not subject:
        return Refused.because("bad_claim", subject_claim)
    tenant = claim_at(claims, tenant_claim)
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        return Refused.because("bad_claim", tenant_claim)
    return ClaimIdentity(subject, tenant)


def claims_from_forwarded_payload(value: str) -> dict[str, Any] | None:
    """The claims in a header written by Istio's RequestAuthentication
    `outputPayloadToHeader` (Envoy's `forward_payload_header`): the verified payload's
    JSON, base64url without padding (padded when `pad_forward_payload_header` is set).
    Padded and standard-alphabet base64 are read too. None when malformed."""
    if not isinstance(value, str):
        return None
    text = value.strip().rstrip("=")
    if len(text) > MAX_TOKEN_CHARS or not _B64_ANY.fullmatch(text):
        return None
    data = _b64decode(text.replace("+", "-").replace("/", "_"))
    return None if data is None else _json_object(data)


def _b64decode(segment: str) -> bytes | None:
    if len(segment) % 4 == 1:
        return None  # no base64 text has this length
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None


def _json_object(data: bytes) -> dict[str, Any] | None:
    # orjson: bounded nesting (deep arrays are an error, not a RecursionError).
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _timestamp(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not -_MAX_TIMESTAMP < value < _MAX_TIMESTAMP:  # also rules out NaN
        return None
    return float(value)


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> float | Refused:
    """The expiry, or why the token is not valid at `now`."""
    exp = _timestamp(claims.get("exp"))
    if exp is None:
        return Refused.because("bad_claim", "exp")
    if now >= exp + leeway:
        return Refused.because("expired")
    for name in ("nbf", "iat"):
        if claims.get(name) is None:
            continue
        at = _timestamp(claims[name])
        if at is None:
            return Refused.because("bad_claim", name)
        if at > now + leeway:
            return Refused.because("not_yet_valid")
    return exp


# -- keys ---------------------------------------------------------------------------------


def _parse_jwk(jwk: Any) -> _Key | str:
    """The key, or why it is skipped (for the operator's log)."""
    if not isinstance(jwk, dict):
        return "not an object"
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return "its kid is not a string"
    use, ops = jwk.get("use"), jwk.get("key_ops")
    if use is not None and use != "sig":
        return f"use {str(use)[:20]!r} is not 'sig'"
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return "its key_ops lack 'verify'"
    if "d" in jwk:
        return "it holds private key material"  # never publish those; not used either
    kty = jwk.get("kty")
    key: Any
    try:
        if kty == "RSA":
            key = RSAAlgorithm.from_jwk(jwk)
            if not isinstance(key, rsa.RSAPublicKey):
                return "not an RSA public key"
            if key.key_size < MIN_RSA_BITS:
                return f"its RSA key has {key.key_size} bits (fewer than {MIN_RSA_BITS})"
            algorithms = _RSA_ALGORITHMS
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(jwk)
            if not isinstance(key, ec.EllipticCurvePublicKey):
                return "not an EC public key"
            algorithms = frozenset(a for c, a in _EC_ALGORITHMS if isinstance(key.curve, c))
            if not algorithms:
                return f"curve {key.curve.name} is not accepted"
        else:
            return f"kty {str(kty)[:20]!r} is not accepted (RSA, EC)"
    except (PyJWTError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return f"its {kty} parameters are bad ({type(exc).__name__})"
    alg = jwk.get("alg")
    if alg is not None:
        if alg not in algorithms:
            return f"alg {str(alg)[:20]!r} is not accepted for this {kty} key"
        algorithms = frozenset({alg})  # the key is meant for this one algorithm only
    return _Key(kid, algorithms, key)


def _parse_jwks(jwks_json: bytes) -> tuple[dict[str | None, list[_Key]], list[str]]:
    """The usable keys by kid, and a note on each key skipped."""
    try:
        document = orjson.loads(jwks_json)
    except orjson.JSONDecodeError as exc:
        raise JwksError(f"the JWKS is not JSON ({exc})") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError("the JWKS has no 'keys' list")
    keys: dict[str | None, list[_Key]] = {}
    skipped: list[str] = []
    count = 0
    for i, entry in enumerate(entries):
        parsed = _parse_jwk(entry)
        if isinstance(parsed, str):
            kid = entry.get("kid") if isinstance(entry, dict) else None
            name = f"kid {kid[:64]!r}" if isinstance(kid, str) else "no kid"
            skipped.append(f"key {i} ({name}): {parsed}")
        elif count >= MAX_KEYS:
            skipped.append(f"key {i}: more than {MAX_KEYS} keys")
        else:
            keys.setdefault(parsed.kid, []).append(parsed)
            count += 1
    if not keys:
        detail = "; ".join(skipped[:5]) if skipped else "the list is empty"
        raise JwksError(f"the JWKS has no usable signing key ({detail})")
    return keys, skipped


# -- the verifier -------------------------------------------------------------------------


def _decode_options(config: JwtIssuer) -> dict[str, Any]:
    # Times are checked here against the caller's `now`, not PyJWT's clock.
    return {
        "verify_signature": True,
        "verify_exp": False,
        "verify_nbf": False,
        "verify_iat": False,
        "verify_iss": True,
        "verify_aud": bool(config.audiences),
        "verify_sub": True,
        "verify_jti": True,
        "require": ["exp", "iss"],
        "enforce_minimum_key_length": True,
    }


class JwtVerifier:
    """The trusted issuers and their current keys; checks tokens against them."""

    def __init__(self, issuers: Iterable[JwtIssuer]) -> None:
        # Tokens already verified, until they expire: a client sends the same token
        # with every request, and its signature need not be checked each time (as
        # Envoy's jwt_authn caches them).
        self._verified: OrderedDict[str, Verified] = OrderedDict()
        self._issuers: dict[str, _Issuer] = {}
        for config in issuers:
            if config.issuer in self._issuers:
                raise ValueError(f"issuer {config.issuer!r} is configured twice")
            self._issuers[config.issuer] = _Issuer(config)

    @property
    def issuers(self) -> tuple[JwtIssuer, ...]:
        return tuple(s.config for s in self._issuers.values())

    def issuer(self, name: str) -> JwtIssuer | None:
        state = self._issuers.get(name)
        return None if state is None else state.config

    def has_keys(self, issuer: str) -> bool:
        return self._state(issuer).keys is not None

    # -- key sets -------------------------------------------------------------------------

    def load_keys(
        self, issuer: str, jwks_json: bytes, now: float, *, max_age_s: float | None = None
    ) -> list[str]:
        """Replace the issuer's keys with those of this JWKS document; returns a note on
        each key skipped. Raises JwksError (keys unchanged) when none is usable.
        `max_age_s` (the answer's Cache-Control) sets the next periodic refresh."""
        state = self._state(issuer)
        if len(jwks_json) > MAX_JWKS_BYTES:
            raise JwksError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        keys, skipped = _parse_jwks(jwks_json)
        low, high = REFRESH_PERIOD_BOUNDS_S
        period = REFRESH_PERIOD_S if max_age_s is None else min(max(max_age_s, low), high)
        state.keys, state.next_refresh, state.pending_since = keys, now + period, None
        return skipped

    def load_failed(self, issuer: str, now: float) -> None:
        """A granted fetch failed: keep the keys there are; the next periodic refresh is
        due as soon as the rate limit allows."""
        state = self._state(issuer)
        state.pending_since, state.next_refresh = None, now

    def refreshing(self, issuer: str, now: float, *, force: bool = False) -> bool:
        """Whether the caller may fetch the issuer's JWKS now; True records the attempt.
        At most one per min_refresh_interval_s, and none while another is under way
        (`force`: at start, regardless). Report back with load_keys or load_failed."""
        state = self._state(issuer)
        if not state.config.uses_jwks:
            return False
        if not force and (self._pending(state, now) or not self._rested(state, now)):
            return False
        state.last_attempt, state.pending_since = now, now
        return True

    def due(self, now: float) -> list[str]:
        """Issuers whose keys a periodic refresh should fetch now."""
        return [
            name
            for name, s in self._issuers.items()
            if s.config.uses_jwks
            and now >= s.next_refresh
            and self._rested(s, now)
            and not self._pending(s, now)
        ]

    def next_due(self) -> float | None:
        """When the next periodic refresh comes due (None: no JWKS issuer)."""
        times = [
            max(s.next_refresh, s.last_attempt + s.config.min_refresh_interval_s)
            for s in self._issuers.values()
            if s.config.uses_jwks
        ]
        return min(times, default=None)

    def _state(self, issuer: str) -> _Issuer:
        try:
            return self._issuers[issuer]
        except KeyError:
            raise ValueError(f"issuer {issuer!r} is not configured") from None

    @staticmethod
    def _pending(state: _Issuer, now: float) -> bool:
        return state.pending_since is not None and now - state.pending_since < PENDING_MAX_S

    @staticmethod
    def _rested(state: _Issuer, now: float) -> bool:
        return now - state.last_attempt >= state.config.min_refresh_interval_s

    def _may_fetch(self, state: _Issuer, now: float) -> bool:
        # Under way: the caller waits for that fetch (the fetcher shares it).
        return self._pending(state, now) or self._rested(state, now)

    # -- tokens ---------------------------------------------------------------------------

    def check(self, token: str, now: float) -> Verified | NeedKeys | Refused:
        """Whether to trust `token` at `now` (seconds since the epoch). Never raises."""
        seen = self._verified.get(token) if isinstance(token, str) else None
        if seen is not None:
            if now < seen.expires_at:
                self._verified.move_to_end(token)
                return seen
            del self._verified[token]
        try:
            result = self._check(token, now)
            if isinstance(result, Verified):
                self._verified[token] = result
                if len(self._verified) > VERIFIED_CACHE:
                    self._verified.popitem(last=False)
            return result
        except Exception as exc:
            # Hostile input must not become a 500; the type is enough to find the bug.
            log.warning("unexpected %s while checking a JWT", type(exc).__name__)
            return Refused.because("malformed")

    def _check(self, token: str, now: float) -> Verified | NeedKeys | Refused:
        if not isinstance(token, str):
            return Refused.because("malformed")
        if len(token) > MAX_TOKEN_CHARS:
            return Refused.because("too_large")
        peeked = _peek(token)
        if peeked is None:
            return Refused.because("malformed")
        header, unverified = peeked
        # The unverified issuer only picks the config; PyJWT checks it against the
        # signed payload below.
        iss = unverified.get("iss")
        if iss is None:
            return Refused.because("missing_claim", "iss")
        state = self._issuers.get(iss) if isinstance(iss, str) else None
        if state is None:
            return Refused.because("untrusted_issuer")
        alg = header.get("alg")
        if not isinstance(alg, str):
            return Refused.because("algorithm")
        config = state.config
        key: Any
        if config.secret is not None:
            if alg != "HS256":
                return Refused.because("algorithm")
            key = config.secret
        else:
            if alg not in _ASYMMETRIC:
                return Refused.because("algorithm")
            found = self._key_for(state, header.get("kid"), alg, now)
            if not isinstance(found, _Key):
                return found
            key = found.key
        return self._verify(token, config, key, alg, now)

    def _key_for(self, state: _Issuer, kid: Any, alg: str, now: float) -> _Key | NeedKeys | Refused:
        if kid is not None and not isinstance(kid, str):
            return Refused.because("malformed")
        keys = state.keys
        if keys is None:
            if self._may_fetch(state, now):
                return NeedKeys(state.config.issuer)
            return Refused.because("keys_unavailable")
        candidates = keys.get(kid)
        if candidates is None and kid is None and len(keys) == 1:
            # No kid in the token: fine when the issuer has only the one key.
            [candidates] = keys.values()
        if not candidates:
            # A new kid may be a rotation the periodic refresh has not seen yet; no kid
            # at all cannot be helped by fetching.
            if kid is not None and self._may_fetch(state, now):
                return NeedKeys(state.config.issuer)
            return Refused.because("unknown_key")
        for candidate in candidates:
            if alg in candidate.algorithms:
                return candidate
        return Refused.because("algorithm")

    def _verify(
        self, token: str, config: JwtIssuer, key: Any, alg: str, now: float
    ) -> Verified | Refused:
        try:
            decoded = jwt.decode_complete(
                token,
                key,
                algorithms=[alg],
                options=_decode_options(config),  # type: ignore[arg-type]
                audience=list(config.audiences) or None,
                issuer=config.issuer,
            )
        except InvalidSignatureError:
            return Refused.because("bad_signature")
        except MissingRequiredClaimError as exc:
            if exc.claim == "aud":
                return Refused.because("audience")
            if exc.claim in ("exp", "iss"):  # what _decode_options requires
                return Refused.because("missing_claim", exc.claim)
            return Refused.because("malformed")
        except InvalidAudienceError:
            return Refused.because("audience")
        except InvalidIssuerError:
            return Refused.because("untrusted_issuer")
        except InvalidAlgorithmError:
            return Refused.because("algorithm")
        except InvalidSubjectError:
            return Refused.because("bad_claim", "sub")
        except InvalidJTIError:
            return Refused.because("bad_claim", "jti")
        except InvalidKeyError:
            # The configured key does not suit the algorithm: the operator's problem.
            log.warning("issuer %r: its key cannot verify %s tokens", config.issuer, alg)
            return Refused.because("bad_signature")
        except PyJWTError:
            return Refused.because("malformed")
        claims = decoded["payload"]
        expires_at = _check_times(claims, now, config.leeway_s)
        if isinstance(expires_at, Refused):
            return expires_at
        who = identity_from_claims(
            claims, tenant_claim=config.tenant_claim, subject_claim=config.subject_claim
        )
        if isinstance(who, Refused):
            return who
        return Verified(config.issuer, who.subject, who.tenant, expires_at, claims)


def _peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The unverified header and payload of a compact JWS, None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL.fullmatch(p) for p in parts[:2]):
        return None
    header_bytes, payload_bytes = _b64decode(parts[0]), _b64decode(parts[1])
    if header_bytes is None or payload_bytes is None:
        return None
    header, payload = _json_object(header_bytes), _json_object(payload_bytes)
    if header is None or payload is None:
        return None
    return header, payload

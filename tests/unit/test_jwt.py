"""JWT verification, sans-IO: edge_agent.identity.jwt."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.identity.jwt import (
    MAX_TOKEN_CHARS,
    REASONS,
    REFRESH_MIN_INTERVAL_S,
    JwksError,
    JwtIssuer,
    JwtVerifier,
    NeedKeys,
    Refused,
    Verified,
    claim_at,
    claims_from_forwarded_payload,
    identity_from_claims,
)
from tests.jwks_server import AUDIENCE, ISSUER, SigningKey, claims, ec_key, jwks, rsa_key

NOW = 1_700_000_000.0
HS_ISSUER = "https://hs.test"
SECRET = b"s" * 32
# Keys are slow to make: once per module.
RSA = rsa_key("rsa-1")
RSA_IMPOSTER = SigningKey("rsa-1", "RS256", rsa_key("x").private)  # same kid, other key
RSA_NEW = rsa_key("rsa-2")
EC = ec_key("ec-1")
EC384 = ec_key("ec-384", "ES384")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    # json, not orjson: fuzzed values include integers beyond 64 bits and NaN.
    head, body = json.dumps(header).encode(), json.dumps(payload).encode()
    return f"{b64(head)}.{b64(body)}.{b64(signature)}"


def make_verifier(*keys: SigningKey, **overrides: Any) -> JwtVerifier:
    """An RS/ES issuer with `keys` (fetched a minute ago) and an HS256 issuer."""
    options: dict[str, Any] = {"audiences": (AUDIENCE,), "jwks_url": "https://idp.test/jwks"}
    options.update(overrides)
    verifier = JwtVerifier([JwtIssuer(ISSUER, **options), JwtIssuer(HS_ISSUER, secret=SECRET)])
    if keys:
        assert verifier.refreshing(ISSUER, NOW - 60, force=True)
        assert verifier.load_keys(ISSUER, jwks(*keys), NOW - 60) == []
    return verifier


def refused(result: object, code: str) -> Refused:
    assert isinstance(result, Refused), result
    assert result.code == code, result
    return result


# -- valid tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", [RSA, EC, EC384], ids=lambda k: k.alg)
def test_valid_token_is_verified(key: SigningKey) -> None:
    token = key.sign(claims(NOW))
    result = make_verifier(RSA, EC, EC384).check(token, NOW)
    assert isinstance(result, Verified), result
    assert (result.issuer, result.subject, result.tenant) == (ISSUER, "user-1", "acme")
    assert result.expires_at == NOW + 300
    assert result.claims["aud"] == AUDIENCE


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256"])
def test_other_rsa_algorithms(alg: str) -> None:
    key = SigningKey(f"k-{alg}", alg, RSA.private)
    result = make_verifier(key).check(key.sign(claims(NOW)), NOW)
    assert isinstance(result, Verified), result


def test_tenant_from_dotted_and_namespaced_claims() -> None:
    token = RSA.sign(claims(NOW, org={"team": "blue"}))
    result = make_verifier(RSA, tenant_claim="org.team").check(token, NOW)
    assert isinstance(result, Verified) and result.tenant == "blue"

    # Namespaced claims are URLs: the whole name is tried first.
    token = RSA.sign(claims(NOW, **{"https://acme.example/tenant": "red"}))
    result = make_verifier(RSA, tenant_claim="https://acme.example/tenant").check(token, NOW)
    assert isinstance(result, Verified) and result.tenant == "red"


def test_subject_and_tenant_rules() -> None:
    verifier = make_verifier(RSA, subject_claim="email")
    result = verifier.check(RSA.sign(claims(NOW, email="a@b.c", tenant=None)), NOW)
    assert isinstance(result, Verified)
    assert (result.subject, result.tenant) == ("a@b.c", None)  # no tenant: the caller decides
    refused(verifier.check(RSA.sign(claims(NOW)), NOW), "missing_claim")
    bad = verifier.check(RSA.sign(claims(NOW, email="a@b.c", tenant=["x"])), NOW)
    assert refused(bad, "bad_claim").reason == "the token's claim 'tenant' is not valid"


def test_no_kid_with_a_single_key() -> None:
    token = RSA.sign(claims(NOW), {"kid": None})
    assert isinstance(make_verifier(RSA).check(token, NOW), Verified)
    # Several keys: which one is unknown, and fetching keys cannot tell.
    refused(make_verifier(RSA, EC).check(token, NOW), "unknown_key")


# -- refusals -------------------------------------------------------------------------------


def test_expired_and_leeway() -> None:
    verifier = make_verifier(RSA)
    token = RSA.sign(claims(NOW - 400))  # exp = NOW - 100
    assert refused(verifier.check(token, NOW), "expired").reason == "the token has expired"
    token = RSA.sign(claims(NOW - 310))  # 10 s past exp: within the 30 s leeway
    assert isinstance(verifier.check(token, NOW), Verified)


def test_not_yet_valid() -> None:
    verifier = make_verifier(RSA)
    refused(verifier.check(RSA.sign(claims(NOW, nbf=NOW + 60)), NOW), "not_yet_valid")
    refused(verifier.check(RSA.sign(claims(NOW, iat=NOW + 60)), NOW), "not_yet_valid")
    assert isinstance(verifier.check(RSA.sign(claims(NOW, nbf=NOW + 20)), NOW), Verified)
    refused(verifier.check(RSA.sign(claims(NOW, nbf="soon")), NOW), "bad_claim")
    refused(verifier.check(RSA.sign(claims(NOW, exp="later")), NOW), "bad_claim")
    refused(verifier.check(RSA.sign(claims(NOW, exp=True)), NOW), "bad_claim")


def test_audience() -> None:
    verifier = make_verifier(RSA)
    refused(verifier.check(RSA.sign(claims(NOW, audience="other")), NOW), "audience")
    refused(verifier.check(RSA.sign(claims(NOW, audience=None)), NOW), "audience")
    both = RSA.sign(claims(NOW, audience=["other", AUDIENCE]))
    assert isinstance(verifier.check(both, NOW), Verified)
    # No audiences configured: aud is not checked.
    open_verifier = make_verifier(RSA, audiences=())
    assert isinstance(open_verifier.check(RSA.sign(claims(NOW, audience="x")), NOW), Verified)


def test_bad_signature() -> None:
    verifier = make_verifier(RSA)
    reason = refused(verifier.check(RSA_IMPOSTER.sign(claims(NOW)), NOW), "bad_signature").reason
    assert reason == "the token's signature does not verify"
    header, _, signature = RSA.sign(claims(NOW)).split(".")
    tampered = f"{header}.{b64(orjson.dumps(claims(NOW, tenant='other')))}.{signature}"
    refused(verifier.check(tampered, NOW), "bad_signature")


def test_issuer() -> None:
    verifier = make_verifier(RSA)
    refused(verifier.check(RSA.sign(claims(NOW, issuer="https://evil")), NOW), "untrusted_issuer")
    refused(verifier.check(RSA.sign(claims(NOW, issuer=None)), NOW), "missing_claim")
    refused(verifier.check(RSA.sign(claims(NOW, exp=None)), NOW), "missing_claim")


def test_unknown_kid_asks_for_keys_once_per_interval() -> None:
    verifier = make_verifier(RSA)
    token = RSA_NEW.sign(claims(NOW))
    assert verifier.check(token, NOW) == NeedKeys(ISSUER)
    assert verifier.refreshing(ISSUER, NOW)
    # While that fetch is under way, tokens wait for it: no second fetch is granted.
    assert verifier.check(token, NOW + 1) == NeedKeys(ISSUER)
    assert not verifier.refreshing(ISSUER, NOW + 1)
    verifier.load_keys(ISSUER, jwks(RSA, RSA_NEW), NOW + 1)
    assert isinstance(verifier.check(token, NOW + 1), Verified)
    # Another unknown kid inside the interval: refused, no fetch.
    stranger = rsa_key("rsa-3")
    refused(verifier.check(stranger.sign(claims(NOW)), NOW + 2), "unknown_key")
    assert not verifier.refreshing(ISSUER, NOW + 2)
    later = NOW + REFRESH_MIN_INTERVAL_S + 1
    assert verifier.check(stranger.sign(claims(later)), later) == NeedKeys(ISSUER)


def test_keys_never_loaded() -> None:
    verifier = make_verifier()
    token = RSA.sign(claims(NOW))
    assert verifier.check(token, NOW) == NeedKeys(ISSUER)
    assert verifier.refreshing(ISSUER, NOW)
    verifier.load_failed(ISSUER, NOW + 1)
    refused(verifier.check(token, NOW + 2), "keys_unavailable")
    assert verifier.due(NOW + 2) == []
    assert verifier.due(NOW + REFRESH_MIN_INTERVAL_S) == [ISSUER]
    assert verifier.check(token, NOW + REFRESH_MIN_INTERVAL_S) == NeedKeys(ISSUER)


def test_alg_none_is_refused() -> None:
    verifier = make_verifier(RSA)
    for alg in ("none", "None", "NONE", ""):
        token = unsigned({"alg": alg, "kid": "rsa-1"}, claims(NOW))
        refused(verifier.check(token, NOW), "algorithm")
    refused(verifier.check(unsigned({"kid": "rsa-1"}, claims(NOW)), NOW), "algorithm")


def test_algorithm_confusion_is_refused() -> None:
    """HS256 signed with the RSA public key (PEM) as the HMAC secret."""
    verifier = make_verifier(RSA)
    pem = RSA.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = b64(orjson.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}))
    body = b64(orjson.dumps(claims(NOW)))
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    refused(verifier.check(f"{head}.{body}.{b64(mac)}", NOW), "algorithm")
    # An EC algorithm on an RSA key's kid, and RS256 for the HS256 issuer.
    refused(
        verifier.check(SigningKey("rsa-1", "ES256", EC.private).sign(claims(NOW)), NOW), "algorithm"
    )
    refused(verifier.check(RSA.sign(claims(NOW, issuer=HS_ISSUER)), NOW), "algorithm")


def test_hs256_with_configured_secret() -> None:
    import jwt

    verifier = make_verifier(RSA)
    good = jwt.encode(claims(NOW, issuer=HS_ISSUER, audience=None), SECRET, algorithm="HS256")
    result = verifier.check(good, NOW)
    assert isinstance(result, Verified) and result.issuer == HS_ISSUER
    wrong = jwt.encode(claims(NOW, issuer=HS_ISSUER), b"w" * 32, algorithm="HS256")
    refused(verifier.check(wrong, NOW), "bad_signature")
    hs512 = jwt.encode(claims(NOW, issuer=HS_ISSUER), SECRET * 2, algorithm="HS512")
    refused(verifier.check(hs512, NOW), "algorithm")


def test_oversize_and_malformed_tokens() -> None:
    verifier = make_verifier(RSA)
    big = RSA.sign(claims(NOW, pad="x" * MAX_TOKEN_CHARS))
    refused(verifier.check(big, NOW), "too_large")
    for junk in ("", "abc", "a.b", "a.b.c.d", "....", "é.é.é", "W10.e30.x", "e30.W10.x"):
        refused(verifier.check(junk, NOW), "malformed")
    refused(verifier.check("e30.e30.", NOW), "missing_claim")  # {} . {} : no issuer
    refused(verifier.check(None, NOW), "malformed")  # type: ignore[arg-type]
    # b64=false (detached payload) is not a JWT.
    header = {"alg": "RS256", "kid": "rsa-1", "b64": False, "crit": ["b64"]}
    refused(verifier.check(unsigned(header, claims(NOW), b"sig"), NOW), "malformed")


def test_reasons_never_echo_the_token_or_claims() -> None:
    marker = "MARKER-7f3a"
    verifier = make_verifier(RSA, tenant_claim="org")
    cases = [
        RSA.sign(claims(NOW, sub=marker, org=[marker])),
        RSA.sign(claims(NOW, audience=marker, sub=marker)),
        RSA.sign(claims(NOW, issuer=marker)),
        RSA.sign(claims(NOW - 1000, sub=marker)),
        RSA.sign(claims(NOW, sub=[marker])),
        RSA_IMPOSTER.sign(claims(NOW, sub=marker)),
        RSA.sign(claims(NOW, exp=marker)),
        unsigned({"alg": "none", "kid": marker}, claims(NOW, sub=marker)),
        unsigned({"alg": marker, "kid": marker}, claims(NOW, sub=marker)),
        f"{marker}.{marker}.{marker}",
    ]
    fixed = {r.split("'{claim}'")[0] for r in REASONS.values()}
    for token in cases:
        result = verifier.check(token, NOW)
        assert isinstance(result, Refused), result
        assert marker not in result.reason and token not in result.reason
        assert any(result.reason.startswith(f) for f in fixed)


# -- key sets -------------------------------------------------------------------------------


def test_jwks_skips_unusable_keys() -> None:
    weak = rsa_key("weak", bits=1024)
    p521 = SigningKey("p521", "ES512", ec.generate_private_key(ec.SECP521R1()))
    document = {
        "keys": [
            {"kty": "oct", "k": b64(b"k" * 32), "kid": "hmac"},
            {**RSA_NEW.jwk(), "use": "enc"},
            {"kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB"},
            {"kty": "EC", "kid": "bad-ec", "crv": "P-256", "x": "AA", "y": "AA"},
            weak.jwk(),
            {**RSA_NEW.jwk(), "kid": "private", "d": "AQAB"},
            p521.jwk(),
            {**RSA_NEW.jwk(), "kid": "mismatch", "alg": "ES256"},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(b"x" * 32), "kid": "ed"},
            "not an object",
            RSA.jwk(),
        ]
    }
    verifier = make_verifier()
    assert verifier.refreshing(ISSUER, NOW)
    skipped = verifier.load_keys(ISSUER, orjson.dumps(document), NOW)
    assert len(skipped) == 10, skipped
    assert isinstance(verifier.check(RSA.sign(claims(NOW)), NOW), Verified)
    refused(verifier.check(RSA_NEW.sign(claims(NOW), {"kid": "private"}), NOW), "unknown_key")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"<html>oops</html>", "not JSON"),
        (b"[]", "no 'keys' list"),
        (b'{"keys": {}}', "no 'keys' list"),
        (b'{"keys": []}', "no usable signing key"),
        (b'{"keys": [{"kty": "oct", "k": "AAAA"}]}', "no usable signing key"),
    ],
)
def test_unusable_jwks_is_an_error_and_keeps_keys(document: bytes, message: str) -> None:
    verifier = make_verifier(RSA)
    with pytest.raises(JwksError, match=message):
        verifier.load_keys(ISSUER, document, NOW)
    assert isinstance(verifier.check(RSA.sign(claims(NOW)), NOW), Verified)


def test_periodic_refresh_schedule() -> None:
    verifier = make_verifier()
    assert verifier.due(NOW) == [ISSUER]  # never loaded
    assert verifier.refreshing(ISSUER, NOW)
    assert verifier.due(NOW) == []  # under way
    verifier.load_keys(ISSUER, jwks(RSA), NOW, max_age_s=5)  # clamped up to 300 s
    assert verifier.next_due() == NOW + 300
    assert verifier.due(NOW + 299) == []
    assert verifier.due(NOW + 300) == [ISSUER]
    assert verifier.refreshing(ISSUER, NOW + 300)
    verifier.load_keys(ISSUER, jwks(RSA), NOW + 300, max_age_s=86400)  # clamped to 1 h
    assert verifier.next_due() == NOW + 300 + 3600
    # The HS256 issuer has nothing to fetch.
    assert not verifier.refreshing(HS_ISSUER, NOW, force=True)


def test_issuer_config_checks() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        JwtIssuer(ISSUER)
    with pytest.raises(ValueError, match="exactly one"):
        JwtIssuer(ISSUER, jwks_url="https://x", secret=SECRET)
    with pytest.raises(ValueError, match="at least 32 bytes"):
        JwtIssuer(ISSUER, secret=b"short")
    with pytest.raises(ValueError, match="twice"):
        JwtVerifier([JwtIssuer(ISSUER, jwks_file="a"), JwtIssuer(ISSUER, jwks_file="b")])
    assert "s" * 32 not in repr(JwtIssuer(ISSUER, secret=SECRET))


# -- claims forwarded by Istio --------------------------------------------------------------


def test_forwarded_payload() -> None:
    payload = {"iss": ISSUER, "sub": "user-1", "org": {"team": "blue"}, "n": "ÿ?>"}
    raw = orjson.dumps(payload)
    unpadded = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    for value in (
        unpadded,  # Envoy's default
        base64.urlsafe_b64encode(raw).decode(),  # pad_forward_payload_header
        base64.b64encode(raw).decode(),  # standard alphabet
        f"  {unpadded} ",
    ):
        assert claims_from_forwarded_payload(value) == payload
    got = claims_from_forwarded_payload(unpadded)
    assert got is not None
    assert identity_from_claims(got, tenant_claim="org.team") == identity_from_claims(
        {"sub": "user-1", "tenant": "blue"}
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "not base64!",
        "abcde",  # a length no base64 text has
        b64(b"not json"),
        b64(b"[1, 2]"),
        b64(b'"text"'),
        b64(b"{" * 5000),
        "A" * (MAX_TOKEN_CHARS + 4),
        "e30.e30",
    ],
)
def test_forwarded_payload_malformed(value: str) -> None:
    assert claims_from_forwarded_payload(value) is None


def test_claim_at() -> None:
    claims_ = {"a": {"b": {"c": "deep"}}, "a.b": "flat", "x": "y"}
    assert claim_at(claims_, "a.b.c") == "deep"
    assert claim_at(claims_, "a.b") == "flat"
    assert claim_at(claims_, "x.y") is None
    assert claim_at(claims_, "missing") is None


# -- fuzz -----------------------------------------------------------------------------------

# Keys fetched just now: unknown kids are refused, never NeedKeys.
FUZZ_VERIFIER = make_verifier()
assert FUZZ_VERIFIER.refreshing(ISSUER, NOW, force=True)
FUZZ_VERIFIER.load_keys(ISSUER, jwks(RSA, EC), NOW)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "HS256", "none", "PS256", "ES384"]) | _json,
        "kid": st.sampled_from(["rsa-1", "ec-1", "other"]) | _json,
        "typ": _json,
        "b64": _json,
        "crit": _json,
        "jku": _json,
    },
)
_payloads = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.sampled_from([ISSUER, HS_ISSUER, "x"]) | _json,
        "exp": st.sampled_from([NOW + 60, NOW - 60]) | _json,
        "aud": st.sampled_from([AUDIENCE]) | _json,
        "sub": _json,
        "nbf": _json,
        "tenant": _json,
    },
)
_segment = st.binary(max_size=300).map(b64)


@st.composite
def _tokens(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.text(max_size=500))
    if kind == 1:
        return draw(st.binary(max_size=500)).decode("latin-1")
    if kind == 2:
        return ".".join(draw(st.lists(_segment, min_size=1, max_size=5)))
    if kind == 3:
        return unsigned(draw(_headers), draw(_payloads), draw(st.binary(max_size=512)))
    filler = draw(st.sampled_from(["x", "[", "{", "\\u0000"]))
    header = {"alg": "RS256", "kid": "rsa-1", "pad": filler * draw(st.integers(1, 20_000))}
    return unsigned(header, claims(NOW))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tokens())
def test_fuzz_never_raises_always_refuses(token: str) -> None:
    # The inner check: check()'s catch-all is a last resort, not how input is handled.
    result = FUZZ_VERIFIER._check(token, NOW)
    assert isinstance(result, Refused), result
    assert result.code in REASONS


def test_deeply_nested_header_is_refused() -> None:
    token = f"{b64(b'[' * 5000)}.{b64(orjson.dumps(claims(NOW)))}.x"
    refused(FUZZ_VERIFIER.check(token, NOW), "malformed")


def test_a_verified_token_is_cached_until_it_expires() -> None:
    verifier = make_verifier(RSA)
    token = RSA.sign(claims(NOW, lifetime_s=60))
    first = verifier.check(token, NOW)
    assert isinstance(first, Verified)
    # Cached: the same object, without a second signature check.
    assert verifier.check(token, NOW + 1) is first
    # Past its expiry it is checked again, and refused (beyond the leeway).
    refused(verifier.check(token, NOW + 60 + 31), "expired")
    # A forged token is never cached, and never served from the cache.
    forged = RSA_IMPOSTER.sign(claims(NOW))
    refused(verifier.check(forged, NOW), "bad_signature")
    assert forged not in verifier._verified  # a refusal is not kept
    refused(verifier.check(forged, NOW), "bad_signature")

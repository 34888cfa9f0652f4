"""Who is calling, sans-IO: credentials → caller, model access, cache namespaces, the
XFCC reader, keys, and the config's cross-references."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.agent import Agent
from edge_agent.config import ConfigError, parse_config
from edge_agent.extproc.decisions import Continue, Respond
from edge_agent.identity import xfcc
from edge_agent.identity.keys import KeyRecord, KeyRing, hash_key, mint
from edge_agent.identity.tenants import OTHER_TENANT, Tenants
from edge_agent.pipeline.base import Pending

KEY_A = "sk-ea-a-000000000000000000000000000000"
SPIFFE_A = "spiffe://cluster.local/ns/team-a/sa/chatbot"


def config(**extra: Any) -> dict[str, Any]:
    return {
        "providers": [
            {
                "name": "p",
                "type": "openai",
                "base_url": "http://127.0.0.1:1",
                "api_key_env": "KEY_P",
            }
        ],
        "models": [
            {"name": "m", "targets": ["p/x"]},
            {"name": "n", "targets": ["p/y"]},
        ],
        "cache": {"semantic": {"enabled": False}},
        "tenants": [
            {"name": "team-a", "models": ["m"], "keys": [{"name": "a", "sha256": hash_key(KEY_A)}]},
            {"name": "team-b"},
        ],
        **extra,
    }


def agent(**extra: Any) -> Agent:
    return Agent(parse_config(config(**extra)), environ={"KEY_P": "sk-p"})


def headers_phase(a: Agent, path: str = "/v1/chat/completions", **hdrs: str) -> Any:
    ex = a.exchange()
    h = {":method": "GET" if path == "/v1/models" else "POST", ":path": path, **hdrs}
    decision = ex.request_headers(h, end_of_stream=path == "/v1/models")
    assert not isinstance(decision, Pending)
    return ex, decision


def status_of(decision: Any) -> int:
    return decision.status if isinstance(decision, Respond) else 200


# ---- credentials ----------------------------------------------------------------------
def test_a_configured_key_names_its_tenant_by_bearer_or_x_api_key() -> None:
    a = agent(auth={"required": True})
    for hdrs in ({"authorization": f"Bearer {KEY_A}"}, {"x-api-key": KEY_A}):
        ex, decision = headers_phase(a, **hdrs)
        assert isinstance(decision, Continue)
        assert ex.caller.tenant == "team-a" and ex.caller.via == "key"
        assert ex.caller.key is not None and ex.caller.key.name == "a"


@pytest.mark.parametrize(
    ("hdrs", "why"),
    [
        ({}, "no credentials"),
        ({"authorization": "Bearer sk-ea-nope"}, "not valid"),
        ({"authorization": "Bearer provider-style-key"}, "not valid"),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "not 'Bearer"),
        ({"x-api-key": "k" * 5000}, "too long"),
    ],
)
def test_required_auth_refuses_with_a_precise_401(hdrs: dict[str, str], why: str) -> None:
    _, decision = headers_phase(agent(auth={"required": True}), **hdrs)
    assert isinstance(decision, Respond) and decision.status == 401
    body = orjson.loads(decision.body)
    assert why in body["error"]["message"]
    assert body["error"]["type"] == "authentication_error"
    for value in hdrs.values():
        assert value.removeprefix("Bearer ") not in decision.body.decode()
    assert ("www-authenticate", 'Bearer realm="edge-agent"') in decision.headers


def test_anthropic_clients_get_the_401_in_their_schema() -> None:
    _, decision = headers_phase(agent(auth={"required": True}), path="/v1/messages")
    body = orjson.loads(decision.body)
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"


def test_without_required_auth_foreign_credentials_are_the_default_tenant() -> None:
    a = agent()
    ex, decision = headers_phase(a, authorization="Bearer sk-some-sdk-placeholder")
    assert isinstance(decision, Continue) and ex.caller.tenant == "default"
    # A key in this gateway's own shape is checked even so: a typo is not "default".
    _, wrong = headers_phase(a, authorization="Bearer sk-ea-typo")
    assert status_of(wrong) == 401


def test_expired_and_unknown_tenant_keys_are_refused() -> None:
    a = agent(auth={"required": True})
    assert a.identity is not None
    secret, record = mint("team-b", "brief", now=0.0, expires_at=1.0)
    a.identity.ring.add(record)
    assert status_of(headers_phase(a, authorization=f"Bearer {secret}")[1]) == 401
    secret, record = mint("gone", "orphan", now=0.0)
    a.identity.ring.add(record)
    _, decision = headers_phase(a, authorization=f"Bearer {secret}")
    assert b"no longer configured" in decision.body


def test_api_keys_off_refuses_keys() -> None:
    with pytest.raises(ConfigError, match=r"auth\.api_keys is false"):
        agent(auth={"required": True, "api_keys": False})  # tenants[0] has a key
    data = {k: v for k, v in config().items() if k != "tenants"}
    a = Agent(
        parse_config(
            {**data, "auth": {"required": True, "api_keys": False, "mesh": {"enabled": True}}}
        ),
        environ={"KEY_P": "sk-p"},
    )
    assert a.identity is not None
    secret, record = mint("default", "runtime", now=0.0)
    a.identity.ring.add(record)  # a key made at run time is refused too
    assert status_of(headers_phase(a, authorization=f"Bearer {secret}")[1]) == 401


def test_mesh_identity_comes_from_the_last_xfcc_element_only() -> None:
    a = agent(auth={"required": True, "mesh": {"enabled": True, "tenants": {SPIFFE_A: "team-a"}}})
    forged = f"By=spiffe://x;URI={SPIFFE_A},By=spiffe://cluster.local/ns/gw/sa/gw;URI=spiffe://cluster.local/ns/other/sa/x"
    assert status_of(headers_phase(a, **{"x-forwarded-client-cert": forged})[1]) == 401
    real = f"By=spiffe://cluster.local/ns/llm/sa/agent;Hash=abc;URI={SPIFFE_A}"
    ex, decision = headers_phase(a, **{"x-forwarded-client-cert": real})
    assert isinstance(decision, Continue)
    assert ex.caller.tenant == "team-a" and ex.caller.subject == SPIFFE_A
    # An explicit key wins over the mesh identity.
    ex, _ = headers_phase(a, authorization=f"Bearer {KEY_A}", **{"x-forwarded-client-cert": real})
    assert ex.caller.via == "key"


def test_forwarded_claims_name_the_tenant() -> None:
    a = agent(auth={"required": True, "forwarded_claims": {"tenant_claim": "org.team"}})
    payload = base64.urlsafe_b64encode(orjson.dumps({"sub": "u1", "org": {"team": "team-b"}}))
    ex, decision = headers_phase(a, **{"x-jwt-payload": payload.decode().rstrip("=")})
    assert isinstance(decision, Continue)
    assert (ex.caller.tenant, ex.caller.subject) == ("team-b", "u1")
    unknown = base64.urlsafe_b64encode(orjson.dumps({"org": {"team": "nobody"}})).decode()
    assert status_of(headers_phase(a, **{"x-jwt-payload": unknown})[1]) == 401
    assert status_of(headers_phase(a, **{"x-jwt-payload": "%%%not-base64"})[1]) == 401


def test_the_forwarded_claims_header_never_reaches_a_provider() -> None:
    a = agent(auth={"forwarded_claims": {}})
    assert "x-jwt-payload" in a.identity_headers
    claims = base64.urlsafe_b64encode(orjson.dumps({"sub": "u", "tenant": "team-b"})).decode()
    xfcc = "By=spiffe://x;URI=spiffe://cluster.local/ns/a/sa/b"
    ex, _ = headers_phase(a, **{"x-jwt-payload": claims, "x-forwarded-client-cert": xfcc})
    routed = ex.request_body(
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    )
    assert isinstance(routed, Continue)  # on its way to the provider, without them
    assert {"x-jwt-payload", "x-forwarded-client-cert"} <= set(routed.remove_headers)
    assert dict(routed.set_headers)["authorization"] == "Bearer sk-p"  # the provider's key


# ---- what a tenant may use ------------------------------------------------------------
def test_a_model_outside_the_tenants_list_is_403_naming_it() -> None:
    a = agent(auth={"required": True})
    ex, _ = headers_phase(a, authorization=f"Bearer {KEY_A}")
    body = orjson.dumps({"model": "n", "messages": [{"role": "user", "content": "hi"}]})
    decision = ex.request_body(body)
    assert isinstance(decision, Respond) and decision.status == 403
    assert "'n'" in orjson.loads(decision.body)["error"]["message"]


def test_models_lists_only_the_tenants_models() -> None:
    a = agent(auth={"required": True})
    _, decision = headers_phase(a, path="/v1/models", authorization=f"Bearer {KEY_A}")
    assert [m["id"] for m in orjson.loads(decision.body)["data"]] == ["m"]
    _, anonymous = headers_phase(agent(), path="/v1/models")
    assert [m["id"] for m in orjson.loads(anonymous.body)["data"]] == ["m", "n"]


def test_without_auth_or_tenants_there_is_no_identity_stage() -> None:
    plain = parse_config({k: v for k, v in config().items() if k != "tenants"})
    a = Agent(plain, environ={"KEY_P": "sk-p"})
    assert a.identity is None and a.header_stages == []


# ---- cache namespaces -------------------------------------------------------------------
def test_cache_namespaces_isolate_tenants_and_pool_shared_ones() -> None:
    from edge_agent.identity.settings import Tenant

    t = Tenants(
        [
            Tenant(name="a"),
            Tenant(name="s1", cache="shared"),
            Tenant(name="s2", cache="shared"),
        ]
    )
    assert t.cache_namespace("a") == "a"
    assert t.cache_namespace("s1") == t.cache_namespace("s2") != t.cache_namespace("a")
    assert t.cache_namespace("default") == ""  # the keys of a gateway without tenants
    assert t.cache_namespace("unconfigured") == "unconfigured"
    assert t.label("unconfigured") == OTHER_TENANT and t.label("s1") == "s1"


def test_the_cache_key_depends_on_the_tenant() -> None:
    a = agent(auth={"required": False})
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    keys = set()
    for hdrs in ({"authorization": f"Bearer {KEY_A}"}, {}):
        ex, _ = headers_phase(a, **hdrs)
        ex.request_body(body)
        keys.add(ex.key)
    assert len(keys) == 2


# ---- XFCC and keys -----------------------------------------------------------------------
def test_xfcc_reader_handles_quotes_and_many_elements() -> None:
    header = (
        'By=spiffe://a;Subject="CN=x,O=y";URI=spiffe://first,'
        'By=spiffe://b;Subject="O=\\"q\\";c";URI=http://not-spiffe;URI=spiffe://second'
    )
    assert xfcc.peer_spiffe_id(header) == "spiffe://second"
    assert xfcc.peer_spiffe_id("Hash=abc") is None
    assert xfcc.peer_spiffe_id("") is None
    assert xfcc.peer_spiffe_id("x" * (xfcc.MAX_XFCC_CHARS + 1)) is None


def test_keys_are_kept_as_hashes_and_records_roundtrip() -> None:
    secret, record = mint("t", "n", now=10.0)
    assert secret.startswith("sk-ea-") and record.sha256 == hash_key(secret)
    assert secret not in record.to_json().decode()
    assert KeyRecord.from_json(record.to_json()) == record
    assert KeyRecord.from_json(b"{not json") is None
    assert KeyRecord.from_json(b'{"id": 1}') is None
    ring = KeyRing()
    ring.add(record)
    assert ring.find(hash_key(secret)) == record
    assert ring.remove(record.id) == record and ring.find(hash_key(secret)) is None
    assert "sha256" not in record.public(None)


# ---- config ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "where", "what"),
    [
        ({"tenants": [{"name": "a"}, {"name": "a"}]}, "tenants[1].name", "duplicate"),
        ({"tenants": [{"name": "a", "models": ["zz"]}]}, "tenants[0].models[0]", "unknown model"),
        ({"tenants": [{"name": "Bad Name"}]}, "tenants[0].name", "pattern"),
        (
            {"auth": {"mesh": {"enabled": True, "tenants": {SPIFFE_A: "ghost"}}}},
            "auth.mesh.tenants",
            "unknown tenant",
        ),
        (
            {"auth": {"jwt": [{"issuer": "https://idp", "audiences": ["x"]}]}},
            "auth.jwt[0]",
            "exactly one of",
        ),
        (
            {
                "tenants": [
                    {"name": "a", "keys": [{"name": "k", "sha256": "a" * 64}]},
                    {"name": "b", "keys": [{"name": "k", "sha256": "A" * 64}]},
                ]
            },
            "tenants[1].keys[0]",
            "same key",
        ),
    ],
)
def test_config_cross_references(extra: dict[str, Any], where: str, what: str) -> None:
    data = {k: v for k, v in config().items() if k != "tenants"}
    with pytest.raises(ConfigError) as err:
        parse_config({**data, **extra})
    text = str(err.value)
    assert where in text and what in text, text


def test_in_sidecar_mode_the_caller_is_the_pods_own_workload() -> None:
    mesh = {"tenants": {SPIFFE_A: "team-a"}}  # enabled unset: on where the pod is known
    env = {
        "KEY_P": "sk-p",
        "EDGE_AGENT_POD_NAMESPACE": "team-a",
        "EDGE_AGENT_POD_SERVICE_ACCOUNT": "chatbot",
    }
    a = Agent(parse_config(config(auth={"required": True, "mesh": mesh})), environ=env)
    ex, decision = headers_phase(a)
    assert isinstance(decision, Continue)
    assert (ex.caller.tenant, ex.caller.via, ex.caller.subject) == ("team-a", "mesh", SPIFFE_A)
    # XFCC is not read unless enabled explicitly (outbound traffic has no verified peer).
    other = "URI=spiffe://cluster.local/ns/x/sa/y"
    ex, _ = headers_phase(a, **{"x-forwarded-client-cert": other})
    assert ex.caller.tenant == "team-a"
    # Outside sidecar mode (no pod identity) there is nothing to go by.
    b = Agent(parse_config(config(auth={"required": True, "mesh": mesh})), environ={})
    assert status_of(headers_phase(b)[1]) == 401
    off = {**mesh, "enabled": False}
    c = Agent(parse_config(config(auth={"required": True, "mesh": off})), environ=env)
    assert status_of(headers_phase(c)[1]) == 401


_header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    authorization=st.one_of(st.none(), _header_text, _header_text.map(lambda t: "Bearer " + t)),
    api_key=st.one_of(st.none(), _header_text),
    xfcc=st.one_of(st.none(), _header_text),
    payload=st.one_of(st.none(), _header_text),
)
def test_any_credentials_give_a_caller_or_a_401_never_an_error(
    authorization: str | None, api_key: str | None, xfcc: str | None, payload: str | None
) -> None:
    hdrs = {
        name: value
        for name, value in (
            ("authorization", authorization),
            ("x-api-key", api_key),
            ("x-forwarded-client-cert", xfcc),
            ("x-jwt-payload", payload),
        )
        if value is not None
    }
    for a in FUZZ_AGENTS:
        ex, decision = headers_phase(a, **hdrs)
        assert isinstance(decision, Continue | Respond)
        if isinstance(decision, Respond):
            assert decision.status == 401
            assert orjson.loads(decision.body)["error"]["code"] == "invalid_api_key"
        else:
            assert ex.caller.tenant in ("team-a", "team-b", "default")


FUZZ_AGENTS = [
    agent(auth={"required": True, "forwarded_claims": {}, "mesh": {"enabled": True}}),
    agent(auth={"required": False, "forwarded_claims": {}}),
]


# ---- found in review -------------------------------------------------------------------
def test_an_open_quote_cannot_swallow_the_sidecars_xfcc_element() -> None:
    a = agent(auth={"required": True, "mesh": {"enabled": True, "tenants": {SPIFFE_A: "team-a"}}})
    attack = f'URI={SPIFFE_A};X=",By=spiffe://cluster.local/ns/llm/sa/gw;Subject="";URI=spiffe://cluster.local/ns/evil/sa/x'
    assert xfcc.peer_spiffe_id(attack) is None
    assert status_of(headers_phase(a, **{"x-forwarded-client-cert": attack})[1]) == 401
    escaped = f'URI={SPIFFE_A};X="a\\'
    assert xfcc.peer_spiffe_id(escaped) is None


def test_forwarded_claims_can_be_pinned_to_issuers_and_audiences() -> None:
    pinned = {"issuers": ["https://idp/"], "audiences": ["llm"]}
    a = agent(auth={"required": True, "forwarded_claims": pinned})

    def payload(**claims: Any) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(claims)).decode().rstrip("=")

    good = payload(iss="https://idp/", aud=["llm", "x"], sub="u", tenant="team-b")
    ex, decision = headers_phase(a, **{"x-jwt-payload": good})
    assert isinstance(decision, Continue) and ex.caller.tenant == "team-b"
    other_issuer = payload(iss="https://other/", aud="llm", sub="u", tenant="team-b")
    _, refused = headers_phase(a, **{"x-jwt-payload": other_issuer})
    assert status_of(refused) == 401 and b"issuer" in refused.body
    other_audience = payload(iss="https://idp/", aud="else", sub="u", tenant="team-b")
    _, refused = headers_phase(a, **{"x-jwt-payload": other_audience})
    assert status_of(refused) == 401 and b"audience" in refused.body


def test_stored_key_records_with_bad_fields_are_dropped() -> None:
    base = {"id": "k", "name": "n", "tenant": "t", "sha256": "s"}
    for bad in ({"expires_at": "x"}, {"expires_at": True}, {"source": "elsewhere"}):
        assert KeyRecord.from_json(orjson.dumps({**base, **bad})) is None
    assert KeyRecord.from_json(orjson.dumps({**base, "expires_at": 5})) is not None


def test_fail_open_is_refused_with_auth() -> None:
    with pytest.raises(ConfigError, match=r"envoy\.failure_mode"):
        agent(auth={"required": True}, envoy={"failure_mode": "open"})


def test_other_is_not_a_tenant_name() -> None:
    data = {k: v for k, v in config().items() if k != "tenants"}
    with pytest.raises(ConfigError, match="reserved"):
        parse_config({**data, "tenants": [{"name": "other"}]})


def test_an_unknown_model_error_names_only_the_tenants_models() -> None:
    a = agent(auth={"required": True})
    ex, _ = headers_phase(a, authorization=f"Bearer {KEY_A}")
    decision = ex.request_body(
        orjson.dumps({"model": "nope", "messages": [{"role": "user", "content": "x"}]})
    )
    assert status_of(decision) == 404
    message = orjson.loads(decision.body)["error"]["message"]
    assert message.endswith("Available models: m.")


def test_refused_callers_count_as_no_tenant() -> None:
    a = agent(auth={"required": True})
    headers_phase(a)
    value = a.metrics.registry.get_sample_value(
        "edge_agent_requests_total",
        {
            "endpoint": "chat.completions",
            "model": "-",
            "provider": "-",
            "status": "401",
            "tenant": "-",
        },
    )
    assert value == 1


def test_in_sidecar_mode_the_admin_port_needs_a_token_even_from_loopback() -> None:
    from aiohttp.test_utils import make_mocked_request

    from edge_agent.runtime.admin import AdminAccess, change_refusal

    class Peer:
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 40000) if name == "peername" else default

    request = make_mocked_request("POST", "/admin/keys", transport=Peer())
    assert change_refusal(request, AdminAccess(None, loopback=True)) is None
    refused = change_refusal(request, AdminAccess(None, loopback=False))
    assert refused is not None and refused.status == 403


def test_sidecar_mode_is_told_by_the_pod_variables_whatever_auth_is_configured() -> None:
    """The default sidecar config has no auth at all, and `mesh.enabled: false` turns off
    the pod's identity, not the pod: the app beside the agent shares its loopback in
    both, so the admin port's loopback rule must be off."""
    from edge_agent.runtime.admin import AdminAccess, admin_access

    pod = {"EDGE_AGENT_POD_NAMESPACE": "team-a", "EDGE_AGENT_POD_SERVICE_ACCOUNT": "chatbot"}
    assert admin_access(None, pod).loopback is False
    assert admin_access("s3cret", pod) == AdminAccess("s3cret", loopback=False)
    assert admin_access(None, {}).loopback is True  # the standalone gateway
    assert admin_access(None, {"EDGE_AGENT_POD_NAMESPACE": "team-a"}).loopback is True

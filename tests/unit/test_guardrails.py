"""Guardrails, sans-IO: what the PII detector finds and leaves alone, redaction of every
text a request carries, block and deny, and the config's refusals of what is not built."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from edge_agent.agent import Agent
from edge_agent.api.errors import ApiError
from edge_agent.config import ConfigError, parse_config
from edge_agent.extproc.decisions import Continue, Respond
from edge_agent.extproc.exchange import Exchange
from edge_agent.guardrails.pii import ENTITY_ORDER, Detector, redact

ALL = Detector(ENTITY_ORDER)


def found(text: str, detector: Detector = ALL) -> list[tuple[str, str]]:
    return [(f.entity, text[f.start : f.end]) for f in detector.find(text)]


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        (
            "mail me: jane.doe+x@mail.example.co.uk.",
            "EMAIL_ADDRESS",
            "jane.doe+x@mail.example.co.uk",
        ),
        ("card 4111-1111-1111-1111 ok", "CREDIT_CARD", "4111-1111-1111-1111"),
        ("amex 378282246310005", "CREDIT_CARD", "378282246310005"),
        ("iban DE89 3704 0044 0532 0130 00 thanks", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"),
        ("ssn 536-22-1234.", "US_SSN", "536-22-1234"),
        ("from 192.168.10.7 today", "IP_ADDRESS", "192.168.10.7"),
        ("v6 2001:db8:85a3::8a2e:370:7334 here", "IP_ADDRESS", "2001:db8:85a3::8a2e:370:7334"),
        ("call (415) 555-2671 now", "PHONE_NUMBER", "(415) 555-2671"),
        ("ring +33 1 42 68 53 00", "PHONE_NUMBER", "+33 1 42 68 53 00"),
        ("key sk-proj-0123456789abcdefghijKLMN ok", "API_KEY", "sk-proj-0123456789abcdefghijKLMN"),
        ("aws AKIAIOSFODNN7EXAMPLE", "API_KEY", "AKIAIOSFODNN7EXAMPLE"),
    ],
)
def test_finds(text: str, entity: str, value: str) -> None:
    assert found(text) == [(entity, value)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails Luhn",
        "iban GB82 WEST 1234 5698 7654 33 fails mod-97",
        "ssn 000-12-3456 is never issued",
        "ip 300.1.2.3 is not an address",
        "the year 2024, 12 apples, version 3.14, order #12345, at 10:30",
        "isbn 978-3-16-148410-0 and a date 2024-05-01",
        "Please summarise the following meeting notes for my team.",
    ],
)
def test_leaves_look_alikes_alone(text: str) -> None:
    assert found(text) == []


def test_overlaps_keep_the_first_type_and_only_wanted_types_are_found() -> None:
    text = "reach me at 4111111111111111@cards.example.com"
    assert found(text) == [("EMAIL_ADDRESS", "4111111111111111@cards.example.com")]
    only_cards = Detector(["CREDIT_CARD"])
    assert found(f"{text} or 4111 1111 1111 1111", only_cards) == [
        ("CREDIT_CARD", "4111111111111111"),
        ("CREDIT_CARD", "4111 1111 1111 1111"),
    ]
    assert redact("a x@y.io b", ALL.find("a x@y.io b")) == "a <EMAIL_ADDRESS> b"


# -- the stage ----------------------------------------------------------------------------


def make_agent(action: str = "redact", **guard: Any) -> Agent:
    config = parse_config(
        {
            "providers": [{"name": "a", "type": "openai", "base_url": "http://127.0.0.1:1"}],
            "models": [{"name": "m", "targets": ["a/m"]}],
            "cache": {"semantic": {"enabled": False}},
            "guardrails": {"pii": {"action": action}, **guard},
        }
    )
    return Agent(config, environ={})


def send(
    agent: Agent, body: dict[str, Any], path: str = "/v1/chat/completions"
) -> tuple[Exchange, Any]:
    ex = Exchange(agent)
    assert isinstance(ex.request_headers({":method": "POST", ":path": path}, False), Continue)
    return ex, ex.request_body(orjson.dumps(body))


def test_every_text_of_a_request_is_redacted_structure_is_not() -> None:
    agent = make_agent()
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Support agent for jane@example.com"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "My card is 4111 1111 1111 1111"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,a@b.cd"}},
                ],
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"email": "jo@example.org"}'},
                    }
                ],
            },
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": "IBAN GB82 WEST 1234 5698 7654 32",
            },
        ],
    }
    ex, decision = send(agent, body)
    assert isinstance(decision, Continue)
    sent = orjson.loads(decision.body or b"")
    text = orjson.dumps(sent).decode()
    for secret in ("jane@example.com", "4111 1111 1111 1111", "jo@example.org", "GB82 WEST"):
        assert secret not in text
    # Image data and ids are structure, not text: untouched.
    assert sent["messages"][1]["content"][1]["image_url"]["url"] == "data:image/png;base64,a@b.cd"
    assert sent["messages"][3]["tool_call_id"] == "call_1"
    assert ex.findings == {"EMAIL_ADDRESS": 2, "CREDIT_CARD": 1, "IBAN_CODE": 1}
    # The cache key is the redacted request's.
    assert ex.key is not None and b"jane@example.com" not in ex.raw


def test_anthropic_and_embeddings_texts_are_redacted() -> None:
    agent = make_agent()
    _, decision = send(
        agent,
        {
            "model": "m",
            "max_tokens": 10,
            "system": [{"type": "text", "text": "user is ann@example.com"}],
            "messages": [{"role": "user", "content": "call (415) 555-2671"}],
        },
        "/v1/messages",
    )
    assert isinstance(decision, Continue) and decision.body is not None
    assert b"ann@example.com" not in decision.body and b"555-2671" not in decision.body
    _, decision = send(agent, {"model": "m", "input": ["x 536-22-1234", "y"]}, "/v1/embeddings")
    assert isinstance(decision, Continue) and decision.body is not None
    assert b"536-22-1234" not in decision.body and b"<US_SSN>" in decision.body


def test_nothing_found_sends_the_body_unchanged() -> None:
    agent = make_agent()
    ex, decision = send(agent, {"model": "m", "messages": [{"role": "user", "content": "hello"}]})
    assert isinstance(decision, Continue) and decision.body is None and ex.findings is None


def test_block_and_deny_refuse_without_the_values() -> None:
    agent = make_agent("block", deny=[{"name": "no-keys", "regex": "PRIVATE KEY"}])
    ex, decision = send(agent, {"model": "m", "messages": [{"role": "user", "content": "a@b.io"}]})
    assert isinstance(decision, Respond) and decision.status == 400
    assert b"EMAIL_ADDRESS (1)" in decision.body and b"a@b.io" not in decision.body
    ex, decision = send(
        agent, {"model": "m", "messages": [{"role": "user", "content": "BEGIN PRIVATE KEY"}]}
    )
    assert isinstance(decision, Respond) and b"no-keys" in decision.body
    assert ex.refusal == "denied_by_policy"


def test_off_costs_nothing() -> None:
    agent = make_agent("off")
    assert agent.guardrails is None
    names = [getattr(s, "__module__", "") for s in agent.request_stages]
    assert "edge_agent.guardrails.stage" not in names


@pytest.mark.parametrize(
    ("guard", "message"),
    [
        ({"pii": {"action": "pseudonymize"}}, "pseudonymize is not implemented"),
        ({"pii": {"action": "redact", "entities": ["PERSON"]}}, "named-entity model"),
        ({"pii": {"action": "redact", "direction": "both"}}, "set direction: request"),
        ({"deny": [{"name": "bad", "regex": "("}]}, "not a valid regular expression"),
        ({"external": {"url": "guard.internal:8000"}}, "expected an http"),
        ({"external": {"url": "http://g", "timeout_ms": 900}}, "leaves no room"),
    ],
)
def test_what_is_not_built_is_refused_clearly(guard: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(
            {
                "providers": [{"name": "a", "type": "openai", "base_url": "http://127.0.0.1:1"}],
                "models": [{"name": "m", "targets": ["a/m"]}],
                "guardrails": guard,
            }
        )


def test_a_refusal_is_an_api_error() -> None:
    # The stage refuses through ApiError, so every client gets its own error shape.
    from edge_agent.guardrails import stage

    agent = make_agent("block")
    ex = Exchange(agent)
    ex.request_headers({":method": "POST", ":path": "/v1/chat/completions"}, False)
    ex.request = agent.exchange().schema.parse(
        ex.endpoint,  # type: ignore[arg-type]
        orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "a@b.io"}]}),
    )
    with pytest.raises(ApiError, match="EMAIL_ADDRESS"):
        next(stage.check(ex))  # a generator: it may ask the external checker


def test_a_long_number_that_passes_luhn_is_not_a_card_without_a_network_prefix() -> None:
    # 1234567812345670 passes Luhn; no card network issues numbers starting with 1.
    assert found("order 1234567812345670 shipped") == []
    assert found("card 5555 5555 5555 4444") == [("CREDIT_CARD", "5555 5555 5555 4444")]


def test_a_tenants_own_guardrails_replace_the_global_ones() -> None:
    import hashlib

    keys = {t: f"sk-{t}-client-key" for t in ("team-a", "team-b", "team-c")}

    def tenant(name: str, **extra: Any) -> dict[str, Any]:
        sha = hashlib.sha256(keys[name].encode()).hexdigest()
        return {"name": name, "keys": [{"name": "k", "sha256": sha}], **extra}

    config = parse_config(
        {
            "providers": [{"name": "a", "type": "openai", "base_url": "http://127.0.0.1:1"}],
            "models": [{"name": "m", "targets": ["a/m"]}],
            "cache": {"semantic": {"enabled": False}},
            "auth": {"required": True},
            "guardrails": {"pii": {"action": "block"}},
            "tenants": [
                tenant("team-a", guardrails={"pii": {"action": "redact"}}),
                tenant("team-b", guardrails={"pii": {"action": "off"}}),
                tenant("team-c"),
            ],
        }
    )
    agent = Agent(config, environ={})
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "mail a@b.io"}]})

    def as_tenant(name: str) -> Any:
        ex = Exchange(agent)
        headers = {
            ":method": "POST",
            ":path": "/v1/chat/completions",
            "authorization": f"Bearer {keys[name]}",
        }
        assert isinstance(ex.request_headers(headers, False), Continue)
        assert ex.caller.tenant == name
        return ex.request_body(body)

    redacted = as_tenant("team-a")
    assert isinstance(redacted, Continue) and redacted.body is not None
    assert b"a@b.io" not in redacted.body and b"<EMAIL_ADDRESS>" in redacted.body
    untouched = as_tenant("team-b")  # its own block turns them off: sent as written
    assert isinstance(untouched, Continue) and untouched.body is None
    refused = as_tenant("team-c")  # no block of its own: the global one (block)
    assert isinstance(refused, Respond) and refused.status == 400

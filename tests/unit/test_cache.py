from __future__ import annotations

from edge_agent.api.openai import Endpoint, parse_request
from edge_agent.cache.exact import ExactCache
from edge_agent.cache.keys import cache_key, cache_policy
from tests.helpers import Clock


def test_lru_evicts_oldest_and_get_refreshes() -> None:
    cache = ExactCache(2, 60)
    cache.put("a", b"1")
    cache.put("b", b"2")
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes == 2


def test_ttl_expires() -> None:
    clock = Clock()
    cache = ExactCache(10, 5, clock=clock)
    cache.put("a", b"xyz")
    clock.now += 4.9
    assert cache.get("a") is not None
    clock.now += 0.2
    assert cache.get("a") is None
    assert len(cache) == 0 and cache.bytes == 0


def test_oversized_entries_are_refused() -> None:
    cache = ExactCache(10, 5, max_entry_bytes=4)
    assert not cache.put("a", b"12345")
    assert cache.put("a", b"1234")


def chat(**body: object) -> object:
    payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    import orjson

    return parse_request(Endpoint.CHAT, orjson.dumps(payload))


def test_key_ignores_delivery_fields_but_not_answer_fields() -> None:
    plain = cache_key("", chat())
    assert cache_key("", chat(stream=True, stream_options={"include_usage": True})) == plain
    assert cache_key("", chat(user="u1")) == plain
    assert cache_key("", chat(max_tokens=5)) != plain
    assert cache_key("", chat(model="other")) != plain
    assert cache_key("tenant-b", chat()) != plain


def test_key_normalizes_text_parts() -> None:
    parts = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert cache_key("", parts) == cache_key("", chat())


def test_policy() -> None:
    allow = {"allow_nonzero_temperature": False}
    assert cache_policy(chat(), {}, **allow).lookup
    assert cache_policy(chat(temperature=0), {}, **allow).lookup
    p = cache_policy(chat(temperature=0.7), {}, **allow)
    assert not p.lookup and not p.store and p.reason == "temperature > 0"
    assert cache_policy(chat(temperature=0.7), {}, allow_nonzero_temperature=True).lookup
    assert not cache_policy(chat(n=2), {}, **allow).store
    assert not cache_policy(chat(), {"x-edge-agent-cache": "bypass"}, **allow).lookup
    assert not cache_policy(chat(), {"cache-control": "no-store"}, **allow).store
    refresh = cache_policy(chat(), {"cache-control": "no-cache"}, **allow)
    assert not refresh.lookup and refresh.store


def test_byte_budget_evicts_oldest() -> None:
    cache = ExactCache(100, 60, max_entry_bytes=10, max_bytes=20)
    for key in "abc":
        assert cache.put(key, b"x" * 10)
    assert cache.get("a") is None and cache.bytes == 20


def test_several_text_parts_do_not_collide_with_their_concatenation() -> None:
    two = chat(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "foo"}, {"type": "text", "text": "bar"}],
            }
        ]
    )
    joined = chat(messages=[{"role": "user", "content": "foobar"}])
    assert cache_key("", two) != cache_key("", joined)


def test_key_holds_what_is_forwarded_and_changes_the_answer() -> None:
    from edge_agent.cache.keys import VARY_HEADERS, request_variant

    req = chat()
    plain = cache_key("", req, request_variant("", {}, VARY_HEADERS))
    assert plain == cache_key("", req)  # the common request keeps its key

    def key(query: str = "", **headers: str) -> str:
        return cache_key("", req, request_variant(query, headers, VARY_HEADERS))

    # Each item of the rule (docs/operations.md): a different value, a different key.
    assert key("api-version=2099-01-01") not in (plain, key("api-version=2024-10-21"))
    assert key(**{"anthropic-beta": "output-128k-2025-02-19"}) != plain
    assert key(**{"openai-beta": "assistants=v2"}) != plain
    assert key(**{"anthropic-beta": "a"}) != key(**{"anthropic-beta": "b"})
    # Headers that cannot change the answer stay out of it.
    assert key(**{"traceparent": "00-abc-def-01", "user-agent": "sdk/1.0"}) == plain
    # A configured header is in the key; a query is never confused with a header value.
    extra = (*VARY_HEADERS, "x-vllm-lora")
    assert cache_key("", req, request_variant("", {"x-vllm-lora": "a"}, extra)) != plain
    assert key("anthropic-beta=a") != key(**{"anthropic-beta": "a"})


def test_semantic_partition_holds_the_same_variant() -> None:
    from edge_agent.cache.keys import VARY_HEADERS, request_variant, semantic_scope

    req = chat()
    plain = semantic_scope("", req)
    assert plain is not None
    assert semantic_scope("", req, variant=request_variant("", {}, VARY_HEADERS)) == plain
    beta = semantic_scope(
        "", req, variant=request_variant("", {"anthropic-beta": "x"}, VARY_HEADERS)
    )
    query = semantic_scope("", req, variant=request_variant("v=2", {}, VARY_HEADERS))
    assert beta is not None and query is not None
    assert len({plain[0], beta[0], query[0]}) == 3  # three partitions, same text
    assert plain[1] == beta[1] == query[1]

"""The semantic tier through `edge-agent run`: real Envoy, agent, local embedder, FAISS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from edge_agent.api.sse import SSEParser
from edge_agent.demo.upstream import FakeOpenAI
from tests.conftest import PROVIDER_KEYS, two_provider_config
from tests.helpers import Gateway, free_port, metric_value, post_json, wait_for, write_config

QUESTION = "What is the capital city of France?"
PARAPHRASE = "Which city is the capital of France?"
# A long request, then the same one re-asked in other words.
LONG = (
    "Could you draft a short email to the facilities team? The air conditioning on the "
    "third floor has been broken since Monday, the meeting rooms are too hot to use in the "
    "afternoon, and we have a client visit on Thursday. Ask them to repair it before "
    "Wednesday evening and to tell us if they need access to the server room."
)
LONG_REWORDED = (
    "hey, please write a brief e-mail to the facilities team: the air conditioning on the "
    "third floor has been broken since Monday, the meeting rooms are too hot to use in the "
    "afternoon and we have a client visit on Thursday. Ask them to fix it before Wednesday "
    "evening, and to let us know if they need access to the server room. Thanks!"
)
REVIEW = (
    "I ordered the standing desk for my home office. Delivery took three weeks instead of "
    "one, and two screws were missing from the box.\nSupport sent the screws within two "
    "days and apologised.\nThe desk itself is sturdy and quiet, and I use it every day now."
)


@pytest.fixture(scope="module")
def semantic_gateway(
    providers: dict[str, FakeOpenAI], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    # The default semantic settings, serving (the default mode is shadow).
    config = two_provider_config(providers, cache={"semantic": {"enabled": True, "mode": "serve"}})
    tmp: Path = tmp_path_factory.mktemp("semantic")
    gw = Gateway(config, write_config(tmp, config), dict(PROVIDER_KEYS)).start()
    try:
        yield gw
    finally:
        gw.stop()


def ask(
    gw: Gateway, text: str, model: str = "gpt-alpha", system: str | None = None, **extra: object
):  # type: ignore[no-untyped-def]
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return post_json(
        f"{gw.url}/v1/chat/completions", {"model": model, "messages": messages, **extra}
    )


def test_paraphrase_is_served_as_json_and_sse(
    semantic_gateway: Gateway, fresh: dict[str, FakeOpenAI]
) -> None:
    system = "You answer geography questions. (json+sse test)"
    first = ask(semantic_gateway, QUESTION, system=system)
    assert first.headers["x-edge-agent-cache"] == "miss"
    hit = ask(semantic_gateway, PARAPHRASE, system=system)
    assert hit.headers["x-edge-agent-cache"] == "semantic-hit", hit.headers
    assert float(hit.headers["x-edge-agent-cache-score"]) > 0.8
    assert hit.json() == first.json()  # the answer cached for the first question

    streamed = ask(semantic_gateway, PARAPHRASE, system=system, stream=True)
    assert streamed.headers["x-edge-agent-cache"] == "semantic-hit"
    events = [e.data for e in SSEParser().feed(streamed.body)]
    assert events[-1] == "[DONE]"
    text = "".join(
        c["delta"].get("content") or "" for e in events[:-1] for c in orjson.loads(e)["choices"]
    )
    assert text == first.json()["choices"][0]["message"]["content"]
    assert len(fresh["alpha"].requests) == 1


def test_other_model_or_system_prompt_is_not_served(
    semantic_gateway: Gateway, fresh: dict[str, FakeOpenAI]
) -> None:
    system = "You answer geography questions. (isolation test)"
    assert ask(semantic_gateway, QUESTION, system=system).headers["x-edge-agent-cache"] == "miss"
    other_model = ask(semantic_gateway, PARAPHRASE, model="beta-chat", system=system)
    assert other_model.headers["x-edge-agent-cache"] == "miss"
    other_system = ask(semantic_gateway, PARAPHRASE, system="You are a pirate. (isolation)")
    assert other_system.headers["x-edge-agent-cache"] == "miss"
    assert len(fresh["alpha"].requests) == 2 and len(fresh["beta"].requests) == 1


def test_hard_negative_is_not_served(
    semantic_gateway: Gateway, fresh: dict[str, FakeOpenAI]
) -> None:
    system = "Unit conversions. (negative test)"
    ask(semantic_gateway, "Convert 30 degrees Celsius to Fahrenheit", system=system)
    swapped = ask(semantic_gateway, "Convert 30 degrees Fahrenheit to Celsius", system=system)
    assert swapped.headers["x-edge-agent-cache"] == "miss"
    other_number = ask(semantic_gateway, "Convert 45 degrees Celsius to Fahrenheit", system=system)
    assert other_number.headers["x-edge-agent-cache"] == "miss"
    assert len(fresh["alpha"].requests) == 3


def test_long_paraphrase_served_changed_instruction_refused(
    semantic_gateway: Gateway, fresh: dict[str, FakeOpenAI]
) -> None:
    """The near-miss that served wrong answers: the same pasted review under another
    instruction is refused however close the embeddings (cosine ~0.99); the same long
    request re-asked in other words is served."""
    system = "Office assistant. (near-miss test)"
    first = ask(semantic_gateway, LONG, system=system)
    assert first.headers["x-edge-agent-cache"] == "miss"
    again = ask(semantic_gateway, LONG_REWORDED, system=system)
    assert again.headers["x-edge-agent-cache"] == "semantic-hit", again.headers
    assert again.json() == first.json()

    summary = ask(semantic_gateway, f"Summarize this customer review:\n\n{REVIEW}", system=system)
    assert summary.headers["x-edge-agent-cache"] == "miss"
    before = semantic_gateway.metrics()
    reply = ask(semantic_gateway, f"Reply to this customer review:\n\n{REVIEW}", system=system)
    assert reply.headers["x-edge-agent-cache"] == "miss"
    after = semantic_gateway.metrics()
    assert reply.json() != summary.json()  # the provider answered the new instruction
    same = ask(semantic_gateway, f"{REVIEW}\n\nCan you sum up this customer review?", system=system)
    assert same.headers["x-edge-agent-cache"] == "semantic-hit"
    assert same.json() == summary.json()
    assert len(fresh["alpha"].requests) == 3
    # the "reply to" lookup itself was refused by the verifier, for a changed word
    for name, labels in (
        ("edge_agent_semantic_lookups_total", {"outcome": "refused"}),
        ("edge_agent_semantic_refusals_total", {"reason": "wording differs"}),
    ):
        assert metric_value(after, name, **labels) == metric_value(before, name, **labels) + 1


def test_default_mode_is_shadow(
    providers: dict[str, FakeOpenAI], tmp_path: Path, fresh: dict[str, FakeOpenAI]
) -> None:
    """No configuration reaches the bar for serving semantic hits (docs/semantic-cache.md):
    by default the tier only measures what it would have served."""
    gw = _gateway(tmp_path, providers, {"enabled": True})
    try:
        ask(gw, QUESTION)
        _landed(gw, 1)  # the lookup runs beside the request; the answer is stored after it
        second = ask(gw, PARAPHRASE)
        assert second.headers["x-edge-agent-cache"] == "miss"
        _landed(gw, 2)
        assert (
            metric_value(gw.metrics(), "edge_agent_semantic_lookups_total", outcome="shadow_hit")
            == 1
        )
        assert len(fresh["alpha"].requests) == 2
    finally:
        gw.stop()


def test_streamed_miss_feeds_the_semantic_tier(
    semantic_gateway: Gateway, fresh: dict[str, FakeOpenAI]
) -> None:
    system = "Cooking. (stream capture test)"
    first = ask(semantic_gateway, "How long should I boil an egg?", system=system, stream=True)
    assert first.headers["x-edge-agent-cache"] == "miss"
    hit = ask(semantic_gateway, "How long do I need to boil an egg?", system=system)
    assert hit.headers["x-edge-agent-cache"] == "semantic-hit"
    assert len(fresh["alpha"].requests) == 1


def _gateway(tmp: Path, providers: dict[str, FakeOpenAI], semantic: dict) -> Gateway:
    config = two_provider_config(providers, cache={"semantic": semantic})
    return Gateway(config, write_config(tmp, config), dict(PROVIDER_KEYS)).start()


def _lookups(gw: Gateway) -> float:
    return sum(
        metric_value(gw.metrics(), "edge_agent_semantic_lookups_total", outcome=o)
        for o in ("miss", "refused", "shadow_hit", "error", "timeout", "store_only")
    )


def _shed(gw: Gateway, rule: str) -> float:
    return metric_value(gw.metrics(), "edge_agent_semantic_lookups_total", outcome=f"shed_{rule}")


def _landed(gw: Gateway, n: int) -> None:
    """In shadow mode the request does not wait for its lookup: wait for `n` to land."""
    wait_for(lambda: _lookups(gw) >= n, 10, f"{n} semantic lookups to land")


def test_shadow_mode_counts_would_be_hits_without_serving_them(
    providers: dict[str, FakeOpenAI], tmp_path: Path
) -> None:
    gw = _gateway(tmp_path, providers, {"enabled": True, "mode": "shadow"})
    try:
        for fake in providers.values():
            fake.reset()
        assert ask(gw, QUESTION).headers["x-edge-agent-cache"] == "miss"
        _landed(gw, 1)
        again = ask(gw, PARAPHRASE)
        assert again.headers["x-edge-agent-cache"] == "miss"  # not served
        _landed(gw, 2)
        metrics = gw.metrics()
    finally:
        gw.stop()
    assert metric_value(metrics, "edge_agent_semantic_lookups_total", outcome="shadow_hit") == 1
    assert metric_value(metrics, "edge_agent_semantic_shadow_saved_usd_total") > 0
    assert len(providers["alpha"].requests) == 2


def test_dead_remote_embedder_falls_back_to_exact_only(
    providers: dict[str, FakeOpenAI], tmp_path: Path
) -> None:
    dead = {
        "base_url": f"http://127.0.0.1:{free_port()}/v1",
        "model": "e",
        "dimensions": 8,
        "timeout_s": 0.5,
    }
    gw = _gateway(tmp_path, providers, {"enabled": True, "embedder": "openai", "openai": dead})
    try:
        first = ask(gw, QUESTION)
        repeat = ask(gw, QUESTION)
        paraphrase = ask(gw, PARAPHRASE)
        metrics = gw.metrics()
    finally:
        gw.stop()
    assert first.status == 200 and first.headers["x-edge-agent-cache"] == "miss"
    assert repeat.headers["x-edge-agent-cache"] == "hit"  # the exact tier still works
    assert paraphrase.status == 200 and paraphrase.headers["x-edge-agent-cache"] == "miss"
    assert metric_value(metrics, "edge_agent_semantic_lookups_total", outcome="error") == 2


def test_lookups_over_budget_skip_the_tier_and_still_succeed(
    providers: dict[str, FakeOpenAI], tmp_path: Path
) -> None:
    # A tiny budget makes a burst of concurrent misses (queued behind one embedding
    # thread) run out of it: those requests go on without the semantic tier instead of
    # waiting into Envoy's message timeout (which would answer 504).
    from concurrent.futures import ThreadPoolExecutor

    # Serve mode: a lookup that may serve is waited for, up to its budget (a lookup in
    # shadow mode is never waited for); no queue limit, so the burst queues.
    semantic = {"enabled": True, "mode": "serve", "lookup_timeout_ms": 20, "max_pending": 1000}
    gw = _gateway(tmp_path, providers, semantic)
    try:
        for fake in providers.values():
            fake.reset()
        questions = [f"Burst question {i}: what does error code E{i:04d} mean?" for i in range(64)]
        with ThreadPoolExecutor(32) as pool:
            replies = list(pool.map(lambda q: ask(gw, q, system="burst"), questions))
        metrics = gw.metrics()
    finally:
        gw.stop()
    assert [r.status for r in replies] == [200] * len(questions)
    assert len(providers["alpha"].requests) == len(questions)
    assert metric_value(metrics, "edge_agent_semantic_lookups_total", outcome="timeout") > 0


def test_a_burst_sheds_lookups_instead_of_queueing_them_and_every_request_succeeds(
    providers: dict[str, FakeOpenAI], tmp_path: Path
) -> None:
    """Shadow mode (the default) with the queue rule alone (max_pending 2, no CPU cap):
    32 concurrent misses against one embedding thread, each prompt long enough to take
    milliseconds to embed. Lookups it cannot keep up with are shed, never queued, and
    counted; every request is answered by the provider."""
    from concurrent.futures import ThreadPoolExecutor

    gw = _gateway(tmp_path, providers, {"enabled": True, "max_cpu_share": None})
    try:
        for fake in providers.values():
            fake.reset()
        questions = [f"Burst question {i}: {LONG}" for i in range(64)]
        with ThreadPoolExecutor(32) as pool:
            replies = list(pool.map(lambda q: ask(gw, q, system="shed"), questions))
        wait_for(
            lambda: _lookups(gw) + _shed(gw, "queue") + _shed(gw, "cpu") >= len(questions),
            10,
            "every lookup to land or be shed",
        )
        metrics = gw.metrics()
    finally:
        gw.stop()
    assert [r.status for r in replies] == [200] * len(questions)
    assert len(providers["alpha"].requests) == len(questions)
    assert metric_value(metrics, "edge_agent_semantic_lookups_total", outcome="shed_queue") > 0
    # every lookup shed was shed by the queue rule (no CPU cap here)
    assert metric_value(metrics, "edge_agent_semantic_lookups_total", outcome="shed_cpu") == 0
    assert metric_value(metrics, "edge_agent_semantic_lookups_total", outcome="timeout") == 0


def test_lookups_over_the_cpu_share_are_shed_until_it_is_paid_back(
    providers: dict[str, FakeOpenAI], tmp_path: Path
) -> None:
    """A share of 0.1 % of a core: the first lookup (milliseconds of real embedding)
    puts the tier in debt for seconds, so the next requests skip it and are served."""
    gw = _gateway(tmp_path, providers, {"enabled": True, "max_cpu_share": 0.001})
    try:
        assert ask(gw, "What is the boiling point of water at sea level?").status == 200
        _landed(gw, 1)
        later = [ask(gw, f"Question {i}: how do I rotate my API keys?") for i in range(5)]
        metrics = gw.metrics()
    finally:
        gw.stop()
    assert [r.status for r in later] == [200] * 5
    assert all(r.headers["x-edge-agent-cache"] == "miss" for r in later)
    assert metric_value(metrics, "edge_agent_semantic_lookups_total", outcome="shed_cpu") == 5
    assert metric_value(metrics, "edge_agent_semantic_lookups_total", outcome="miss") == 1

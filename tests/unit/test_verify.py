"""The semantic cache's verifier: each guard's accept and refuse cases, robustness on any
text, and the shipped decision on the project's labelled sets (kind by kind cases of
the alignment guard: test_align.py; precision and recall with embeddings: make
bench-cache)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.cache import verify
from edge_agent.cache.verify import DEFAULT_THRESHOLD, accept, check, signature

BENCH = Path(__file__).resolve().parents[2] / "bench"
PAIRS = BENCH / "semantic_pairs.jsonl"
NEARMISS = BENCH / "semantic_nearmiss_pairs.jsonl"


def reason(a: str, b: str, guards: list[str] | None = None) -> str | None:
    return check(signature(a), signature(b), guards)


# (guard, question, other question, refused?) — refused pairs must be refused by that
# guard alone; accepted pairs must pass that guard (the alignment guard, stricter, may
# still refuse a reworded one).
CASES = [
    # numbers: values, spelled-out numbers, units glued or not, percent, ordinals
    ("numbers", "What is the sum of 3 and 4?", "What is the sum of 3 and 5?", True),
    ("numbers", "What is 15% of 80?", "How much is fifteen percent of eighty?", False),
    ("numbers", "Plan a 3-day itinerary for Rome.", "Plan a three day itinerary for Rome.", False),
    ("numbers", "Convert 1 kg to pounds", "How many pounds is one kilogram?", False),
    (
        "numbers",
        "How long should I cook a 5 kg turkey?",
        "How long should I cook a 5 lb turkey?",
        True,
    ),
    ("numbers", "How many seconds are in a day?", "How many seconds are in a week?", True),
    ("numbers", "What is 100 divided by 4?", "What is 4 divided by 100?", True),
    ("numbers", "What is 25 minus 7?", "Subtract 7 from 25.", False),
    ("numbers", "Find the 2nd largest element", "Find the second largest element", False),
    ("numbers", "Find the second largest element", "Find the third largest element", True),
    ("numbers", "When did World War II end?", "What year did World War 2 end?", False),
    # the values agree; which one is the age is the alignment's roles
    ("align", "Give me 5 ideas for a 10-year-old", "Give me 10 ideas for a 5-year-old", True),
    ("numbers", "Plan a 3-day trip to Rome", "Plan a trip to Rome for 3 days", False),
    ("numbers", "Laptops under $1,000", "Laptops under 1000 dollars", False),
    # operators: another operation on the same operands
    ("operators", "What is the sum of 3 and 4?", "What is the product of 3 and 4?", True),
    ("operators", "Solve 2x + 3 = 11", "Solve 2x - 3 = 11", True),
    ("operators", "What is 7 times 8?", "Multiply 7 by 8", False),
    ("operators", "Derivative of x^2 * sin(x)", "Integral of x^2 * sin(x)", True),
    # quoted text and code must be the same
    (
        "quoted",
        "Translate 'good morning' into Spanish",
        "Translate 'good night' into Spanish",
        True,
    ),
    (
        "quoted",
        "Translate 'good morning' into Spanish",
        "How do you say 'good morning' in Spanish?",
        False,
    ),
    ("quoted", "Fix `x = y +` please", "Fix `x = y -` please", True),
    # identifiers: file names, extensions, dotted and snake_case names, versions in names
    ("identifiers", "What does os.path.join do?", "What does os.path.split do?", True),
    ("identifiers", "Rename all .txt files in a folder", "Rename all .csv files in a folder", True),
    (
        "identifiers",
        "How do I read a .csv file with pandas?",
        "How do I read a CSV file with pandas?",
        False,
    ),
    ("identifiers", "Best dating apps/sites?", "Best dating apps or sites?", False),
    # entities: names, places, languages, technologies, in any case
    ("entities", "How do I reverse a list in Python?", "How do I reverse a list in Java?", True),
    (
        "entities",
        "how do i reverse a list in python",
        "how do i reverse a list in javascript",
        True,
    ),
    ("entities", "What is the capital of France?", "What is the capital of Germany?", True),
    ("entities", "what is the capital of france", "What's the capital of France?", False),
    ("entities", "JS: let vs const?", "let vs const in JavaScript?", False),
    (
        "entities",
        "Do US citizens need a visa for Japan?",
        "Do American citizens need a visa for Japan?",
        False,
    ),
    ("entities", "Taxes in the US", "Taxes in the United States", False),
    ("entities", "Paris is lovely in May", "Is Paris lovely in June?", True),
    ("entities", "Tell us about the plan", "Tell me about the plan", False),
    # negation
    ("negation", "Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", True),
    ("negation", "Why doesn't my code compile?", "Why does my code compile?", True),
    (
        "negation",
        "What if I don't pay my bill?",
        "What are the consequences of not paying my bill?",
        False,
    ),
    ("negation", "Is coffee healthy or not?", "Is coffee healthy?", False),
    # direction: source and target
    ("direction", "convert °C to °F", "convert °F to °C", True),
    ("direction", "Flights from Paris to Rome", "Flights from Rome to Paris", True),
    ("direction", "Flights from Paris to Rome", "Flights to Rome from Paris", False),
    ("direction", "Translate from English to German", "Translate from German to English", True),
    ("direction", "How many ounces are in a pound?", "How many pounds are in an ounce?", True),
    ("direction", "Is Python faster than Java?", "Is Java faster than Python?", True),
    ("direction", "What is 100°F in Celsius?", "Convert 100 degrees Fahrenheit to Celsius", False),
    (
        "direction",
        "Convert a JSON string to a Python dict",
        "Turn a JSON string into a dict in Python",
        False,
    ),
    # antonyms: the same axis, the other pole
    ("antonyms", "Sort numbers in ascending order", "Sort numbers in descending order", True),
    ("antonyms", "How do I install Docker?", "How do I uninstall Docker?", True),
    (
        "antonyms",
        "What are the benefits of green tea?",
        "What are the side effects of green tea?",
        True,
    ),
    ("antonyms", "Is it cheaper to fly or drive?", "Is flying or driving less expensive?", False),
    (
        "antonyms",
        "Which planet is closest to the sun?",
        "What's the nearest planet to the sun?",
        False,
    ),
    # qtype: another kind of answer
    ("qtype", "Who discovered penicillin?", "When was penicillin discovered?", True),
    (
        "qtype",
        "How much does it cost to fly to Tokyo?",
        "How long does it take to fly to Tokyo?",
        True,
    ),
    ("qtype", "How long is the train to Leeds?", "How many hours is the train to Leeds?", False),
    ("qtype", "Where do you sell forestry products?", "How do you sell forestry products?", True),
    # align: every difference explained (more in test_align.py)
    ("align", "How do I reverse a list in Python?", "How do I reverse a string in Python?", True),
    ("align", "How do I tie a tie?", "How do I tie a bow tie?", True),
    ("align", "Write a haiku about autumn", "Compose a haiku about autumn", False),
    ("align", "What is the GDP of Germany?", "What is the GDP per capita of Germany?", True),
    ("align", "What is 15% of 80?", "Calculate 15% of 80", False),
    (
        "align",
        "How do I write a for loop in Python?",
        "How do I write a while loop in Python?",
        True,
    ),
]


@pytest.mark.parametrize(("guard", "a", "b", "refused"), CASES)
def test_guard(guard: str, a: str, b: str, refused: bool) -> None:
    assert guard in verify.GUARDS
    if refused:
        assert reason(a, b, [guard]) is not None, f"{guard} should refuse"
    else:
        assert reason(a, b, [guard]) is None, f"{guard} refused: {reason(a, b, [guard])!r}"


@pytest.mark.parametrize(("guard", "a", "b", "refused"), CASES)
def test_check_is_symmetric(guard: str, a: str, b: str, refused: bool) -> None:
    del guard, refused
    assert reason(a, b) == reason(b, a)


def test_reasons_are_short_and_readable() -> None:
    assert reason("Is it safe?", "Is it not safe?") == "negation differs"
    assert reason("convert 5 km to miles", "convert 5 miles to km") == "numbers differ"
    assert reason("Python lists", "Java lists") == "entities differ"


def test_accept_applies_threshold_then_guards() -> None:
    a, b = signature("Is it safe to swim?"), signature("Is it not safe to swim?")
    same = signature("Is it safe to swim?")
    assert accept(0.99, a, b) == (False, "negation differs")
    assert accept(0.99, a, same) == (True, None)
    assert accept(DEFAULT_THRESHOLD, a, same) == (True, None)
    assert accept(DEFAULT_THRESHOLD - 1e-6, a, same) == (False, "below threshold")
    assert accept(0.5, a, same, threshold=0.4) == (True, None)
    assert accept(math.nan, a, same) == (False, "below threshold")
    assert accept(None, a, same) == (False, "below threshold")  # type: ignore[arg-type]
    assert accept(np.float32(0.95), a, same) == (True, None)


def test_the_alignment_holds_at_any_cosine() -> None:
    # One word changed in the same sentence: refused however sure the embedding is.
    a, b = signature("How do I tie a tie?"), signature("How do I tie a bow tie?")
    assert accept(0.999, a, b) == (False, "wording differs")
    c, d = signature("Is Python faster than Java?"), signature("Is Java faster than Python?")
    assert accept(0.999, c, d) == (False, "direction differs")


def test_candidate_guards_run_on_request_only() -> None:
    a, b = "How do I improve my grades?", "How can one get better grades?"
    assert set(verify.CANDIDATE_GUARDS).isdisjoint(verify.GUARDS)
    assert reason(a, b, ["length"]) is None
    assert reason("How do I tie a tie?", "How do I tie a bow tie?", ["frame"]) is not None
    assert reason("hi", "hi", [*verify.GUARDS, *verify.CANDIDATE_GUARDS]) is None


def test_check_survives_wrong_types() -> None:
    sig = signature("What is 2 + 2?")
    assert check(sig, None) == "verifier error"  # type: ignore[arg-type]
    assert check(object(), sig) == "verifier error"  # type: ignore[arg-type]


def test_long_and_odd_texts() -> None:
    long = "Explain this. " * 2000 + "What is the capital of France?"
    assert check(signature(long), signature(long)) is None
    assert reason(long, long.replace("France", "Spain")) == "entities differ"
    for text in ("", " ", "\x00\x01", "💥" * 50, "```", "'", '"""', "1" * 5000, "$%^&*"):
        sig = signature(text)
        assert check(sig, sig) is None
    assert signature(b"bytes") is not None  # type: ignore[arg-type]


# ------------------------------------------------------------------------ fuzz

_VOCAB = (
    "what is the how do I convert to from into in than not no don't isn't safe unsafe "
    "manager's boss's's X's s' case-sensitive PVC-free a/b w/o dd/MM/yyyy (555) 123-4567 "
    "only except per across between and or vs Alice Bob owes reports fix repair "
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx spelled plural \n\n "
    "3 4 3.0 three forty-two 1,000 10k 2nd third II % percent $ € °C °F C F km miles kg "
    "Python java JS US us Paris rome New York 'quoted' `code` \" ' os.path file.txt .csv "
    "a_b x^2 + - * / = 2x sqrt sum product ascending descending best worst who when why "
    "how many hours 9am pm - -- ( ) ? . ! : ; , \n é ü ß 中文 🙂 \u2019 \u2212 \u00d7"
)
_PIECES = st.sampled_from(_VOCAB.split(" "))
_TEXTS = st.one_of(st.text(max_size=300), st.lists(_PIECES, max_size=40).map(" ".join))


@settings(max_examples=300, deadline=None)
@given(_TEXTS, _TEXTS)
def test_fuzz_never_raises_and_is_symmetric(a: str, b: str) -> None:
    sa, sb = signature(a), signature(b)
    assert sa.parsed and sb.parsed  # the parser never fell back on generated text
    assert check(sa, sa) is None  # a question always agrees with itself
    r = check(sa, sb)
    assert r is None or (isinstance(r, str) and r != "verifier error")
    assert r == check(sb, sa)
    ok, why = accept(0.9, sa, sb)
    assert ok == (r is None) and why == r


def test_symmetric_where_the_greedy_alignment_is_not() -> None:
    # Found by the fuzz test above: aligning left to right found a role change one way
    # only; the alignment now runs both ways.
    assert reason("B:I", "I B:a") == reason("I B:a", "B:I") is not None


@settings(max_examples=200, deadline=None)
@given(_TEXTS)
def test_fuzz_same_text_agrees(a: str) -> None:
    assert check(signature(a), signature(a)) is None


# ------------------------------------------------------------------------ shipped decision


def _pairs(path: Path = PAIRS) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def test_split() -> Iterator[tuple[list[dict[str, str]], np.ndarray]]:
    from edge_agent.cache.embedders import LocalEmbedder

    rows = [p for p in _pairs() if p["split"] == "test"]
    embedder = LocalEmbedder(threads=os.cpu_count() or 1, max_batch=64)
    texts = sorted({t for r in rows for t in (r["a"], r["b"])}, key=len)
    vectors = dict(zip(texts, embedder.embed_sync(texts), strict=True))
    cos = np.array([float(vectors[r["a"]] @ vectors[r["b"]]) for r in rows])
    yield rows, cos


def test_shipped_decision_on_the_question_test_split(
    test_split: tuple[list[dict[str, str]], np.ndarray],
) -> None:
    """No false hit on the earlier held-out question split; some paraphrases served.
    (The recall measured there is in docs/semantic-cache.md.)"""
    rows, cos = test_split
    labels = np.array([int(r["label"]) for r in rows])
    hits = np.array(
        [
            accept(float(c), signature(r["a"]), signature(r["b"]))[0]
            for r, c in zip(rows, cos, strict=True)
        ]
    )
    tp = int((hits & (labels == 1)).sum())
    assert int(hits.sum()) == tp, f"{int(hits.sum()) - tp} false hits"
    assert tp / int(labels.sum()) >= 0.1, f"only {tp} paraphrases served"
    # Cosine alone at the same threshold is far from it: the guards do the work.
    cos_hits = cos >= DEFAULT_THRESHOLD
    assert (cos_hits & (labels == 1)).sum() / cos_hits.sum() < 0.8


def test_every_near_miss_is_refused_by_the_verifier() -> None:
    """Whatever the cosine: no pair of the near-miss set that needs another answer gets
    through the verifier (cosine only picks the candidates). A regression test: every
    split has been used to fix what it found (docs/semantic-cache.md, "Data"), so this
    says nothing about prompts from new writers (first contact: precision about 0.9)."""
    served = [
        (r["kind"], r["a"][:60])
        for r in _pairs(NEARMISS)
        if not r["label"] and check(signature(r["a"]), signature(r["b"])) is None
    ]
    assert not served, served


def test_some_near_miss_paraphrases_are_served() -> None:
    rows = [r for r in _pairs(NEARMISS) if r["label"]]
    ok = sum(check(signature(r["a"]), signature(r["b"])) is None for r in rows)
    assert ok / len(rows) >= 0.1, f"{ok} of {len(rows)}"


def test_pairs_file_is_well_formed() -> None:
    rows = _pairs()
    assert len(rows) >= 300
    for r in rows:
        assert set(r) == {"a", "b", "label", "kind", "split"}
        assert r["label"] in (0, 1) and r["split"] in ("dev", "test")
        assert (r["kind"] == "paraphrase") == (r["label"] == 1)
    # No question appears in both splits: the test split is really held out.
    dev = {t for r in rows if r["split"] == "dev" for t in (r["a"], r["b"])}
    test = {t for r in rows if r["split"] == "test" for t in (r["a"], r["b"])}
    assert not dev & test


NEAR_KINDS = {
    1: {"long-paraphrase", "casual-paraphrase", "code-paraphrase", "payload-paraphrase", "reorder"},
    0: {"constraint", "direction", "role-swap", "instruction", "code-requirement", "qualifier"}
    | {"negation"},
}


SPLITS = ("dev", "test", "holdout")


def test_near_miss_file_is_well_formed() -> None:
    rows = _pairs(NEARMISS)
    assert len(rows) >= 300
    for r in rows:
        assert set(r) == {"a", "b", "label", "kind", "note", "writer", "split"}
        assert r["kind"] in NEAR_KINDS[r["label"]] and r["split"] in SPLITS
        assert r["a"].strip() and r["b"].strip() and r["a"] != r["b"]
    for split in SPLITS:
        kinds = {r["kind"] for r in rows if r["split"] == split}
        assert kinds == NEAR_KINDS[0] | NEAR_KINDS[1], split
    # Each split was written by other people (the verifier was tuned on dev's writers;
    # test's and holdout's were evaluated first, then used for fixes).
    writers = {s: {r["writer"] for r in rows if r["split"] == s} for s in SPLITS}
    assert not writers["dev"] & writers["test"] and not writers["dev"] & writers["holdout"]
    assert not writers["test"] & writers["holdout"]

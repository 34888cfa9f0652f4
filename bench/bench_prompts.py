"""Realistic, distinct prompts for the gateway benchmark: Quora questions.

The semantic tier's cost depends on what it is asked. The near-duplicate prompts of the
other miss scenarios ("Question <n>: ...") all land next to each other in one partition
and each one is a candidate the verifier must refuse; real traffic is mostly novel
questions on many topics. This pool is the first question of every Quora pair in
../shared/semantic-eval/ (read from there, never copied), deduplicated and shuffled with
a fixed seed, each used once per run: no prompt repeats, so every request is a miss.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

QQP = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "semantic-eval" / "qqp_pairs.json.gz"
)

# The body is PREFIX + <the question, JSON-escaped> + SUFFIX (the wrk script builds it
# from one escaped question per line of a prompt file).
PREFIX = (
    '{"model":"bench-chat","temperature":0,"max_tokens":128,"messages":['
    '{"role":"system","content":"You are a concise assistant for an engineering team."},'
    '{"role":"user","content":"'
)
SUFFIX = '"}]}'


class QuestionPool:
    """Hands out questions no earlier window of this run has sent."""

    def __init__(self, workdir: Path, path: Path = QQP, seed: int = 15) -> None:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = json.load(f)
        # ensure_ascii: one line per question whatever it contains, safe in a Lua string.
        first = sorted({json.dumps(r["text_a"].strip())[1:-1] for r in rows})
        # Then the second questions no first question repeats: a long run needs more
        # than 72k prompts, and these are still never sent twice (some are paraphrases
        # of earlier ones, as in real traffic).
        second = sorted({json.dumps(r["text_b"].strip())[1:-1] for r in rows} - set(first))
        rng = random.Random(seed)
        rng.shuffle(first)
        rng.shuffle(second)
        self._questions = first + second
        self._next = 0
        self._workdir = workdir
        self._files = 0

    def __len__(self) -> int:
        return len(self._questions) - self._next

    def take(self, n: int) -> Path:
        """A file of the next `n` unused questions (fewer if the pool runs out: a wrk
        thread that wraps around repeats a prompt, which the miss checks then report)."""
        chunk = self._questions[self._next : self._next + n]
        if not chunk:
            raise RuntimeError(f"the question pool ({len(self._questions)}) is used up")
        self._next += len(chunk)
        self._files += 1
        path = self._workdir / f"prompts-{self._files}.txt"
        path.write_text("\n".join(chunk) + "\n", encoding="ascii")
        return path

    @staticmethod
    def available(path: Path = QQP) -> bool:
        return path.is_file()

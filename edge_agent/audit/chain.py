"""Hash-chained records, sans-IO: sealing one, and verifying a file of them.

Every record carries its writer's `chain` (one per process and start), a `seq` that
counts up from 1, the `prev` hash (the chain's previous record's `hash`; `"start"` for
the first) and its own `hash`: SHA-256 over `prev` and the record's canonical JSON
(sorted keys, without `hash`). Editing a record changes its hash; removing one breaks
the next record's `seq` and `prev`. What no chain can show is a record removed from the
end of a file: compare a file's last `seq` with the writer's log if that matters.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

START = "start"


def _digest(prev: str, body: dict[str, Any]) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(prev.encode() + b"\n" + canonical).hexdigest()


class Chain:
    """One writer's chain."""

    def __init__(self, chain_id: str, prev: str = START, seq: int = 0) -> None:
        self.id = chain_id
        self.prev = prev
        self.seq = seq

    def seal(self, record: dict[str, Any]) -> bytes:
        """`record` as one line of the chain (a JSON object and a newline)."""
        self.seq += 1
        body = {**record, "chain": self.id, "seq": self.seq, "prev": self.prev}
        digest = _digest(self.prev, body)
        self.prev = digest
        return orjson.dumps({**body, "hash": digest}) + b"\n"


@dataclass
class Verdict:
    records: int = 0
    chains: dict[str, int] = field(default_factory=dict)  # chain → last seq
    problems: list[str] = field(default_factory=list)  # "line N: what is wrong"

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(lines: Iterable[bytes]) -> Verdict:
    """Check every record and every chain's continuity. A chain may start in the middle
    of its sequence (the file was rotated): its first record here is taken as given."""
    verdict = Verdict()
    last: dict[str, tuple[int, str]] = {}  # chain → (seq, hash)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        verdict.records += 1
        try:
            record = orjson.loads(line)
            chain, seq, prev, digest = (
                record["chain"],
                record["seq"],
                record["prev"],
                record.pop("hash"),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            verdict.problems.append(f"line {number}: not an audit record")
            continue
        if _digest(prev, record) != digest:
            verdict.problems.append(
                f"line {number}: its hash does not match its content (the record was changed)"
            )
        seen = last.get(chain)
        if seen is not None:
            want_seq, want_prev = seen[0] + 1, seen[1]
            if seq != want_seq or prev != want_prev:
                verdict.problems.append(
                    f"line {number}: chain {chain} continues from seq {seen[0]} with seq "
                    f"{seq}: a record before this line was removed or changed"
                )
        elif seq == 1 and prev != START:
            verdict.problems.append(f"line {number}: the first record of chain {chain} is not")
        last[chain] = (seq, digest)
        verdict.chains[chain] = seq
    return verdict

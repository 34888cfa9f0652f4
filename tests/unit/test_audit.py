"""The audit trail, sans-IO and on files: sealing, verifying, tampering detected with the
line named, chains across rotated files, rotation and retention."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from edge_agent.audit.chain import Chain, verify
from edge_agent.audit.trail import FileSink
from edge_agent.config import ConfigError, parse_config


def lines(n: int, chain: Chain | None = None) -> list[bytes]:
    chain = chain or Chain("c1")
    return [chain.seal({"type": "request", "i": i, "tenant": "t"}) for i in range(n)]


def test_a_chain_verifies() -> None:
    verdict = verify(lines(5))
    assert verdict.ok and verdict.records == 5 and verdict.chains == {"c1": 5}


def test_an_edited_record_is_named() -> None:
    file = lines(5)
    record = orjson.loads(file[2])
    record["tenant"] = "someone-else"
    file[2] = orjson.dumps(record) + b"\n"
    verdict = verify(file)
    assert verdict.problems == [
        "line 3: its hash does not match its content (the record was changed)"
    ]


def test_a_removed_record_is_named_at_the_next_line() -> None:
    file = lines(5)
    del file[1]
    verdict = verify(file)
    assert len(verdict.problems) == 1 and verdict.problems[0].startswith("line 2: chain c1")


def test_a_rehashed_forgery_still_breaks_the_chain() -> None:
    # Changing a record and recomputing its own hash breaks the next record's `prev`.
    file = lines(4)
    record = orjson.loads(file[1])
    record.pop("hash")
    record["tenant"] = "forged"
    forged = Chain("c1", prev=record["prev"], seq=record["seq"] - 1)
    file[1] = forged.seal({k: v for k, v in record.items() if k not in ("chain", "seq", "prev")})
    verdict = verify(file)
    assert [p[:7] for p in verdict.problems] == ["line 3:"]


def test_interleaved_writers_and_rotation_continue() -> None:
    a, b = Chain("a"), Chain("b")
    mixed = [a.seal({"i": 1}), b.seal({"i": 1}), a.seal({"i": 2}), b.seal({"i": 2})]
    assert verify(mixed).ok
    # A rotated file starts in the middle of a chain: taken as given, then checked.
    assert verify(mixed[2:]).ok


def test_sink_rotates_daily_and_drops_files_past_retention(tmp_path: Path) -> None:
    now = [time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, -1))]
    path = tmp_path / "audit.jsonl"
    old = tmp_path / "audit.jsonl.2026-10-01"
    old.write_text("x\n")
    sink = FileSink(path, retention_days=30, clock=lambda: now[0])
    assert not old.exists()  # older than 30 days
    chain = Chain("c")
    sink.write(chain.seal({"day": 1}))
    now[0] += 86_400
    sink.write(chain.seal({"day": 2}))
    sink.close()
    rotated = tmp_path / "audit.jsonl.2026-12-01"
    assert rotated.exists() and path.exists()
    # Both files together: one unbroken chain, oldest first.
    assert verify([*rotated.read_bytes().splitlines(True), *path.read_bytes().splitlines(True)]).ok


def test_the_cli_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    file = lines(3)
    path.write_bytes(b"".join(file))
    cmd = [sys.executable, "-m", "edge_agent.cli", "audit", "verify", str(path)]
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "OK: 3 records" in ok.stdout
    path.write_bytes(file[0] + file[2])
    bad = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert bad.returncode == 1 and "line 2:" in bad.stderr


def test_the_redis_sink_is_refused_as_not_built() -> None:
    with pytest.raises(ConfigError, match="not implemented"):
        parse_config(
            {
                "providers": [{"name": "a", "type": "openai", "base_url": "http://127.0.0.1:1"}],
                "models": [{"name": "m", "targets": ["a/m"]}],
                "audit": {"sink": "redis"},
            }
        )

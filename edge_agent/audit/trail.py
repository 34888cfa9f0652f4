"""The audit trail's writer: records built from what a request did (the same record
the request log uses) or from an admin change, sealed into this process's chain, and
written to the sink: one `write` per line (O_APPEND: whole lines, even beside other
writers), the file rotated daily and old ones removed.

Records hold who, what and how it ended, finding types and counts, tokens and cost;
never a credential, prompt or answer text.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import os
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_agent.audit.chain import Chain
from edge_agent.audit.settings import AuditConfig
from edge_agent.telemetry.observe import outcome

if TYPE_CHECKING:
    from edge_agent.extproc.exchange import Exchange

log = logging.getLogger("edge_agent.audit")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _outcome(status: str, cache: str) -> str:
    if status == "aborted":
        return "aborted"
    if cache in ("hit", "semantic-hit") and status.startswith("2"):
        return "cache_hit"
    if status.startswith("2"):
        return "served"
    return "refused" if status.startswith("4") else "failed"


class FileSink:
    """JSON lines in `path` (with workers, one file each: `<stem>.w<N><suffix>`)."""

    def __init__(self, path: Path, retention_days: int, clock: Any = time.time) -> None:
        self.path = path
        self.retention_s = retention_days * 86_400
        self._clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._day = self._today()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._expire()

    def _today(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self._clock()))

    def write(self, line: bytes) -> None:
        today = self._today()
        if today != self._day:
            self._rotate(today)
        os.write(self._fd, line)

    def _rotate(self, today: str) -> None:
        os.close(self._fd)
        rotated = self.path.with_name(f"{self.path.name}.{self._day}")
        if not rotated.exists():
            os.replace(self.path, rotated)
        self._day = today
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._expire()

    def _expire(self) -> None:
        """Remove rotated files older than the retention (by their day in the name)."""
        cutoff = self._clock() - self.retention_s
        for old in self.path.parent.glob(f"{self.path.name}.????-??-??"):
            try:
                day = calendar.timegm(time.strptime(old.name[-10:], "%Y-%m-%d"))
            except ValueError:
                continue
            if day + 86_400 <= cutoff:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        os.close(self._fd)


class StdoutSink:
    def write(self, line: bytes) -> None:
        out = sys.stdout.buffer
        out.write(line)
        out.flush()

    def close(self) -> None:
        return None


class Audit:
    """This process's trail."""

    def __init__(self, config: AuditConfig, worker: int | None = None) -> None:
        self.chain = Chain(f"{os.getpid():x}-{secrets.token_hex(4)}")
        if config.sink == "file":
            path = Path(config.path)
            if worker is not None:
                path = path.with_name(f"{path.stem}.w{worker}{path.suffix}")
            self.sink: FileSink | StdoutSink = FileSink(path, config.retention_days)
        else:
            self.sink = StdoutSink()

    def _write(self, record: dict[str, Any]) -> None:
        try:
            self.sink.write(self.chain.seal(record))
        except OSError as exc:  # a full disk must not take requests down with it
            log.error("could not write the audit trail: %s", exc)

    def request(self, ex: Exchange) -> None:
        try:
            self._request(ex)
        except Exception:  # the trail must never fail a request
            log.exception("could not build the audit record of a request")

    def _request(self, ex: Exchange) -> None:
        out = outcome(ex)
        record: dict[str, Any] = {
            "time": _now(),
            "type": "request",
            "request_id": out["request_id"],
            "tenant": out["tenant"],
            "key": out.get("key"),
            "model": out["model"],
            "provider": out.get("provider"),
            "outcome": _outcome(out["status"], out["cache"]),
            "status": out["status"],
            "cache": out["cache"],
        }
        if "trace_id" in out:
            record["trace_id"] = out["trace_id"]
        if "refusal" in out:
            record["reason"] = out["refusal"]
        if ex.findings:
            record["findings"] = dict(ex.findings)
        for field in ("input_tokens", "output_tokens", "cost_usd", "saved_usd"):
            if field in out:
                record[field] = out[field]
        self._write(record)

    def admin(self, action: str, by: str, **details: Any) -> None:
        self._write({"time": _now(), "type": "admin", "action": action, "by": by, **details})

    def close(self) -> None:
        self.sink.close()

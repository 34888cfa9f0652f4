"""The process's log lines: text for people at a terminal, JSON (one object per line) for
log pipelines (Loki, Elasticsearch, Cloud Logging).

A record may carry `fields` (a dict, `extra={"fields": ...}`): the request log line
does. JSON puts them at the top level; text appends them as key=value. No field ever
holds a credential or prompt text: the callers choose what goes in.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

LOG_FORMAT_ENV = "EDGE_AGENT_LOG_FORMAT"


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            out["worker"] = self.worker
            out["pid"] = record.process
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        # Workers share the supervisor's stderr: say which one speaks.
        who = "" if worker is None else f"[worker {worker} pid %(process)d] "
        super().__init__(f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += "".join(f" {k}={_text(v)}" for k, v in fields.items() if v != "")
        return line


def _text(value: object) -> str:
    # Quoted (JSON string escapes) unless plainly one token: a client-sent value with a
    # newline, tab or `=` must not be able to forge a line or a field.
    text = str(value)
    if not text or not text.isprintable() or any(c in text for c in ' "='):
        return orjson.dumps(text).decode()
    return text


def _rfc3339(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def setup(level: str, fmt: str, worker: int | None = None) -> None:
    """The root logger's one handler (stderr), in `fmt` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker) if fmt == "json" else TextFormatter(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))

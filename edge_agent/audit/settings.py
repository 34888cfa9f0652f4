"""The config for the audit trail (docs/compliance.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class AuditConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # off: no trail. stdout: JSON lines on the agent's stdout (a log pipeline keeps and
    # retains them). file: JSON lines in `path`, rotated daily (UTC), rotated files
    # older than retention_days removed.
    sink: Literal["off", "stdout", "file", "redis"] = "off"
    path: str = "/var/log/edge-agent/audit.jsonl"
    retention_days: Annotated[int, Field(ge=1, le=3650)] = 30

    @field_validator("sink")
    @classmethod
    def _built(cls, v: str) -> str:
        if v == "redis":
            raise ValueError(
                "sink: redis is not implemented in this version yet (issue 17); use file or stdout"
            )
        return v

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"expected an absolute path, got {v!r}")
        return v

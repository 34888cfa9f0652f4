"""Virtual API keys, sans-IO: minting, hashing, and the ring of known keys.

A key is shown once, when it is made; the agent keeps only its SHA-256. Keys from the
config (`tenants[].keys`) and keys made at run time (`POST /admin/keys`, kept by a
`keystore`) live in one `KeyRing`, looked up by hash.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from edge_agent.limits.settings import Budget, Limits

KEY_PREFIX = "sk-ea-"
# Longer than any real key: a header of megabytes is refused before it is hashed.
MAX_KEY_CHARS = 512

Source = Literal["config", "runtime"]


def new_secret() -> str:
    """A new key: 256 random bits, in a shape secret scanners recognise by its prefix."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the agent knows of a key: never the key itself."""

    id: str
    name: str
    tenant: str
    sha256: str
    source: Source = "runtime"
    created_at: float = 0.0
    expires_at: float | None = None  # unix seconds; None: never
    # Its own limits and budget (the config's Limits / Budget fields), on top of the
    # tenant's; None: only the tenant's.
    limits: dict[str, int] | None = None
    budget: dict[str, float] | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def public(self, last_used: float | None) -> dict[str, Any]:
        """For `GET /admin/keys`: everything but the hash."""
        out = asdict(self)
        del out["sha256"]
        out["last_used_at"] = last_used
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> KeyRecord | None:
        """None for a record this version cannot read (never a half-read key)."""
        try:
            data = orjson.loads(raw)
            record = cls(**data)
        except (orjson.JSONDecodeError, TypeError):
            return None
        if not all(isinstance(getattr(record, f), str) for f in ("id", "name", "tenant", "sha256")):
            return None
        numbers = (record.created_at, record.expires_at)
        for extra, model in ((record.limits, Limits), (record.budget, Budget)):
            if extra is None:
                continue
            # As the config validates them: a record another version wrote must not
            # make every request of its key fail.
            try:
                model.model_validate(extra)
            except ValidationError:
                return None
        if record.source not in ("config", "runtime") or not all(
            n is None
            or (isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n))
            for n in numbers
        ):
            return None
        return record


def mint(
    tenant: str,
    name: str,
    now: float,
    expires_at: float | None = None,
    limits: dict[str, int] | None = None,
    budget: dict[str, float] | None = None,
) -> tuple[str, KeyRecord]:
    """(the key, shown once; its record)."""
    secret = new_secret()
    record = KeyRecord(
        new_key_id(), name, tenant, hash_key(secret), "runtime", now, expires_at, limits, budget
    )
    return secret, record


class KeyRing:
    """Every key this process accepts, by hash. Config keys are fixed; runtime keys are
    replaced wholesale by the key store's sync, or one at a time."""

    def __init__(self, config_keys: Iterable[KeyRecord] = ()) -> None:
        self._config = {k.sha256: k for k in config_keys}
        self._runtime: dict[str, KeyRecord] = {}
        self.last_used: dict[str, float] = {}  # key id → unix time, this process's view

    def find(self, sha256: str) -> KeyRecord | None:
        return self._config.get(sha256) or self._runtime.get(sha256)

    def used(self, record: KeyRecord, now: float) -> None:
        self.last_used[record.id] = now

    def add(self, record: KeyRecord) -> None:
        self._runtime[record.sha256] = record

    def remove(self, key_id: str) -> KeyRecord | None:
        for sha, record in self._runtime.items():
            if record.id == key_id:
                del self._runtime[sha]
                return record
        return None

    def replace_runtime(self, records: Iterable[KeyRecord]) -> None:
        self._runtime = {r.sha256: r for r in records}

    def records(self) -> list[KeyRecord]:
        return [*self._config.values(), *self._runtime.values()]

    def runtime_records(self) -> list[KeyRecord]:
        return list(self._runtime.values())

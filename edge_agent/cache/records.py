"""Records of the shared (Redis) tier and their wire encoding, sans-IO.

Plain dataclasses go in and out (`SharedEntry`, `SemanticPart`, `SyncEvent`,
`PurgeFilter`); protobuf (`protos/edge_agent/v1/cache.proto`) stays inside this module.

Rolling upgrades: old and new replicas share one Redis. Every record carries
`version` (`SCHEMA_VERSION` when written). Compatible changes add fields and keep the
version; a reader ignores fields it does not know. A breaking change bumps the version,
and a reader drops records newer than it understands. Decoders never raise: a record
they cannot use is dropped, and the reason is reported through `on_drop(reason)` so the
adapter can count it. Reasons: ``corrupt`` (not parseable), ``no_version``,
``newer_version``, ``invalid`` (parseable but inconsistent: empty key, vector length
not `dim`, ...) and ``unknown_kind`` (an event kind added by a newer replica).

Redis key layout (``P`` = `cache.redis.key_prefix`, restricted to ``[A-Za-z0-9_.-]`` so
it is glob-safe in SCAN patterns):

==========================  ======  ==================================================
``P:e:<key>``               string  one `CacheEntry`; PX = time left to `expires_at`
``P:ix:t:<tenant>``         zset    keys of the tenant's entries, score = expires_at
``P:ix:m:<model>``          zset    keys of the model's entries, score = expires_at
``P:sync``                  stream  sync events: field ``r`` = sender replica id (lets
                                    a reader skip its own events unparsed), field
                                    ``d`` = one `SyncEvent`; MAXLEN ~ stream_maxlen
``P:lease:<key>``           string  coalescing lease, value = owner replica id, PX
==========================  ======  ==================================================

The indexes exist so a purge by tenant/model does not read every entry: members past
their score are trimmed on every write, and an index expires with its latest entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from google.protobuf.message import DecodeError

from edge_agent._proto.edge_agent.v1 import cache_pb2 as pb

SCHEMA_VERSION = 1  # the newest record version this code writes and reads

DropReason = Literal["corrupt", "no_version", "newer_version", "invalid", "unknown_kind"]
OnDrop = Callable[[DropReason], None]
EventKind = Literal["store", "evict", "purge"]

STREAM_REPLICA_FIELD = b"r"
STREAM_DATA_FIELD = b"d"


def _ignore(_: DropReason) -> None:
    pass


# -- records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SemanticPart:
    """What the semantic tier needs besides the answer: where and what was embedded."""

    namespace: str  # embedder id/dim (SemanticTier.namespace)
    partition: str
    text: str
    vector: bytes  # float32 little-endian; bytes keep the dataclass hashable/comparable
    dim: int

    @classmethod
    def from_array(
        cls, namespace: str, partition: str, text: str, vector: np.ndarray
    ) -> SemanticPart:
        flat = np.ascontiguousarray(vector, dtype="<f4").reshape(-1)
        return cls(namespace, partition, text, flat.tobytes(), int(flat.shape[0]))

    def array(self) -> np.ndarray:
        """The vector as a writable float32 array (a copy: FAISS may keep a reference)."""
        return np.frombuffer(self.vector, dtype="<f4").astype(np.float32)


@dataclass(frozen=True, slots=True)
class SharedEntry:
    key: str
    body: bytes  # the client-facing answer
    expires_at: float  # unix seconds
    model: str = ""  # client-facing model
    tenant: str = ""
    endpoint: str = ""
    semantic: SemanticPart | None = None

    def ttl_ms(self, now: float) -> int:
        """Milliseconds left at unix time `now` (<= 0: already expired)."""
        return math.floor((self.expires_at - now) * 1000)


@dataclass(frozen=True, slots=True)
class PurgeFilter:
    """Which entries a purge removes: the given fields must all match; `all` = every one."""

    tenant: str | None = None
    model: str | None = None
    key: str | None = None
    all: bool = False

    def __post_init__(self) -> None:
        if not self.all and self.tenant is None and self.model is None and self.key is None:
            raise ValueError("a purge needs tenant, model, key or all=True")

    def matches(self, *, key: str, tenant: str, model: str) -> bool:
        if self.all:
            return True
        return (
            (self.tenant is None or self.tenant == tenant)
            and (self.model is None or self.model == model)
            and (self.key is None or self.key == key)
        )


@dataclass(frozen=True, slots=True)
class SyncEvent:
    """One replica-sync message. Build with `store()`, `evict()` or `purge_()`."""

    replica: str
    kind: EventKind
    entry: SharedEntry | None = None  # kind == "store"
    keys: tuple[str, ...] = field(default=())  # kind == "evict"
    purge: PurgeFilter | None = None  # kind == "purge"

    def __post_init__(self) -> None:
        ok = {
            "store": self.entry is not None and not self.keys and self.purge is None,
            "evict": self.entry is None and self.purge is None,
            "purge": self.entry is None and not self.keys and self.purge is not None,
        }.get(self.kind, False)
        if not ok:
            raise ValueError(f"inconsistent {self.kind!r} event")

    @classmethod
    def store(cls, replica: str, entry: SharedEntry) -> SyncEvent:
        return cls(replica, "store", entry=entry)

    @classmethod
    def evict(cls, replica: str, keys: Iterable[str]) -> SyncEvent:
        return cls(replica, "evict", keys=tuple(keys))

    @classmethod
    def purge_(cls, replica: str, purge: PurgeFilter) -> SyncEvent:
        return cls(replica, "purge", purge=purge)


# -- key names ----------------------------------------------------------------------


def entry_name(prefix: str, key: str) -> str:
    return f"{prefix}:e:{key}"


def entry_pattern(prefix: str) -> str:
    return f"{prefix}:e:*"


def key_of_entry_name(prefix: str, name: str | bytes) -> str:
    text = name.decode() if isinstance(name, bytes) else name
    head = f"{prefix}:e:"
    if not text.startswith(head):
        raise ValueError(f"{text!r} is not an entry of {prefix!r}")
    return text[len(head) :]


def tenant_index_name(prefix: str, tenant: str) -> str:
    return f"{prefix}:ix:t:{tenant}"


def model_index_name(prefix: str, model: str) -> str:
    return f"{prefix}:ix:m:{model}"


def index_pattern(prefix: str) -> str:
    return f"{prefix}:ix:*"


def stream_name(prefix: str) -> str:
    return f"{prefix}:sync"


def lease_name(prefix: str, key: str) -> str:
    return f"{prefix}:lease:{key}"


# -- encoding -----------------------------------------------------------------------


def _fill_entry(msg: pb.CacheEntry, entry: SharedEntry) -> None:
    msg.version = SCHEMA_VERSION
    msg.key = entry.key
    msg.body = entry.body
    msg.expires_at = entry.expires_at
    msg.model = entry.model
    msg.tenant = entry.tenant
    msg.endpoint = entry.endpoint
    if entry.semantic is not None:
        s = entry.semantic
        # Built in place: assigning a sub-message would copy it (protobuf semantics).
        msg.semantic.namespace = s.namespace
        msg.semantic.partition = s.partition
        msg.semantic.text = s.text
        msg.semantic.vector = s.vector
        msg.semantic.dim = s.dim


def encode_entry(entry: SharedEntry) -> bytes:
    msg = pb.CacheEntry()
    _fill_entry(msg, entry)
    return msg.SerializeToString()


def encode_event(event: SyncEvent) -> bytes:
    msg = pb.SyncEvent(version=SCHEMA_VERSION, replica=event.replica)
    if event.kind == "store":
        assert event.entry is not None
        _fill_entry(msg.store, event.entry)
    elif event.kind == "evict":
        msg.evict.keys.extend(event.keys)
    else:
        assert event.purge is not None
        p = event.purge
        msg.purge.all = p.all
        # `optional` fields: presence distinguishes "any" from an empty-string value.
        if p.tenant is not None:
            msg.purge.tenant = p.tenant
        if p.model is not None:
            msg.purge.model = p.model
        if p.key is not None:
            msg.purge.key = p.key
    return msg.SerializeToString()


# -- decoding -----------------------------------------------------------------------


def _version_problem(version: int) -> DropReason | None:
    if version == 0:
        return "no_version"
    if version > SCHEMA_VERSION:
        return "newer_version"
    return None


def _entry_from(msg: pb.CacheEntry, on_drop: OnDrop) -> SharedEntry | None:
    problem = _version_problem(msg.version)
    if problem is not None:
        on_drop(problem)
        return None
    if not msg.key or not math.isfinite(msg.expires_at):
        on_drop("invalid")
        return None
    semantic = None
    if msg.HasField("semantic"):
        s = msg.semantic
        if not s.namespace or s.dim == 0 or len(s.vector) != 4 * s.dim:
            on_drop("invalid")
            return None
        semantic = SemanticPart(s.namespace, s.partition, s.text, bytes(s.vector), s.dim)
    return SharedEntry(
        key=msg.key,
        body=bytes(msg.body),
        expires_at=msg.expires_at,
        model=msg.model,
        tenant=msg.tenant,
        endpoint=msg.endpoint,
        semantic=semantic,
    )


def decode_entry(data: bytes, on_drop: OnDrop = _ignore) -> SharedEntry | None:
    """The entry in `data`, or None (reported through `on_drop`). Never raises."""
    msg = pb.CacheEntry()
    try:
        msg.ParseFromString(data)
    except (DecodeError, TypeError, ValueError):
        on_drop("corrupt")
        return None
    return _entry_from(msg, on_drop)


def decode_event(data: bytes, on_drop: OnDrop = _ignore) -> SyncEvent | None:
    """The event in `data`, or None (reported through `on_drop`). Never raises."""
    msg = pb.SyncEvent()
    try:
        msg.ParseFromString(data)
    except (DecodeError, TypeError, ValueError):
        on_drop("corrupt")
        return None
    problem = _version_problem(msg.version)
    if problem is not None:
        on_drop(problem)
        return None
    kind = msg.WhichOneof("kind")
    if kind is None:
        # Either a kind this replica predates, or nothing at all: both unusable.
        on_drop("unknown_kind")
        return None
    if kind == "store":
        entry = _entry_from(msg.store, on_drop)
        return None if entry is None else SyncEvent.store(msg.replica, entry)
    if kind == "evict":
        return SyncEvent.evict(msg.replica, msg.evict.keys)
    p = msg.purge
    try:
        purge = PurgeFilter(
            tenant=p.tenant if p.HasField("tenant") else None,
            model=p.model if p.HasField("model") else None,
            key=p.key if p.HasField("key") else None,
            all=p.all,
        )
    except ValueError:  # a purge of nothing: refuse rather than guess "all"
        on_drop("invalid")
        return None
    return SyncEvent.purge_(msg.replica, purge)

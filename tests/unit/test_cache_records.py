"""Shared-tier records: wire round trips, rolling-upgrade behaviour, generated code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent._proto.edge_agent.v1 import cache_pb2 as pb
from edge_agent.cache import records as rec
from edge_agent.cache.records import PurgeFilter, SemanticPart, SharedEntry, SyncEvent

ROOT = Path(__file__).resolve().parents[2]
PROTO = "edge_agent/v1/cache.proto"


class Drops:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def semantic_entry() -> SharedEntry:
    vec = np.array([0.25, -1.5, 3.0, 1e-7], dtype=np.float32)
    return SharedEntry(
        key="k-0123",
        body=b'{"id":"x","choices":[]}',
        expires_at=1_800_000_000.25,
        model="gpt-alpha",
        tenant="acme",
        endpoint="chat",
        semantic=SemanticPart.from_array("local/4", "part-1", "what is 2+2?", vec),
    )


def test_entry_round_trip_with_semantic_part() -> None:
    entry = semantic_entry()
    drops = Drops()
    back = rec.decode_entry(rec.encode_entry(entry), drops)
    assert back == entry
    assert drops.reasons == []
    assert back is not None and back.semantic is not None
    np.testing.assert_array_equal(back.semantic.array(), entry.semantic.array())  # type: ignore[union-attr]
    assert back.semantic.array().dtype == np.float32
    # Plain Python out, no protobuf containers leaking to callers.
    assert type(back.body) is bytes and type(back.semantic.vector) is bytes


def test_exact_only_entry_round_trip() -> None:
    entry = SharedEntry(key="k", body=b"", expires_at=1.5)
    assert rec.decode_entry(rec.encode_entry(entry)) == entry


def test_vector_is_little_endian_float32() -> None:
    part = SemanticPart.from_array("e/2", "p", "t", np.array([1.0, 2.0], dtype=np.float64))
    assert part.dim == 2
    assert part.vector == np.array([1.0, 2.0], dtype="<f4").tobytes()
    arr = part.array()
    arr[0] = 9.0  # a copy: writable, and the record stays as it was
    assert part.array()[0] == 1.0


@pytest.mark.parametrize(
    "event",
    [
        SyncEvent.store("replica-a", semantic_entry()),
        SyncEvent.evict("replica-b", ["k1", "k2"]),
        SyncEvent.purge_("r", PurgeFilter(tenant="acme")),
        SyncEvent.purge_("r", PurgeFilter(model="m", key="k")),
        SyncEvent.purge_("r", PurgeFilter(tenant="")),  # an empty tenant is still a filter
        SyncEvent.purge_("r", PurgeFilter(all=True)),
    ],
    ids=["store", "evict", "purge-tenant", "purge-model-key", "purge-empty-tenant", "purge-all"],
)
def test_event_round_trip(event: SyncEvent) -> None:
    drops = Drops()
    assert rec.decode_event(rec.encode_event(event), drops) == event
    assert drops.reasons == []


def test_encoders_write_the_schema_version() -> None:
    msg = pb.SyncEvent()
    msg.ParseFromString(rec.encode_event(SyncEvent.store("r", semantic_entry())))
    assert msg.version == rec.SCHEMA_VERSION
    assert msg.store.version == rec.SCHEMA_VERSION


def test_newer_version_is_dropped_and_counted() -> None:
    newer = pb.CacheEntry(version=rec.SCHEMA_VERSION + 1, key="k", body=b"b", expires_at=9.0)
    drops = Drops()
    assert rec.decode_entry(newer.SerializeToString(), drops) is None
    assert drops.reasons == ["newer_version"]

    event = pb.SyncEvent(version=rec.SCHEMA_VERSION + 1, replica="r")
    event.evict.keys.append("k")
    assert rec.decode_event(event.SerializeToString(), drops) is None
    assert drops.reasons == ["newer_version", "newer_version"]


def test_missing_version_is_dropped() -> None:
    drops = Drops()
    raw = pb.CacheEntry(key="k", body=b"b", expires_at=9.0).SerializeToString()
    assert rec.decode_entry(raw, drops) is None
    assert drops.reasons == ["no_version"]


def test_fields_added_by_a_newer_replica_are_ignored() -> None:
    entry = semantic_entry()
    # Field 99, varint 1: what a compatible future field looks like to this reader.
    raw = rec.encode_entry(entry) + bytes([99 << 3 & 0x7F | 0x80, 99 >> 4, 1])
    drops = Drops()
    assert rec.decode_entry(raw, drops) == entry
    assert drops.reasons == []


def test_unknown_event_kind_is_dropped_and_counted() -> None:
    # A newer replica's event kind (oneof member 13) is unknown here: no kind is set.
    base = pb.SyncEvent(version=rec.SCHEMA_VERSION, replica="future").SerializeToString()
    raw = base + bytes([13 << 3 | 2, 2, 0x08, 0x01])
    drops = Drops()
    assert rec.decode_event(raw, drops) is None
    assert drops.reasons == ["unknown_kind"]


@pytest.mark.parametrize(
    "raw",
    [b"\xff\xff\xff\xff", b"\x12\x50abc", b"\x0a", b"\x1a\x05\xff\xfe"],
    ids=["garbage", "truncated-length", "truncated-tag", "bad-bytes"],
)
def test_corrupt_bytes_are_counted_not_raised(raw: bytes) -> None:
    drops = Drops()
    assert rec.decode_entry(raw, drops) is None
    assert rec.decode_event(raw, drops) is None
    assert len(drops.reasons) == 2
    assert set(drops.reasons) <= {"corrupt", "no_version", "invalid", "unknown_kind"}


def test_invalid_utf8_in_a_string_field_is_corrupt() -> None:
    drops = Drops()
    # CacheEntry.key (field 2, string) with bytes that are not UTF-8.
    raw = bytes([0x08, 0x01, 0x12, 0x02, 0xFF, 0xFE])
    assert rec.decode_entry(raw, drops) is None
    assert drops.reasons == ["corrupt"]


@pytest.mark.parametrize(
    "semantic",
    [
        pb.SemanticPart(namespace="e/4", vector=b"\0" * 12, dim=4),  # short vector
        pb.SemanticPart(namespace="", vector=b"\0" * 16, dim=4),  # no namespace
        pb.SemanticPart(namespace="e/0", vector=b"", dim=0),
    ],
    ids=["short-vector", "no-namespace", "zero-dim"],
)
def test_inconsistent_semantic_part_is_invalid(semantic: pb.SemanticPart) -> None:
    msg = pb.CacheEntry(version=1, key="k", body=b"b", expires_at=9.0)
    msg.semantic.CopyFrom(semantic)
    drops = Drops()
    assert rec.decode_entry(msg.SerializeToString(), drops) is None
    assert drops.reasons == ["invalid"]


def test_entry_without_key_is_invalid() -> None:
    drops = Drops()
    raw = pb.CacheEntry(version=1, body=b"b", expires_at=9.0).SerializeToString()
    assert rec.decode_entry(raw, drops) is None
    assert drops.reasons == ["invalid"]


def test_purge_event_without_filter_is_invalid_not_all() -> None:
    msg = pb.SyncEvent(version=1, replica="r")
    msg.purge.SetInParent()
    drops = Drops()
    assert rec.decode_event(msg.SerializeToString(), drops) is None
    assert drops.reasons == ["invalid"]


@given(st.binary(max_size=200))
def test_decoders_never_raise(raw: bytes) -> None:
    rec.decode_entry(raw)
    rec.decode_event(raw)


def test_purge_filter_matching() -> None:
    with pytest.raises(ValueError):
        PurgeFilter()
    f = PurgeFilter(tenant="a", model="m")
    assert f.matches(key="x", tenant="a", model="m")
    assert not f.matches(key="x", tenant="a", model="n")
    assert not f.matches(key="x", tenant="b", model="m")
    assert PurgeFilter(key="x").matches(key="x", tenant="any", model="any")
    assert PurgeFilter(all=True).matches(key="y", tenant="", model="")


def test_inconsistent_events_are_refused() -> None:
    with pytest.raises(ValueError):
        SyncEvent("r", "store")
    with pytest.raises(ValueError):
        SyncEvent("r", "evict", entry=semantic_entry())
    with pytest.raises(ValueError):
        SyncEvent("r", "purge")


def test_ttl_ms() -> None:
    entry = SharedEntry(key="k", body=b"", expires_at=100.5)
    assert entry.ttl_ms(100.0) == 500
    assert entry.ttl_ms(101.0) <= 0


def test_key_layout() -> None:
    assert rec.entry_name("p", "k:1") == "p:e:k:1"
    assert rec.key_of_entry_name("p", b"p:e:k:1") == "k:1"
    with pytest.raises(ValueError):
        rec.key_of_entry_name("p", "q:e:k")
    assert rec.entry_pattern("p") == "p:e:*"
    assert rec.stream_name("p") == "p:sync"
    assert rec.lease_name("p", "k") == "p:lease:k"
    assert rec.tenant_index_name("p", "t") == "p:ix:t:t"
    assert rec.model_index_name("p", "m") == "p:ix:m:m"
    assert rec.index_pattern("p") == "p:ix:*"


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    # The same command as `make protos`; a stale checked-in module fails here.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iprotos",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"protos/{PROTO}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    for suffix in ("_pb2.py", "_pb2.pyi"):
        rel = PROTO.removesuffix(".proto") + suffix
        fresh = (tmp_path / rel).read_bytes()
        checked_in = (ROOT / "edge_agent/_proto" / rel).read_bytes()
        assert fresh == checked_in, f"edge_agent/_proto/{rel} is stale: run `make protos`"

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SemanticPart(_message.Message):
    __slots__ = ("namespace", "partition", "text", "vector", "dim")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    partition: str
    text: str
    vector: bytes
    dim: int
    def __init__(self, namespace: _Optional[str] = ..., partition: _Optional[str] = ..., text: _Optional[str] = ..., vector: _Optional[bytes] = ..., dim: _Optional[int] = ...) -> None: ...

class CacheEntry(_message.Message):
    __slots__ = ("version", "key", "body", "expires_at", "model", "tenant", "endpoint", "semantic")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    version: int
    key: str
    body: bytes
    expires_at: float
    model: str
    tenant: str
    endpoint: str
    semantic: SemanticPart
    def __init__(self, version: _Optional[int] = ..., key: _Optional[str] = ..., body: _Optional[bytes] = ..., expires_at: _Optional[float] = ..., model: _Optional[str] = ..., tenant: _Optional[str] = ..., endpoint: _Optional[str] = ..., semantic: _Optional[_Union[SemanticPart, _Mapping]] = ...) -> None: ...

class Evict(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class Purge(_message.Message):
    __slots__ = ("tenant", "model", "key", "all")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    model: str
    key: str
    all: bool
    def __init__(self, tenant: _Optional[str] = ..., model: _Optional[str] = ..., key: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class SyncEvent(_message.Message):
    __slots__ = ("version", "replica", "store", "evict", "purge")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    EVICT_FIELD_NUMBER: _ClassVar[int]
    PURGE_FIELD_NUMBER: _ClassVar[int]
    version: int
    replica: str
    store: CacheEntry
    evict: Evict
    purge: Purge
    def __init__(self, version: _Optional[int] = ..., replica: _Optional[str] = ..., store: _Optional[_Union[CacheEntry, _Mapping]] = ..., evict: _Optional[_Union[Evict, _Mapping]] = ..., purge: _Optional[_Union[Purge, _Mapping]] = ...) -> None: ...

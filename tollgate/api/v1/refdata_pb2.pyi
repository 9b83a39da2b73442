from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadHeader(_message.Message):
    __slots__ = ("source", "partial", "keep_missing", "allow_emptying")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    KEEP_MISSING_FIELD_NUMBER: _ClassVar[int]
    ALLOW_EMPTYING_FIELD_NUMBER: _ClassVar[int]
    source: str
    partial: bool
    keep_missing: bool
    allow_emptying: bool
    def __init__(self, source: _Optional[str] = ..., partial: _Optional[bool] = ..., keep_missing: _Optional[bool] = ..., allow_emptying: _Optional[bool] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("path", "data")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: LoadHeader
    chunk: FileChunk
    def __init__(self, header: _Optional[_Union[LoadHeader, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...

class Problem(_message.Message):
    __slots__ = ("path", "line", "field", "message")
    PATH_FIELD_NUMBER: _ClassVar[int]
    LINE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    path: str
    line: int
    field: str
    message: str
    def __init__(self, path: _Optional[str] = ..., line: _Optional[int] = ..., field: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SnapshotInfo(_message.Message):
    __slots__ = ("snapshot_id", "source", "loaded_at", "counts")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    snapshot_id: str
    source: str
    loaded_at: str
    counts: _containers.ScalarMap[str, int]
    def __init__(self, snapshot_id: _Optional[str] = ..., source: _Optional[str] = ..., loaded_at: _Optional[str] = ..., counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("snapshot", "rejected_rows", "previous_snapshot_id", "emptied", "kept")
    class EmptiedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ROWS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    EMPTIED_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    snapshot: SnapshotInfo
    rejected_rows: _containers.RepeatedCompositeFieldContainer[Problem]
    previous_snapshot_id: str
    emptied: _containers.ScalarMap[str, int]
    kept: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, snapshot: _Optional[_Union[SnapshotInfo, _Mapping]] = ..., rejected_rows: _Optional[_Iterable[_Union[Problem, _Mapping]]] = ..., previous_snapshot_id: _Optional[str] = ..., emptied: _Optional[_Mapping[str, int]] = ..., kept: _Optional[_Iterable[str]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("entity", "records", "if_current")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    IF_CURRENT_FIELD_NUMBER: _ClassVar[int]
    entity: str
    records: _containers.RepeatedCompositeFieldContainer[Record]
    if_current: str
    def __init__(self, entity: _Optional[str] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., if_current: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.ScalarMap[str, str]
    def __init__(self, fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("entity", "keys", "if_current")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    IF_CURRENT_FIELD_NUMBER: _ClassVar[int]
    entity: str
    keys: _containers.RepeatedCompositeFieldContainer[Record]
    if_current: str
    def __init__(self, entity: _Optional[str] = ..., keys: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., if_current: _Optional[str] = ...) -> None: ...

class ChangeResponse(_message.Message):
    __slots__ = ("snapshot", "previous_snapshot_id")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot: SnapshotInfo
    previous_snapshot_id: str
    def __init__(self, snapshot: _Optional[_Union[SnapshotInfo, _Mapping]] = ..., previous_snapshot_id: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("current", "kept", "store", "store_reachable", "stale_seconds", "store_current_id", "store_lost")
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    STORE_REACHABLE_FIELD_NUMBER: _ClassVar[int]
    STALE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STORE_CURRENT_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_LOST_FIELD_NUMBER: _ClassVar[int]
    current: SnapshotInfo
    kept: _containers.RepeatedCompositeFieldContainer[SnapshotInfo]
    store: str
    store_reachable: bool
    stale_seconds: float
    store_current_id: str
    store_lost: str
    def __init__(self, current: _Optional[_Union[SnapshotInfo, _Mapping]] = ..., kept: _Optional[_Iterable[_Union[SnapshotInfo, _Mapping]]] = ..., store: _Optional[str] = ..., store_reachable: _Optional[bool] = ..., stale_seconds: _Optional[float] = ..., store_current_id: _Optional[str] = ..., store_lost: _Optional[str] = ...) -> None: ...

class DiffRequest(_message.Message):
    __slots__ = ("from_snapshot_id", "to_snapshot_id")
    FROM_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    TO_SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    from_snapshot_id: str
    to_snapshot_id: str
    def __init__(self, from_snapshot_id: _Optional[str] = ..., to_snapshot_id: _Optional[str] = ...) -> None: ...

class EntityDiff(_message.Message):
    __slots__ = ("entity", "added", "removed", "changed")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    entity: str
    added: _containers.RepeatedScalarFieldContainer[str]
    removed: _containers.RepeatedScalarFieldContainer[str]
    changed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entity: _Optional[str] = ..., added: _Optional[_Iterable[str]] = ..., removed: _Optional[_Iterable[str]] = ..., changed: _Optional[_Iterable[str]] = ...) -> None: ...

class DiffResponse(_message.Message):
    __slots__ = ("entities",)
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[EntityDiff]
    def __init__(self, entities: _Optional[_Iterable[_Union[EntityDiff, _Mapping]]] = ...) -> None: ...

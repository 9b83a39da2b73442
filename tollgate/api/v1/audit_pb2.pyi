from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordedRuleset(_message.Message):
    __slots__ = ("id", "version", "digest")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    id: str
    version: str
    digest: str
    def __init__(self, id: _Optional[str] = ..., version: _Optional[str] = ..., digest: _Optional[str] = ...) -> None: ...

class BatchCounts(_message.Message):
    __slots__ = ("total", "accepted", "enriched", "rejected")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ENRICHED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    total: int
    accepted: int
    enriched: int
    rejected: int
    def __init__(self, total: _Optional[int] = ..., accepted: _Optional[int] = ..., enriched: _Optional[int] = ..., rejected: _Optional[int] = ...) -> None: ...

class RecordedBatch(_message.Message):
    __slots__ = ("batch_id", "request_id", "correlation_id", "caller", "received_at", "answered_at", "item_kind", "rulesets", "snapshot_id", "engine_version", "counts", "acceptance", "priors")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_FIELD_NUMBER: _ClassVar[int]
    ITEM_KIND_FIELD_NUMBER: _ClassVar[int]
    RULESETS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    PRIORS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    request_id: str
    correlation_id: str
    caller: str
    received_at: str
    answered_at: str
    item_kind: str
    rulesets: _containers.RepeatedCompositeFieldContainer[RecordedRuleset]
    snapshot_id: str
    engine_version: str
    counts: BatchCounts
    acceptance: str
    priors: _struct_pb2.Struct
    def __init__(self, batch_id: _Optional[str] = ..., request_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., caller: _Optional[str] = ..., received_at: _Optional[str] = ..., answered_at: _Optional[str] = ..., item_kind: _Optional[str] = ..., rulesets: _Optional[_Iterable[_Union[RecordedRuleset, _Mapping]]] = ..., snapshot_id: _Optional[str] = ..., engine_version: _Optional[str] = ..., counts: _Optional[_Union[BatchCounts, _Mapping]] = ..., acceptance: _Optional[str] = ..., priors: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class RecordedReason(_message.Message):
    __slots__ = ("rule_id", "code", "severity", "field", "message", "ruleset_id")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RULESET_ID_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    code: str
    severity: str
    field: str
    message: str
    ruleset_id: str
    def __init__(self, rule_id: _Optional[str] = ..., code: _Optional[str] = ..., severity: _Optional[str] = ..., field: _Optional[str] = ..., message: _Optional[str] = ..., ruleset_id: _Optional[str] = ...) -> None: ...

class RecordedEnrichment(_message.Message):
    __slots__ = ("field", "old_value", "new_value", "rule_id")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    field: str
    old_value: str
    new_value: str
    rule_id: str
    def __init__(self, field: _Optional[str] = ..., old_value: _Optional[str] = ..., new_value: _Optional[str] = ..., rule_id: _Optional[str] = ...) -> None: ...

class RecordedDecision(_message.Message):
    __slots__ = ("position", "item_kind", "item_id", "input", "outcome", "reasons", "enrichments", "batch")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ITEM_KIND_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    ENRICHMENTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    position: int
    item_kind: str
    item_id: str
    input: _struct_pb2.Struct
    outcome: str
    reasons: _containers.RepeatedCompositeFieldContainer[RecordedReason]
    enrichments: _containers.RepeatedCompositeFieldContainer[RecordedEnrichment]
    batch: RecordedBatch
    def __init__(self, position: _Optional[int] = ..., item_kind: _Optional[str] = ..., item_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., outcome: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[RecordedReason, _Mapping]]] = ..., enrichments: _Optional[_Iterable[_Union[RecordedEnrichment, _Mapping]]] = ..., batch: _Optional[_Union[RecordedBatch, _Mapping]] = ...) -> None: ...

class ItemHistoryRequest(_message.Message):
    __slots__ = ("item_id", "item_kind")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_KIND_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    item_kind: str
    def __init__(self, item_id: _Optional[str] = ..., item_kind: _Optional[str] = ...) -> None: ...

class ItemHistoryResponse(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[RecordedDecision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[RecordedDecision, _Mapping]]] = ...) -> None: ...

class GetBatchRequest(_message.Message):
    __slots__ = ("batch_id",)
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    def __init__(self, batch_id: _Optional[str] = ...) -> None: ...

class GetBatchResponse(_message.Message):
    __slots__ = ("batch", "decisions")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    batch: RecordedBatch
    decisions: _containers.RepeatedCompositeFieldContainer[RecordedDecision]
    def __init__(self, batch: _Optional[_Union[RecordedBatch, _Mapping]] = ..., decisions: _Optional[_Iterable[_Union[RecordedDecision, _Mapping]]] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("from_time", "to_time")
    FROM_TIME_FIELD_NUMBER: _ClassVar[int]
    TO_TIME_FIELD_NUMBER: _ClassVar[int]
    from_time: str
    to_time: str
    def __init__(self, from_time: _Optional[str] = ..., to_time: _Optional[str] = ...) -> None: ...

class ExportRow(_message.Message):
    __slots__ = ("batch_id", "request_id", "correlation_id", "caller", "received_at", "answered_at", "item_kind", "rulesets", "snapshot_id", "engine_version", "acceptance", "position", "item_id", "outcome", "input", "reasons", "enrichments")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_FIELD_NUMBER: _ClassVar[int]
    ITEM_KIND_FIELD_NUMBER: _ClassVar[int]
    RULESETS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTANCE_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    ENRICHMENTS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    request_id: str
    correlation_id: str
    caller: str
    received_at: str
    answered_at: str
    item_kind: str
    rulesets: str
    snapshot_id: str
    engine_version: str
    acceptance: str
    position: int
    item_id: str
    outcome: str
    input: str
    reasons: str
    enrichments: str
    def __init__(self, batch_id: _Optional[str] = ..., request_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., caller: _Optional[str] = ..., received_at: _Optional[str] = ..., answered_at: _Optional[str] = ..., item_kind: _Optional[str] = ..., rulesets: _Optional[str] = ..., snapshot_id: _Optional[str] = ..., engine_version: _Optional[str] = ..., acceptance: _Optional[str] = ..., position: _Optional[int] = ..., item_id: _Optional[str] = ..., outcome: _Optional[str] = ..., input: _Optional[str] = ..., reasons: _Optional[str] = ..., enrichments: _Optional[str] = ...) -> None: ...

class ExportChunk(_message.Message):
    __slots__ = ("total", "rows", "masked_fields")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    total: int
    rows: _containers.RepeatedCompositeFieldContainer[ExportRow]
    masked_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, total: _Optional[int] = ..., rows: _Optional[_Iterable[_Union[ExportRow, _Mapping]]] = ..., masked_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class ReplayRequest(_message.Message):
    __slots__ = ("batch_id",)
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    def __init__(self, batch_id: _Optional[str] = ...) -> None: ...

class ReplayDifference(_message.Message):
    __slots__ = ("position", "item_id", "differs", "recorded_outcome", "replayed_outcome", "recorded_reasons", "replayed_reasons", "recorded_enrichments", "replayed_enrichments")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    DIFFERS_FIELD_NUMBER: _ClassVar[int]
    RECORDED_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RECORDED_REASONS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_REASONS_FIELD_NUMBER: _ClassVar[int]
    RECORDED_ENRICHMENTS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_ENRICHMENTS_FIELD_NUMBER: _ClassVar[int]
    position: int
    item_id: str
    differs: _containers.RepeatedScalarFieldContainer[str]
    recorded_outcome: str
    replayed_outcome: str
    recorded_reasons: _containers.RepeatedCompositeFieldContainer[RecordedReason]
    replayed_reasons: _containers.RepeatedCompositeFieldContainer[RecordedReason]
    recorded_enrichments: _containers.RepeatedCompositeFieldContainer[RecordedEnrichment]
    replayed_enrichments: _containers.RepeatedCompositeFieldContainer[RecordedEnrichment]
    def __init__(self, position: _Optional[int] = ..., item_id: _Optional[str] = ..., differs: _Optional[_Iterable[str]] = ..., recorded_outcome: _Optional[str] = ..., replayed_outcome: _Optional[str] = ..., recorded_reasons: _Optional[_Iterable[_Union[RecordedReason, _Mapping]]] = ..., replayed_reasons: _Optional[_Iterable[_Union[RecordedReason, _Mapping]]] = ..., recorded_enrichments: _Optional[_Iterable[_Union[RecordedEnrichment, _Mapping]]] = ..., replayed_enrichments: _Optional[_Iterable[_Union[RecordedEnrichment, _Mapping]]] = ...) -> None: ...

class ReplayResponse(_message.Message):
    __slots__ = ("identical", "items", "differences", "snapshot_id", "rulesets")
    IDENTICAL_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_ID_FIELD_NUMBER: _ClassVar[int]
    RULESETS_FIELD_NUMBER: _ClassVar[int]
    identical: bool
    items: int
    differences: _containers.RepeatedCompositeFieldContainer[ReplayDifference]
    snapshot_id: str
    rulesets: _containers.RepeatedCompositeFieldContainer[RecordedRuleset]
    def __init__(self, identical: _Optional[bool] = ..., items: _Optional[int] = ..., differences: _Optional[_Iterable[_Union[ReplayDifference, _Mapping]]] = ..., snapshot_id: _Optional[str] = ..., rulesets: _Optional[_Iterable[_Union[RecordedRuleset, _Mapping]]] = ...) -> None: ...

class PurgeRequest(_message.Message):
    __slots__ = ("before",)
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    before: str
    def __init__(self, before: _Optional[str] = ...) -> None: ...

class PurgeResponse(_message.Message):
    __slots__ = ("batches", "decisions", "ruleset_sources", "before")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    RULESET_SOURCES_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    batches: int
    decisions: int
    ruleset_sources: int
    before: str
    def __init__(self, batches: _Optional[int] = ..., decisions: _Optional[int] = ..., ruleset_sources: _Optional[int] = ..., before: _Optional[str] = ...) -> None: ...

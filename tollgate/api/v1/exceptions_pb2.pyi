from tollgate.api.v1 import validation_pb2 as _validation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExceptionFilter(_message.Message):
    __slots__ = ("code", "rule_id", "project_id", "customer_id", "worker_id", "since", "status")
    CODE_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    code: str
    rule_id: str
    project_id: str
    customer_id: str
    worker_id: str
    since: str
    status: str
    def __init__(self, code: _Optional[str] = ..., rule_id: _Optional[str] = ..., project_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., since: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class ListExceptionsRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: ExceptionFilter
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[ExceptionFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExceptionsResponse(_message.Message):
    __slots__ = ("exceptions", "next_page_token")
    EXCEPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    exceptions: _containers.RepeatedCompositeFieldContainer[ItemException]
    next_page_token: str
    def __init__(self, exceptions: _Optional[_Iterable[_Union[ItemException, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetExceptionRequest(_message.Message):
    __slots__ = ("exception_id",)
    EXCEPTION_ID_FIELD_NUMBER: _ClassVar[int]
    exception_id: str
    def __init__(self, exception_id: _Optional[str] = ...) -> None: ...

class SummaryRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SummaryGroup(_message.Message):
    __slots__ = ("code", "project_id", "customer_id", "worker_id", "open")
    CODE_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    OPEN_FIELD_NUMBER: _ClassVar[int]
    code: str
    project_id: str
    customer_id: str
    worker_id: str
    open: int
    def __init__(self, code: _Optional[str] = ..., project_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., open: _Optional[int] = ...) -> None: ...

class SummaryResponse(_message.Message):
    __slots__ = ("groups", "total_open", "open_by_code", "oldest_open_exception_id", "oldest_open_first_seen", "oldest_open_age_seconds")
    class OpenByCodeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_OPEN_FIELD_NUMBER: _ClassVar[int]
    OPEN_BY_CODE_FIELD_NUMBER: _ClassVar[int]
    OLDEST_OPEN_EXCEPTION_ID_FIELD_NUMBER: _ClassVar[int]
    OLDEST_OPEN_FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    OLDEST_OPEN_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[SummaryGroup]
    total_open: int
    open_by_code: _containers.ScalarMap[str, int]
    oldest_open_exception_id: str
    oldest_open_first_seen: str
    oldest_open_age_seconds: float
    def __init__(self, groups: _Optional[_Iterable[_Union[SummaryGroup, _Mapping]]] = ..., total_open: _Optional[int] = ..., open_by_code: _Optional[_Mapping[str, int]] = ..., oldest_open_exception_id: _Optional[str] = ..., oldest_open_first_seen: _Optional[str] = ..., oldest_open_age_seconds: _Optional[float] = ...) -> None: ...

class WaiveRequest(_message.Message):
    __slots__ = ("exception_id", "reason")
    EXCEPTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    exception_id: str
    reason: str
    def __init__(self, exception_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevalidateRequest(_message.Message):
    __slots__ = ("filter",)
    FILTER_FIELD_NUMBER: _ClassVar[int]
    filter: ExceptionFilter
    def __init__(self, filter: _Optional[_Union[ExceptionFilter, _Mapping]] = ...) -> None: ...

class RevalidateResponse(_message.Message):
    __slots__ = ("re_decided", "resolved", "still_open", "batch_ids", "not_rebuilt")
    RE_DECIDED_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    STILL_OPEN_FIELD_NUMBER: _ClassVar[int]
    BATCH_IDS_FIELD_NUMBER: _ClassVar[int]
    NOT_REBUILT_FIELD_NUMBER: _ClassVar[int]
    re_decided: int
    resolved: int
    still_open: int
    batch_ids: _containers.RepeatedScalarFieldContainer[str]
    not_rebuilt: int
    def __init__(self, re_decided: _Optional[int] = ..., resolved: _Optional[int] = ..., still_open: _Optional[int] = ..., batch_ids: _Optional[_Iterable[str]] = ..., not_rebuilt: _Optional[int] = ...) -> None: ...

class ItemException(_message.Message):
    __slots__ = ("exception_id", "item_kind", "item_id", "status", "outcome", "reasons", "codes", "rule_ids", "first_seen", "last_seen", "times_seen", "batch_id", "position", "project_id", "customer_id", "worker_id", "resolved_at", "resolved_batch_id", "resolved_position", "waived_by", "waived_at", "waive_reason", "input_json")
    EXCEPTION_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_KIND_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    RULE_IDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    TIMES_SEEN_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_POSITION_FIELD_NUMBER: _ClassVar[int]
    WAIVED_BY_FIELD_NUMBER: _ClassVar[int]
    WAIVED_AT_FIELD_NUMBER: _ClassVar[int]
    WAIVE_REASON_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    exception_id: str
    item_kind: str
    item_id: str
    status: str
    outcome: str
    reasons: _containers.RepeatedCompositeFieldContainer[_validation_pb2.Reason]
    codes: _containers.RepeatedScalarFieldContainer[str]
    rule_ids: _containers.RepeatedScalarFieldContainer[str]
    first_seen: str
    last_seen: str
    times_seen: int
    batch_id: str
    position: int
    project_id: str
    customer_id: str
    worker_id: str
    resolved_at: str
    resolved_batch_id: str
    resolved_position: int
    waived_by: str
    waived_at: str
    waive_reason: str
    input_json: str
    def __init__(self, exception_id: _Optional[str] = ..., item_kind: _Optional[str] = ..., item_id: _Optional[str] = ..., status: _Optional[str] = ..., outcome: _Optional[str] = ..., reasons: _Optional[_Iterable[_Union[_validation_pb2.Reason, _Mapping]]] = ..., codes: _Optional[_Iterable[str]] = ..., rule_ids: _Optional[_Iterable[str]] = ..., first_seen: _Optional[str] = ..., last_seen: _Optional[str] = ..., times_seen: _Optional[int] = ..., batch_id: _Optional[str] = ..., position: _Optional[int] = ..., project_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., resolved_at: _Optional[str] = ..., resolved_batch_id: _Optional[str] = ..., resolved_position: _Optional[int] = ..., waived_by: _Optional[str] = ..., waived_at: _Optional[str] = ..., waive_reason: _Optional[str] = ..., input_json: _Optional[str] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("rulesets_reloaded", "identities_reloaded", "problems", "rulesets", "identities", "workers_signalled")
    RULESETS_RELOADED_FIELD_NUMBER: _ClassVar[int]
    IDENTITIES_RELOADED_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    RULESETS_FIELD_NUMBER: _ClassVar[int]
    IDENTITIES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_SIGNALLED_FIELD_NUMBER: _ClassVar[int]
    rulesets_reloaded: bool
    identities_reloaded: bool
    problems: _containers.RepeatedScalarFieldContainer[str]
    rulesets: _containers.RepeatedScalarFieldContainer[str]
    identities: int
    workers_signalled: int
    def __init__(self, rulesets_reloaded: _Optional[bool] = ..., identities_reloaded: _Optional[bool] = ..., problems: _Optional[_Iterable[str]] = ..., rulesets: _Optional[_Iterable[str]] = ..., identities: _Optional[int] = ..., workers_signalled: _Optional[int] = ...) -> None: ...

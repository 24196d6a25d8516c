from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunPipelineRequest(_message.Message):
    __slots__ = ("source", "filename", "params", "no_cache")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    source: str
    filename: str
    params: _containers.ScalarMap[str, str]
    no_cache: bool
    def __init__(self, source: _Optional[str] = ..., filename: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., no_cache: _Optional[bool] = ...) -> None: ...

class PipelineRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class ApprovePipelineStepRequest(_message.Message):
    __slots__ = ("run_id", "step")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    step: str
    def __init__(self, run_id: _Optional[str] = ..., step: _Optional[str] = ...) -> None: ...

class ListPipelineRunsRequest(_message.Message):
    __slots__ = ("state", "limit", "cursor")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    state: str
    limit: int
    cursor: str
    def __init__(self, state: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListPipelineRunsResponse(_message.Message):
    __slots__ = ("items", "next")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PipelineRun]
    next: str
    def __init__(self, items: _Optional[_Iterable[_Union[PipelineRun, _Mapping]]] = ..., next: _Optional[str] = ...) -> None: ...

class PipelineRun(_message.Message):
    __slots__ = ("id", "name", "state", "reason", "filename", "params", "approved", "no_cache", "queued_by", "cancelled_by", "generation", "version", "created_at", "finished_at", "counts", "awaiting_approval", "steps")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BY_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_BY_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    AWAITING_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    state: str
    reason: str
    filename: str
    params: _containers.ScalarMap[str, str]
    approved: _containers.RepeatedScalarFieldContainer[str]
    no_cache: bool
    queued_by: str
    cancelled_by: str
    generation: int
    version: int
    created_at: str
    finished_at: str
    counts: _containers.ScalarMap[str, int]
    awaiting_approval: _containers.RepeatedScalarFieldContainer[str]
    steps: _containers.RepeatedCompositeFieldContainer[StepJob]
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., reason: _Optional[str] = ..., filename: _Optional[str] = ..., params: _Optional[_Mapping[str, str]] = ..., approved: _Optional[_Iterable[str]] = ..., no_cache: _Optional[bool] = ..., queued_by: _Optional[str] = ..., cancelled_by: _Optional[str] = ..., generation: _Optional[int] = ..., version: _Optional[int] = ..., created_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., counts: _Optional[_Mapping[str, int]] = ..., awaiting_approval: _Optional[_Iterable[str]] = ..., steps: _Optional[_Iterable[_Union[StepJob, _Mapping]]] = ...) -> None: ...

class StepJob(_message.Message):
    __slots__ = ("id", "step", "index", "status", "needs", "when", "matrix", "job_id", "attempt", "generation", "reason", "outputs", "cached_from", "artifact_sha256", "artifact_bytes", "started_at", "finished_at", "duration_s")
    class MatrixEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    WHEN_FIELD_NUMBER: _ClassVar[int]
    MATRIX_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    CACHED_FROM_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_BYTES_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    id: str
    step: str
    index: int
    status: str
    needs: _containers.RepeatedScalarFieldContainer[str]
    when: str
    matrix: _containers.ScalarMap[str, str]
    job_id: str
    attempt: int
    generation: int
    reason: str
    outputs: _containers.ScalarMap[str, str]
    cached_from: str
    artifact_sha256: str
    artifact_bytes: int
    started_at: str
    finished_at: str
    duration_s: float
    def __init__(self, id: _Optional[str] = ..., step: _Optional[str] = ..., index: _Optional[int] = ..., status: _Optional[str] = ..., needs: _Optional[_Iterable[str]] = ..., when: _Optional[str] = ..., matrix: _Optional[_Mapping[str, str]] = ..., job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., generation: _Optional[int] = ..., reason: _Optional[str] = ..., outputs: _Optional[_Mapping[str, str]] = ..., cached_from: _Optional[str] = ..., artifact_sha256: _Optional[str] = ..., artifact_bytes: _Optional[int] = ..., started_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., duration_s: _Optional[float] = ...) -> None: ...

from hodei._proto.hodei.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobDefinition(_message.Message):
    __slots__ = ("job_id", "name", "command", "arguments", "environment", "resources", "labels", "timeout_seconds", "priority", "max_retries", "secrets", "infra_retries", "no_infra_retry", "image")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    INFRA_RETRIES_FIELD_NUMBER: _ClassVar[int]
    NO_INFRA_RETRY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: _common_pb2.JobId
    name: str
    command: str
    arguments: _containers.RepeatedScalarFieldContainer[str]
    environment: _containers.ScalarMap[str, str]
    resources: _common_pb2.ResourceRequest
    labels: _containers.ScalarMap[str, str]
    timeout_seconds: int
    priority: int
    max_retries: int
    secrets: _containers.RepeatedScalarFieldContainer[str]
    infra_retries: int
    no_infra_retry: bool
    image: str
    def __init__(self, job_id: _Optional[_Union[_common_pb2.JobId, _Mapping]] = ..., name: _Optional[str] = ..., command: _Optional[str] = ..., arguments: _Optional[_Iterable[str]] = ..., environment: _Optional[_Mapping[str, str]] = ..., resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., timeout_seconds: _Optional[int] = ..., priority: _Optional[int] = ..., max_retries: _Optional[int] = ..., secrets: _Optional[_Iterable[str]] = ..., infra_retries: _Optional[int] = ..., no_infra_retry: _Optional[bool] = ..., image: _Optional[str] = ...) -> None: ...

class QueueJobRequest(_message.Message):
    __slots__ = ("job_definition", "queued_by", "idempotency_key")
    JOB_DEFINITION_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    job_definition: JobDefinition
    queued_by: str
    idempotency_key: str
    def __init__(self, job_definition: _Optional[_Union[JobDefinition, _Mapping]] = ..., queued_by: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class QueueJobResponse(_message.Message):
    __slots__ = ("success", "message", "job", "created")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    success: bool
    message: str
    job: Job
    created: bool
    def __init__(self, success: _Optional[bool] = ..., message: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: _common_pb2.JobId
    def __init__(self, job_id: _Optional[_Union[_common_pb2.JobId, _Mapping]] = ...) -> None: ...

class JobStatus(_message.Message):
    __slots__ = ("job_id", "state", "exit_code", "has_exit_code", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: _common_pb2.JobId
    state: str
    exit_code: int
    has_exit_code: bool
    reason: str
    def __init__(self, job_id: _Optional[_Union[_common_pb2.JobId, _Mapping]] = ..., state: _Optional[str] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "name", "state", "exit_code", "has_exit_code", "attempts", "labels", "priority", "worker_id", "created_at", "started_at", "finished_at", "command", "arguments", "reason", "queued_by", "idempotency_key", "attempt_history", "max_retries", "infra_retries", "no_infra_retry", "retries_used", "infra_retries_used", "image")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    QUEUED_BY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_HISTORY_FIELD_NUMBER: _ClassVar[int]
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    INFRA_RETRIES_FIELD_NUMBER: _ClassVar[int]
    NO_INFRA_RETRY_FIELD_NUMBER: _ClassVar[int]
    RETRIES_USED_FIELD_NUMBER: _ClassVar[int]
    INFRA_RETRIES_USED_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    state: str
    exit_code: int
    has_exit_code: bool
    attempts: int
    labels: _containers.ScalarMap[str, str]
    priority: int
    worker_id: str
    created_at: str
    started_at: str
    finished_at: str
    command: str
    arguments: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    queued_by: str
    idempotency_key: str
    attempt_history: _containers.RepeatedCompositeFieldContainer[Attempt]
    max_retries: int
    infra_retries: int
    no_infra_retry: bool
    retries_used: int
    infra_retries_used: int
    image: str
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., attempts: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., priority: _Optional[int] = ..., worker_id: _Optional[str] = ..., created_at: _Optional[str] = ..., started_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., command: _Optional[str] = ..., arguments: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ..., queued_by: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., attempt_history: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., max_retries: _Optional[int] = ..., infra_retries: _Optional[int] = ..., no_infra_retry: _Optional[bool] = ..., retries_used: _Optional[int] = ..., infra_retries_used: _Optional[int] = ..., image: _Optional[str] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("number", "state", "worker_id", "exit_code", "has_exit_code", "assigned_at", "started_at", "finished_at", "reason", "failure", "has_usage", "cpu_seconds", "peak_memory_bytes", "has_io", "read_bytes", "written_bytes")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    HAS_USAGE_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HAS_IO_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_BYTES_FIELD_NUMBER: _ClassVar[int]
    number: int
    state: str
    worker_id: str
    exit_code: int
    has_exit_code: bool
    assigned_at: str
    started_at: str
    finished_at: str
    reason: str
    failure: str
    has_usage: bool
    cpu_seconds: float
    peak_memory_bytes: int
    has_io: bool
    read_bytes: int
    written_bytes: int
    def __init__(self, number: _Optional[int] = ..., state: _Optional[str] = ..., worker_id: _Optional[str] = ..., exit_code: _Optional[int] = ..., has_exit_code: _Optional[bool] = ..., assigned_at: _Optional[str] = ..., started_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., reason: _Optional[str] = ..., failure: _Optional[str] = ..., has_usage: _Optional[bool] = ..., cpu_seconds: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ..., has_io: _Optional[bool] = ..., read_bytes: _Optional[int] = ..., written_bytes: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "limit", "cursor", "name", "labels", "pipeline")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    state: str
    limit: int
    cursor: str
    name: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    pipeline: str
    def __init__(self, state: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ..., name: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., pipeline: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("items", "next")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Job]
    next: str
    def __init__(self, items: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next: _Optional[str] = ...) -> None: ...

class SubscribeLogsRequest(_message.Message):
    __slots__ = ("job_id", "since_offset", "follow", "tail_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: _common_pb2.JobId
    since_offset: int
    follow: bool
    tail_bytes: int
    def __init__(self, job_id: _Optional[_Union[_common_pb2.JobId, _Mapping]] = ..., since_offset: _Optional[int] = ..., follow: _Optional[bool] = ..., tail_bytes: _Optional[int] = ...) -> None: ...

class LogEvent(_message.Message):
    __slots__ = ("offset", "data", "end", "state", "exit_code")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    end: bool
    state: str
    exit_code: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., end: _Optional[bool] = ..., state: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

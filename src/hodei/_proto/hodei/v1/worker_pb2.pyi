from hodei._proto.hodei.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenewCertificateRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class RenewCertificateResponse(_message.Message):
    __slots__ = ("certificate_pem", "not_after_ms", "serial")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    not_after_ms: int
    serial: str
    def __init__(self, certificate_pem: _Optional[bytes] = ..., not_after_ms: _Optional[int] = ..., serial: _Optional[str] = ...) -> None: ...

class AgentMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "logs", "updates", "results", "artifacts")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    logs: _containers.RepeatedCompositeFieldContainer[LogChunk]
    updates: _containers.RepeatedCompositeFieldContainer[JobStatusUpdate]
    results: _containers.RepeatedCompositeFieldContainer[JobResult]
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactChunk]
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., logs: _Optional[_Iterable[_Union[LogChunk, _Mapping]]] = ..., updates: _Optional[_Iterable[_Union[JobStatusUpdate, _Mapping]]] = ..., results: _Optional[_Iterable[_Union[JobResult, _Mapping]]] = ..., artifacts: _Optional[_Iterable[_Union[ArtifactChunk, _Mapping]]] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("otp", "hostname", "labels", "capacity", "agent_version", "pid", "session_id", "running", "resume_token", "image")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    OTP_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    otp: str
    hostname: str
    labels: _containers.ScalarMap[str, str]
    capacity: Capacity
    agent_version: str
    pid: int
    session_id: str
    running: _containers.RepeatedCompositeFieldContainer[RunningJob]
    resume_token: str
    image: str
    def __init__(self, otp: _Optional[str] = ..., hostname: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., capacity: _Optional[_Union[Capacity, _Mapping]] = ..., agent_version: _Optional[str] = ..., pid: _Optional[int] = ..., session_id: _Optional[str] = ..., running: _Optional[_Iterable[_Union[RunningJob, _Mapping]]] = ..., resume_token: _Optional[str] = ..., image: _Optional[str] = ...) -> None: ...

class RunningJob(_message.Message):
    __slots__ = ("job_id", "attempt")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Capacity(_message.Message):
    __slots__ = ("cpus", "memory_bytes", "slots", "gpus")
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    cpus: float
    memory_bytes: int
    slots: int
    gpus: int
    def __init__(self, cpus: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., slots: _Optional[int] = ..., gpus: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("usage", "timestamp_ns")
    USAGE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    usage: ResourceUsage
    timestamp_ns: int
    def __init__(self, usage: _Optional[_Union[ResourceUsage, _Mapping]] = ..., timestamp_ns: _Optional[int] = ...) -> None: ...

class ResourceUsage(_message.Message):
    __slots__ = ("cpu_percent", "memory_bytes", "memory_total_bytes", "rx_bytes", "tx_bytes", "disk_io_bytes")
    CPU_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    RX_BYTES_FIELD_NUMBER: _ClassVar[int]
    TX_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_IO_BYTES_FIELD_NUMBER: _ClassVar[int]
    cpu_percent: float
    memory_bytes: int
    memory_total_bytes: int
    rx_bytes: int
    tx_bytes: int
    disk_io_bytes: int
    def __init__(self, cpu_percent: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., rx_bytes: _Optional[int] = ..., tx_bytes: _Optional[int] = ..., disk_io_bytes: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("job_id", "attempt", "data", "stream", "sequence", "timestamp_ns", "offset")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    data: bytes
    stream: _common_pb2.StreamType
    sequence: int
    timestamp_ns: int
    offset: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., data: _Optional[bytes] = ..., stream: _Optional[_Union[_common_pb2.StreamType, str]] = ..., sequence: _Optional[int] = ..., timestamp_ns: _Optional[int] = ..., offset: _Optional[int] = ...) -> None: ...

class JobStatusUpdate(_message.Message):
    __slots__ = ("job_id", "attempt", "phase", "timestamp_ns", "pid")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[JobStatusUpdate.Phase]
        STARTED: _ClassVar[JobStatusUpdate.Phase]
    PHASE_UNSPECIFIED: JobStatusUpdate.Phase
    STARTED: JobStatusUpdate.Phase
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    phase: JobStatusUpdate.Phase
    timestamp_ns: int
    pid: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., phase: _Optional[_Union[JobStatusUpdate.Phase, str]] = ..., timestamp_ns: _Optional[int] = ..., pid: _Optional[int] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("job_id", "attempt", "exit_code", "signal", "cancelled", "error", "last_sequence", "timestamp_ns", "timed_out", "artifact_sha256", "artifact_bytes", "outputs", "has_usage", "cpu_seconds", "peak_memory_bytes", "has_io", "read_bytes", "written_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_BYTES_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    HAS_USAGE_FIELD_NUMBER: _ClassVar[int]
    CPU_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    HAS_IO_FIELD_NUMBER: _ClassVar[int]
    READ_BYTES_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    exit_code: int
    signal: int
    cancelled: bool
    error: str
    last_sequence: int
    timestamp_ns: int
    timed_out: bool
    artifact_sha256: str
    artifact_bytes: int
    outputs: bytes
    has_usage: bool
    cpu_seconds: float
    peak_memory_bytes: int
    has_io: bool
    read_bytes: int
    written_bytes: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., cancelled: _Optional[bool] = ..., error: _Optional[str] = ..., last_sequence: _Optional[int] = ..., timestamp_ns: _Optional[int] = ..., timed_out: _Optional[bool] = ..., artifact_sha256: _Optional[str] = ..., artifact_bytes: _Optional[int] = ..., outputs: _Optional[bytes] = ..., has_usage: _Optional[bool] = ..., cpu_seconds: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ..., has_io: _Optional[bool] = ..., read_bytes: _Optional[int] = ..., written_bytes: _Optional[int] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("job_id", "attempt", "offset", "data", "last", "sha256", "size")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    offset: int
    data: bytes
    last: bool
    sha256: str
    size: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("register_ack", "assignments", "cancels", "log_acks", "result_acks", "shutdown", "inputs")
    REGISTER_ACK_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    CANCELS_FIELD_NUMBER: _ClassVar[int]
    LOG_ACKS_FIELD_NUMBER: _ClassVar[int]
    RESULT_ACKS_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    register_ack: RegisterAck
    assignments: _containers.RepeatedCompositeFieldContainer[AssignJob]
    cancels: _containers.RepeatedCompositeFieldContainer[CancelJob]
    log_acks: _containers.RepeatedCompositeFieldContainer[LogAck]
    result_acks: _containers.RepeatedCompositeFieldContainer[ResultAck]
    shutdown: Shutdown
    inputs: _containers.RepeatedCompositeFieldContainer[ArtifactData]
    def __init__(self, register_ack: _Optional[_Union[RegisterAck, _Mapping]] = ..., assignments: _Optional[_Iterable[_Union[AssignJob, _Mapping]]] = ..., cancels: _Optional[_Iterable[_Union[CancelJob, _Mapping]]] = ..., log_acks: _Optional[_Iterable[_Union[LogAck, _Mapping]]] = ..., result_acks: _Optional[_Iterable[_Union[ResultAck, _Mapping]]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[ArtifactData, _Mapping]]] = ...) -> None: ...

class RegisterAck(_message.Message):
    __slots__ = ("worker_id", "session_id", "heartbeat_interval_ms", "resume_token", "grace_ms")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    session_id: str
    heartbeat_interval_ms: int
    resume_token: str
    grace_ms: int
    def __init__(self, worker_id: _Optional[str] = ..., session_id: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ..., resume_token: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

class AssignJob(_message.Message):
    __slots__ = ("job_id", "attempt", "name", "command", "arguments", "environment", "secrets", "resources", "timeout_ms", "working_dir", "max_output_bytes", "artifacts", "inputs", "max_artifact_bytes", "traceparent")
    class EnvironmentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    MAX_ARTIFACT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRACEPARENT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    name: str
    command: str
    arguments: _containers.RepeatedScalarFieldContainer[str]
    environment: _containers.ScalarMap[str, str]
    secrets: _containers.ScalarMap[str, str]
    resources: _common_pb2.ResourceRequest
    timeout_ms: int
    working_dir: str
    max_output_bytes: int
    artifacts: _containers.RepeatedScalarFieldContainer[str]
    inputs: _containers.RepeatedCompositeFieldContainer[ArtifactInput]
    max_artifact_bytes: int
    traceparent: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., name: _Optional[str] = ..., command: _Optional[str] = ..., arguments: _Optional[_Iterable[str]] = ..., environment: _Optional[_Mapping[str, str]] = ..., secrets: _Optional[_Mapping[str, str]] = ..., resources: _Optional[_Union[_common_pb2.ResourceRequest, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., working_dir: _Optional[str] = ..., max_output_bytes: _Optional[int] = ..., artifacts: _Optional[_Iterable[str]] = ..., inputs: _Optional[_Iterable[_Union[ArtifactInput, _Mapping]]] = ..., max_artifact_bytes: _Optional[int] = ..., traceparent: _Optional[str] = ...) -> None: ...

class ArtifactInput(_message.Message):
    __slots__ = ("key", "sha256", "size")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    key: str
    sha256: str
    size: int
    def __init__(self, key: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class ArtifactData(_message.Message):
    __slots__ = ("key", "offset", "data", "last")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    key: str
    offset: int
    data: bytes
    last: bool
    def __init__(self, key: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class CancelJob(_message.Message):
    __slots__ = ("job_id", "attempt", "grace_ms", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    grace_ms: int
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., grace_ms: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class LogAck(_message.Message):
    __slots__ = ("job_id", "attempt", "sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    sequence: int
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., sequence: _Optional[int] = ...) -> None: ...

class ResultAck(_message.Message):
    __slots__ = ("job_id", "attempt", "accepted", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    attempt: int
    accepted: bool
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., attempt: _Optional[int] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("reason", "grace_ms")
    REASON_FIELD_NUMBER: _ClassVar[int]
    GRACE_MS_FIELD_NUMBER: _ClassVar[int]
    reason: str
    grace_ms: int
    def __init__(self, reason: _Optional[str] = ..., grace_ms: _Optional[int] = ...) -> None: ...

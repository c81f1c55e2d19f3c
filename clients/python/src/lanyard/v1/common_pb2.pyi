from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

APPROVAL_STATE_APPROVED: ApprovalState
APPROVAL_STATE_CONSUMED: ApprovalState
APPROVAL_STATE_DENIED: ApprovalState
APPROVAL_STATE_EXPIRED: ApprovalState
APPROVAL_STATE_PENDING: ApprovalState
APPROVAL_STATE_UNSPECIFIED: ApprovalState
CODE_ABORTED: Code
CODE_ALREADY_EXISTS: Code
CODE_CANCELLED: Code
CODE_DATA_LOSS: Code
CODE_DEADLINE_EXCEEDED: Code
CODE_FAILED_PRECONDITION: Code
CODE_INTERNAL: Code
CODE_INVALID_ARGUMENT: Code
CODE_NOT_FOUND: Code
CODE_OK: Code
CODE_OUT_OF_RANGE: Code
CODE_PERMISSION_DENIED: Code
CODE_RESOURCE_EXHAUSTED: Code
CODE_UNAUTHENTICATED: Code
CODE_UNAVAILABLE: Code
CODE_UNIMPLEMENTED: Code
CODE_UNKNOWN: Code
DECISION_ALLOW: Decision
DECISION_DENY: Decision
DECISION_PENDING: Decision
DECISION_UNSPECIFIED: Decision
DESCRIPTOR: _descriptor.FileDescriptor
RISK_LEVEL_HIGH: RiskLevel
RISK_LEVEL_LOW: RiskLevel
RISK_LEVEL_MEDIUM: RiskLevel
RISK_LEVEL_UNSPECIFIED: RiskLevel

class Amount(_message.Message):
    __slots__ = ["unit", "value"]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    unit: str
    value: int
    def __init__(self, value: _Optional[int] = ..., unit: _Optional[str] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ["capability", "risk"]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    capability: str
    risk: RiskLevel
    def __init__(self, capability: _Optional[str] = ..., risk: _Optional[_Union[RiskLevel, str]] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ["agent", "agent_id", "authenticated", "exe", "gid", "grants", "pid", "uid", "unit", "uri"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AUTHENTICATED_FIELD_NUMBER: _ClassVar[int]
    EXE_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    agent: str
    agent_id: str
    authenticated: bool
    exe: str
    gid: int
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    pid: int
    uid: int
    unit: str
    uri: str
    def __init__(self, authenticated: bool = ..., agent: _Optional[str] = ..., agent_id: _Optional[str] = ..., uri: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., pid: _Optional[int] = ..., exe: _Optional[str] = ..., unit: _Optional[str] = ..., grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ["code", "message"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: Code
    message: str
    def __init__(self, code: _Optional[_Union[Code, str]] = ..., message: _Optional[str] = ...) -> None: ...

class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class RiskLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class ApprovalState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

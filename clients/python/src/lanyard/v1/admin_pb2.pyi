from lanyard.v1 import common_pb2 as _common_pb2
from lanyard.v1 import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdminRequest(_message.Message):
    __slots__ = ["agents_list", "approval_decide", "approvals_list", "audit_query", "audit_verify", "id", "identity_revoke", "jwks", "keys_rotate", "leases_list", "leases_revoke", "limits_reset", "limits_show", "policy_explain", "policy_reload", "policy_show", "secret_list", "secret_put", "secret_rotate", "status", "whoami"]
    AGENTS_LIST_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_LIST_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_DECIDE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_QUERY_FIELD_NUMBER: _ClassVar[int]
    AUDIT_VERIFY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_REVOKE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    JWKS_FIELD_NUMBER: _ClassVar[int]
    KEYS_ROTATE_FIELD_NUMBER: _ClassVar[int]
    LEASES_LIST_FIELD_NUMBER: _ClassVar[int]
    LEASES_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_RESET_FIELD_NUMBER: _ClassVar[int]
    LIMITS_SHOW_FIELD_NUMBER: _ClassVar[int]
    POLICY_EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    POLICY_RELOAD_FIELD_NUMBER: _ClassVar[int]
    POLICY_SHOW_FIELD_NUMBER: _ClassVar[int]
    SECRET_LIST_FIELD_NUMBER: _ClassVar[int]
    SECRET_PUT_FIELD_NUMBER: _ClassVar[int]
    SECRET_ROTATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    WHOAMI_FIELD_NUMBER: _ClassVar[int]
    agents_list: AgentsListRequest
    approval_decide: ApprovalDecideRequest
    approvals_list: ApprovalsListRequest
    audit_query: AuditQueryRequest
    audit_verify: AuditVerifyRequest
    id: int
    identity_revoke: IdentityRevokeRequest
    jwks: JwksRequest
    keys_rotate: KeysRotateRequest
    leases_list: LeasesListRequest
    leases_revoke: LeasesRevokeRequest
    limits_reset: LimitsResetRequest
    limits_show: LimitsShowRequest
    policy_explain: PolicyExplainRequest
    policy_reload: PolicyReloadRequest
    policy_show: PolicyShowRequest
    secret_list: SecretListRequest
    secret_put: SecretPutRequest
    secret_rotate: SecretRotateRequest
    status: StatusRequest
    whoami: WhoamiRequest
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[StatusRequest, _Mapping]] = ..., policy_reload: _Optional[_Union[PolicyReloadRequest, _Mapping]] = ..., policy_show: _Optional[_Union[PolicyShowRequest, _Mapping]] = ..., agents_list: _Optional[_Union[AgentsListRequest, _Mapping]] = ..., secret_put: _Optional[_Union[SecretPutRequest, _Mapping]] = ..., secret_rotate: _Optional[_Union[SecretRotateRequest, _Mapping]] = ..., secret_list: _Optional[_Union[SecretListRequest, _Mapping]] = ..., approvals_list: _Optional[_Union[ApprovalsListRequest, _Mapping]] = ..., approval_decide: _Optional[_Union[ApprovalDecideRequest, _Mapping]] = ..., leases_list: _Optional[_Union[LeasesListRequest, _Mapping]] = ..., leases_revoke: _Optional[_Union[LeasesRevokeRequest, _Mapping]] = ..., audit_query: _Optional[_Union[AuditQueryRequest, _Mapping]] = ..., audit_verify: _Optional[_Union[AuditVerifyRequest, _Mapping]] = ..., keys_rotate: _Optional[_Union[KeysRotateRequest, _Mapping]] = ..., jwks: _Optional[_Union[JwksRequest, _Mapping]] = ..., whoami: _Optional[_Union[WhoamiRequest, _Mapping]] = ..., identity_revoke: _Optional[_Union[IdentityRevokeRequest, _Mapping]] = ..., policy_explain: _Optional[_Union[PolicyExplainRequest, _Mapping]] = ..., limits_show: _Optional[_Union[LimitsShowRequest, _Mapping]] = ..., limits_reset: _Optional[_Union[LimitsResetRequest, _Mapping]] = ...) -> None: ...

class AdminResponse(_message.Message):
    __slots__ = ["agents_list", "approval_decide", "approvals_list", "audit_query", "audit_verify", "id", "identity_revoke", "jwks", "keys_rotate", "leases_list", "leases_revoke", "limits_reset", "limits_show", "policy_explain", "policy_reload", "policy_show", "secret_list", "secret_put", "secret_rotate", "status", "status_result", "whoami"]
    AGENTS_LIST_FIELD_NUMBER: _ClassVar[int]
    APPROVALS_LIST_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_DECIDE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_QUERY_FIELD_NUMBER: _ClassVar[int]
    AUDIT_VERIFY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_REVOKE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    JWKS_FIELD_NUMBER: _ClassVar[int]
    KEYS_ROTATE_FIELD_NUMBER: _ClassVar[int]
    LEASES_LIST_FIELD_NUMBER: _ClassVar[int]
    LEASES_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_RESET_FIELD_NUMBER: _ClassVar[int]
    LIMITS_SHOW_FIELD_NUMBER: _ClassVar[int]
    POLICY_EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    POLICY_RELOAD_FIELD_NUMBER: _ClassVar[int]
    POLICY_SHOW_FIELD_NUMBER: _ClassVar[int]
    SECRET_LIST_FIELD_NUMBER: _ClassVar[int]
    SECRET_PUT_FIELD_NUMBER: _ClassVar[int]
    SECRET_ROTATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_RESULT_FIELD_NUMBER: _ClassVar[int]
    WHOAMI_FIELD_NUMBER: _ClassVar[int]
    agents_list: AgentsListResponse
    approval_decide: ApprovalDecideResponse
    approvals_list: ApprovalsListResponse
    audit_query: AuditQueryResponse
    audit_verify: AuditVerifyResponse
    id: int
    identity_revoke: IdentityRevokeResponse
    jwks: JwksResponse
    keys_rotate: KeysRotateResponse
    leases_list: LeasesListResponse
    leases_revoke: LeasesRevokeResponse
    limits_reset: LimitsResetResponse
    limits_show: LimitsShowResponse
    policy_explain: PolicyExplainResponse
    policy_reload: PolicyReloadResponse
    policy_show: PolicyShowResponse
    secret_list: SecretListResponse
    secret_put: SecretPutResponse
    secret_rotate: SecretRotateResponse
    status: _common_pb2.Status
    status_result: StatusResponse
    whoami: WhoamiResponse
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., status_result: _Optional[_Union[StatusResponse, _Mapping]] = ..., policy_reload: _Optional[_Union[PolicyReloadResponse, _Mapping]] = ..., policy_show: _Optional[_Union[PolicyShowResponse, _Mapping]] = ..., agents_list: _Optional[_Union[AgentsListResponse, _Mapping]] = ..., secret_put: _Optional[_Union[SecretPutResponse, _Mapping]] = ..., secret_rotate: _Optional[_Union[SecretRotateResponse, _Mapping]] = ..., secret_list: _Optional[_Union[SecretListResponse, _Mapping]] = ..., approvals_list: _Optional[_Union[ApprovalsListResponse, _Mapping]] = ..., approval_decide: _Optional[_Union[ApprovalDecideResponse, _Mapping]] = ..., leases_list: _Optional[_Union[LeasesListResponse, _Mapping]] = ..., leases_revoke: _Optional[_Union[LeasesRevokeResponse, _Mapping]] = ..., audit_query: _Optional[_Union[AuditQueryResponse, _Mapping]] = ..., audit_verify: _Optional[_Union[AuditVerifyResponse, _Mapping]] = ..., keys_rotate: _Optional[_Union[KeysRotateResponse, _Mapping]] = ..., jwks: _Optional[_Union[JwksResponse, _Mapping]] = ..., whoami: _Optional[_Union[WhoamiResponse, _Mapping]] = ..., identity_revoke: _Optional[_Union[IdentityRevokeResponse, _Mapping]] = ..., policy_explain: _Optional[_Union[PolicyExplainResponse, _Mapping]] = ..., limits_show: _Optional[_Union[LimitsShowResponse, _Mapping]] = ..., limits_reset: _Optional[_Union[LimitsResetResponse, _Mapping]] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ["grants", "id", "name", "selector", "uid", "uri"]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[_common_pb2.Grant]
    id: str
    name: str
    selector: Selector
    uid: int
    uri: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., uri: _Optional[str] = ..., uid: _Optional[int] = ..., selector: _Optional[_Union[Selector, _Mapping]] = ..., grants: _Optional[_Iterable[_Union[_common_pb2.Grant, _Mapping]]] = ...) -> None: ...

class AgentsListRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class AgentsListResponse(_message.Message):
    __slots__ = ["agents"]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ["agent", "agent_id", "amount", "approval_id", "approvers", "args", "binding_code", "capabilities", "created_at", "exe", "expires_at", "pid", "reason", "resource", "risk", "state", "uid", "unit"]
    class ArgsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVERS_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    BINDING_CODE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    agent_id: str
    amount: _common_pb2.Amount
    approval_id: str
    approvers: _containers.RepeatedScalarFieldContainer[str]
    args: _containers.ScalarMap[str, str]
    binding_code: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    created_at: int
    exe: str
    expires_at: int
    pid: int
    reason: str
    resource: str
    risk: _common_pb2.RiskLevel
    state: _common_pb2.ApprovalState
    uid: int
    unit: str
    def __init__(self, approval_id: _Optional[str] = ..., state: _Optional[_Union[_common_pb2.ApprovalState, str]] = ..., agent: _Optional[str] = ..., agent_id: _Optional[str] = ..., uid: _Optional[int] = ..., pid: _Optional[int] = ..., exe: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., resource: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ..., amount: _Optional[_Union[_common_pb2.Amount, _Mapping]] = ..., risk: _Optional[_Union[_common_pb2.RiskLevel, str]] = ..., reason: _Optional[str] = ..., binding_code: _Optional[str] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., approvers: _Optional[_Iterable[str]] = ..., unit: _Optional[str] = ...) -> None: ...

class ApprovalDecideRequest(_message.Message):
    __slots__ = ["approval_id", "approve", "binding_code", "for_process", "reason", "standing_seconds"]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVE_FIELD_NUMBER: _ClassVar[int]
    BINDING_CODE_FIELD_NUMBER: _ClassVar[int]
    FOR_PROCESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STANDING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    approve: bool
    binding_code: str
    for_process: bool
    reason: str
    standing_seconds: int
    def __init__(self, approval_id: _Optional[str] = ..., approve: bool = ..., standing_seconds: _Optional[int] = ..., reason: _Optional[str] = ..., for_process: bool = ..., binding_code: _Optional[str] = ...) -> None: ...

class ApprovalDecideResponse(_message.Message):
    __slots__ = ["approval"]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    approval: Approval
    def __init__(self, approval: _Optional[_Union[Approval, _Mapping]] = ...) -> None: ...

class ApprovalsListRequest(_message.Message):
    __slots__ = ["include_decided", "since_version", "wait_ms"]
    INCLUDE_DECIDED_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    include_decided: bool
    since_version: int
    wait_ms: int
    def __init__(self, include_decided: bool = ..., wait_ms: _Optional[int] = ..., since_version: _Optional[int] = ...) -> None: ...

class ApprovalsListResponse(_message.Message):
    __slots__ = ["approvals", "omitted", "version"]
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    OMITTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    omitted: int
    version: int
    def __init__(self, approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ..., version: _Optional[int] = ..., omitted: _Optional[int] = ...) -> None: ...

class AuditQueryRequest(_message.Message):
    __slots__ = ["agent", "capability", "decision", "from_seq", "limit", "since_us", "until_us"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    SINCE_US_FIELD_NUMBER: _ClassVar[int]
    UNTIL_US_FIELD_NUMBER: _ClassVar[int]
    agent: str
    capability: str
    decision: str
    from_seq: int
    limit: int
    since_us: int
    until_us: int
    def __init__(self, from_seq: _Optional[int] = ..., limit: _Optional[int] = ..., agent: _Optional[str] = ..., capability: _Optional[str] = ..., decision: _Optional[str] = ..., since_us: _Optional[int] = ..., until_us: _Optional[int] = ...) -> None: ...

class AuditQueryResponse(_message.Message):
    __slots__ = ["head_seq", "next_seq", "records"]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    head_seq: int
    next_seq: int
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., next_seq: _Optional[int] = ..., head_seq: _Optional[int] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ["agent", "agent_id", "approval_id", "approver", "args_digest", "capability", "decision", "event", "gid", "hash", "lease_id", "mcp_server", "mcp_tool", "outcome", "pid", "policy_version", "prev_hash", "reason", "reason_code", "resource", "seq", "time_us", "uid"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    ARGS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    MCP_TOOL_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_US_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    agent: str
    agent_id: str
    approval_id: str
    approver: str
    args_digest: str
    capability: str
    decision: str
    event: str
    gid: int
    hash: str
    lease_id: str
    mcp_server: str
    mcp_tool: str
    outcome: str
    pid: int
    policy_version: str
    prev_hash: str
    reason: str
    reason_code: str
    resource: str
    seq: int
    time_us: int
    uid: int
    def __init__(self, seq: _Optional[int] = ..., time_us: _Optional[int] = ..., event: _Optional[str] = ..., agent_id: _Optional[str] = ..., agent: _Optional[str] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., pid: _Optional[int] = ..., capability: _Optional[str] = ..., resource: _Optional[str] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ..., outcome: _Optional[str] = ..., lease_id: _Optional[str] = ..., approval_id: _Optional[str] = ..., approver: _Optional[str] = ..., policy_version: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., mcp_server: _Optional[str] = ..., mcp_tool: _Optional[str] = ..., args_digest: _Optional[str] = ..., reason_code: _Optional[str] = ...) -> None: ...

class AuditVerifyRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class AuditVerifyResponse(_message.Message):
    __slots__ = ["first_broken_seq", "head_hash", "ok", "reason", "records"]
    FIRST_BROKEN_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    first_broken_seq: int
    head_hash: str
    ok: bool
    reason: str
    records: int
    def __init__(self, ok: bool = ..., records: _Optional[int] = ..., first_broken_seq: _Optional[int] = ..., reason: _Optional[str] = ..., head_hash: _Optional[str] = ...) -> None: ...

class IdentityRevokeRequest(_message.Message):
    __slots__ = ["jti"]
    JTI_FIELD_NUMBER: _ClassVar[int]
    jti: str
    def __init__(self, jti: _Optional[str] = ...) -> None: ...

class IdentityRevokeResponse(_message.Message):
    __slots__ = ["revoked"]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: bool = ...) -> None: ...

class JwksRequest(_message.Message):
    __slots__ = ["service"]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class JwksResponse(_message.Message):
    __slots__ = ["json"]
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...

class KeysRotateRequest(_message.Message):
    __slots__ = ["compromised"]
    COMPROMISED_FIELD_NUMBER: _ClassVar[int]
    compromised: bool
    def __init__(self, compromised: bool = ...) -> None: ...

class KeysRotateResponse(_message.Message):
    __slots__ = ["kid"]
    KID_FIELD_NUMBER: _ClassVar[int]
    kid: str
    def __init__(self, kid: _Optional[str] = ...) -> None: ...

class LeasesListRequest(_message.Message):
    __slots__ = ["agent", "page_token", "service"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    page_token: str
    service: str
    def __init__(self, agent: _Optional[str] = ..., service: _Optional[str] = ..., page_token: _Optional[str] = ...) -> None: ...

class LeasesListResponse(_message.Message):
    __slots__ = ["leases", "next_page_token"]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[_agent_pb2.LeaseInfo]
    next_page_token: str
    def __init__(self, leases: _Optional[_Iterable[_Union[_agent_pb2.LeaseInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class LeasesRevokeRequest(_message.Message):
    __slots__ = ["agent", "lease_id", "service"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    lease_id: str
    service: str
    def __init__(self, lease_id: _Optional[str] = ..., agent: _Optional[str] = ..., service: _Optional[str] = ...) -> None: ...

class LeasesRevokeResponse(_message.Message):
    __slots__ = ["revoked"]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class LimitCounter(_message.Message):
    __slots__ = ["agent", "capability", "kind", "limit", "period", "period_ends_at", "unit", "used"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_ENDS_AT_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    agent: str
    capability: str
    kind: str
    limit: int
    period: str
    period_ends_at: int
    unit: str
    used: int
    def __init__(self, agent: _Optional[str] = ..., capability: _Optional[str] = ..., kind: _Optional[str] = ..., used: _Optional[int] = ..., limit: _Optional[int] = ..., unit: _Optional[str] = ..., period: _Optional[str] = ..., period_ends_at: _Optional[int] = ...) -> None: ...

class LimitsResetRequest(_message.Message):
    __slots__ = ["agent", "all", "capability"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    agent: str
    all: bool
    capability: str
    def __init__(self, agent: _Optional[str] = ..., capability: _Optional[str] = ..., all: bool = ...) -> None: ...

class LimitsResetResponse(_message.Message):
    __slots__ = ["reset"]
    RESET_FIELD_NUMBER: _ClassVar[int]
    reset: int
    def __init__(self, reset: _Optional[int] = ...) -> None: ...

class LimitsShowRequest(_message.Message):
    __slots__ = ["agent"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: str
    def __init__(self, agent: _Optional[str] = ...) -> None: ...

class LimitsShowResponse(_message.Message):
    __slots__ = ["counters"]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    counters: _containers.RepeatedCompositeFieldContainer[LimitCounter]
    def __init__(self, counters: _Optional[_Iterable[_Union[LimitCounter, _Mapping]]] = ...) -> None: ...

class PolicyExplainRequest(_message.Message):
    __slots__ = ["agent", "args", "capability", "facts", "resource"]
    class ArgsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    FACTS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    args: _containers.ScalarMap[str, str]
    capability: str
    facts: str
    resource: str
    def __init__(self, agent: _Optional[str] = ..., facts: _Optional[str] = ..., capability: _Optional[str] = ..., resource: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PolicyExplainResponse(_message.Message):
    __slots__ = ["decision", "reason_code", "text"]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    decision: str
    reason_code: str
    text: str
    def __init__(self, text: _Optional[str] = ..., decision: _Optional[str] = ..., reason_code: _Optional[str] = ...) -> None: ...

class PolicyReloadRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class PolicyReloadResponse(_message.Message):
    __slots__ = ["changed", "policy_version"]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    policy_version: str
    def __init__(self, policy_version: _Optional[str] = ..., changed: bool = ...) -> None: ...

class PolicyShowRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class PolicyShowResponse(_message.Message):
    __slots__ = ["path", "policy_version", "source"]
    PATH_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    path: str
    policy_version: str
    source: str
    def __init__(self, policy_version: _Optional[str] = ..., source: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class SecretInfo(_message.Message):
    __slots__ = ["service", "updated_at", "version"]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    service: str
    updated_at: int
    version: int
    def __init__(self, service: _Optional[str] = ..., version: _Optional[int] = ..., updated_at: _Optional[int] = ...) -> None: ...

class SecretListRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class SecretListResponse(_message.Message):
    __slots__ = ["secrets"]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    secrets: _containers.RepeatedCompositeFieldContainer[SecretInfo]
    def __init__(self, secrets: _Optional[_Iterable[_Union[SecretInfo, _Mapping]]] = ...) -> None: ...

class SecretPutRequest(_message.Message):
    __slots__ = ["service", "value"]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    service: str
    value: bytes
    def __init__(self, service: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class SecretPutResponse(_message.Message):
    __slots__ = ["version"]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SecretRotateRequest(_message.Message):
    __slots__ = ["compromised", "service"]
    COMPROMISED_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    compromised: bool
    service: str
    def __init__(self, service: _Optional[str] = ..., compromised: bool = ...) -> None: ...

class SecretRotateResponse(_message.Message):
    __slots__ = ["revoked_leases", "version"]
    REVOKED_LEASES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    revoked_leases: int
    version: int
    def __init__(self, version: _Optional[int] = ..., revoked_leases: _Optional[int] = ...) -> None: ...

class Selector(_message.Message):
    __slots__ = ["exe", "exe_sha256", "gid", "has_gid", "uid", "unit"]
    EXE_FIELD_NUMBER: _ClassVar[int]
    EXE_SHA256_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    HAS_GID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    exe: str
    exe_sha256: str
    gid: int
    has_gid: bool
    uid: int
    unit: str
    def __init__(self, uid: _Optional[int] = ..., has_gid: bool = ..., gid: _Optional[int] = ..., exe: _Optional[str] = ..., exe_sha256: _Optional[str] = ..., unit: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ["active_leases", "agents", "audit_head", "connections", "pending_approvals", "policy_version", "upstream_revocations", "uptime_seconds", "version"]
    ACTIVE_LEASES_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HEAD_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    PENDING_APPROVALS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    active_leases: int
    agents: int
    audit_head: int
    connections: int
    pending_approvals: int
    policy_version: str
    upstream_revocations: int
    uptime_seconds: int
    version: str
    def __init__(self, version: _Optional[str] = ..., uptime_seconds: _Optional[int] = ..., policy_version: _Optional[str] = ..., agents: _Optional[int] = ..., active_leases: _Optional[int] = ..., pending_approvals: _Optional[int] = ..., audit_head: _Optional[int] = ..., connections: _Optional[int] = ..., upstream_revocations: _Optional[int] = ...) -> None: ...

class WhoamiRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class WhoamiResponse(_message.Message):
    __slots__ = ["admin", "approver", "gid", "pid", "uid"]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    admin: bool
    approver: bool
    gid: int
    pid: int
    uid: int
    def __init__(self, uid: _Optional[int] = ..., gid: _Optional[int] = ..., pid: _Optional[int] = ..., admin: bool = ..., approver: bool = ...) -> None: ...

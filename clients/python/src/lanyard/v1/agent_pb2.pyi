from lanyard.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuthorizeRequest(_message.Message):
    __slots__ = ["amount", "approval_id", "args", "capability", "dry_run", "resource", "tool_call"]
    class ArgsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    amount: _common_pb2.Amount
    approval_id: str
    args: _containers.ScalarMap[str, str]
    capability: str
    dry_run: bool
    resource: str
    tool_call: ToolCall
    def __init__(self, capability: _Optional[str] = ..., resource: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ..., amount: _Optional[_Union[_common_pb2.Amount, _Mapping]] = ..., approval_id: _Optional[str] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., dry_run: bool = ...) -> None: ...

class AuthorizeResponse(_message.Message):
    __slots__ = ["approval_expires_at", "approval_id", "args_digest", "binding_code", "capability", "decision", "dry_run", "path", "reason", "reason_code", "retry_after_seconds", "risk"]
    APPROVAL_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    ARGS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BINDING_CODE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    approval_expires_at: int
    approval_id: str
    args_digest: str
    binding_code: str
    capability: str
    decision: _common_pb2.Decision
    dry_run: bool
    path: DecisionPath
    reason: str
    reason_code: str
    retry_after_seconds: int
    risk: _common_pb2.RiskLevel
    def __init__(self, decision: _Optional[_Union[_common_pb2.Decision, str]] = ..., risk: _Optional[_Union[_common_pb2.RiskLevel, str]] = ..., reason: _Optional[str] = ..., approval_id: _Optional[str] = ..., binding_code: _Optional[str] = ..., approval_expires_at: _Optional[int] = ..., capability: _Optional[str] = ..., args_digest: _Optional[str] = ..., reason_code: _Optional[str] = ..., path: _Optional[_Union[DecisionPath, _Mapping]] = ..., dry_run: bool = ..., retry_after_seconds: _Optional[int] = ...) -> None: ...

class AwaitApprovalRequest(_message.Message):
    __slots__ = ["approval_id", "wait_ms"]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    wait_ms: int
    def __init__(self, approval_id: _Optional[str] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class AwaitApprovalResponse(_message.Message):
    __slots__ = ["binding_code", "expires_at", "reason", "state"]
    BINDING_CODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    binding_code: str
    expires_at: int
    reason: str
    state: _common_pb2.ApprovalState
    def __init__(self, state: _Optional[_Union[_common_pb2.ApprovalState, str]] = ..., reason: _Optional[str] = ..., binding_code: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class Claims(_message.Message):
    __slots__ = ["actors", "agent_id", "aud", "capabilities", "exp", "iat", "iss", "jti", "nbf", "sub"]
    ACTORS_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    AUD_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    EXP_FIELD_NUMBER: _ClassVar[int]
    IAT_FIELD_NUMBER: _ClassVar[int]
    ISS_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    NBF_FIELD_NUMBER: _ClassVar[int]
    SUB_FIELD_NUMBER: _ClassVar[int]
    actors: _containers.RepeatedScalarFieldContainer[str]
    agent_id: str
    aud: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    exp: int
    iat: int
    iss: str
    jti: str
    nbf: int
    sub: str
    def __init__(self, iss: _Optional[str] = ..., sub: _Optional[str] = ..., agent_id: _Optional[str] = ..., aud: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ..., iat: _Optional[int] = ..., nbf: _Optional[int] = ..., exp: _Optional[int] = ..., jti: _Optional[str] = ..., actors: _Optional[_Iterable[str]] = ...) -> None: ...

class DecisionPath(_message.Message):
    __slots__ = ["catalog_risk", "grant", "risk", "risk_source"]
    CATALOG_RISK_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    RISK_SOURCE_FIELD_NUMBER: _ClassVar[int]
    catalog_risk: _common_pb2.RiskLevel
    grant: str
    risk: _common_pb2.RiskLevel
    risk_source: str
    def __init__(self, grant: _Optional[str] = ..., risk: _Optional[_Union[_common_pb2.RiskLevel, str]] = ..., risk_source: _Optional[str] = ..., catalog_risk: _Optional[_Union[_common_pb2.RiskLevel, str]] = ...) -> None: ...

class Delegation(_message.Message):
    __slots__ = ["name", "parent_token"]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    parent_token: str
    def __init__(self, name: _Optional[str] = ..., parent_token: _Optional[str] = ...) -> None: ...

class HelloRequest(_message.Message):
    __slots__ = ["client"]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    client: str
    def __init__(self, client: _Optional[str] = ...) -> None: ...

class HelloResponse(_message.Message):
    __slots__ = ["caller", "protocol_version", "server_version"]
    CALLER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    caller: _common_pb2.Identity
    protocol_version: int
    server_version: str
    def __init__(self, server_version: _Optional[str] = ..., protocol_version: _Optional[int] = ..., caller: _Optional[_Union[_common_pb2.Identity, _Mapping]] = ...) -> None: ...

class IntrospectRequest(_message.Message):
    __slots__ = ["approval_id", "secret"]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    secret: str
    def __init__(self, secret: _Optional[str] = ..., approval_id: _Optional[str] = ...) -> None: ...

class IntrospectResponse(_message.Message):
    __slots__ = ["active", "agent", "agent_id", "approval_id", "binding_code", "decision", "expires_at", "lease_id", "path", "reason", "reason_code", "scope", "service"]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    BINDING_CODE_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    active: bool
    agent: str
    agent_id: str
    approval_id: str
    binding_code: str
    decision: _common_pb2.Decision
    expires_at: int
    lease_id: str
    path: DecisionPath
    reason: str
    reason_code: str
    scope: _containers.RepeatedScalarFieldContainer[str]
    service: str
    def __init__(self, active: bool = ..., agent: _Optional[str] = ..., agent_id: _Optional[str] = ..., service: _Optional[str] = ..., scope: _Optional[_Iterable[str]] = ..., expires_at: _Optional[int] = ..., lease_id: _Optional[str] = ..., decision: _Optional[_Union[_common_pb2.Decision, str]] = ..., reason: _Optional[str] = ..., approval_id: _Optional[str] = ..., binding_code: _Optional[str] = ..., reason_code: _Optional[str] = ..., path: _Optional[_Union[DecisionPath, _Mapping]] = ...) -> None: ...

class IssueIdentityRequest(_message.Message):
    __slots__ = ["audience", "capabilities", "delegation", "ttl_seconds"]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    audience: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    delegation: Delegation
    ttl_seconds: int
    def __init__(self, audience: _Optional[str] = ..., ttl_seconds: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., delegation: _Optional[_Union[Delegation, _Mapping]] = ...) -> None: ...

class IssueIdentityResponse(_message.Message):
    __slots__ = ["expires_at", "token"]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    expires_at: int
    token: str
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ["expires_at", "issued_at", "kind", "lease_id", "scope", "secret", "service"]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    expires_at: int
    issued_at: int
    kind: str
    lease_id: str
    scope: _containers.RepeatedScalarFieldContainer[str]
    secret: str
    service: str
    def __init__(self, lease_id: _Optional[str] = ..., service: _Optional[str] = ..., kind: _Optional[str] = ..., secret: _Optional[str] = ..., scope: _Optional[_Iterable[str]] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ...) -> None: ...

class LeaseInfo(_message.Message):
    __slots__ = ["agent", "agent_id", "expires_at", "issued_at", "kind", "lease_id", "scope", "service", "state"]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    agent: str
    agent_id: str
    expires_at: int
    issued_at: int
    kind: str
    lease_id: str
    scope: _containers.RepeatedScalarFieldContainer[str]
    service: str
    state: str
    def __init__(self, lease_id: _Optional[str] = ..., agent: _Optional[str] = ..., agent_id: _Optional[str] = ..., service: _Optional[str] = ..., kind: _Optional[str] = ..., scope: _Optional[_Iterable[str]] = ..., issued_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., state: _Optional[str] = ...) -> None: ...

class ListLeasesRequest(_message.Message):
    __slots__ = ["page_token", "service"]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    page_token: str
    service: str
    def __init__(self, service: _Optional[str] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLeasesResponse(_message.Message):
    __slots__ = ["leases", "next_page_token"]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseInfo]
    next_page_token: str
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class McpCredential(_message.Message):
    __slots__ = ["env", "file", "scope", "service", "ttl_seconds"]
    ENV_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    env: str
    file: str
    scope: _containers.RepeatedScalarFieldContainer[str]
    service: str
    ttl_seconds: int
    def __init__(self, env: _Optional[str] = ..., file: _Optional[str] = ..., service: _Optional[str] = ..., scope: _Optional[_Iterable[str]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class McpServerRequest(_message.Message):
    __slots__ = ["server", "tools"]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    server: str
    tools: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, server: _Optional[str] = ..., tools: _Optional[_Iterable[str]] = ...) -> None: ...

class McpServerResponse(_message.Message):
    __slots__ = ["credentials", "tools"]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    credentials: _containers.RepeatedCompositeFieldContainer[McpCredential]
    tools: _containers.RepeatedCompositeFieldContainer[McpTool]
    def __init__(self, tools: _Optional[_Iterable[_Union[McpTool, _Mapping]]] = ..., credentials: _Optional[_Iterable[_Union[McpCredential, _Mapping]]] = ...) -> None: ...

class McpTool(_message.Message):
    __slots__ = ["capability", "name", "risk", "visible"]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_FIELD_NUMBER: _ClassVar[int]
    capability: str
    name: str
    risk: _common_pb2.RiskLevel
    visible: bool
    def __init__(self, name: _Optional[str] = ..., capability: _Optional[str] = ..., risk: _Optional[_Union[_common_pb2.RiskLevel, str]] = ..., visible: bool = ...) -> None: ...

class ProvisionRequest(_message.Message):
    __slots__ = ["amount", "approval_id", "args", "bind_to_process", "resource", "scope", "service", "ttl_seconds"]
    class ArgsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    BIND_TO_PROCESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    amount: _common_pb2.Amount
    approval_id: str
    args: _containers.ScalarMap[str, str]
    bind_to_process: bool
    resource: str
    scope: _containers.RepeatedScalarFieldContainer[str]
    service: str
    ttl_seconds: int
    def __init__(self, service: _Optional[str] = ..., scope: _Optional[_Iterable[str]] = ..., ttl_seconds: _Optional[int] = ..., resource: _Optional[str] = ..., args: _Optional[_Mapping[str, str]] = ..., amount: _Optional[_Union[_common_pb2.Amount, _Mapping]] = ..., approval_id: _Optional[str] = ..., bind_to_process: bool = ...) -> None: ...

class ProvisionResponse(_message.Message):
    __slots__ = ["approval_id", "binding_code", "lease", "path", "reason_code", "retry_after_seconds"]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    BINDING_CODE_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    REASON_CODE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    binding_code: str
    lease: Lease
    path: DecisionPath
    reason_code: str
    retry_after_seconds: int
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., approval_id: _Optional[str] = ..., binding_code: _Optional[str] = ..., reason_code: _Optional[str] = ..., path: _Optional[_Union[DecisionPath, _Mapping]] = ..., retry_after_seconds: _Optional[int] = ...) -> None: ...

class Request(_message.Message):
    __slots__ = ["authorize", "await_approval", "hello", "id", "introspect", "issue_identity", "list_leases", "mcp_server", "provision", "revoke", "rotate", "validate_identity"]
    AUTHORIZE_FIELD_NUMBER: _ClassVar[int]
    AWAIT_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    INTROSPECT_FIELD_NUMBER: _ClassVar[int]
    ISSUE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    LIST_LEASES_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    PROVISION_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    ROTATE_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    authorize: AuthorizeRequest
    await_approval: AwaitApprovalRequest
    hello: HelloRequest
    id: int
    introspect: IntrospectRequest
    issue_identity: IssueIdentityRequest
    list_leases: ListLeasesRequest
    mcp_server: McpServerRequest
    provision: ProvisionRequest
    revoke: RevokeRequest
    rotate: RotateRequest
    validate_identity: ValidateIdentityRequest
    def __init__(self, id: _Optional[int] = ..., hello: _Optional[_Union[HelloRequest, _Mapping]] = ..., authorize: _Optional[_Union[AuthorizeRequest, _Mapping]] = ..., provision: _Optional[_Union[ProvisionRequest, _Mapping]] = ..., revoke: _Optional[_Union[RevokeRequest, _Mapping]] = ..., rotate: _Optional[_Union[RotateRequest, _Mapping]] = ..., await_approval: _Optional[_Union[AwaitApprovalRequest, _Mapping]] = ..., issue_identity: _Optional[_Union[IssueIdentityRequest, _Mapping]] = ..., validate_identity: _Optional[_Union[ValidateIdentityRequest, _Mapping]] = ..., introspect: _Optional[_Union[IntrospectRequest, _Mapping]] = ..., list_leases: _Optional[_Union[ListLeasesRequest, _Mapping]] = ..., mcp_server: _Optional[_Union[McpServerRequest, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ["authorize", "await_approval", "hello", "id", "introspect", "issue_identity", "list_leases", "mcp_server", "provision", "revoke", "rotate", "status", "validate_identity"]
    AUTHORIZE_FIELD_NUMBER: _ClassVar[int]
    AWAIT_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    INTROSPECT_FIELD_NUMBER: _ClassVar[int]
    ISSUE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    LIST_LEASES_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    PROVISION_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    ROTATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    authorize: AuthorizeResponse
    await_approval: AwaitApprovalResponse
    hello: HelloResponse
    id: int
    introspect: IntrospectResponse
    issue_identity: IssueIdentityResponse
    list_leases: ListLeasesResponse
    mcp_server: McpServerResponse
    provision: ProvisionResponse
    revoke: RevokeResponse
    rotate: RotateResponse
    status: _common_pb2.Status
    validate_identity: ValidateIdentityResponse
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[_common_pb2.Status, _Mapping]] = ..., hello: _Optional[_Union[HelloResponse, _Mapping]] = ..., authorize: _Optional[_Union[AuthorizeResponse, _Mapping]] = ..., provision: _Optional[_Union[ProvisionResponse, _Mapping]] = ..., revoke: _Optional[_Union[RevokeResponse, _Mapping]] = ..., rotate: _Optional[_Union[RotateResponse, _Mapping]] = ..., await_approval: _Optional[_Union[AwaitApprovalResponse, _Mapping]] = ..., issue_identity: _Optional[_Union[IssueIdentityResponse, _Mapping]] = ..., validate_identity: _Optional[_Union[ValidateIdentityResponse, _Mapping]] = ..., introspect: _Optional[_Union[IntrospectResponse, _Mapping]] = ..., list_leases: _Optional[_Union[ListLeasesResponse, _Mapping]] = ..., mcp_server: _Optional[_Union[McpServerResponse, _Mapping]] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ["lease_id"]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ["revoked"]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: bool = ...) -> None: ...

class RotateRequest(_message.Message):
    __slots__ = ["service"]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class RotateResponse(_message.Message):
    __slots__ = ["revoked_leases", "version"]
    REVOKED_LEASES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    revoked_leases: int
    version: int
    def __init__(self, version: _Optional[int] = ..., revoked_leases: _Optional[int] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ["arguments_json", "server", "tool"]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    arguments_json: str
    server: str
    tool: str
    def __init__(self, server: _Optional[str] = ..., tool: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ValidateIdentityRequest(_message.Message):
    __slots__ = ["audience", "token"]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    audience: str
    token: str
    def __init__(self, token: _Optional[str] = ..., audience: _Optional[str] = ...) -> None: ...

class ValidateIdentityResponse(_message.Message):
    __slots__ = ["claims", "failed_check", "valid"]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    FAILED_CHECK_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    claims: Claims
    failed_check: str
    valid: bool
    def __init__(self, valid: bool = ..., failed_check: _Optional[str] = ..., claims: _Optional[_Union[Claims, _Mapping]] = ...) -> None: ...

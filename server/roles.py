"""Who may call what: the one table of roles, a role per RPC, checked for every call by server/calls.py.

A caller (an identity in the identities file, a JWT's subject, a client certificate's name) holds
roles; a method needs one role, or none (health checks, which load balancers make without
credentials). A method missing from the table is refused to everyone: a new RPC is closed until it is
given a role here (tests/test_auth.py walks every service's descriptor to keep the table whole).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from tollgate.api.v1 import admin_pb2, audit_pb2, exceptions_pb2, refdata_pb2, validation_pb2


class Role(StrEnum):
    CALLER = "caller"  # sends items to be decided: PSA approval flows, middleware
    READER = "reader"  # reads the reference data's status and diffs (and reflection, with auth on)
    OPERATOR = "operator"  # loads and changes reference data, reloads the service
    AUDITOR = "auditor"  # reads the decision ledger and the exceptions
    AUTHOR = "author"  # proposes ruleset changes
    APPROVER = "approver"  # approves ruleset changes, waives exceptions


OPEN = None  # a method anyone may call, without credentials


def _method(service: str, name: str) -> str:
    return f"/{service}/{name}"


_VALIDATION = validation_pb2.DESCRIPTOR.services_by_name["ValidationService"].full_name
_REFDATA = refdata_pb2.DESCRIPTOR.services_by_name["ReferenceDataService"].full_name
_ADMIN = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
_AUDIT = audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
_EXCEPTIONS = exceptions_pb2.DESCRIPTOR.services_by_name["ExceptionService"].full_name
_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

METHOD_ROLES: Mapping[str, Role | None] = {
    _method(_VALIDATION, "ValidateTimeEntries"): Role.CALLER,
    _method(_VALIDATION, "StreamTimeEntries"): Role.CALLER,
    _method(_VALIDATION, "ValidateExpenseLines"): Role.CALLER,
    _method(_VALIDATION, "StreamExpenseLines"): Role.CALLER,
    _method(_VALIDATION, "ValidateInvoices"): Role.CALLER,
    _method(_VALIDATION, "StreamInvoices"): Role.CALLER,
    _method(_REFDATA, "Load"): Role.OPERATOR,
    _method(_REFDATA, "Upsert"): Role.OPERATOR,
    _method(_REFDATA, "Delete"): Role.OPERATOR,
    _method(_REFDATA, "Status"): Role.READER,
    _method(_REFDATA, "Diff"): Role.READER,
    _method(_ADMIN, "Reload"): Role.OPERATOR,
    _method(_AUDIT, "ItemHistory"): Role.AUDITOR,
    _method(_AUDIT, "GetBatch"): Role.AUDITOR,
    _method(_AUDIT, "Export"): Role.AUDITOR,
    _method(_AUDIT, "Replay"): Role.AUDITOR,
    _method(_AUDIT, "Purge"): Role.OPERATOR,
    _method(_EXCEPTIONS, "List"): Role.AUDITOR,
    _method(_EXCEPTIONS, "Get"): Role.AUDITOR,
    _method(_EXCEPTIONS, "Summary"): Role.AUDITOR,
    _method(_EXCEPTIONS, "Waive"): Role.APPROVER,
    _method(_EXCEPTIONS, "Revalidate"): Role.OPERATOR,
    _method(_HEALTH, "Check"): OPEN,
    _method(_HEALTH, "List"): OPEN,
    _method(_HEALTH, "Watch"): OPEN,
    # Lists every service and message type: served only when asked for while authenticating (settings.reflection).
    _method(reflection.SERVICE_NAME, "ServerReflectionInfo"): Role.READER,
}

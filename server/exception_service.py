"""The ExceptionService servicer: the exception queue (ledger/exceptions.py) over gRPC.

Reads and waivers run in the load pool; Revalidate rebuilds each open exception's latest recorded input into
the request it came in (invoice lines regrouped into their invoices), and decides it through the
ValidationService's own path, chunk by chunk in the deciding pool, so the re-decisions are recorded like any
call and that recording resolves the exceptions that now pass. Served with the ledger on; with it off,
:class:`LedgerOffExceptionService` answers FAILED_PRECONDITION.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tollgate.api.v1 import exceptions_pb2 as pb
from tollgate.api.v1 import exceptions_pb2_grpc as pb_grpc
from tollgate.api.v1 import validation_pb2
from tollgate.ledger import exceptions as queue
from tollgate.rules.item_kinds import EXPENSE_LINE, INVOICE_LINE, TIME_ENTRY
from tollgate.server.authentication import current_caller
from tollgate.server.calls import CallError, bad_request, failure, off_loop
from tollgate.server.codec import SEVERITIES
from tollgate.server.validation_service import LEDGER_UNAVAILABLE, ValidationService

DEFAULT_PAGE_SIZE, LARGEST_PAGE_SIZE = 50, 1000
LONGEST_WAIVE_REASON = 1000
LONGEST_FILTER_VALUE = 256
EXCEPTION_NOT_FOUND, EXCEPTION_NOT_OPEN, LEDGER_OFF = "EXCEPTION_NOT_FOUND", "EXCEPTION_NOT_OPEN", "LEDGER_OFF"
_CODE = re.compile(r"[\x21-\x7e]{1,128}")  # codes and rule ids: printable ASCII, no spaces (NO_ASSIGNMENT, BE-4.dates)
_EXCEPTION_ID = re.compile(r"[0-9]{1,18}")
# Unicode categories refused in free text: controls, format characters (bidi overrides), line/paragraph separators.
_UNPRINTABLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_SEVERITIES = {severity.value: wire for severity, wire in SEVERITIES.items()}

T = TypeVar("T")
M = TypeVar("M", bound=Message)


def _printable(text: str) -> bool:
    return not any(unicodedata.category(character) in _UNPRINTABLE for character in text)


def _since(text: str) -> datetime:
    """An ISO date (its UTC midnight) or an RFC 3339 datetime with its offset."""
    if len(text) <= 10:
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("no offset")
    return moment


def read_filter(message: pb.ExceptionFilter, *, revalidating: bool = False) -> queue.Filter:
    """The filter of a request, each field checked: a bad one is INVALID_ARGUMENT naming ``filter.FIELD``."""
    violations: list[tuple[str, str]] = []
    for name in ("code", "rule_id"):
        value = getattr(message, name)
        if value and not _CODE.fullmatch(value):
            violations.append((f"filter.{name}", "1 to 128 printable ASCII characters without spaces"))
    for name in ("project_id", "customer_id", "worker_id"):
        value = getattr(message, name)
        if len(value) > LONGEST_FILTER_VALUE or not _printable(value):
            violations.append((f"filter.{name}", f"at most {LONGEST_FILTER_VALUE} characters, no control characters"))
    allowed = (queue.OPEN,) if revalidating else queue.STATUSES
    if message.status and message.status not in allowed:
        violations.append(("filter.status", f"{message.status[:40]!r} is not one of {', '.join(allowed)}"
                           + (" (only open exceptions are revalidated)" if revalidating else "")))
    since = None
    if message.since:
        try:
            since = _since(message.since)
        except ValueError:
            violations.append(("filter.since", f"{message.since[:40]!r} is not an ISO date (2026-11-01) or an "
                                               "RFC 3339 datetime with its offset (2026-11-01T09:00:00Z)"))
    if violations:
        raise bad_request("the filter is not one this server takes: "
                          + "; ".join(f"{field}: {why}" for field, why in violations), violations)
    return queue.Filter(code=message.code, rule_id=message.rule_id, project_id=message.project_id,
                        customer_id=message.customer_id, worker_id=message.worker_id, since=since,
                        status=queue.OPEN if revalidating else message.status)


def _filter_digest(which: queue.Filter) -> str:
    """Ties a page token to its filter (AIP-158: the next page is asked for with the same filter)."""
    since = which.since.isoformat() if which.since is not None else ""
    key = "\x1f".join((which.code, which.rule_id, which.project_id, which.customer_id, which.worker_id, since,
                       which.status))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def page_token(after: int, which: queue.Filter) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": after, "filter": _filter_digest(which)}).encode()).decode()


def read_page_token(token: str, which: queue.Filter) -> int:
    """The id a page token continues after; a token not made by this server, or for another filter, is refused."""
    if not token:
        return 0
    try:
        document = json.loads(base64.urlsafe_b64decode(token.encode("ascii", "strict")))
        after = document["after"]
        if not isinstance(after, int) or isinstance(after, bool) or after < 0 or document["filter"] != \
                _filter_digest(which):
            raise ValueError("not this filter's")
    except (ValueError, KeyError, TypeError, UnicodeError, binascii.Error):
        raise bad_request("page_token is not one this server gave for this filter: send the next_page_token of "
                          "the previous page with the same filter, or none for the first page",
                          [("page_token", "not a next_page_token of this filter")]) from None
    return after


def read_exception_id(text: str) -> int:
    if not _EXCEPTION_ID.fullmatch(text):
        raise bad_request(f"exception_id {text[:40]!r} is not an exception id (its digits, as List shows it)",
                          [("exception_id", "1 to 18 digits")])
    return int(text)


def read_waive_reason(text: str) -> str:
    reason = text.strip()
    if not reason or len(reason) > LONGEST_WAIVE_REASON or not _printable(reason):
        raise bad_request(f"a waiver needs a reason of 1 to {LONGEST_WAIVE_REASON} characters without control "
                          f"characters (got {len(reason)} characters)",
                          [("reason", f"required: 1 to {LONGEST_WAIVE_REASON} characters, no control characters")])
    return reason


def _moment(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def exception_message(found: dict[str, Any]) -> pb.ItemException:
    message = pb.ItemException(
        exception_id=str(found["exception_id"]), item_kind=found["item_kind"], item_id=found["item_id"],
        status=found["status"], outcome=found["outcome"], codes=found["codes"], rule_ids=found["rule_ids"],
        first_seen=_moment(found["first_seen"]), last_seen=_moment(found["last_seen"]),
        times_seen=found["times_seen"], batch_id=found["batch_id"], position=found["position"],
        project_id=found["project_id"] or "", customer_id=found["customer_id"] or "",
        worker_id=found["worker_id"] or "", resolved_at=_moment(found["resolved_at"]),
        resolved_batch_id=found["resolved_batch_id"] or "", resolved_position=found["resolved_position"] or 0,
        waived_by=found["waived_by"] or "", waived_at=_moment(found["waived_at"]),
        waive_reason=found["waive_reason"] or "")
    for reason in found["reasons"]:
        message.reasons.add(rule_id=reason["rule_id"], code=reason["code"], message=reason["message"],
                            severity=_SEVERITIES.get(reason["severity"], validation_pb2.SEVERITY_UNSPECIFIED),
                            field=reason["field"] or "", ruleset_id=reason["ruleset_id"] or "")
    if "input" in found:
        message.input_json = json.dumps(found["input"], ensure_ascii=False)
    return message


def _parsed(fields: dict[str, Any], message: M) -> M:
    json_format.ParseDict(fields, message, ignore_unknown_fields=True)
    return message


def revalidation_requests(found: Sequence[tuple[int, str, dict[str, Any]]]) -> tuple[list[tuple[str, Any]], list[int],
                                                                                  int]:
    """One request per item kind re-deciding ``found`` (open exceptions' latest inputs; invoice lines regrouped
    into their invoices, under the header recorded with the first of them); with the exception ids rebuilt, and
    how many inputs no longer make an item (left out: each costs only itself)."""
    entries: list[Any] = []
    lines: list[Any] = []
    invoices: dict[str, Any] = {}
    rebuilt: list[int] = []
    not_rebuilt = 0
    for exception_id, kind, fields in found:
        try:
            if kind == INVOICE_LINE.name:
                header = dict(fields.pop("invoice"))
                invoice = invoices.get(header.get("invoice_id", ""))
                if invoice is None:
                    invoice = invoices[header.get("invoice_id", "")] = _parsed(header, validation_pb2.Invoice())
                invoice.lines.append(_parsed(fields, validation_pb2.InvoiceLine()))
            elif kind == TIME_ENTRY.name:
                entries.append(_parsed(fields, validation_pb2.TimeEntry()))
            else:
                lines.append(_parsed(fields, validation_pb2.ExpenseLine()))
        except (json_format.ParseError, KeyError, TypeError, ValueError, AttributeError):
            not_rebuilt += 1
            continue
        rebuilt.append(exception_id)
    requests: list[tuple[str, Any]] = []
    if entries:
        requests.append((TIME_ENTRY.name, validation_pb2.ValidateTimeEntriesRequest(entries=entries)))
    if lines:
        requests.append((EXPENSE_LINE.name, validation_pb2.ValidateExpenseLinesRequest(lines=lines)))
    if invoices:
        requests.append((INVOICE_LINE.name, validation_pb2.ValidateInvoicesRequest(invoices=invoices.values())))
    return requests, rebuilt, not_rebuilt


class ExceptionService(pb_grpc.ExceptionServiceServicer):
    def __init__(self, engine: Engine, validation: ValidationService, reads: Executor, max_items: int) -> None:
        self.engine = engine
        self.validation = validation
        self.reads = reads
        self.max_items = max_items

    async def _read(self, function: Callable[..., T], *args: Any) -> T:
        """``function(self.engine, *args)`` in the load pool; a database that cannot be read is UNAVAILABLE."""
        try:
            return await off_loop(self.reads, function, self.engine, *args)
        except SQLAlchemyError as error:
            raise failure(grpc.StatusCode.UNAVAILABLE, "the decision ledger cannot be read now; retry later",
                          LEDGER_UNAVAILABLE, error_type=type(error).__name__) from error

    async def List(  # noqa: N802 - gRPC method name
        self, request: pb.ListExceptionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListExceptionsResponse:
        which = read_filter(request.filter)
        if request.page_size < 0:
            raise bad_request(f"page_size {request.page_size} is negative",
                              [("page_size", "0 (the default, 50) or more")])
        size = min(request.page_size or DEFAULT_PAGE_SIZE, LARGEST_PAGE_SIZE)
        after = read_page_token(request.page_token, which)
        found = await self._read(queue.list_exceptions, which, after, size + 1)
        response = pb.ListExceptionsResponse(exceptions=[exception_message(f) for f in found[:size]])
        if len(found) > size:
            response.next_page_token = page_token(found[size - 1]["exception_id"], which)
        return response

    async def Get(  # noqa: N802 - gRPC method name
        self, request: pb.GetExceptionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ItemException:
        exception_id = read_exception_id(request.exception_id)
        found = await self._read(queue.get_exception, exception_id)
        if found is None:
            raise _not_found(exception_id)
        return exception_message(found)

    async def Summary(  # noqa: N802 - gRPC method name
        self, request: pb.SummaryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SummaryResponse:
        counted = await self._read(queue.summary)
        response = pb.SummaryResponse(open_by_code=counted.open_by_code(), total_open=counted.total_open)
        for group in counted.groups:
            response.groups.add(code=group.code, project_id=group.project_id or "",
                                customer_id=group.customer_id or "", worker_id=group.worker_id or "", open=group.open)
        if counted.oldest_open is not None:
            exception_id, first_seen = counted.oldest_open
            response.oldest_open_exception_id = str(exception_id)
            response.oldest_open_first_seen = first_seen.isoformat()
            response.oldest_open_age_seconds = (datetime.now(UTC) - first_seen).total_seconds()
        return response

    async def Waive(  # noqa: N802 - gRPC method name
        self, request: pb.WaiveRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ItemException:
        exception_id = read_exception_id(request.exception_id)
        reason = read_waive_reason(request.reason)
        try:
            found = await self._read(queue.waive, exception_id, current_caller.get().name, reason, datetime.now(UTC))
        except queue.WaiveRefusedError as refused:
            state = refused.found
            raise failure(grpc.StatusCode.FAILED_PRECONDITION,
                          f"exception {exception_id} is {state['status']}, not open: only an open exception is "
                          "waived" + (f" (waived by {state['waived_by']})" if state["waived_by"] else ""),
                          EXCEPTION_NOT_OPEN, exception_id=str(exception_id), status=state["status"]) from None
        if found is None:
            raise _not_found(exception_id)
        return exception_message(found)

    async def Revalidate(  # noqa: N802 - gRPC method name
        self, request: pb.RevalidateRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RevalidateResponse:
        which = read_filter(request.filter, revalidating=True)
        deciding = {TIME_ENTRY.name: self.validation.time_entries, EXPENSE_LINE.name: self.validation.expense_lines,
                    INVOICE_LINE.name: self.validation.invoices}
        response = pb.RevalidateResponse()
        rebuilt: list[int] = []
        request_ids = f"revalidate-{uuid.uuid4()}"
        after = 0
        # A page of at most max_batch_items open exceptions at a time, by id: memory stays bounded, and those
        # re-decided and still open (ids up to ``after``) are not met again.
        while found := await self._read(queue.open_inputs, which, after, self.max_items):
            after = found[-1][0]
            requests, page_rebuilt, page_not_rebuilt = revalidation_requests(found)
            rebuilt += page_rebuilt
            response.not_rebuilt += page_not_rebuilt
            for kind, decide_request in requests:
                decide_request.request_id = f"{request_ids}-{len(response.batch_ids)}"
                # Each with the generation current then, as a stream's chunks are decided.
                decided = await off_loop(self.validation.deciding, self.validation.decide_in_thread, deciding[kind],
                                         decide_request, None, None, f"revalidation {len(response.batch_ids) + 1}: ",
                                         datetime.now(UTC))
                response.batch_ids.append(decided.batch_id)
        now = await self._read(queue.statuses, rebuilt)
        response.re_decided, response.resolved, response.still_open = len(rebuilt), now[queue.RESOLVED], now[queue.OPEN]
        return response


def _not_found(exception_id: int) -> CallError:
    return failure(grpc.StatusCode.NOT_FOUND, f"no exception {exception_id} in the queue (tollgate exceptions list)",
                   EXCEPTION_NOT_FOUND, exception_id=str(exception_id))


class LedgerOffExceptionService(pb_grpc.ExceptionServiceServicer):
    """Served with the ledger off: every method says why there is no queue (rather than UNIMPLEMENTED)."""

    async def _ledger_off(self, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        raise failure(grpc.StatusCode.FAILED_PRECONDITION,
                      "the decision ledger is off (--ledger false), so there is no exception queue: rejected and "
                      "held items are queued only while they are recorded", LEDGER_OFF)

    List = Get = Summary = Waive = Revalidate = _ledger_off

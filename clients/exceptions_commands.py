"""``tollgate exceptions``: the exception queue of a running server (ExceptionService; the ledger must be on).

    tollgate exceptions list [--code C] [--rule R] [--project P] [--customer C] [--worker W] [--since DATE]
                             [--status open|resolved|waived|any] [--format table|json]
    tollgate exceptions show ID [--format table|json]
    tollgate exceptions summary [--format table|json]
    tollgate exceptions waive ID --reason TEXT
    tollgate exceptions revalidate [the filters of list]

A data steward's round: ``summary`` (what fails most, where), fix the reference data, ``tollgate refdata load``,
then ``revalidate``: the items that now pass are resolved.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from google.protobuf import json_format

from tollgate.api.v1 import exceptions_pb2, validation_pb2
from tollgate.clients.client import ExceptionClient
from tollgate.clients.command_support import EXIT_OK, print_json, report_refusal, security

_FILTERS = (("code", "code"), ("rule", "rule_id"), ("project", "project_id"), ("customer", "customer_id"),
            ("worker", "worker_id"), ("since", "since"))


def _client(args: argparse.Namespace) -> ExceptionClient:
    return ExceptionClient(args.server, timeout=args.timeout, security=security(args))


def _filters(args: argparse.Namespace) -> dict[str, str]:
    filters = {field: getattr(args, flag) for flag, field in _FILTERS if getattr(args, flag)}
    status = getattr(args, "status", "any")
    if status != "any":
        filters["status"] = status
    return filters


def _refused(command: str, error: grpc.RpcError) -> int:
    return report_refusal(f"tollgate exceptions {command}", error,
                          failed=frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}))


def _document(message: Any) -> dict[str, Any]:
    document: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return document


def _row(found: exceptions_pb2.ItemException) -> list[str]:
    return [found.exception_id, found.status, found.outcome, found.item_kind, found.item_id, ",".join(found.codes),
            found.project_id or "-", found.customer_id or "-", found.worker_id or "-", str(found.times_seen),
            found.last_seen]


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def cmd_list(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            found = list(client.list_all(page_size=args.page_size, **_filters(args)))
    except grpc.RpcError as error:
        return _refused("list", error)
    if args.format == "json":
        print_json([_document(f) for f in found])
        return EXIT_OK
    _print_table(["ID", "STATUS", "OUTCOME", "KIND", "ITEM", "CODES", "PROJECT", "CUSTOMER", "WORKER", "SEEN",
                  "LAST SEEN"], [_row(f) for f in found])
    print(f"\n{len(found)} exception(s)")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            found = client.get(args.exception_id)
    except grpc.RpcError as error:
        return _refused("show", error)
    if args.format == "json":
        document = _document(found)
        document["input"] = json.loads(document.pop("input_json", "null"))
        print_json(document)
        return EXIT_OK
    print(f"exception {found.exception_id}: {found.item_kind} {found.item_id}, {found.status} ({found.outcome})")
    print(f"  seen {found.times_seen} time(s): first {found.first_seen}, last {found.last_seen}")
    print(f"  latest decision: batch {found.batch_id}, position {found.position} (tollgate audit batch "
          f"{found.batch_id})")
    print(f"  project {found.project_id or '-'}; customer {found.customer_id or '-'}; worker {found.worker_id or '-'}")
    for reason in found.reasons:
        severity = validation_pb2.Severity.Name(reason.severity).lower()
        print(f"  {severity} {reason.code} [{reason.rule_id}]: {reason.message}")
    if found.resolved_at:
        print(f"  resolved {found.resolved_at} by the decision at batch {found.resolved_batch_id}, position "
              f"{found.resolved_position}")
    if found.waived_at:
        print(f"  waived {found.waived_at} by {found.waived_by}: {found.waive_reason}")
    print(f"  input {found.input_json}")
    return EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            counted = client.summary()
    except grpc.RpcError as error:
        return _refused("summary", error)
    if args.format == "json":
        print_json(_document(counted))
        return EXIT_OK
    _print_table(["CODE", "PROJECT", "CUSTOMER", "WORKER", "OPEN"],
                 [[g.code, g.project_id or "-", g.customer_id or "-", g.worker_id or "-", str(g.open)]
                  for g in counted.groups])
    print(f"\n{counted.total_open} open exception(s)")
    for code, count in sorted(counted.open_by_code.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {code}: {count}")
    if counted.oldest_open_exception_id:
        print(f"oldest open: exception {counted.oldest_open_exception_id}, first seen {counted.oldest_open_first_seen}"
              f" ({counted.oldest_open_age_seconds / 3600:.1f} h ago)")
    return EXIT_OK


def cmd_waive(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            waived = client.waive(args.exception_id, args.reason)
    except grpc.RpcError as error:
        return _refused("waive", error)
    print(f"exception {waived.exception_id} ({waived.item_kind} {waived.item_id}) waived by {waived.waived_by} at "
          f"{waived.waived_at}: {waived.waive_reason}")
    return EXIT_OK


def cmd_revalidate(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            answer = client.revalidate(**_filters(args))
    except grpc.RpcError as error:
        return _refused("revalidate", error)
    print(f"{answer.re_decided} re-decided: {answer.resolved} resolved, {answer.still_open} still open")
    if answer.not_rebuilt:
        print(f"{answer.not_rebuilt} recorded input(s) no longer make an item: left open", file=sys.stderr)
    for batch_id in answer.batch_ids:
        print(f"  batch {batch_id}")
    return EXIT_OK


def add_exceptions_commands(commands: Any) -> None:
    from tollgate.clients.cli import add_connection_flags  # here: cli imports this module

    queue = commands.add_parser("exceptions", help="the queue of rejected and held items (the ledger must be on)")
    sub = queue.add_subparsers(dest="exceptions_command", required=True)

    def command(name: str, help_text: str, handler: Any, *, filters: bool = False,
                formats: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        add_connection_flags(parser, timeout=60.0 if name != "revalidate" else 600.0)
        if filters:
            parser.add_argument("--code", help="a reason code the exception has (NO_ASSIGNMENT)")
            parser.add_argument("--rule", help="a rule id among its reasons (BE-4)")
            parser.add_argument("--project", help="project id")
            parser.add_argument("--customer", help="customer id")
            parser.add_argument("--worker", help="worker id")
            parser.add_argument("--since", help="last seen at or after: ISO date or RFC 3339 datetime")
        if formats:
            parser.add_argument("--format", choices=["table", "json"], default="table")
        parser.set_defaults(handler=handler)
        return parser

    listing = command("list", "exceptions matching the filters (default: open ones), oldest opened first", cmd_list,
                      filters=True)
    listing.add_argument("--status", choices=["open", "resolved", "waived", "any"], default="open")
    listing.add_argument("--page-size", type=int, default=500, help="exceptions per call (default %(default)s)")
    show = command("show", "one exception: its reasons, history and latest recorded input", cmd_show)
    show.add_argument("exception_id", metavar="ID")
    command("summary", "open exceptions by code x project x customer x worker, and the oldest open", cmd_summary)
    waive = command("waive", "waive an open exception (the approver role)", cmd_waive, formats=False)
    waive.add_argument("exception_id", metavar="ID")
    waive.add_argument("--reason", required=True, help="why it may stand as it is (1 to 1000 characters)")
    command("revalidate", "re-decide the open exceptions matching the filters with the current rules and data "
            "(the operator role)", cmd_revalidate, filters=True, formats=False)

"""The ``tollgate`` command line.

    tollgate serve [--host H] [--port P] [--rulesets DIR] [--refdata DIR] ... (every setting; see --help)
    tollgate validate FILE.csv|FILE.jsonl [--kind time_entry|expense_line|invoice] [--server HOST:PORT]
                      [--format table|json] [--all-or-nothing] [--fail-on-reject]
                      [--request-id ID] [--retries N] [--retry-max-backoff SECONDS]
    tollgate rules lint [DIR]
    tollgate rules test [DIR]
    tollgate refdata load DIR [--partial] [--keep-missing] [--allow-emptying] [--source TEXT] [--server HOST:PORT]
    tollgate refdata upsert ENTITY FILE.csv|FILE.jsonl [--server HOST:PORT]
    tollgate refdata delete ENTITY KEY... [--server HOST:PORT]        (KEY: P-300, or P-100/T-1)
    tollgate refdata status [--format table|json] [--server HOST:PORT]
    tollgate refdata diff SNAP_A SNAP_B [--format table|json] [--server HOST:PORT]
    tollgate exceptions list|show|summary|waive|revalidate ...   (clients/exceptions_commands.py)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from tollgate.clients.audit_commands import add_audit_commands
from tollgate.clients.auth_commands import add_auth_commands
from tollgate.clients.channel import ChannelSecurityError
from tollgate.clients.client import (
    AdminClient,
    ExportDirectoryError,
    ItemError,
    RefDataClient,
    RequestIdError,
    ValidationClient,
    ValidationResult,
    check_request_id,
)
from tollgate.clients.command_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, field_violations, security
from tollgate.clients.exceptions_commands import add_exceptions_commands
from tollgate.clients.retries import LONGEST_BACKOFF_SECONDS, MOST_ATTEMPTS, RequestIdReusedError, RetryPolicy
from tollgate.refdata.loaders import BadLine, json_lines
from tollgate.rules.decisions import Decision, Outcome
from tollgate.rules.problems import Problem, ProblemsError

EXIT_BROKEN_PIPE = 128 + 13  # as the shell reports a command ended by SIGPIPE
CUSTOM_PREFIX = "custom."


def _bundled_relative(path: Path) -> Path:
    # Shown relative to where the user stands, so problems read rulesets/...:12 rather than a long path.
    return Path(os.path.relpath(path)) if path.is_relative_to(Path.cwd()) else path


def _bundled_rulesets() -> Path:
    from tollgate.server.settings import BUNDLED_RULESETS

    return _bundled_relative(BUNDLED_RULESETS)


# ---------------------------------------------------------------------------------------------------
# Reading items


def read_items(path: Path) -> list[dict[str, Any]]:
    """Items from a CSV file (one column per field, ``custom.<name>`` for custom attributes) or JSON Lines."""
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            items = []
            for row in csv.DictReader(handle):
                item: dict[str, Any] = {}
                for column, value in row.items():
                    if column is None or value in ("", None):
                        continue
                    if column.startswith(CUSTOM_PREFIX):
                        item.setdefault("custom", {})[column.removeprefix(CUSTOM_PREFIX)] = value
                    else:
                        item[column] = value
                items.append(item)
            return items
    if path.suffix in (".jsonl", ".ndjson"):
        items = []
        for number, value in json_lines(path):
            if isinstance(value, BadLine):
                raise ValueError(f"{path}:{number}: {value.reason}")
            items.append(value)
        return items
    raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .jsonl)")


KIND_ID_FIELDS = {"time_entry": "entry_id", "expense_line": "expense_id", "invoice": "invoice_id"}
# Invoices are sent whole; their lines are the items decided, as rulesets name them (applies_to: invoice_line).
KIND_ALIASES = {"invoice_line": "invoice"}


def detect_kind(path: Path, items: Sequence[dict[str, Any]]) -> str:
    """The item kind of a file, from the id field its items carry (entry_id, expense_id, invoice_id)."""
    for kind, id_field in KIND_ID_FIELDS.items():
        if items and all(id_field in item for item in items):
            return kind
    raise ValueError(f"{path}: cannot tell the item kind (no entry_id, expense_id or invoice_id in every item); "
                     "say it with --kind")


def invoices_of(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Invoices from a file: JSON Lines of whole invoices (header fields and ``lines``) pass as they are;
    flat rows (one per line, header fields repeated, as in CSV) are gathered by invoice_id, in order."""
    from tollgate.clients.client import INVOICE_HEADER_FIELDS

    invoices: dict[Any, dict[str, Any]] = {}
    for position, item in enumerate(items, start=1):
        if "lines" in item:
            invoices[("whole", position)] = item
            continue
        header = {k: v for k, v in item.items() if k in INVOICE_HEADER_FIELDS}
        line = {k: v for k, v in item.items() if k not in INVOICE_HEADER_FIELDS}
        invoice = invoices.setdefault(("rows", item.get("invoice_id")), {**header, "lines": []})
        invoice["lines"].append(line)
    return list(invoices.values())


# ---------------------------------------------------------------------------------------------------
# Printing decisions


def _decision_json(decision: Decision) -> dict[str, Any]:
    return {
        "item_id": decision.item_id,
        "outcome": decision.outcome.value,
        "reasons": [
            {"rule_id": r.rule_id, "code": r.code, "severity": r.severity.value, "field": r.field,
             "message": r.message, "ruleset_id": r.ruleset_id}
            for r in decision.reasons
        ],
        "enrichments": [
            {"field": e.field, "old_value": e.old_value, "new_value": e.new_value, "rule_id": e.rule_id}
            for e in decision.enrichments
        ],
    }


def print_json(result: ValidationResult, out: TextIO, group_name: str = "timesheet") -> None:
    provenance = result.decisions[0].provenance if result.decisions else None
    document = {
        "decisions": [_decision_json(d) for d in result.decisions],
        "summary": {
            "total": result.summary.total,
            "accepted": result.summary.accepted,
            "enriched": result.summary.enriched,
            "rejected": result.summary.rejected,
            "by_reason_code": result.summary.by_reason_code,
        },
        "rollups": [
            {"group_id": r.group_id, "outcome": r.outcome.value, "total": r.total, "accepted": r.accepted,
             "enriched": r.enriched, "rejected": r.rejected, "rejected_items": list(r.rejected_items)}
            for r in result.rollups
        ],
        "batch_ids": result.batch_ids,  # the ledger's, of each call or stream chunk
        "request_ids": result.request_ids,  # of each call or stream chunk, as sent (--request-id, else UUIDs)
        "provenance": None if provenance is None else {
            "rulesets": [{"id": r.id, "version": r.version} for r in provenance.rulesets],
            "snapshot_id": provenance.snapshot_id,
            "engine_version": provenance.engine_version,
            "correlation_id": provenance.correlation_id,
        },
    }
    json.dump(document, out, indent=2)
    out.write("\n")


def print_table(result: ValidationResult, out: TextIO, group_name: str = "timesheet") -> None:
    width = max([len("ITEM"), *(len(d.item_id) for d in result.decisions)])
    out.write(f"{'ITEM':<{width}}  {'OUTCOME':<7}  DETAIL\n")
    for decision in result.decisions:
        lines = [
            f"{e.field}: {e.old_value or '(none)'} -> {e.new_value or '(none)'}  [{e.rule_id}]"
            for e in decision.enrichments
        ]
        lines += [f"{r.severity.value} {r.code} [{r.rule_id}]: {r.message}" for r in decision.reasons]
        first, *rest = lines or [""]
        out.write(f"{decision.item_id:<{width}}  {decision.outcome.value:<7}  {first}\n".rstrip() + "\n")
        for line in rest:
            out.write(f"{'':<{width}}  {'':<7}  {line}\n")
    if result.rollups:
        heading = group_name.upper()
        group_width = max([len(heading), *(len(r.group_id) for r in result.rollups)])
        out.write(f"\n{heading:<{group_width}}  OUTCOME  LINES\n")
        for rollup in result.rollups:
            failing = f"; rejected: {', '.join(rollup.rejected_items)}" if rollup.rejected_items else ""
            counts = f"{rollup.accepted} accepted, {rollup.enriched} enriched, {rollup.rejected} rejected"
            out.write(f"{rollup.group_id:<{group_width}}  {rollup.outcome.value:<7}  {rollup.total} "
                      f"({counts}{failing})\n")
    summary = result.summary
    out.write(f"\n{summary.total} items: {summary.accepted} accepted, {summary.enriched} enriched, "
              f"{summary.rejected} rejected\n")
    if result.decisions and result.decisions[0].provenance:
        provenance = result.decisions[0].provenance
        rulesets = ", ".join(f"{r.id}@{r.version}" for r in provenance.rulesets)
        out.write(f"rulesets {rulesets}; reference snapshot {provenance.snapshot_id}; "
                  f"engine {provenance.engine_version}; correlation id {provenance.correlation_id}\n")


# ---------------------------------------------------------------------------------------------------
# Commands


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tollgate.server.app import run
    from tollgate.server.settings import Settings

    given = vars(args).items()
    overrides = {name: value for name, value in given if name in Settings.model_fields and value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        for problem in error.errors():
            name = str(problem["loc"][0]) if problem["loc"] else ""
            where = f"--{name.replace('_', '-')}" if name in overrides else f"TOLLGATE_{name.upper()}"
            print(f"tollgate serve: {where}: {problem['msg']} (got {problem['input']!r})", file=sys.stderr)
        return EXIT_USAGE
    return run(settings)


def _add_settings_flags(serve: argparse.ArgumentParser) -> None:
    """A flag for every setting, with the setting's own description as help: the two cannot drift.

    Values go to the settings model as text and are checked there, as the same setting from the
    environment would be."""
    import typing

    from tollgate.server.settings import Settings

    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("supervisor_only"):
            continue
        default = field.get_default(call_default_factory=True)
        shown = _bundled_relative(default) if isinstance(default, Path) else default
        help_text = f"{field.description} (default: {'none' if shown is None else shown}; env TOLLGATE_{name.upper()})"
        choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) is typing.Literal else None
        flag, help_text = f"--{name.replace('_', '-')}", help_text.replace("%", "%%")
        if field.annotation is bool and default is False:  # a switch: given, it is on
            serve.add_argument(flag, dest=name, action="store_const", const="true", help=help_text)
            continue
        if field.annotation in (bool, bool | None):  # on by default, or unset: said outright
            choices = ("true", "false")
        serve.add_argument(flag, dest=name, choices=choices, metavar=None if choices else name.upper(),
                           help=help_text)


_GROUP_NAMES = {"time_entry": "timesheet", "expense_line": "expense report", "invoice": "invoice"}


def add_connection_flags(parser: argparse.ArgumentParser, timeout: float) -> None:
    """--server, --timeout and how to reach the server securely: the same flags on every client command."""
    parser.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds (default %(default)s)")
    parser.add_argument("--token", default=os.environ.get("TOLLGATE_TOKEN"),
                        help="the caller's token (default: TOLLGATE_TOKEN; prefer it: a flag shows in ps)")
    parser.add_argument("--tls-ca", type=Path, default=_environment_path("TOLLGATE_CLIENT_CA"),
                        help="connect over TLS, trusting the server's certificate from this CA (PEM; default: "
                             "TOLLGATE_CLIENT_CA)")
    parser.add_argument("--tls-cert", type=Path, default=_environment_path("TOLLGATE_CLIENT_CERT"),
                        help="a client certificate for mutual TLS, with --tls-key (default: TOLLGATE_CLIENT_CERT)")
    parser.add_argument("--tls-key", type=Path, default=_environment_path("TOLLGATE_CLIENT_KEY"),
                        help="the client certificate's key (default: TOLLGATE_CLIENT_KEY)")
    parser.add_argument("--tls-server-name", help="the name the server's certificate carries, when --server is an "
                                                  "address it does not name")


def _environment_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _retries(text: str) -> int:
    """--retries: how many times a call that failed UNAVAILABLE or DEADLINE_EXCEEDED is tried again."""
    try:
        retries = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of retries") from None
    if not 0 <= retries < MOST_ATTEMPTS:
        raise argparse.ArgumentTypeError(f"{retries} is not a number of retries from 0 to {MOST_ATTEMPTS - 1}")
    return retries


def _backoff_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or not 0 < seconds <= LONGEST_BACKOFF_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0 and at most "
                                         f"{LONGEST_BACKOFF_SECONDS:g}")
    return seconds


def _request_id(text: str) -> str:
    try:
        check_request_id("--request-id", text)
    except RequestIdError as error:
        raise argparse.ArgumentTypeError(error.reason) from None
    return text


def _retry_policy(args: argparse.Namespace) -> RetryPolicy:
    default = RetryPolicy()
    return RetryPolicy(max_attempts=args.retries + 1, max_backoff=args.retry_max_backoff,
                       initial_backoff=min(default.initial_backoff, args.retry_max_backoff))


def cmd_validate(args: argparse.Namespace) -> int:
    from tollgate.server.logs import configure_logging

    configure_logging("warning")  # the retries, as JSON lines on stderr: stdout holds only the decisions
    try:
        items = read_items(args.file)
        kind = KIND_ALIASES.get(args.kind, args.kind) or detect_kind(args.file, items)
    except (OSError, ValueError) as error:
        print(f"tollgate validate: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with ValidationClient(args.server, timeout=args.timeout, security=security(args),
                              retry=_retry_policy(args)) as client:
            options: dict[str, Any] = {"correlation_id": args.correlation_id, "all_or_nothing": args.all_or_nothing,
                                       "request_id": args.request_id}
            if kind == "invoice":
                result = client.validate_invoices(invoices_of(items), **options)
            elif kind == "expense_line":
                result = client.validate_expense_lines(items, **options)
            else:
                result = client.validate_time_entries(items, **options)
    except ItemError as error:
        print(f"tollgate validate: {args.file}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except RequestIdError as error:  # too long to number the chunks of a stream
        print(f"tollgate validate: --request-id: {error.reason}", file=sys.stderr)
        return EXIT_USAGE
    except RequestIdReusedError as error:
        print(f"tollgate validate: {args.server}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        print(f"tollgate validate: {args.server}: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_USAGE
    (print_json if args.format == "json" else print_table)(result, sys.stdout, _GROUP_NAMES[kind])
    if args.fail_on_reject and any(d.outcome is Outcome.REJECT for d in result.decisions):
        return EXIT_FAILED
    return EXIT_OK


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def cmd_rules_lint(args: argparse.Namespace) -> int:
    from tollgate.rules.lint import lint

    try:
        report = lint(args.directory)
    except ProblemsError as error:
        _print_problems(error.problems)
        print(f"{len(error.problems)} problem(s); rulesets refused", file=sys.stderr)
        return EXIT_FAILED
    _print_problems(report.warnings)
    print(f"ok: {report.rulesets} ruleset(s), {report.rules} rule(s) in {args.directory}")
    return EXIT_OK


def cmd_rules_test(args: argparse.Namespace) -> int:
    from tollgate.evaluators import ENGINE_VERSION
    from tollgate.evaluators.ruleset_tests import run_ruleset_tests
    from tollgate.rules.loader import load_rulesets

    try:
        bundle = load_rulesets(args.directory)
    except ProblemsError as error:
        _print_problems(error.problems)
        return EXIT_FAILED
    failed = 0
    total = 0
    for ruleset in bundle.all:
        report = run_ruleset_tests(ruleset, ENGINE_VERSION)
        total += len(report.passed) + len(report.failures)
        status = "PASS" if report.ok else "FAIL"
        print(f"{status} {ruleset.id}@{ruleset.version} ({ruleset.path}): "
              f"{len(report.passed)} passed, {len(report.failures)} failed")
        for problem in [*report.failures, *report.uncovered]:
            print(f"  {problem}")
        failed += not report.ok
    print(f"{total} test(s) in {len(bundle.all)} ruleset(s); {failed} ruleset(s) failing")
    return EXIT_FAILED if failed else EXIT_OK


# ---------------------------------------------------------------------------------------------------
# Reference data


def _refdata_error(command: str, error: grpc.RpcError, directory: Path | None = None) -> int:
    """Print a refused change with every problem (file:line: field: message), or the call's error."""
    print(f"tollgate refdata {command}: {error.code().name}: {error.details()}", file=sys.stderr)
    for field, description in field_violations(error):
        where = f"{directory / field}" if directory is not None else field
        print(f"{where}: {description}", file=sys.stderr)
    return EXIT_FAILED if error.code() is grpc.StatusCode.INVALID_ARGUMENT else EXIT_USAGE


def _info_json(info: Any) -> dict[str, Any]:
    return {"snapshot_id": info.snapshot_id, "source": info.source, "loaded_at": info.loaded_at,
            "counts": dict(info.counts)}


def _info_line(info: Any) -> str:
    counts = ", ".join(f"{name} {count}" for name, count in sorted(info.counts.items()))
    return f"{info.snapshot_id}  loaded {info.loaded_at}  from {info.source}  ({counts})"


def cmd_refdata_load(args: argparse.Namespace) -> int:
    try:
        with RefDataClient(args.server, timeout=args.timeout, security=security(args)) as client:
            loaded = client.load_directory(args.directory, partial=args.partial, source=args.source,
                                           keep_missing=args.keep_missing, allow_emptying=args.allow_emptying)
    except ExportDirectoryError as error:
        print(f"tollgate refdata load: {args.directory}: refused, nothing uploaded:", file=sys.stderr)
        for refused in error.problems:
            print(f"{refused.path}: {refused.subject + ': ' if refused.subject else ''}{refused.message}",
                  file=sys.stderr)
        return EXIT_FAILED
    except (OSError, FileNotFoundError) as error:
        print(f"tollgate refdata load: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        return _refdata_error("load", error, args.directory)
    for problem in loaded.rejected_rows:
        path = args.directory / problem.path
        where = f"{path}:{problem.line}" if problem.line else str(path)
        print(f"{where}: {problem.field + ': ' if problem.field else ''}{problem.message} (row left out)",
              file=sys.stderr)
    print(f"loaded {_info_line(loaded.snapshot)}")
    previous = loaded.previous_snapshot_id or "(none)"
    print(f"replaces {previous}")
    if loaded.kept:
        print(f"kept from {previous} (no export in this load, --keep-missing): {', '.join(sorted(loaded.kept))}")
    for entity, rows in sorted(loaded.emptied.items()):
        print(f"emptied {entity}: {rows:,} row(s) in {previous} (--allow-emptying)")
    if loaded.rejected_rows:
        print(f"{len(loaded.rejected_rows)} bad row(s) left out (--partial)")
    return EXIT_OK


def _read_records(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .jsonl)")


def cmd_refdata_upsert(args: argparse.Namespace) -> int:
    try:
        records = _read_records(args.file)
        with RefDataClient(args.server, timeout=args.timeout, security=security(args)) as client:
            changed = client.upsert(args.entity, records)
    except (OSError, ValueError) as error:
        print(f"tollgate refdata upsert: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        return _refdata_error("upsert", error)
    print(f"{changed.previous_snapshot_id or '(none)'} -> {_info_line(changed.snapshot)}")
    return EXIT_OK


def cmd_refdata_delete(args: argparse.Namespace) -> int:
    from tollgate.rules.entities import ENTITIES

    entity = ENTITIES.get(args.entity)
    if entity is None:
        print(f"tollgate refdata delete: unknown entity {args.entity!r}; one of {', '.join(ENTITIES)}",
              file=sys.stderr)
        return EXIT_USAGE
    keys = []
    for text in args.keys:
        values = text.split("/")
        if len(values) != len(entity.key):
            print(f"tollgate refdata delete: {text!r}: a {entity.name} key is {'/'.join(entity.key)}", file=sys.stderr)
            return EXIT_USAGE
        keys.append(dict(zip(entity.key, values, strict=True)))
    try:
        with RefDataClient(args.server, timeout=args.timeout, security=security(args)) as client:
            changed = client.delete(entity.name, keys)
    except grpc.RpcError as error:
        return _refdata_error("delete", error)
    print(f"{changed.previous_snapshot_id} -> {_info_line(changed.snapshot)}")
    return EXIT_OK


def cmd_refdata_status(args: argparse.Namespace) -> int:
    try:
        with RefDataClient(args.server, timeout=args.timeout, security=security(args)) as client:
            status = client.status()
    except grpc.RpcError as error:
        return _refdata_error("status", error)
    current = status.current if status.HasField("current") else None
    if args.format == "json":
        json.dump({
            "current": _info_json(current) if current else None,
            "kept": [_info_json(info) for info in status.kept],
            "store": status.store,
            "store_reachable": status.store_reachable,
            "stale_seconds": status.stale_seconds,
            "store_current_id": status.store_current_id or None,
            "store_lost": status.store_lost or None,
        }, sys.stdout, indent=2)
        print()
        return EXIT_OK
    print(f"current  {_info_line(current) if current else '(no reference data loaded)'}")
    reachable = "reachable" if status.store_reachable else f"UNREACHABLE for {status.stale_seconds:.1f}s"
    print(f"store    {status.store}, {reachable}; current there: {status.store_current_id or '(none)'}")
    if status.store_lost:
        print(f"LOST     the store lost its data ({status.store_lost}); this replica keeps deciding with "
              f"{current.snapshot_id if current else '(none)'}; recover with: tollgate refdata load DIR "
              "(the full exports)")
    for info in status.kept:
        print(f"kept     {_info_line(info)}")
    return EXIT_OK


def cmd_refdata_diff(args: argparse.Namespace) -> int:
    try:
        with RefDataClient(args.server, timeout=args.timeout, security=security(args)) as client:
            diff = client.diff(args.snapshot_a, args.snapshot_b)
    except grpc.RpcError as error:
        return _refdata_error("diff", error)
    if args.format == "json":
        json.dump({d.entity: {"added": list(d.added), "removed": list(d.removed), "changed": list(d.changed)}
                   for d in diff.entities}, sys.stdout, indent=2)
        print()
        return EXIT_OK
    for entity in diff.entities:
        for mark, keys in (("+", entity.added), ("-", entity.removed), ("~", entity.changed)):
            for key in keys:
                print(f"{mark} {entity.entity} {key}")
    if not diff.entities:
        print(f"{args.snapshot_a} and {args.snapshot_b} hold the same data")
    return EXIT_OK


def cmd_admin_reload(args: argparse.Namespace) -> int:
    try:
        with AdminClient(args.server, timeout=args.timeout, security=security(args)) as client:
            answer = client.reload()
    except grpc.RpcError as error:
        print(f"tollgate admin reload: {args.server}: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_USAGE
    print(f"rulesets {'reloaded' if answer.rulesets_reloaded else 'refused'}: {', '.join(answer.rulesets)}")
    print(f"identities {'reloaded' if answer.identities_reloaded else 'not reloaded'}: {answer.identities}")
    if answer.workers_signalled:
        print(f"{answer.workers_signalled} other worker(s) told to reload")
    for problem in answer.problems:
        print(problem, file=sys.stderr)
    return EXIT_FAILED if answer.problems else EXIT_OK


def _add_refdata_commands(commands: Any) -> None:
    refdata = commands.add_parser("refdata", help="load, change and inspect reference data snapshots")
    sub = refdata.add_subparsers(dest="refdata_command", required=True)

    def command(name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        add_connection_flags(parser, timeout=300.0)
        parser.set_defaults(handler=handler)
        return parser

    load = command("load", "upload an export directory; it becomes the current snapshot", cmd_refdata_load)
    load.add_argument("directory", type=Path, help="ENTITY.csv|.jsonl|.parquet files, or ENTITY/ folders of them")
    load.add_argument("--partial", action="store_true", help="leave bad rows out (each reported) instead of refusing")
    load.add_argument("--source", help="where the exports came from, shown in status (default: DIR)")
    load.add_argument("--keep-missing", action="store_true",
                      help="take the entities DIR has no export for over from the current snapshot (else a load "
                           "that would empty a table with rows is refused)")
    load.add_argument("--allow-emptying", action="store_true",
                      help="let the load empty tables that have rows now (left out, or an export with no rows)")
    upsert = command("upsert", "replace every version of the records' keys", cmd_refdata_upsert)
    upsert.add_argument("entity", help="project, task, worker, assignment, contract, rate_card, job_code")
    upsert.add_argument("file", type=Path, help=".csv or .jsonl of records, as in an export")
    delete = command("delete", "remove every version of the given keys", cmd_refdata_delete)
    delete.add_argument("entity")
    delete.add_argument("keys", nargs="+", help="key values, several fields joined by / (P-100/T-1)")
    status = command("status", "the current snapshot, the snapshots kept, the store's state", cmd_refdata_status)
    status.add_argument("--format", choices=["table", "json"], default="table")
    diff = command("diff", "records added (+), removed (-) and changed (~) between two snapshots", cmd_refdata_diff)
    diff.add_argument("snapshot_a")
    diff.add_argument("snapshot_b")
    diff.add_argument("--format", choices=["table", "json"], default="table")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description="Tollgate: validation of time-to-bill items.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC service (every flag also from TOLLGATE_* env)")
    _add_settings_flags(serve)
    serve.set_defaults(handler=cmd_serve)

    validate = commands.add_parser("validate", help="send a file of items and print the decisions")
    validate.add_argument("file", type=Path, help=".csv or .jsonl (invoices: one row per line, or one invoice "
                                                  "with its lines per JSON line)")
    validate.add_argument("--kind", choices=sorted([*KIND_ID_FIELDS, *KIND_ALIASES]),
                          help="the item kind (default: told from the file's id column)")
    add_connection_flags(validate, timeout=60.0)
    validate.add_argument("--format", choices=["table", "json"], default="table")
    validate.add_argument("--correlation-id", help="sent as x-correlation-id (default: generated)")
    validate.add_argument("--request-id", type=_request_id,
                          help="the call's idempotency key, the same for a run of the same file again; a stream's "
                               "chunks are REQUEST_ID/1, /2, ... (default: a new UUID for each call or chunk)")
    validate.add_argument("--retries", type=_retries, default=RetryPolicy().max_attempts - 1,
                          help="times a call failing UNAVAILABLE or DEADLINE_EXCEEDED is tried again, with the same "
                               "request ids, after a random wait growing each time (default %(default)s)")
    validate.add_argument("--retry-max-backoff", type=_backoff_seconds, metavar="SECONDS",
                          default=RetryPolicy().max_backoff,
                          help="the longest wait before a retry (default %(default)s)")
    validate.add_argument("--fail-on-reject", action="store_true", help="exit 1 if any item is rejected")
    validate.add_argument("--all-or-nothing", action="store_true",
                          help="a timesheet / expense report / invoice with a rejected line is rejected whole "
                               "(default: each line on its own)")
    validate.set_defaults(handler=cmd_validate)

    rules = commands.add_parser("rules", help="check rulesets").add_subparsers(dest="rules_command", required=True)
    lint = rules.add_parser("lint", help="parse and type-check rulesets; file:line: rule-id: message on errors")
    lint.add_argument("directory", type=Path, nargs="?", default=None)
    lint.set_defaults(handler=cmd_rules_lint)
    test = rules.add_parser("test", help="run the tests written inside the rulesets")
    test.add_argument("directory", type=Path, nargs="?", default=None)
    test.set_defaults(handler=cmd_rules_test)

    _add_refdata_commands(commands)
    add_auth_commands(commands)
    admin = commands.add_parser("admin", help="operate a running service").add_subparsers(dest="admin_command",
                                                                                          required=True)
    reload = admin.add_parser("reload", help="reread rulesets, reference data directory and identities, on every "
                                             "worker (what SIGHUP does; the operator role)")
    add_connection_flags(reload, timeout=120.0)
    reload.set_defaults(handler=cmd_admin_reload)
    add_audit_commands(commands)
    add_exceptions_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "directory", "absent") is None:
        args.directory = _bundled_rulesets()
    try:
        code: int = args.handler(args)
        sys.stdout.flush()
    except ChannelSecurityError as error:
        print(f"tollgate {args.command}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (``tollgate validate FILE | head``): end quietly, as a command killed by
        # SIGPIPE does. Later writes, and the interpreter's flush at exit, go nowhere rather than raise.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())

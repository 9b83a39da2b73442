"""The ``tollgate`` command line.

    tollgate serve [--host H] [--port P] [--rulesets DIR] [--refdata DIR]
    tollgate validate FILE.csv|FILE.jsonl [--server HOST:PORT] [--format table|json]
    tollgate rules lint [DIR]
    tollgate rules test [DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc

from clients.client import ItemError, ValidationClient, ValidationResult
from rules.decisions import Decision, Outcome
from rules.problems import Problem, ProblemsError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CUSTOM_PREFIX = "custom."


def _bundled_rulesets() -> Path:
    from server.settings import BUNDLED_RULESETS

    # Shown relative to where the user stands, so problems read rulesets/...:12 rather than a long path.
    return Path(os.path.relpath(BUNDLED_RULESETS)) if BUNDLED_RULESETS.is_relative_to(Path.cwd()) else BUNDLED_RULESETS


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
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not valid JSON: {error.msg}") from None
                if not isinstance(value, dict):
                    raise ValueError(f"{path}:{number}: each line must be a JSON object")
                items.append(value)
        return items
    raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use .csv or .jsonl)")


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


def print_json(result: ValidationResult, out: TextIO) -> None:
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
        "provenance": None if provenance is None else {
            "rulesets": [{"id": r.id, "version": r.version} for r in provenance.rulesets],
            "snapshot_id": provenance.snapshot_id,
            "engine_version": provenance.engine_version,
            "correlation_id": provenance.correlation_id,
        },
    }
    json.dump(document, out, indent=2)
    out.write("\n")


def print_table(result: ValidationResult, out: TextIO) -> None:
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
    from server.app import run
    from server.settings import Settings

    names = ("host", "port", "rulesets", "refdata", "log_level", "workers")
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    return run(Settings(**overrides))


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        items = read_items(args.file)
    except (OSError, ValueError) as error:
        print(f"tollgate validate: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with ValidationClient(args.server, timeout=args.timeout) as client:
            result = client.validate_time_entries(items, correlation_id=args.correlation_id)
    except ItemError as error:
        print(f"tollgate validate: {args.file}: {error}", file=sys.stderr)
        return EXIT_USAGE
    except grpc.RpcError as error:
        print(f"tollgate validate: {args.server}: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_USAGE
    (print_json if args.format == "json" else print_table)(result, sys.stdout)
    if args.fail_on_reject and any(d.outcome is Outcome.REJECT for d in result.decisions):
        return EXIT_FAILED
    return EXIT_OK


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        print(problem, file=sys.stderr)


def cmd_rules_lint(args: argparse.Namespace) -> int:
    from rules.lint import lint

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
    from evaluators import ENGINE_VERSION
    from evaluators.ruleset_tests import run_ruleset_tests
    from rules.loader import load_rulesets

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tollgate", description="Tollgate: validation of time-to-bill items.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC service (settings also from TOLLGATE_* env)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--rulesets", type=Path, help="ruleset directory (default: the bundled rulesets)")
    serve.add_argument("--refdata", type=Path, help="reference data directory (default: the bundled sample)")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--workers", type=int, help="server processes sharing the port (default: one per core)")
    serve.set_defaults(handler=cmd_serve)

    validate = commands.add_parser("validate", help="send a file of time entries and print the decisions")
    validate.add_argument("file", type=Path, help=".csv or .jsonl")
    validate.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT (default %(default)s)")
    validate.add_argument("--format", choices=["table", "json"], default="table")
    validate.add_argument("--timeout", type=float, default=60.0, help="seconds (default %(default)s)")
    validate.add_argument("--correlation-id", help="sent as x-correlation-id (default: generated)")
    validate.add_argument("--fail-on-reject", action="store_true", help="exit 1 if any item is rejected")
    validate.set_defaults(handler=cmd_validate)

    rules = commands.add_parser("rules", help="check rulesets").add_subparsers(dest="rules_command", required=True)
    lint = rules.add_parser("lint", help="parse and type-check rulesets; file:line: rule-id: message on errors")
    lint.add_argument("directory", type=Path, nargs="?", default=None)
    lint.set_defaults(handler=cmd_rules_lint)
    test = rules.add_parser("test", help="run the tests written inside the rulesets")
    test.add_argument("directory", type=Path, nargs="?", default=None)
    test.set_defaults(handler=cmd_rules_test)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "directory", "absent") is None:
        args.directory = _bundled_rulesets()
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

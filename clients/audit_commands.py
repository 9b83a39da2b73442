"""``tollgate audit``: what the decision ledger holds, through the server's AuditService (so roles apply).

    tollgate audit show ITEM_ID [--kind KIND] [--format table|json]          (auditor)
    tollgate audit batch BATCH_ID [--format table|json]                      (auditor)
    tollgate audit export --from DATE --to DATE --format parquet|csv|jsonl OUT [--force]   (auditor)
    tollgate audit replay BATCH_ID [--format table|json]                     (auditor)
    tollgate audit purge --before DATE [--format table|json]                 (operator)

Every command takes the connection flags of the others (--server, --token, --tls-ca, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import grpc

from tollgate.clients.client import EXPORT_COLUMNS, AuditClient, Export
from tollgate.clients.command_support import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_json, report_refusal, security

KINDS = ("time_entry", "expense_line", "invoice_line")
FORMATS = ("parquet", "csv", "jsonl")
# Columns of an export that are numbers; every other one is text (the JSON ones too).
INTEGER_COLUMNS = frozenset({"position"})


def _client(args: argparse.Namespace) -> AuditClient:
    return AuditClient(args.server, timeout=args.timeout, security=security(args))


def _refused(args: argparse.Namespace, error: grpc.RpcError) -> int:
    return report_refusal(f"tollgate audit {args.audit_command}: {args.server}", error,
                          failed=frozenset({grpc.StatusCode.NOT_FOUND}))


def _reasons_and_enrichments(decision: dict[str, Any]) -> list[str]:
    lines = []
    for e in decision.get("enrichments", []):
        lines.append(f"{e['field']}: {e.get('old_value', '(none)')} -> {e.get('new_value', '(none)')}  "
                     f"[{e['rule_id']}]")
    lines += [f"{r['severity']} {r['code']} [{r['rule_id']}]: {r['message']}" for r in decision.get("reasons", [])]
    return lines


def _rulesets(batch: dict[str, Any]) -> str:
    return ", ".join(f"{r['id']}@{r['version']} (sha256 {r['digest'][:12]})" for r in batch["rulesets"]) or "none"


def _print_batch_header(batch: dict[str, Any]) -> None:
    counts = batch["counts"]
    print(f"batch {batch['batch_id']}  {batch['item_kind']}  received {batch['received_at']}  answered "
          f"{batch['answered_at']}")
    print(f"  request id {batch['request_id'] or '(none)'}; correlation id {batch['correlation_id']}; caller "
          f"{batch['caller']}; acceptance {batch['acceptance'] or '(not recorded)'}")
    print(f"  {counts['total']} items: {counts['accepted']} accepted, {counts['enriched']} enriched, "
          f"{counts['rejected']} rejected")
    print(f"  rulesets {_rulesets(batch)}; reference snapshot {batch['snapshot_id']}; engine {batch['engine_version']}")


def cmd_audit_show(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            found = client.item_history(args.what, args.kind)
    except grpc.RpcError as error:
        return _refused(args, error)
    if not found:
        print(f"tollgate audit: nothing on record for {args.what!r}", file=sys.stderr)
        return EXIT_FAILED
    if args.format == "json":
        print_json(found)
        return EXIT_OK
    for decision in found:
        print(f"{decision['item_id']} ({decision['item_kind']}): {decision['outcome']} at "
              f"{decision['batch']['answered_at']}, position {decision['position']}")
        _print_batch_header(decision["batch"])
        for line in _reasons_and_enrichments(decision):
            print(f"  {line}")
        print(f"  input {json.dumps(decision['input'], ensure_ascii=False)}")
        print()
    return EXIT_OK


def cmd_audit_batch(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            found = client.batch(args.what)
    except grpc.RpcError as error:
        return _refused(args, error)
    if args.format == "json":
        print_json(found)
        return EXIT_OK
    _print_batch_header(found)
    print()
    print("POS  ITEM  OUTCOME  DETAIL")
    for decision in found["decisions"]:
        detail = _reasons_and_enrichments(decision) or [""]
        print(f"{decision['position']}  {decision['item_id']}  {decision['outcome']}  {detail[0]}")
        for line in detail[1:]:
            print(f"      {line}")
    return EXIT_OK


def cmd_audit_replay(args: argparse.Namespace) -> int:
    """Exit 0 when every decision comes out as recorded, 1 when some differ (each listed)."""
    try:
        with _client(args) as client:
            replayed = client.replay(args.what)
    except grpc.RpcError as error:
        return _refused(args, error)
    if args.format == "json":
        print_json(replayed)
    elif replayed["identical"]:
        print(f"batch {args.what}: identical ({replayed['items']} items replayed with the recorded rulesets and "
              f"snapshot {replayed['snapshot_id']})")
    else:
        differences = replayed["differences"]
        print(f"batch {args.what}: {len(differences)} of {replayed['items']} decisions differ")
        for difference in differences:
            print(f"{difference['position']}  {difference['item_id']}  differs in {', '.join(difference['differs'])}")
            print(f"      recorded {difference['recorded_outcome']}, replayed {difference['replayed_outcome']}")
            for side in ("recorded", "replayed"):
                for line in _reasons_and_enrichments({"reasons": difference.get(f"{side}_reasons", []),
                                                      "enrichments": difference.get(f"{side}_enrichments", [])}):
                    print(f"      {side}: {line}")
    return EXIT_OK if replayed["identical"] else EXIT_FAILED


def cmd_audit_purge(args: argparse.Namespace) -> int:
    try:
        with _client(args) as client:
            purged = client.purge(args.before)
    except grpc.RpcError as error:
        return _refused(args, error)
    if args.format == "json":
        print_json(purged)
    else:
        print(f"purged before {purged['before']}: {purged['batches']} batches, {purged['decisions']} decisions, "
              f"{purged['ruleset_sources']} ruleset texts no kept batch names")
    return EXIT_OK


@contextlib.contextmanager
def _replacing(out: Path) -> Iterator[Path]:
    """A temporary file beside ``out``, renamed over it once written whole; removed if writing fails."""
    handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        temporary.replace(out)
    finally:
        temporary.unlink(missing_ok=True)


def _write_text_rows(export: Export, handle: TextIO, form: str, progress: Any) -> None:
    writer = csv.DictWriter(handle, EXPORT_COLUMNS) if form == "csv" else None
    if writer is not None:
        writer.writeheader()
    for chunk in export.chunks:
        for row in chunk:
            if writer is not None:
                writer.writerow(row)
            else:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        progress.update(len(chunk))


def _write_parquet(export: Export, path: Path, progress: Any) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no type information
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    schema = pa.schema([(name, pa.int32() if name in INTEGER_COLUMNS else pa.string()) for name in EXPORT_COLUMNS])
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in export.chunks:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))  # a row group per chunk
            progress.update(len(chunk))
        if not progress.n:
            writer.write_table(schema.empty_table())


def cmd_audit_export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    out: Path = args.out
    if out.exists() and not args.force:
        print(f"tollgate audit export: {out} exists; give --force to replace it", file=sys.stderr)
        return EXIT_USAGE
    if not out.parent.is_dir():
        print(f"tollgate audit export: {out}: no such directory {out.parent}", file=sys.stderr)
        return EXIT_USAGE
    if out.is_dir():
        print(f"tollgate audit export: {out} is a directory; name the file to write", file=sys.stderr)
        return EXIT_USAGE
    try:
        with _client(args) as client, _replacing(out) as temporary:
            export = client.export(args.start, args.end)
            # On standard error, and only on a terminal (disable=None): a pipe or a log gets no bar.
            with tqdm(total=export.total, unit="rows", desc=out.name, disable=None, file=sys.stderr) as progress:
                if args.format == "parquet":
                    _write_parquet(export, temporary, progress)
                else:
                    with temporary.open("w", encoding="utf-8", newline="") as handle:
                        _write_text_rows(export, handle, args.format, progress)
    except grpc.RpcError as error:
        return _refused(args, error)
    except OSError as error:
        print(f"tollgate audit export: {out}: {error}", file=sys.stderr)
        return EXIT_USAGE
    masked = ", ".join(export.masked_fields) or "none"
    print(f"exported {export.total} decisions to {out} ({args.format}); masked: {masked}", file=sys.stderr)
    return EXIT_OK


def add_audit_commands(commands: Any) -> None:
    from tollgate.clients.cli import add_connection_flags

    audit = commands.add_parser("audit", help="what the decision ledger holds (through the server)").add_subparsers(
        dest="audit_command", required=True)

    def command(name: str, help_text: str, handler: Any, timeout: float = 60.0) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = audit.add_parser(name, help=help_text)
        add_connection_flags(parser, timeout=timeout)
        parser.set_defaults(handler=handler)
        return parser

    show = command("show", "every decision on an item, with its batch and rulesets (auditor)", cmd_audit_show)
    show.add_argument("what", metavar="ITEM_ID")
    show.add_argument("--kind", choices=KINDS, help="only decisions on items of this kind")
    show.add_argument("--format", choices=["table", "json"], default="table")
    batch = command("batch", "one batch: its call and every decision in it (auditor)", cmd_audit_batch)
    batch.add_argument("what", metavar="BATCH_ID")
    batch.add_argument("--format", choices=["table", "json"], default="table")
    replay = command("replay", "decide a batch again with its recorded rulesets and snapshot; exit 1 if any "
                     "decision differs (auditor)", cmd_audit_replay, timeout=600.0)
    replay.add_argument("what", metavar="BATCH_ID")
    replay.add_argument("--format", choices=["table", "json"], default="table")
    export = command("export", "the decisions answered in a period, personal fields masked, to a file (auditor)",
                     cmd_audit_export, timeout=3600.0)
    export.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="first day (or RFC 3339 time) answered, included")
    export.add_argument("--to", dest="end", required=True, metavar="DATE",
                        help="last day included (an RFC 3339 time: excluded)")
    export.add_argument("--format", choices=FORMATS, required=True)
    export.add_argument("out", metavar="OUT", type=Path, help="the file to write (written whole, or not at all)")
    export.add_argument("--force", action="store_true", help="replace OUT if it exists")
    purge = command("purge", "remove the batches answered before a date, no later than the retention floor "
                    "(operator)", cmd_audit_purge, timeout=3600.0)
    purge.add_argument("--before", required=True, metavar="DATE", help="a date (its start, UTC) or RFC 3339 time")
    purge.add_argument("--format", choices=["table", "json"], default="table")

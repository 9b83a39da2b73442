"""``tollgate audit``: what the decision ledger holds, read from its database directly.

    tollgate audit show ITEM_ID [--kind KIND] [--database-url URL] [--data-dir DIR] [--format table|json]
    tollgate audit batch BATCH_ID [--database-url URL] [--data-dir DIR] [--format table|json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tollgate.ledger import reading
from tollgate.ledger.store import connect, database_url, masked
from tollgate.rules.problems import ProblemsError

KINDS = ("time_entry", "expense_line", "invoice_line")


def _engine(args: argparse.Namespace) -> Engine:
    url = database_url(args.database_url, Path(args.data_dir))
    if url.drivername == "sqlite" and url.database and not Path(url.database).exists():
        raise FileNotFoundError(f"no ledger at {url.database} (give --database-url or --data-dir)")
    return connect(url)


def _reasons_and_enrichments(decision: dict[str, Any]) -> list[str]:
    lines = []
    for e in decision["enrichments"]:
        old = "(none)" if e["old_value"] is None else e["old_value"]
        new = "(none)" if e["new_value"] is None else e["new_value"]
        lines.append(f"{e['field']}: {old} -> {new}  [{e['rule_id']}]")
    lines += [f"{r['severity']} {r['code']} [{r['rule_id']}]: {r['message']}" for r in decision["reasons"]]
    return lines


def _rulesets(batch: dict[str, Any]) -> str:
    return ", ".join(f"{r['id']}@{r['version']} (sha256 {r['digest'][:12]})" for r in batch["rulesets"]) or "none"


def _print_batch_header(batch: dict[str, Any]) -> None:
    counts = batch["counts"]
    print(f"batch {batch['batch_id']}  {batch['item_kind']}  received {batch['received_at']}  answered "
          f"{batch['answered_at']}")
    print(f"  request id {batch['request_id'] or '(none)'}; correlation id {batch['correlation_id']}; caller "
          f"{batch['caller']}")
    print(f"  {counts['total']} items: {counts['accepted']} accepted, {counts['enriched']} enriched, "
          f"{counts['rejected']} rejected")
    print(f"  rulesets {_rulesets(batch)}; reference snapshot {batch['snapshot_id']}; engine {batch['engine_version']}")


def _run(args: argparse.Namespace, read: Any) -> int:
    try:
        engine = _engine(args)
    except (ProblemsError, FileNotFoundError) as error:
        print(f"tollgate audit: {error}", file=sys.stderr)
        return 2
    try:
        found = read(engine)
    except SQLAlchemyError as error:
        print(f"tollgate audit: cannot read the ledger at {masked(engine.url)}: {type(error).__name__}: "
              f"{str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if not found:
        print(f"tollgate audit: nothing on record for {args.what!r}", file=sys.stderr)
        return 1
    if args.format == "json":
        json.dump(found, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    if isinstance(found, dict):  # a batch
        _print_batch_header(found)
        print()
        print("POS  ITEM  OUTCOME  DETAIL")
        for decision in found["decisions"]:
            detail = _reasons_and_enrichments(decision) or [""]
            print(f"{decision['position']}  {decision['item_id']}  {decision['outcome']}  {detail[0]}")
            for line in detail[1:]:
                print(f"      {line}")
        return 0
    for decision in found:
        print(f"{decision['item_id']} ({decision['item_kind']}): {decision['outcome']} at "
              f"{decision['batch']['answered_at']}, position {decision['position']}")
        _print_batch_header(decision["batch"])
        for line in _reasons_and_enrichments(decision):
            print(f"  {line}")
        print(f"  input {json.dumps(decision['input'], ensure_ascii=False)}")
        print()
    return 0


def cmd_audit_show(args: argparse.Namespace) -> int:
    return _run(args, lambda engine: reading.decisions_on(engine, args.what, args.kind))


def cmd_audit_batch(args: argparse.Namespace) -> int:
    return _run(args, lambda engine: reading.batch(engine, args.what))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=os.environ.get("TOLLGATE_DATABASE_URL") or None,
                        help="the ledger's database, as the server's --database-url (default: env "
                             "TOLLGATE_DATABASE_URL, else tollgate.db in --data-dir)")
    parser.add_argument("--data-dir", default=os.environ.get("TOLLGATE_DATA_DIR") or "var",
                        help="as the server's --data-dir (default: env TOLLGATE_DATA_DIR, else %(default)s)")
    parser.add_argument("--format", choices=["table", "json"], default="table")


def add_audit_commands(commands: Any) -> None:
    audit = commands.add_parser("audit", help="what the decision ledger holds").add_subparsers(
        dest="audit_command", required=True)
    show = audit.add_parser("show", help="every decision on an item, with its batch and rulesets")
    show.add_argument("what", metavar="ITEM_ID")
    show.add_argument("--kind", choices=KINDS, help="only decisions on items of this kind")
    _common(show)
    show.set_defaults(handler=cmd_audit_show)
    batch = audit.add_parser("batch", help="one batch: its call and every decision in it")
    batch.add_argument("what", metavar="BATCH_ID")
    _common(batch)
    batch.set_defaults(handler=cmd_audit_batch)

"""What every `tollgate` command that calls the server shares: exit codes, the channel's security from the
connection flags, printing JSON, and reporting a refused call."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc

from tollgate.clients.channel import ChannelSecurity

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def security(args: argparse.Namespace) -> ChannelSecurity:
    """The channel's security from the connection flags (clients/cli.py add_connection_flags)."""
    return ChannelSecurity(ca=args.tls_ca, cert=args.tls_cert, key=args.tls_key, token=args.token or None,
                           server_name=args.tls_server_name)


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, description) of every violation in a refusal's google.rpc.BadRequest."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    violations = []
    for detail in status.details if status is not None else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            violations += [(v.field, v.description) for v in bad_request.field_violations]
    return violations


def print_json(document: Any) -> None:
    json.dump(document, sys.stdout, ensure_ascii=False, indent=2)
    print()


def report_refusal(prefix: str, error: grpc.RpcError, *, failed: frozenset[grpc.StatusCode]) -> int:
    """Print a refused call (``prefix``: the command, and where it called), each field it names indented; the exit
    code: EXIT_FAILED for a code in ``failed`` (the call was understood and said no), else EXIT_USAGE."""
    print(f"{prefix}: {error.code().name}: {error.details()}", file=sys.stderr)
    for field, description in field_violations(error):
        print(f"  {field}: {description}", file=sys.stderr)
    return EXIT_FAILED if error.code() in failed else EXIT_USAGE

"""``tollgate auth``: the identities file's entries — tokens made, rotated and revoked, roles given.

These commands edit the file only; a running server takes the change on reload (SIGHUP, or
``tollgate admin reload``)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from tollgate.rules.problems import ProblemsError
from tollgate.server.identities import NAME_CHARACTERS, new_token, read_identities, remove_identity, write_identity
from tollgate.server.roles import Role

DEFAULT_IDENTITIES = "identities.yaml"


def _roles(text: str) -> list[Role]:
    """``caller,reader`` as roles; an unknown one names the roles there are."""
    roles = []
    for part in (piece.strip() for piece in text.split(",")):
        try:
            roles.append(Role(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a role; the roles are {', '.join(role.value for role in Role)}") from None
    return roles


def _name(text: str) -> str:
    if not re.fullmatch(NAME_CHARACTERS, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a name: letters, digits and ._@:/- (at most 128, "
                                         "starting with a letter or digit)")
    return text


def _failed(error: ProblemsError) -> int:
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return 2


def cmd_token_create(args: argparse.Namespace) -> int:
    token, token_hash = new_token(args.name)
    try:
        entry = write_identity(args.identities, args.name, args.roles, token_hash)
    except ProblemsError as error:
        return _failed(error)
    print(token)
    print(f"{args.name} ({', '.join(entry.roles)}): this token is shown once; {args.identities} keeps only its "
          "hash. Any earlier token of this name stops working when the server reloads (tollgate admin reload).",
          file=sys.stderr)
    return 0


def cmd_identity_add(args: argparse.Namespace) -> int:
    """An identity without a token: a caller named by its client certificate (mutual TLS)."""
    try:
        existing = read_identities(args.identities).get(args.name) if args.identities.exists() else None
        write_identity(args.identities, args.name, args.roles, existing.token_hash if existing else None)
    except ProblemsError as error:
        return _failed(error)
    print(f"{args.name} ({', '.join(args.roles)}) added to {args.identities}, without a token: a client certificate "
          "naming it (subject alternative name or common name) identifies it", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    try:
        removed = remove_identity(args.identities, args.name)
    except ProblemsError as error:
        return _failed(error)
    if not removed:
        print(f"{args.name} is not in {args.identities}", file=sys.stderr)
        return 1
    print(f"{args.name} removed from {args.identities}; it is refused once the server reloads", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    try:
        entries = read_identities(args.identities)
    except ProblemsError as error:
        return _failed(error)
    for entry in entries.values():
        print(f"{entry.name}\t{','.join(entry.roles)}\t{'token' if entry.token_hash else 'certificate only'}")
    return 0


def add_auth_commands(commands: Any) -> None:
    auth = commands.add_parser("auth", help="make and revoke callers' tokens and roles (the identities file)")
    sub = auth.add_subparsers(dest="auth_command", required=True)

    def command(parent: Any, name: str, help_text: str, handler: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text)
        parser.add_argument("--identities", type=Path,
                            default=Path(os.environ.get("TOLLGATE_IDENTITIES_FILE") or DEFAULT_IDENTITIES),
                            help="the identities file (default: TOLLGATE_IDENTITIES_FILE, else %(default)s)")
        parser.set_defaults(handler=handler)
        return parser

    token = sub.add_parser("token", help="tokens").add_subparsers(dest="token_command", required=True)
    create = command(token, "create", "make a token for NAME (printed once), or a new one replacing its last",
                     cmd_token_create)
    create.add_argument("name", type=_name)
    create.add_argument("--roles", type=_roles, help="comma-separated: " + ", ".join(role.value for role in Role)
                        + " (a new name needs them; given for an existing one, they replace its roles)")
    add = command(sub, "add", "add NAME for a client certificate naming it (or give an existing one these roles, "
                  "keeping its token)", cmd_identity_add)
    add.add_argument("name", type=_name)
    add.add_argument("--roles", type=_roles, required=True, help="comma-separated roles")
    revoke = command(sub, "revoke", "remove NAME: its token and certificate are refused after a reload", cmd_revoke)
    revoke.add_argument("name")
    command(sub, "list", "names, roles, and whether each has a token", cmd_list)

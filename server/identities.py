"""The identities file: who may call the service, with which roles, and the hash of each one's token.

    # Tollgate identities (tollgate auth token create NAME --roles ... writes the entries with tokens)
    identities:
      - name: psa-approvals
        roles: [caller]
        token_hash: sha256$5b0e...$9f41...
      - name: erp-sync.example.com       # no token: named by its client certificate (mutual TLS)
        roles: [operator, reader]

A token is ``tg_NAME.SECRET``: the name says which entry to check, the secret is 256 random bits,
shown once by ``tollgate auth token create`` and never stored; the file keeps a salted SHA-256 of it.
A slow password hash (scrypt, bcrypt) guards guessable passwords; a 256-bit secret cannot be guessed,
and a slow hash would let every bad token sent cost the server tens of milliseconds of CPU.
Revoking is removing the entry (or its token_hash); rotating is creating a new token for the name.
Either takes effect when the server reloads (SIGHUP, or AdminService.Reload).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tollgate.rules import yaml_source
from tollgate.rules.problems import Problem, ProblemsError
from tollgate.server.roles import Role

MAX_IDENTITIES_BYTES = 1024 * 1024
TOKEN_PREFIX = "tg_"
# A name is what logs, metrics and the ledger show as the caller: a DNS name, an e-mail or a plain word.
NAME_CHARACTERS = r"[A-Za-z0-9][A-Za-z0-9._@:/-]{0,127}"
NAME_PATTERN = f"^{NAME_CHARACTERS}$"
_HASH = re.compile(r"^sha256\$([0-9a-f]{32})\$([0-9a-f]{64})$")
HEADER = ("# Tollgate identities: who may call the service, with which roles (README, \"Running it secured\").\n"
          "# Tokens are never stored, only their salted hashes; remove an entry to revoke it, then reload.\n")


class IdentityEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    roles: Annotated[tuple[Role, ...], Field(min_length=1)]
    token_hash: str | None = None

    @field_validator("roles")
    @classmethod
    def _each_role_once(cls, roles: tuple[Role, ...]) -> tuple[Role, ...]:
        if len(set(roles)) != len(roles):
            raise ValueError("lists a role twice")
        return roles

    @field_validator("token_hash")
    @classmethod
    def _a_hash_not_a_token(cls, value: str | None) -> str | None:
        if value is not None and not _HASH.match(value):
            hint = " (that is a token, which must never be stored: run tollgate auth token create)" \
                if value.startswith(TOKEN_PREFIX) else ""
            raise ValueError(f"is not sha256$SALT$HASH as tollgate auth token create writes it{hint}")
        return value

    def accepts(self, secret: str) -> bool:
        """Whether ``secret`` is this identity's token secret (in constant time)."""
        found = _HASH.match(self.token_hash) if self.token_hash else None
        if found is None:
            return False
        return hmac.compare_digest(_digest(bytes.fromhex(found[1]), secret), found[2])


class IdentitiesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identities: list[IdentityEntry]


def _digest(salt: bytes, secret: str) -> str:
    return hashlib.sha256(salt + secret.encode()).hexdigest()


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    return f"sha256${salt.hex()}${_digest(salt, secret)}"


def new_token(name: str) -> tuple[str, str]:
    """A new token for ``name`` and the hash the identities file keeps of it."""
    secret = secrets.token_urlsafe(32)
    return f"{TOKEN_PREFIX}{name}.{secret}", hash_secret(secret)


def split_token(token: str) -> tuple[str, str] | None:
    """``tg_NAME.SECRET`` as (name, secret); None when the text is not such a token."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    name, dot, secret = token[len(TOKEN_PREFIX):].rpartition(".")
    return (name, secret) if dot and name and secret else None


def read_identities(path: Path) -> dict[str, IdentityEntry]:
    """The identities of the file by name; raise ProblemsError naming file:line for anything wrong in it."""
    document, _text = yaml_source.read_file(path, MAX_IDENTITIES_BYTES, "identities file", "it lists callers, not data")
    name = str(path)
    if not isinstance(document, dict):
        raise ProblemsError([Problem(name, 1, None, "an identities file is a YAML mapping with identities: [...]")])
    try:
        parsed = IdentitiesFile.model_validate(document)
    except pydantic.ValidationError as error:
        raise ProblemsError([yaml_source.validation_problem(name, document, e, ("identities",))
                             for e in error.errors()]) from None
    by_name: dict[str, IdentityEntry] = {}
    problems = []
    for index, entry in enumerate(parsed.identities):
        if entry.name in by_name:
            problems.append(Problem(name, yaml_source.line_of(document, ("identities", index, "name")), entry.name,
                                    "is listed twice; one entry per caller (give it every role it needs)"))
        by_name[entry.name] = entry
    if problems:
        raise ProblemsError(problems)
    return by_name


def write_identity(path: Path, name: str, roles: Iterable[Role] | None, token_hash: str | None) -> IdentityEntry:
    """Add ``name`` to the identities file, or replace its token hash (and its roles, unless ``roles`` is None);
    the file is created if missing. Returns the entry written."""
    entries = read_identities(path) if path.exists() else {}
    previous = entries.get(name)
    if roles is None and previous is None:
        raise ProblemsError([Problem(str(path), None, name, "is a new identity: give its roles")])
    chosen = tuple(roles) if roles is not None else previous.roles if previous is not None else ()
    try:
        entry = IdentityEntry(name=name, roles=chosen, token_hash=token_hash)
    except pydantic.ValidationError as error:
        raise ProblemsError([Problem(str(path), None, name, f"{'.'.join(map(str, e['loc']))}: {e['msg']}")
                             for e in error.errors()]) from None
    entries[name] = entry
    _write_entries(path, entries.values())
    return entry


def remove_identity(path: Path, name: str) -> bool:
    """Remove ``name`` from the identities file (revoking its token and certificate); False if it was not there."""
    entries = read_identities(path)
    if entries.pop(name, None) is None:
        return False
    _write_entries(path, entries.values())
    return True


def _write_entries(path: Path, entries: Iterable[IdentityEntry]) -> None:
    """The file written whole to a temporary file beside it and renamed over it (never half-written), mode 0600.
    Comments in it are not kept: it is rewritten from its entries."""
    document = {"identities": [entry.model_dump(mode="json", exclude_none=True) for entry in entries]}
    text = HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise

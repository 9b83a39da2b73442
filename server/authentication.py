"""Who is calling, and may they call this: from a call's credential to an identity with roles, to allowed or not.

A call names its caller by one of (the first present wins):
- a token of the identities file, ``authorization: Bearer tg_NAME.SECRET``;
- a JWT from the firm's identity provider, ``authorization: Bearer eyJ...``, signed by the key in
  ``jwt_public_key`` (RS*, ES* or EdDSA: never a shared secret, never "none"), with the configured
  issuer and audience, unexpired; its ``sub`` is the name and ``jwt_roles_claim`` lists the roles
  (roles Tollgate does not know are ignored);
- its client certificate (mutual TLS): the first of its names (subject alternative names, then the
  common name) that is an identity of the identities file.

Without authentication configured (no identities file, JWT key or client CA: the embedded default, on
loopback only) every caller is ``anonymous`` with every role. Either way a method must be in
server/roles.py's table.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from tollgate.rules.problems import Problem, ProblemsError
from tollgate.server.identities import IdentityEntry, read_identities, split_token
from tollgate.server.roles import METHOD_ROLES, OPEN, Role
from tollgate.server.settings import Settings

log = structlog.get_logger("tollgate.auth")

AUTHORIZATION_METADATA_KEY = "authorization"
# Longer than any token or JWT a caller has reason to send (gRPC itself refuses metadata past 8 KiB at random,
# past 16 KiB always); refused before it is parsed.
MAX_CREDENTIAL_CHARS = 6144
# Clocks of the identity provider and this server may differ this much.
JWT_LEEWAY_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    roles: frozenset[Role]
    via: str  # "token", "jwt", "certificate", "none" (authentication off) or "open" (a method needing no role)

    def __str__(self) -> str:
        return self.name


ANONYMOUS = Identity("anonymous", frozenset(Role), "none")
UNIDENTIFIED = Identity("unidentified", frozenset(), "open")

# The caller of the call this code runs for (copied into pool threads with the call's context, as logs are).
current_caller: contextvars.ContextVar[Identity] = contextvars.ContextVar("tollgate_caller", default=ANONYMOUS)


@dataclass
class AccessRefusedError(Exception):
    """A call refused: ``unauthenticated`` (no or a bad credential) or not (a role missing)."""

    unauthenticated: bool
    reason: str  # google.rpc.ErrorInfo reason
    message: str
    role: Role | None = None  # the role the method needs
    claimed: str | None = None  # who the credential claimed to be, for the log

    def __str__(self) -> str:
        return self.message


def _unauthenticated(reason: str, message: str, claimed: str | None = None) -> AccessRefusedError:
    return AccessRefusedError(True, reason, message, claimed=claimed)


def _denied(reason: str, message: str, role: Role | None = None, claimed: str | None = None) -> AccessRefusedError:
    return AccessRefusedError(False, reason, message, role, claimed)


def _jwt_algorithms(key: Any) -> list[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return [{"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}.get(key.curve.name, "ES256")]
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return ["EdDSA"]
    raise ValueError(f"a {type(key).__name__} cannot verify JWTs; give an RSA, EC or Ed25519 public key")


@dataclass(frozen=True, slots=True)
class _JwtVerifier:
    key: Any
    algorithms: list[str]
    issuer: str
    audience: str
    roles_claim: str

    @classmethod
    def read(cls, path: Path, settings: Settings) -> _JwtVerifier:
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
            algorithms = _jwt_algorithms(key)
        except (OSError, ValueError, TypeError) as error:
            raise ProblemsError([Problem(str(path), None, "jwt_public_key",
                                         f"cannot be read as a PEM public key: {error}")]) from None
        assert settings.jwt_issuer is not None and settings.jwt_audience is not None  # the settings' validator
        return cls(key, algorithms, settings.jwt_issuer, settings.jwt_audience, settings.jwt_roles_claim)

    def identify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(token, self.key, algorithms=self.algorithms, audience=self.audience,
                                issuer=self.issuer, leeway=JWT_LEEWAY_SECONDS,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("EXPIRED_CREDENTIAL", "the JWT has expired; get a new one from the identity "
                                   "provider") from None
        except jwt.PyJWTError as error:
            raise _unauthenticated("BAD_CREDENTIAL", f"the JWT is not accepted: {error}") from None
        subject, roles = claims["sub"], claims.get(self.roles_claim, [])
        if not isinstance(subject, str) or not subject or len(subject) > 256:
            raise _unauthenticated("BAD_CREDENTIAL", "the JWT's sub claim is not a name")
        if isinstance(roles, str):
            roles = roles.split()
        if not isinstance(roles, list):
            raise _unauthenticated("BAD_CREDENTIAL", f"the JWT's {self.roles_claim} claim is not a list of roles",
                                   claimed=subject)
        known = frozenset(Role(role) for role in roles if isinstance(role, str) and role in Role.__members__.values())
        return Identity(subject, known, "jwt")


@dataclass
class Authenticator:
    """The identities in force (reloaded whole or not at all) and the check every call goes through."""

    settings: Settings
    identities: Mapping[str, IdentityEntry] = field(default_factory=dict)
    _jwt: _JwtVerifier | None = None

    def __post_init__(self) -> None:
        problems = self.reload()
        if problems:
            raise ProblemsError([Problem("identities_file", None, None, problem) for problem in problems])

    @property
    def enabled(self) -> bool:
        return self.settings.authenticating

    def reload(self) -> list[str]:
        """Read the identities file and the JWT key again; on any problem keep the ones in force and return
        the problems (empty when reloaded)."""
        try:
            identities = read_identities(self.settings.identities_file) if self.settings.identities_file else {}
            verifier = _JwtVerifier.read(self.settings.jwt_public_key, self.settings) \
                if self.settings.jwt_public_key else None
        except ProblemsError as error:
            refused = [str(problem) for problem in error.problems]
            log.error("identities_refused", problems=refused, serving=len(self.identities))
            return refused
        self.identities, self._jwt = identities, verifier  # one assignment each: a call sees old or new
        if self.enabled:
            log.info("identities_loaded", identities=len(identities), jwt=verifier is not None)
        return []

    def check(self, method: str, metadata: Sequence[tuple[str, Any]], certificate_names: Sequence[str]) -> Identity:
        """The caller of ``method``, if it may call it; else raise :class:`AccessRefusedError`."""
        if method not in METHOD_ROLES:
            raise _denied("METHOD_NOT_LISTED", f"{method} has no role in the access table; nobody may call it")
        role = METHOD_ROLES[method]
        if role is OPEN:
            return UNIDENTIFIED if self.enabled else ANONYMOUS
        if not self.enabled:
            return ANONYMOUS
        identity = self._identify(metadata, certificate_names)
        if role not in identity.roles:
            raise _denied("ROLE_REQUIRED", f"{identity.name} may not call {method}: it needs the "
                          f"{role} role", role=role, claimed=identity.name)
        return identity

    def _identify(self, metadata: Sequence[tuple[str, Any]], certificate_names: Sequence[str]) -> Identity:
        credentials = [value for key, value in metadata if key == AUTHORIZATION_METADATA_KEY]
        if len(credentials) > 1:
            raise _unauthenticated("BAD_CREDENTIAL", "send one authorization header, not several")
        if credentials:
            return self._from_bearer(credentials[0])
        for name in certificate_names:
            entry = self.identities.get(name)
            if entry is not None:
                return Identity(entry.name, frozenset(entry.roles), "certificate")
        if certificate_names:
            raise _unauthenticated("UNKNOWN_CERTIFICATE", f"the client certificate ({', '.join(certificate_names)}) "
                                   "names no identity of the identities file", claimed=certificate_names[0])
        raise _unauthenticated("MISSING_CREDENTIAL", "this call needs a credential: authorization: Bearer TOKEN "
                               "metadata (tollgate --token, TOLLGATE_TOKEN) or a client certificate")

    def _from_bearer(self, value: Any) -> Identity:
        text = value if isinstance(value, str) else ""
        scheme, _, credential = text.partition(" ")
        if scheme.lower() != "bearer" or not credential or len(credential) > MAX_CREDENTIAL_CHARS:
            raise _unauthenticated("BAD_CREDENTIAL", "authorization is not 'Bearer TOKEN' (a token of at most "
                                   f"{MAX_CREDENTIAL_CHARS} characters)")
        token = split_token(credential)
        if token is not None:
            name, secret = token
            entry = self.identities.get(name)
            if entry is None or not entry.accepts(secret):
                # One answer for an unknown name and a wrong secret: which names exist is not told.
                raise _unauthenticated("BAD_CREDENTIAL", "the token is not accepted (revoked, rotated or mistyped)",
                                       claimed=name[:128])
            return Identity(entry.name, frozenset(entry.roles), "token")
        if self._jwt is not None and credential.count(".") == 2:
            return self._jwt.identify(credential)
        raise _unauthenticated("BAD_CREDENTIAL", "the credential is neither a Tollgate token (tg_NAME.SECRET) nor "
                               + ("a JWT" if self._jwt is not None else "accepted: JWTs are not configured"))

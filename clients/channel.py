"""How the clients reach the server: plaintext or TLS, with a client certificate (mutual TLS) and a token.

    security = ChannelSecurity(ca=Path("ca.pem"), token=os.environ["TOLLGATE_TOKEN"])
    with ValidationClient("tollgate.internal:50051", security=security) as client: ...

Without ``security``, the clients read it from the environment (:meth:`ChannelSecurity.from_environment`):
``TOLLGATE_TOKEN``, ``TOLLGATE_CLIENT_CA``, ``TOLLGATE_CLIENT_CERT``, ``TOLLGATE_CLIENT_KEY`` (not
``TOLLGATE_TLS_*``, which are the server's own certificate settings).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

AUTHORIZATION_METADATA_KEY = "authorization"
# What gRPC metadata can carry: printable ASCII (a token never has more).
_METADATA_TEXT = re.compile(r"[\x21-\x7e]+")


class ChannelSecurityError(ValueError):
    """Connection settings that cannot work (a file that cannot be read, a certificate without its key)."""


@dataclass(frozen=True, slots=True)
class ChannelSecurity:
    ca: Path | None = None  # trust the server's certificate from this CA (PEM); else the system's roots, with TLS
    cert: Path | None = None  # a client certificate (PEM) for mutual TLS, with its key
    key: Path | None = None
    token: str | None = None  # sent as authorization: Bearer TOKEN
    server_name: str | None = None  # the name the server's certificate must carry, when not the target's host

    @classmethod
    def from_environment(cls) -> ChannelSecurity:
        def path(name: str) -> Path | None:
            value = os.environ.get(name)
            return Path(value) if value else None

        return cls(ca=path("TOLLGATE_CLIENT_CA"), cert=path("TOLLGATE_CLIENT_CERT"), key=path("TOLLGATE_CLIENT_KEY"),
                   token=os.environ.get("TOLLGATE_TOKEN") or None)

    @property
    def tls(self) -> bool:
        return self.ca is not None or self.cert is not None

    def check(self) -> None:
        """Refuse what cannot work, before any call: an error naming the flag (or variable) and the file."""
        if (self.cert is None) != (self.key is None):
            raise ChannelSecurityError("--tls-cert and --tls-key (TOLLGATE_CLIENT_CERT, TOLLGATE_CLIENT_KEY) go "
                                       "together")
        if self.token is not None and not _METADATA_TEXT.fullmatch(self.token):
            raise ChannelSecurityError("--token (TOLLGATE_TOKEN) has characters a token never has (spaces, "
                                       "control characters or non-ASCII): check what was pasted")

    def channel_credentials(self) -> grpc.ChannelCredentials:
        def read(flag: str, path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return path.read_bytes()
            except OSError as error:
                raise ChannelSecurityError(f"{flag}: cannot read {path}: {error.strerror or error}") from None

        return grpc.ssl_channel_credentials(root_certificates=read("--tls-ca", self.ca),
                                            private_key=read("--tls-key", self.key),
                                            certificate_chain=read("--tls-cert", self.cert))


_INTERCEPTORS: tuple[type, ...] = (grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                                   grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor)


class _Authorization(*_INTERCEPTORS):  # type: ignore[misc]
    """Adds ``authorization: Bearer TOKEN`` to every call, beside the call's own metadata."""

    def __init__(self, token: str) -> None:
        self._header = (AUTHORIZATION_METADATA_KEY, f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=(*(details.metadata or ()), self._header))

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


def open_channel(target: str, security: ChannelSecurity | None,
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to ``target``: TLS when a CA or a client certificate is given, with the token on every call."""
    security = security if security is not None else ChannelSecurity.from_environment()
    security.check()
    chosen = list(options)
    if security.server_name:
        chosen.append(("grpc.ssl_target_name_override", security.server_name))
    channel = grpc.secure_channel(target, security.channel_credentials(), options=chosen) if security.tls \
        else grpc.insecure_channel(target, options=chosen)
    if security.token is None:
        return channel
    return grpc.intercept_channel(channel, _Authorization(security.token))

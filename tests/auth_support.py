"""For access-control tests: identities with tokens, JWTs signed in the test, and every RPC called generically."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from google.protobuf import descriptor as protobuf_descriptor
from google.protobuf import message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from tollgate.api.v1 import admin_pb2, audit_pb2, exceptions_pb2, refdata_pb2, validation_pb2
from tollgate.server.identities import new_token, write_identity
from tollgate.server.roles import Role

SERVICE_DESCRIPTORS: tuple[protobuf_descriptor.ServiceDescriptor, ...] = (
    validation_pb2.DESCRIPTOR.services_by_name["ValidationService"],
    refdata_pb2.DESCRIPTOR.services_by_name["ReferenceDataService"],
    admin_pb2.DESCRIPTOR.services_by_name["AdminService"],
    audit_pb2.DESCRIPTOR.services_by_name["AuditService"],
    exceptions_pb2.DESCRIPTOR.services_by_name["ExceptionService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
JWT_ISSUER = "https://idp.example.com"
JWT_AUDIENCE = "tollgate"


def every_method() -> list[protobuf_descriptor.MethodDescriptor]:
    return [method for service in SERVICE_DESCRIPTORS for method in service.methods]


def method_path(method: protobuf_descriptor.MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


@dataclass
class Identities:
    """An identities file with one identity per role (``as-caller``, ...) and their tokens."""

    path: Path
    tokens: dict[Role, str] = field(default_factory=dict)

    @classmethod
    def make(cls, directory: Path) -> Identities:
        identities = cls(directory / "identities.yaml")
        for role in Role:
            token, token_hash = new_token(f"as-{role}")
            write_identity(identities.path, f"as-{role}", [role], token_hash)
            identities.tokens[role] = token
        return identities


@dataclass
class JwtIssuer:
    """An identity provider's signing key (Ed25519), its public key in a PEM file."""

    key: ed25519.Ed25519PrivateKey
    public_key_file: Path

    @classmethod
    def make(cls, directory: Path) -> JwtIssuer:
        key = ed25519.Ed25519PrivateKey.generate()
        path = directory / "idp.pub.pem"
        path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
        return cls(key, path)

    def token(self, subject: str = "jdoe@example.com", roles: Any = ("caller",), expires_in: float = 300,
              **claims: Any) -> str:
        now = int(time.time())
        payload = {"sub": subject, "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "iat": now, "exp": now + expires_in,
                   "roles": list(roles) if isinstance(roles, tuple) else roles, **claims}
        return jwt.encode({k: v for k, v in payload.items() if v is not None}, self.key, algorithm="EdDSA")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def call(channel: grpc.Channel, method: protobuf_descriptor.MethodDescriptor,
         metadata: Sequence[tuple[str, str]] = (), timeout: float = 15.0) -> grpc.StatusCode:
    """Call ``method`` with an empty request (or a stream of one) and return how it ended: OK, or the error's code.

    Empty requests change nothing: loads, upserts and deletes without content are refused as bad requests, after
    the access check this is about."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    path = method_path(method)
    serialize, deserialize = request_class.SerializeToString, response_class.FromString
    try:
        if method.client_streaming and method.server_streaming:
            responses = channel.stream_stream(path, serialize, deserialize)(
                iter([request_class()]), metadata=metadata, timeout=timeout)
            _drain(responses)
        elif method.client_streaming:
            channel.stream_unary(path, serialize, deserialize)(iter([request_class()]), metadata=metadata,
                                                               timeout=timeout)
        elif method.server_streaming:  # Health.Watch: the first answer is enough
            responses = channel.unary_stream(path, serialize, deserialize)(request_class(), metadata=metadata,
                                                                           timeout=timeout)
            next(iter(responses), None)
            responses.cancel()
        else:
            channel.unary_unary(path, serialize, deserialize)(request_class(), metadata=metadata, timeout=timeout)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


def _drain(responses: Iterator[Any]) -> None:
    for _response in responses:
        pass

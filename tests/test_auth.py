"""Access control through the real server: every RPC x every kind of credential, refusals, reloads, safe defaults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY

from tests.auth_support import (
    JWT_AUDIENCE,
    JWT_ISSUER,
    Identities,
    JwtIssuer,
    bearer,
    call,
    every_method,
    method_path,
)
from tests.certs import CA, Issued
from tests.conftest import free_port, run_cli
from tests.refdata_support import ServerProcess, wait_until
from tests.status_support import error_info
from tollgate.api.v1 import admin_pb2, admin_pb2_grpc, refdata_pb2, refdata_pb2_grpc
from tollgate.clients.channel import ChannelSecurity, open_channel
from tollgate.rules.problems import ProblemsError
from tollgate.server.app import RunningServer, start
from tollgate.server.identities import new_token, read_identities, remove_identity, write_identity
from tollgate.server.roles import METHOD_ROLES, OPEN, Role
from tollgate.server.settings import Settings

ALLOWED, UNAUTHENTICATED, DENIED = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, \
    grpc.StatusCode.PERMISSION_DENIED


def _captured_logs() -> Any:
    """The log lines of the server's calls, with what each call bound (method, caller, correlation id)."""
    return structlog.testing.capture_logs([structlog.contextvars.merge_contextvars])


def test_every_method_of_every_service_has_a_role_in_the_table() -> None:
    paths = {method_path(method) for method in every_method()}
    assert paths - METHOD_ROLES.keys() == set(), "a method without an entry is refused to everyone: give it a role"
    assert METHOD_ROLES.keys() - paths == set(), "an entry for a method no service has"


def _secured_settings(identities: Identities, issuer: JwtIssuer, **extra: object) -> Settings:
    return Settings(port=0, threads=2, shutdown_grace_seconds=1, identities_file=identities.path,
                    jwt_public_key=issuer.public_key_file, jwt_issuer=JWT_ISSUER, jwt_audience=JWT_AUDIENCE,
                    **extra)  # type: ignore[arg-type]


@dataclass
class Secured:
    """A server with identities (one per role), JWTs and, over TLS, certificates: ``transport`` says which."""

    running: RunningServer
    identities: Identities
    issuer: JwtIssuer
    transport: str
    ca: CA | None = None
    directory: Path | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    def channel(self, client: Issued | None = None) -> grpc.Channel:
        """A channel of the real client's making: TLS trusting the test CA, with ``client``'s certificate."""
        if self.ca is None:
            return open_channel(self.target, ChannelSecurity())
        assert self.directory is not None
        ca_file = self.directory / "ca.pem"
        cert = key = None
        if client is not None:
            cert, key = client.write(self.directory, f"client-{client.certificate.serial_number}")
        return open_channel(self.target, ChannelSecurity(ca=ca_file, cert=cert, key=key))


def _start_secured(directory: Path, transport: str, **extra: object) -> Secured:
    identities, issuer = Identities.make(directory), JwtIssuer.make(directory)
    if transport == "plaintext":
        return Secured(start(_secured_settings(identities, issuer, **extra)), identities, issuer, transport)
    ca = CA.make()
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    cert, key = ca.server_certificate().write(directory, "server")
    mutual = {"tls_client_ca": directory / "ca.pem"} if transport == "mutual TLS" else {}
    running = start(_secured_settings(identities, issuer, tls_cert=cert, tls_key=key, **mutual, **extra))
    return Secured(running, identities, issuer, transport, ca, directory)


@pytest.fixture(scope="module", params=["plaintext", "TLS", "mutual TLS"])
def secured_over(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    secured = _start_secured(tmp_path_factory.mktemp("auth"), request.param, reflection=True)
    yield secured
    secured.running.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Identities, JwtIssuer]]:
    over_plaintext = _start_secured(tmp_path_factory.mktemp("auth"), "plaintext", reflection=True)
    yield over_plaintext.running, over_plaintext.identities, over_plaintext.issuer
    over_plaintext.running.stop()


def _credentials(identities: Identities, issuer: JwtIssuer) -> dict[str, tuple[tuple[str, str], ...]]:
    credentials = {
        "none": (),
        "bad token": bearer(identities.tokens[Role.CALLER][:-4] + "AAAA"),
        "unknown name": bearer(new_token("nobody")[0]),
        "expired JWT": bearer(issuer.token(roles=tuple(Role), expires_in=-120)),
        "JWT of another issuer": bearer(issuer.token(iss="https://evil.example.com")),
        "not a bearer": (("authorization", "Basic YWRtaW46YWRtaW4="),),
    }
    for role in Role:
        credentials[f"token:{role}"] = bearer(identities.tokens[role])
        credentials[f"JWT:{role}"] = bearer(issuer.token(roles=(str(role),)))
    return credentials


def _expected(required: Role | None, credential: str) -> grpc.StatusCode:
    if required is OPEN:
        return ALLOWED
    if ":" not in credential:
        return UNAUTHENTICATED
    return ALLOWED if credential.split(":")[1] == required else DENIED


def _outcomes(channel: grpc.Channel, credentials: dict[str, tuple[tuple[str, str], ...]],
              expect: Any) -> dict[tuple[str, str], tuple[str, str]]:
    """Every method with every credential on ``channel``: (expected, got) where they differ."""
    wrong = {}
    for method in every_method():
        required = METHOD_ROLES[method_path(method)]
        for credential, metadata in credentials.items():
            code = call(channel, method, metadata)
            # An allowed call may still be a bad request (it is empty): what matters is it got past the check.
            got = code if code in (UNAUTHENTICATED, DENIED, grpc.StatusCode.UNAVAILABLE) else ALLOWED
            expected = expect(required, credential)
            if got != expected:
                wrong[(method_path(method), credential)] = (expected.name, got.name)
    return wrong


def test_every_rpc_with_every_credential(secured_over: Secured) -> None:
    """Tokens and JWTs on every transport; over mutual TLS, each role's certificate (and none, an unknown one, another
    CA's, an expired one) too."""
    credentials = _credentials(secured_over.identities, secured_over.issuer)
    channel_certificate = None
    if secured_over.transport == "mutual TLS":  # the channel needs a certificate: it names the caller of "none"
        assert secured_over.ca is not None
        channel_certificate = secured_over.ca.issue("as-caller")
        credentials["certificate:caller"] = credentials.pop("none")
    with secured_over.channel(channel_certificate) as channel:
        wrong = _outcomes(channel, credentials, _expected)
    if secured_over.transport == "mutual TLS":
        assert secured_over.ca is not None
        certificates = {f"certificate:{role}": secured_over.ca.issue(f"cn-ignored-{role}", dns=(f"as-{role}",))
                        for role in Role}
        certificates["certificate CN:operator"] = secured_over.ca.issue("as-operator")
        certificates["unknown certificate"] = secured_over.ca.issue("someone-else", dns=("someone.example.com",))
        refused_at_handshake = {"no certificate": None, "another CA's": CA.make("Other CA").issue("as-operator"),
                                "expired": secured_over.ca.issue("as-operator", valid_days=-1)}
        for name, certificate in certificates.items():
            with secured_over.channel(certificate) as channel:
                role_of = name.split(":")[1] if ":" in name else None
                wrong |= _outcomes(channel, {name: ()}, lambda required, _n, role=role_of: ALLOWED
                                   if required is OPEN or required == role
                                   else (DENIED if role is not None else UNAUTHENTICATED))
        for name, certificate in refused_at_handshake.items():
            with secured_over.channel(certificate) as channel:
                health = next(m for m in every_method() if method_path(m) == "/grpc.health.v1.Health/Check")
                if call(channel, health, timeout=5) is not grpc.StatusCode.UNAVAILABLE:
                    wrong[("handshake", name)] = ("UNAVAILABLE", "connected")
    assert wrong == {}


def test_refusals_carry_error_info_and_are_logged_and_counted(
        secured: tuple[RunningServer, Identities, JwtIssuer]) -> None:
    running, identities, _issuer = secured
    upsert = "/tollgate.v1.ReferenceDataService/Upsert"
    before = REGISTRY.get_sample_value("tollgate_auth_refusals_total", {"method": upsert, "reason": "ROLE_REQUIRED"})
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel, _captured_logs() as logs:
        stub = refdata_pb2_grpc.ReferenceDataServiceStub(channel)
        with pytest.raises(grpc.RpcError) as denied:
            stub.Upsert(refdata_pb2.UpsertRequest(entity="rate_cards"), metadata=bearer(identities.tokens[Role.CALLER]))
        with pytest.raises(grpc.RpcError) as missing:
            stub.Upsert(refdata_pb2.UpsertRequest(entity="rate_cards"))
    assert denied.value.code() is DENIED
    info = error_info(denied.value)
    assert (info.reason, info.domain, info.metadata["role_required"], info.metadata["method"]) == \
        ("ROLE_REQUIRED", "tollgate", "operator", upsert)
    assert "as-caller may not call" in (denied.value.details() or "")
    assert missing.value.code() is UNAUTHENTICATED and error_info(missing.value).reason == "MISSING_CREDENTIAL"
    refusals = [line for line in logs if line["event"] == "call_unauthorized"]
    assert [line["reason"] for line in refusals] == ["ROLE_REQUIRED", "MISSING_CREDENTIAL"]
    assert refusals[0]["claimed"] == "as-caller" and refusals[0]["method"] == upsert
    assert refusals[0]["peer"].startswith("ipv4:127.0.0.1:")
    after = REGISTRY.get_sample_value("tollgate_auth_refusals_total", {"method": upsert, "reason": "ROLE_REQUIRED"})
    assert after == (before or 0) + 1


def test_every_log_line_of_a_call_names_its_caller(secured: tuple[RunningServer, Identities, JwtIssuer]) -> None:
    running, identities, issuer = secured
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel, _captured_logs() as logs:
        admin = admin_pb2_grpc.AdminServiceStub(channel)
        admin.Reload(admin_pb2.ReloadRequest(), metadata=bearer(identities.tokens[Role.OPERATOR]))
        admin.Reload(admin_pb2.ReloadRequest(),
                     metadata=bearer(issuer.token(subject="ops@example.com", roles=("operator",))))
    answered = [line for line in logs if line["event"] == "reloaded_on_request"]
    assert [line.get("caller") for line in answered] == ["as-operator", "ops@example.com"]


@pytest.mark.parametrize(("credential", "reason"), [
    ("Bearer " + "x" * 6200, "BAD_CREDENTIAL"),
    ("Bearer ", "BAD_CREDENTIAL"),
    ("bearer tg_.secret", "BAD_CREDENTIAL"),
    ("Bearer tg_as-caller.", "BAD_CREDENTIAL"),
    ("Bearer tg_as-caller", "BAD_CREDENTIAL"),
    ("Bearer a.b.c", "BAD_CREDENTIAL"),
    ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "BAD_CREDENTIAL"),
    ("Token abc", "BAD_CREDENTIAL"),
])
def test_hostile_credentials_are_refused(secured: tuple[RunningServer, Identities, JwtIssuer], credential: str,
                                         reason: str) -> None:
    running, _identities, _issuer = secured
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = refdata_pb2_grpc.ReferenceDataServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Status(refdata_pb2.StatusRequest(), metadata=(("authorization", credential),), timeout=10)
    assert refused.value.code() is UNAUTHENTICATED
    assert error_info(refused.value).reason == reason


def test_two_authorization_headers_are_refused(secured: tuple[RunningServer, Identities, JwtIssuer]) -> None:
    running, identities, _issuer = secured
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = refdata_pb2_grpc.ReferenceDataServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Status(refdata_pb2.StatusRequest(), timeout=10,
                        metadata=(*bearer(identities.tokens[Role.CALLER]), *bearer(identities.tokens[Role.READER])))
    assert refused.value.code() is UNAUTHENTICATED


@pytest.mark.parametrize(("claims", "reason"), [
    ({"expires_in": -120}, "EXPIRED_CREDENTIAL"),
    ({"aud": "another-service"}, "BAD_CREDENTIAL"),
    ({"exp": None}, "BAD_CREDENTIAL"),
    ({"subject": None}, "BAD_CREDENTIAL"),
    ({"roles": {"caller": True}}, "BAD_CREDENTIAL"),
])
def test_jwts_are_checked(secured: tuple[RunningServer, Identities, JwtIssuer], claims: dict[str, object],
                          reason: str) -> None:
    running, _identities, issuer = secured
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = refdata_pb2_grpc.ReferenceDataServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Status(refdata_pb2.StatusRequest(), timeout=10,
                        metadata=bearer(issuer.token(**{"roles": ("reader",), **claims})))  # type: ignore[arg-type]
    assert (refused.value.code(), error_info(refused.value).reason) == (UNAUTHENTICATED, reason)


def _forged(header: dict[str, str], claims: dict[str, object], hmac_key: bytes | None) -> str:
    """A JWT made by hand, as an attacker would (PyJWT refuses to make these)."""
    def encoded(part: dict[str, object] | dict[str, str]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")

    signing_input = encoded(header) + b"." + encoded(claims)
    signature = b"" if hmac_key is None else base64.urlsafe_b64encode(
        hmac.new(hmac_key, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def test_a_jwt_signed_otherwise_is_refused(secured: tuple[RunningServer, Identities, JwtIssuer],
                                          tmp_path: Path) -> None:
    running, _identities, issuer = secured
    claims = {"sub": "x", "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "exp": int(time.time()) + 300, "roles": ["reader"]}
    other = JwtIssuer.make(tmp_path)
    public_pem = issuer.public_key_file.read_bytes()
    forged = [
        jwt.encode(claims, other.key, algorithm="EdDSA"),  # another provider's key
        jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256"),
        _forged({"alg": "none", "typ": "JWT"}, claims, None),  # unsigned
        _forged({"alg": "HS256", "typ": "JWT"}, claims, public_pem),  # the public key as an HMAC secret
    ]
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = refdata_pb2_grpc.ReferenceDataServiceStub(channel)
        for token in forged:
            with pytest.raises(grpc.RpcError) as refused:
                stub.Status(refdata_pb2.StatusRequest(), metadata=bearer(token), timeout=10)
            assert refused.value.code() is UNAUTHENTICATED, token


def test_rotation_and_revocation_take_effect_on_reload(tmp_path: Path) -> None:
    identities, issuer = Identities.make(tmp_path), JwtIssuer.make(tmp_path)
    running = start(_secured_settings(identities, issuer))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            status = refdata_pb2_grpc.ReferenceDataServiceStub(channel).Status
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            operator = bearer(identities.tokens[Role.OPERATOR])
            old = bearer(identities.tokens[Role.READER])
            status(refdata_pb2.StatusRequest(), metadata=old)
            rotated, rotated_hash = new_token("as-reader")
            write_identity(identities.path, "as-reader", None, rotated_hash)
            status(refdata_pb2.StatusRequest(), metadata=old)  # until the reload, the old token holds
            reloaded = admin.Reload(admin_pb2.ReloadRequest(), metadata=operator)
            assert reloaded.identities_reloaded and reloaded.rulesets_reloaded and not reloaded.problems
            assert reloaded.identities == len(Role)
            with pytest.raises(grpc.RpcError) as refused:
                status(refdata_pb2.StatusRequest(), metadata=old)
            assert refused.value.code() is UNAUTHENTICATED
            status(refdata_pb2.StatusRequest(), metadata=bearer(rotated))

            # A broken file on reload is refused: the identities in force stay, and the answer says why.
            good = identities.path.read_text()
            identities.path.write_text(good + "  - name: [broken\n")
            refused_reload = admin.Reload(admin_pb2.ReloadRequest(), metadata=operator)
            assert not refused_reload.identities_reloaded and refused_reload.rulesets_reloaded
            assert any(str(identities.path) in problem for problem in refused_reload.problems)
            status(refdata_pb2.StatusRequest(), metadata=bearer(rotated))

            identities.path.write_text(good)
            assert remove_identity(identities.path, "as-reader")
            running.reload()  # what SIGHUP does
            with pytest.raises(grpc.RpcError) as revoked:
                status(refdata_pb2.StatusRequest(), metadata=bearer(rotated))
            assert revoked.value.code() is UNAUTHENTICATED
    finally:
        running.stop()


@pytest.mark.parametrize(("text", "line", "says"), [
    ("identities:\n  - name: a\n    roles: [caller]\n    token_hash: tg_a.secret\n", 4, "must never be stored"),
    ("identities:\n  - name: a\n    roles: [boss]\n", 3, "roles.0"),
    ("identities:\n  - name: a\n    roles: []\n", 3, "roles"),
    ("identities:\n  - name: a\n", 2, "roles: is required"),
    ("identities:\n  - name: a\n    roles: [caller]\n  - name: a\n    roles: [reader]\n", 4, "listed twice"),
    ("identities:\n  - name: a\n    roles: [caller, caller]\n", 3, "twice"),
    ("identities:\n  - name: 'a b'\n    roles: [caller]\n", 2, "name"),
    ("identities:\n  - name: a\n    roles: [caller]\n    password: x\n", 4, "not a known key"),
    ("identities: [\n", 2, "YAML syntax"),
    ("- a\n", 1, "a YAML mapping"),
])
def test_a_malformed_identities_file_is_refused_naming_its_line(tmp_path: Path, text: str, line: int,
                                                                says: str) -> None:
    path = tmp_path / "identities.yaml"
    path.write_text(text)
    with pytest.raises(ProblemsError) as refused:
        read_identities(path)
    problem = refused.value.problems[0]
    assert (problem.path, problem.line) == (str(path), line) and says in str(problem), str(problem)


def test_serve_refuses_a_malformed_identities_file(tmp_path: Path) -> None:
    path = tmp_path / "identities.yaml"
    path.write_text("identities:\n  - name: a\n    roles: [superuser]\n")
    done = run_cli("serve", "--workers", "1", "--port", "0", "--identities-file", str(path))
    assert done.returncode == 2
    assert f"{path}:3" in done.stderr + done.stdout


def test_listening_beyond_loopback_needs_tls_and_authentication(tmp_path: Path) -> None:
    with pytest.raises(ProblemsError) as refused:
        start(Settings(host="0.0.0.0", port=0))
    assert "needs TLS" in str(refused.value) and "--insecure" in str(refused.value)
    identities = Identities.make(tmp_path)
    with pytest.raises(ProblemsError) as still_refused:  # authentication without TLS sends tokens in the clear
        start(Settings(host="0.0.0.0", port=0, identities_file=identities.path))
    assert "needs TLS" in str(still_refused.value) and "authentication" not in str(still_refused.value)
    done = run_cli("serve", "--workers", "1", "--host", "::", "--port", "0")
    assert done.returncode == 2 and "needs TLS" in done.stderr + done.stdout
    running = start(Settings(host="0.0.0.0", port=0, insecure=True, threads=1, shutdown_grace_seconds=0))
    running.stop()


def test_health_is_open_and_reflection_off_with_authentication(tmp_path: Path) -> None:
    identities, issuer = Identities.make(tmp_path), JwtIssuer.make(tmp_path)
    running = start(_secured_settings(identities, issuer))
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            by_path = {method_path(method): method for method in every_method()}
            assert call(channel, by_path["/grpc.health.v1.Health/Check"]) is ALLOWED
            reflection = by_path["/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"]
            assert call(channel, reflection, bearer(identities.tokens[Role.READER])) is grpc.StatusCode.UNIMPLEMENTED
    finally:
        running.stop()


def test_mutual_tls_needs_identities_for_its_roles(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="identities-file"):
        Settings(tls_cert=tmp_path / "c.pem", tls_key=tmp_path / "k.pem", tls_client_ca=tmp_path / "ca.pem")


def test_an_unreadable_jwt_key_refuses_to_start(tmp_path: Path) -> None:
    identities, issuer = Identities.make(tmp_path), JwtIssuer.make(tmp_path)
    issuer.public_key_file.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ProblemsError) as refused:
        start(_secured_settings(identities, issuer))
    assert "jwt_public_key" in str(refused.value)


def test_auth_commands_make_rotate_and_revoke_tokens(tmp_path: Path) -> None:
    path = tmp_path / "identities.yaml"
    made = run_cli("auth", "token", "create", "psa-approvals", "--roles", "caller", "--identities", str(path))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("tg_psa-approvals.") and token not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_identities(path)["psa-approvals"].accepts(token.split(".", 1)[1])
    rotated = run_cli("auth", "token", "create", "psa-approvals", "--identities", str(path))
    entry = read_identities(path)["psa-approvals"]
    assert entry.roles == (Role.CALLER,) and entry.accepts(rotated.stdout.strip().split(".", 1)[1])
    assert not entry.accepts(token.split(".", 1)[1])
    added = run_cli("auth", "add", "erp.example.com", "--roles", "operator,reader", "--identities", str(path))
    assert added.returncode == 0 and read_identities(path)["erp.example.com"].token_hash is None
    listed = run_cli("auth", "list", "--identities", str(path))
    assert "erp.example.com\toperator,reader\tcertificate only" in listed.stdout
    assert run_cli("auth", "revoke", "psa-approvals", "--identities", str(path)).returncode == 0
    assert "psa-approvals" not in read_identities(path)
    assert run_cli("auth", "revoke", "psa-approvals", "--identities", str(path)).returncode == 1
    bad_role = run_cli("auth", "token", "create", "x", "--roles", "caller,root", "--identities", str(path))
    assert bad_role.returncode == 2 and "'root' is not a role" in bad_role.stderr
    no_roles = run_cli("auth", "token", "create", "new", "--identities", str(path))
    assert no_roles.returncode == 2 and "give its roles" in no_roles.stderr
    bad_name = run_cli("auth", "token", "create", "a\nb", "--roles", "caller", "--identities", str(path))
    assert bad_name.returncode == 2


def test_every_worker_enforces_the_table_and_reloads_on_request(tmp_path: Path) -> None:
    identities = Identities.make(tmp_path)
    server = ServerProcess("--workers", "2", "--identities-file", str(identities.path))
    try:
        server.wait_until_up(timeout=90)

        def logged(event: str) -> list[dict[str, Any]]:
            return [json.loads(line) for line in server.stderr().splitlines()
                    if line.startswith("{") and f'"event": "{event}"' in line]

        def status_on_fresh_connections(metadata: tuple[tuple[str, str], ...], times: int = 12) -> set[str]:
            codes = set()
            for _ in range(times):  # each channel is a new connection; the kernel spreads them over the workers
                with grpc.insecure_channel(server.target) as channel:
                    codes.add(call(channel, _by_path("/tollgate.v1.ReferenceDataService/Status"), metadata).name)
            return codes

        wait_until(lambda: len({line["process"] for line in logged("serving")}) == 2, timeout=90)
        refusing: set[int] = set()
        for _ in range(10):  # the kernel spreads connections over the workers at random: until both took some
            assert status_on_fresh_connections(()) == {"UNAUTHENTICATED"}
            refusing = {line["process"] for line in logged("call_unauthorized")}
            if len(refusing) == 2:
                break
        assert len(refusing) == 2, "both workers refused"
        old = bearer(identities.tokens[Role.READER])
        assert status_on_fresh_connections(old) == {"OK"}

        rotated, rotated_hash = new_token("as-reader")
        write_identity(identities.path, "as-reader", None, rotated_hash)
        loads_before = len(logged("identities_loaded"))
        with grpc.insecure_channel(server.target) as channel:
            answer = admin_pb2_grpc.AdminServiceStub(channel).Reload(
                admin_pb2.ReloadRequest(), metadata=bearer(identities.tokens[Role.OPERATOR]), timeout=30)
        assert answer.identities_reloaded and answer.workers_signalled == 1
        # The worker asked reloads, then the supervisor has every worker reload (that one again): three loads.
        wait_until(lambda: len(logged("identities_loaded")) >= loads_before + 3, timeout=30)
        assert status_on_fresh_connections(old) == {"UNAUTHENTICATED"}
        assert status_on_fresh_connections(bearer(rotated)) == {"OK"}
    finally:
        server.stop()


def _by_path(path: str) -> Any:
    return next(method for method in every_method() if method_path(method) == path)


def test_metrics_listen_on_loopback_even_when_the_service_does_not(tmp_path: Path) -> None:
    identities = Identities.make(tmp_path)
    ca = CA.make()
    cert, key = ca.server_certificate().write(tmp_path, "server")
    running = start(Settings(host="0.0.0.0", port=0, metrics_port=free_port(), threads=1, shutdown_grace_seconds=0,
                             tls_cert=cert, tls_key=key, identities_file=identities.path))
    try:
        assert running.metrics is not None
        assert running.metrics.server.server_address[0] == "127.0.0.1"
    finally:
        running.stop()

"""TLS through the real server and clients: certificates checked at start, rotated while serving, refused broken."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import structlog
from cryptography import x509

from tests.auth_support import Identities
from tests.certs import CA
from tests.conftest import SAMPLE_TIMESHEET, run_cli
from tests.refdata_support import wait_until
from tollgate.clients.channel import ChannelSecurity, ChannelSecurityError
from tollgate.clients.client import RefDataClient, ValidationClient
from tollgate.rules.problems import ProblemsError
from tollgate.server.app import RunningServer, start
from tollgate.server.roles import Role
from tollgate.server.settings import Settings
from tollgate.server.tls import CHECK_INTERVAL_SECONDS

ENTRY = {"entry_id": "TE-TLS-1", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1", "work_date": "2026-11-03",
         "hours": "8", "labor_category": "SENIOR_CONSULTANT", "submitted_at": "2026-11-07T17:00:00Z"}


def _served_serial(port: int) -> int:
    """The serial number of the certificate a new connection is served."""
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RunningServer, CA, Path]]:
    ca = CA.make()
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    cert, key = ca.server_certificate().write(tmp_path, "server")
    running = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, tls_cert=cert, tls_key=key))
    yield running, ca, tmp_path
    running.stop()


def test_calls_over_tls(tls_server: tuple[RunningServer, CA, Path]) -> None:
    running, _ca, directory = tls_server
    target = f"127.0.0.1:{running.port}"
    with ValidationClient(target, timeout=10, security=ChannelSecurity(ca=directory / "ca.pem")) as client:
        [decision] = client.validate_time_entries([ENTRY]).decisions
    assert decision.item_id == "TE-TLS-1"
    with ValidationClient(target, timeout=5, security=ChannelSecurity()) as plaintext, \
            pytest.raises(grpc.RpcError) as refused:
        plaintext.validate_time_entries([ENTRY])
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    (directory / "other-ca.pem").write_bytes(CA.make("Other CA").cert_pem)
    with ValidationClient(target, timeout=5, security=ChannelSecurity(ca=directory / "other-ca.pem")) as untrusting, \
            pytest.raises(grpc.RpcError) as untrusted:
        untrusting.validate_time_entries([ENTRY])
    assert untrusted.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_replaced_certificate_serves_the_next_connection(tls_server: tuple[RunningServer, CA, Path]) -> None:
    running, ca, directory = tls_server
    first = _served_serial(running.port)
    security = ChannelSecurity(ca=directory / "ca.pem")
    with RefDataClient(f"127.0.0.1:{running.port}", timeout=10, security=security) as kept_open:
        kept_open.status()
        renewed = ca.server_certificate()
        # As a renewal tool does: the new files written beside, then renamed over the old ones.
        renewed.write(directory, "server.new")
        os.replace(directory / "server.new.key", directory / "server.key")
        os.replace(directory / "server.new.pem", directory / "server.pem")
        with structlog.testing.capture_logs() as logs:
            wait_until(lambda: _served_serial(running.port) == renewed.certificate.serial_number,
                       timeout=10 * CHECK_INTERVAL_SECONDS, interval=0.2)
        assert any(line["event"] == "tls_certificate_rotated" for line in logs)
        assert first != renewed.certificate.serial_number
        kept_open.status()  # a connection open before the rotation keeps working
    with RefDataClient(f"127.0.0.1:{running.port}", timeout=10, security=security) as fresh:
        fresh.status()


@pytest.mark.parametrize("breakage", ["garbage certificate", "half-written certificate", "key of another certificate",
                                      "expired certificate", "removed key"])
def test_a_broken_replacement_is_refused_and_the_previous_certificate_serves(
        tls_server: tuple[RunningServer, CA, Path], breakage: str) -> None:
    running, ca, directory = tls_server
    serving = _served_serial(running.port)
    cert, key = directory / "server.pem", directory / "server.key"
    if breakage == "garbage certificate":
        cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    elif breakage == "half-written certificate":
        cert.write_bytes(ca.server_certificate().cert_pem[:200])
    elif breakage == "key of another certificate":
        key.write_bytes(ca.server_certificate().key_pem)
    elif breakage == "expired certificate":
        ca.server_certificate(valid_days=-1).write(directory, "server")
    else:
        key.unlink()
    with structlog.testing.capture_logs() as logs:
        wait_until(lambda: any(line["event"] == "tls_certificate_refused" for line in logs) or
                   _served_serial(running.port) != serving, timeout=10 * CHECK_INTERVAL_SECONDS, interval=0.2)
    assert _served_serial(running.port) == serving
    [refused] = [line for line in logs if line["event"] == "tls_certificate_refused"]  # once, not per connection
    assert refused["setting"] in ("tls_cert", "tls_key")
    with RefDataClient(f"127.0.0.1:{running.port}", timeout=10,
                       security=ChannelSecurity(ca=directory / "ca.pem")) as client:
        client.status()


@pytest.mark.parametrize(("breakage", "setting"), [
    ("missing certificate", "tls_cert"), ("not PEM", "tls_cert"), ("key of another certificate", "tls_key"),
    ("expired", "tls_cert"), ("client CA not PEM", "tls_client_ca"),
])
def test_start_is_refused_naming_the_file(tmp_path: Path, breakage: str, setting: str) -> None:
    ca = CA.make()
    cert, key = ca.server_certificate().write(tmp_path, "server")
    client_ca = None
    identities = None
    if breakage == "missing certificate":
        cert.unlink()
    elif breakage == "not PEM":
        cert.write_text("hello")
    elif breakage == "key of another certificate":
        key.write_bytes(ca.server_certificate().key_pem)
    elif breakage == "expired":
        ca.server_certificate(valid_days=-1).write(tmp_path, "server")
    else:
        client_ca = tmp_path / "clients-ca.pem"
        client_ca.write_text("not a certificate")
        identities = Identities.make(tmp_path).path
    with pytest.raises(ProblemsError) as refused:
        start(Settings(port=0, tls_cert=cert, tls_key=key, tls_client_ca=client_ca, identities_file=identities))
    [problem] = refused.value.problems
    assert problem.subject == setting, str(problem)


def test_serve_refuses_half_a_tls_setting() -> None:
    done = run_cli("serve", "--workers", "1", "--port", "0", "--tls-cert", "server.pem")
    assert done.returncode == 2
    assert "--tls-key" in done.stderr + done.stdout


def test_the_cli_over_tls_with_a_token(tls_server: tuple[RunningServer, CA, Path], tmp_path: Path) -> None:
    _running, _ca, directory = tls_server
    identities = Identities.make(tmp_path)
    cert, key = directory / "server.pem", directory / "server.key"
    secured = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, tls_cert=cert, tls_key=key,
                             identities_file=identities.path))
    try:
        target = f"127.0.0.1:{secured.port}"
        flags = ["--server", target, "--tls-ca", str(directory / "ca.pem")]
        done = run_cli("validate", str(SAMPLE_TIMESHEET), *flags, "--token", identities.tokens[Role.CALLER])
        assert done.returncode == 0, done.stderr
        denied = run_cli("refdata", "status", *flags, "--token", identities.tokens[Role.CALLER])
        assert denied.returncode != 0 and "PERMISSION_DENIED" in denied.stderr and "reader" in denied.stderr
        missing = run_cli("admin", "reload", *flags)
        assert missing.returncode != 0 and "UNAUTHENTICATED" in missing.stderr
        reloaded = run_cli("admin", "reload", *flags, "--token", identities.tokens[Role.OPERATOR])
        assert reloaded.returncode == 0 and "identities reloaded" in reloaded.stdout, reloaded.stderr
        untrusted = run_cli("refdata", "status", "--server", target, "--token", identities.tokens[Role.READER])
        assert untrusted.returncode != 0 and "UNAVAILABLE" in untrusted.stderr and "Traceback" not in untrusted.stderr
    finally:
        secured.stop()


def test_client_settings_that_cannot_work_are_refused_before_any_call(tmp_path: Path) -> None:
    with pytest.raises(ChannelSecurityError, match="--tls-ca: cannot read"):
        ValidationClient("127.0.0.1:1", security=ChannelSecurity(ca=tmp_path / "missing.pem"))
    with pytest.raises(ChannelSecurityError, match="go together"):
        ValidationClient("127.0.0.1:1", security=ChannelSecurity(ca=tmp_path, cert=tmp_path / "c.pem"))
    for pasted in ("tg_a.b\n", "tg_a.b c", "tg_ä.b", ""):
        if pasted:
            with pytest.raises(ChannelSecurityError, match="--token"):
                ValidationClient("127.0.0.1:1", security=ChannelSecurity(token=pasted))
    done = run_cli("refdata", "status", "--tls-ca", str(tmp_path / "missing.pem"))
    assert done.returncode == 2 and "--tls-ca: cannot read" in done.stderr and "Traceback" not in done.stderr
    env_token = run_cli("refdata", "status", "--token", "tg_a.b\x01")
    assert env_token.returncode == 2 and "--token" in env_token.stderr

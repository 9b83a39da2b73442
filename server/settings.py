"""Service configuration: defaults, overridden by TOLLGATE_* environment variables, overridden by flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.config import JsonDict
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_RULESETS = PROJECT_ROOT / "rulesets"
BUNDLED_REFDATA = PROJECT_ROOT / "examples" / "refdata"
DEFAULT_MAX_UPLOAD_BYTES = 1024 * 1024 * 1024
DEFAULT_SPOOL_MAX_BYTES = 1024 * 1024 * 1024
# Marks a setting the supervisor passes to its workers: not a flag of its own.
SUPERVISOR_ONLY: JsonDict = {"supervisor_only": True}


class Settings(BaseSettings):
    """Every setting is a flag of ``tollgate serve`` (``--max-batch-items``) and an environment variable
    (``TOLLGATE_MAX_BATCH_ITEMS``); flags win. The CLI builds its flags and their help from these fields."""

    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="forbid")

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(50051, ge=0, le=65535, description="port to listen on; 0 picks a free port")
    rulesets: Path = Field(BUNDLED_RULESETS, description="directory of ruleset files")
    refdata: Path | None = Field(
        BUNDLED_REFDATA,
        description="directory of reference data exports loaded at start (with a shared store: only into an empty "
        "one); none: start without reference data. With --redis-url or --snapshot-dir, the bundled sample only "
        "when named",
    )
    redis_url: str | None = Field(None, description="keep snapshots in Redis, shared by every replica")
    redis_prefix: str = Field("tollgate", min_length=1, description="prefix of every Redis key and channel")
    snapshot_dir: Path | None = Field(
        None,
        description="keep snapshots in this directory, shared by every server process using it and kept across "
        "restarts. Unset: in the process, or with several workers a temporary directory they share for the run",
    )
    snapshots_kept: int = Field(10, ge=1, description="reference snapshots kept for replaying past decisions")
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="largest request accepted, in bytes")
    max_batch_items: int = Field(50_000, ge=1, description="most items in one request (or one stream chunk)")
    workers: int = Field(os.cpu_count() or 1, ge=1, description="server processes sharing the port")
    worker_group: int = Field(1, ge=1, description="set by the supervisor: how many workers this process is one of",
                              json_schema_extra=SUPERVISOR_ONLY)
    worker_index: int = Field(0, ge=0, description="set by the supervisor: which worker this process is (from 0)",
                              json_schema_extra=SUPERVISOR_ONLY)
    metrics_port: int = Field(
        0, ge=0, le=65535,
        description="serve Prometheus metrics at http://HOST:PORT/metrics; 0: off. With several workers, worker i "
        "serves them on PORT + i",
    )
    max_upload_bytes: int = Field(
        DEFAULT_MAX_UPLOAD_BYTES, ge=1,
        description="largest reference data upload (ReferenceDataService.Load, every file together), in bytes",
    )
    threads: int = Field(
        max(4, (os.cpu_count() or 1) * 2), ge=1,
        description="threads deciding calls per process (the CPU work of each validation call or stream chunk); "
        "calls beyond wait their turn. Waiting streams and health checks hold none",
    )
    load_threads: int = Field(2, ge=1, description="threads for reference data loads, changes, status and diffs "
                              "per process, apart from the deciding threads")
    max_streams: int = Field(
        1000, ge=1,
        description="most streaming calls open at once per process (validation streams and reference data "
        "uploads); one more is refused RESOURCE_EXHAUSTED",
    )
    stream_idle_seconds: float = Field(
        60.0, gt=0,
        description="a stream that sends no chunk (or takes no response) for this long is ended DEADLINE_EXCEEDED",
    )
    tls_cert: Path | None = Field(
        None, description="serve TLS with this PEM certificate chain (with --tls-key); a replaced file is picked up "
        "by the next connection, without a restart")
    tls_key: Path | None = Field(None, description="the PEM private key of --tls-cert")
    tls_client_ca: Path | None = Field(
        None, description="mutual TLS: require a client certificate signed by a CA in this PEM file; its subject "
        "alternative name (or common name) is the caller, as named in --identities-file")
    identities_file: Path | None = Field(
        None, description="YAML file of callers (name, roles, the hash of their token): every call but health "
        "checks needs a token or certificate of one of them, and a role for its method; reloaded on SIGHUP or "
        "AdminService.Reload")
    jwt_public_key: Path | None = Field(
        None, description="also take JWTs signed by the PEM public key in this file (an identity provider's; "
        "RS256, ES256 or EdDSA), with --jwt-issuer and --jwt-audience; roles from the --jwt-roles-claim claim")
    jwt_issuer: str | None = Field(None, description="the iss claim a JWT must carry")
    jwt_audience: str | None = Field(None, description="the aud claim a JWT must carry")
    jwt_roles_claim: str = Field("roles", min_length=1, description="the JWT claim listing the caller's roles")
    insecure: bool = Field(
        False, description="allow listening on an address other than loopback without TLS and authentication "
        "(anyone who can reach the port may then change reference data)")
    reflection: bool | None = Field(
        None, description="serve gRPC reflection; unset: on without authentication, off with it (it then needs "
        "the reader role)")
    metrics_host: str = Field("127.0.0.1", description="address to serve metrics on (the endpoint has no "
                              "authentication: loopback unless a scraper elsewhere needs it)")
    database_url: str | None = Field(
        None, description="the decision ledger's database: postgresql+psycopg://USER@HOST/DB (shared by replicas) or "
        "sqlite:///PATH; unset: the SQLite file tollgate.db in --data-dir")
    data_dir: Path = Field(Path("var"), description="directory of the service's own files (the ledger's SQLite "
                           "file by default), created if missing")
    spool_dir: Path | None = Field(
        None, description="directory of the ledger's spool: while the database cannot be reached, each call is "
        "appended and fsync'd there before it is answered, and written to the database when it is back; unset: "
        "spool/ in --data-dir")
    spool_max_bytes: int = Field(
        DEFAULT_SPOOL_MAX_BYTES, ge=0, description="most bytes each server process's spool may hold; when it is full "
        "calls fail UNAVAILABLE (LEDGER_UNAVAILABLE) until the database is back. 0: no spool (calls fail while the "
        "database cannot be reached)")
    ledger: bool = Field(True, description="record every validation call in the decision ledger before it is "
                         "answered (false: nothing recorded)")
    request_id_window_hours: float = Field(24.0, gt=0, le=24 * 400, allow_inf_nan=False,
                                           description="how long a request id is remembered: a retry within it gets "
                                           "the recorded response (AIP-155)")
    ledger_retention_days: int = Field(
        400, ge=1, le=36_500, description="keep the ledger's batches and decisions this many days after they were "
        "answered; older ones are purged at start and then daily (tollgate audit purge cannot go past it)")
    masked_fields: str = Field(
        "purpose,attendees", description="fields masked in exports and logs as keyed HMAC-SHA256 tokens "
        "(hmac:16 hex digits), comma-separated: item fields, and custom.NAME for a custom attribute; empty: none")
    masking_key_file: Path | None = Field(
        None, description="file holding the masking key (at least 16 bytes; readable by its owner only). Without a "
        "key, exports that would mask a field are refused")
    masking_key: str | None = Field(None, repr=False, description="the masking key itself (prefer "
                                    "--masking-key-file: a flag shows in ps)")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="time calls in flight get to finish on SIGTERM")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="least severe log level kept")

    @field_validator("*", mode="before")
    @classmethod
    def _none_spelled_out(cls, value: Any, info: ValidationInfo) -> Any:
        # Environment variables cannot be unset by a flag, and the supervisor passes every setting to its
        # workers as text (None becomes "None"): for every setting that may be unset, these spellings mean so.
        if info.field_name is None or type(None) not in get_args(cls.model_fields[info.field_name].annotation):
            return value
        spelled = str(value).strip().lower() if isinstance(value, (str, Path)) else None
        return None if spelled in ("", "none") else value

    @model_validator(mode="after")
    def _no_sample_data_in_a_shared_store(self) -> Settings:
        # The bundled sample is for trying the service out; never seed it into a store others share or that
        # outlives this run (a worker of the supervisor is told its refdata outright).
        if (self.redis_url or self.snapshot_dir) and "refdata" not in self.model_fields_set:
            self.refdata = None
        return self

    @model_validator(mode="after")
    def _tls_settings_go_together(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise ValueError(f"{missing}: --tls-cert and --tls-key go together (a certificate and its key)")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca: mutual TLS needs the server's own --tls-cert and --tls-key")
        if self.tls_client_ca is not None and self.identities_file is None and self.jwt_public_key is None:
            raise ValueError("tls_client_ca: a client certificate names its caller, whose roles come from "
                             "--identities-file; set it")
        if self.jwt_public_key is not None and (self.jwt_issuer is None or self.jwt_audience is None):
            raise ValueError("jwt_public_key: JWTs are checked against --jwt-issuer and --jwt-audience; set both")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def authenticating(self) -> bool:
        """Whether callers must say who they are: identities, JWTs or client certificates are configured."""
        return self.identities_file is not None or self.jwt_public_key is not None or self.tls_client_ca is not None

"""Service configuration: defaults, overridden by TOLLGATE_* environment variables, overridden by flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_RULESETS = PROJECT_ROOT / "rulesets"
BUNDLED_REFDATA = PROJECT_ROOT / "examples" / "refdata"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="0 picks a free port")
    rulesets: Path = Field(BUNDLED_RULESETS, description="directory of ruleset files")
    refdata: Path = Field(BUNDLED_REFDATA, description="directory of reference data exports")
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="largest request accepted")
    max_batch_items: int = Field(50_000, ge=1, description="most items in one request (or one stream chunk)")
    workers: int = Field(os.cpu_count() or 1, ge=1, description="server processes sharing the port")
    threads: int = Field(max(4, (os.cpu_count() or 1) * 2), ge=1, description="gRPC handler threads")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="time calls in flight get to finish on SIGTERM")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

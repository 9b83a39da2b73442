"""Correlation ids: taken from the caller's metadata, or generated, and returned to the caller.

The server's interceptor (server/calls.py) binds the id to structlog's context for the duration of
the call, so every log line of the call carries it, and sends it back as initial metadata.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog

from tollgate.rules.decisions import CORRELATION_METADATA_KEY as METADATA_KEY

_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def correlation_id_from(metadata: Any) -> str:
    for key, value in metadata or ():
        if key == METADATA_KEY and isinstance(value, str) and _VALID.match(value):
            return value
    return uuid.uuid4().hex


def current_correlation_id() -> str:
    return str(structlog.contextvars.get_contextvars().get("correlation_id", ""))

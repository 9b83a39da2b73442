"""Structured JSON logs (structlog); the correlation id of the call in progress rides on every line.

Personal fields (the masking policy's, server/masking.py) are masked wherever they appear in an event.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from tollgate.server.masking import MaskingPolicy, parse_masked_fields
from tollgate.server.settings import Settings


class MaskPersonalFields:
    """A structlog processor masking the policy's fields at any depth of an event. The policy starts as the
    default fields, withheld (no key yet); the server hands it its own policy, with its key, at start."""

    def __init__(self) -> None:
        self.policy = MaskingPolicy(*parse_masked_fields(Settings.model_fields["masked_fields"].default))

    def __call__(self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        masked: dict[str, Any] = self.policy.event(event_dict)
        return masked


MASK_PERSONAL_FIELDS = MaskPersonalFields()


def configure_logging(level: str) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            MASK_PERSONAL_FIELDS,
            structlog.processors.add_log_level,
            # With several worker processes, which one said it matters.
            structlog.processors.CallsiteParameterAdder([structlog.processors.CallsiteParameter.PROCESS]),
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )

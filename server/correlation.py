"""Correlation ids: taken from the caller's metadata, or generated, and returned to the caller.

A server interceptor binds the id to structlog's context for the duration of the call, so every log
line of the call carries it, and sends it back as initial metadata.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
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


class CorrelationInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        correlation_id = correlation_id_from(handler_call_details.invocation_metadata)

        def bind(context: grpc.ServicerContext) -> None:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(correlation_id=correlation_id, method=method)
            context.send_initial_metadata(((METADATA_KEY, correlation_id),))

        if handler.unary_unary:
            behaviour = handler.unary_unary

            def unary_unary(request: Any, context: grpc.ServicerContext) -> Any:
                bind(context)
                try:
                    return behaviour(request, context)
                finally:
                    structlog.contextvars.clear_contextvars()

            return handler._replace(unary_unary=unary_unary)
        if handler.stream_stream:
            stream_behaviour = handler.stream_stream

            def stream_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                bind(context)
                try:
                    yield from stream_behaviour(requests, context)
                finally:
                    structlog.contextvars.clear_contextvars()

            return handler._replace(stream_stream=stream_stream)
        return handler

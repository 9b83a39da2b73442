"""What every call gets, whatever its service: a correlation id, isolation, bounded streams, work off the loop.

The server runs on one asyncio event loop (grpc.aio): waiting calls (an idle stream, a health watch)
hold no thread, only a coroutine. The CPU-heavy and blocking work of a call (deciding, loading,
publishing, fetching from the store) runs in a bounded thread pool through :func:`off_loop`, never on
the loop, so health checks and new calls are always answered.

:class:`CallInterceptor` binds the call's correlation id to structlog's context (and, through
:func:`off_loop`, into the pool thread doing the work), and turns whatever escapes a handler into a
status: a :class:`CallError` into its own status (INVALID_ARGUMENT with a google.rpc.BadRequest, ...),
any other exception into INTERNAL with a google.rpc.ErrorInfo, logged with its traceback. No call
ends UNKNOWN.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import Any, NoReturn, TypeVar

import grpc
import structlog
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tollgate.rules.decisions import CORRELATION_METADATA_KEY
from tollgate.server import metrics
from tollgate.server.authentication import AccessRefusedError, Authenticator, current_caller
from tollgate.server.correlation import correlation_id_from, current_correlation_id

log = structlog.get_logger("tollgate.calls")

ERROR_DOMAIN = "tollgate"
INTERNAL_REASON = "INTERNAL_ERROR"

T = TypeVar("T")


class CallError(Exception):
    """Ends the call with ``code`` and ``message`` (and google.rpc details): raised by a handler's work,
    which may run in a pool thread where ``context.abort`` cannot be awaited."""

    def __init__(self, code: grpc.StatusCode, message: str, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = tuple(details)

    def status(self) -> grpc.Status:
        packed = []
        for detail in self.details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        return rpc_status.to_status(status_pb2.Status(code=self.code.value[0], message=self.message,
                                                      details=packed))


def bad_request(message: str, violations: Sequence[tuple[str, str]]) -> CallError:
    """INVALID_ARGUMENT with a google.rpc.BadRequest naming each (field, description)."""
    detail = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        for field, description in violations
    ])
    return CallError(grpc.StatusCode.INVALID_ARGUMENT, message, [detail])


def failure(code: grpc.StatusCode, message: str, reason: str, **metadata: str) -> CallError:
    """``code`` with a google.rpc.ErrorInfo: ``reason``, domain "tollgate", ``metadata`` and the correlation id
    to find the call's log lines by."""
    metadata.setdefault("correlation_id", current_correlation_id())
    return CallError(code, message, [error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN,
                                                                 metadata=metadata)])


def internal_error(error: BaseException, method: str) -> CallError:
    """INTERNAL, ErrorInfo reason INTERNAL_ERROR."""
    return failure(grpc.StatusCode.INTERNAL,
                   f"the server failed on this call ({type(error).__name__}); nothing was decided for what was "
                   f"not answered. It is logged with correlation id {current_correlation_id()}", INTERNAL_REASON,
                   method=method, error_type=type(error).__name__)


async def off_loop(executor: Executor, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in ``executor``, with this call's context (its correlation id on every log line)."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(context.run, function, *args))


class StreamSlots:
    """At most ``limit`` streaming calls open at once in this process; one more is RESOURCE_EXHAUSTED.

    Used only on the event loop's thread, so a plain count is enough."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if self.open >= self.limit:
            metrics.STREAMS_REFUSED.inc()
            raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{self.open} streaming calls are open, the most this server process takes "
                            f"(max_streams); retry later, or send the batch over a stream already open")
        self.open += 1
        metrics.OPEN_STREAMS.inc()
        try:
            yield
        finally:
            self.open -= 1
            metrics.OPEN_STREAMS.dec()


async def read_within(context: grpc.aio.ServicerContext[Any, Any], seconds: float, what: str) -> Any | None:
    """The next request of a stream, or None at its end; a stream silent for ``seconds`` is ended
    DEADLINE_EXCEEDED (stream_idle_seconds), so an idle stream never holds its slot for ever."""
    try:
        request = await asyncio.wait_for(context.read(), seconds)
    except TimeoutError:
        raise CallError(grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"no {what} for {seconds:g} s (stream_idle_seconds): the stream is closed; send the next "
                        "chunk sooner, or open a stream when there is something to send") from None
    if request is grpc.aio.EOF:
        if context.cancelled():  # a cancelled call reads as ended too: never act on half a stream
            raise asyncio.CancelledError
        return None
    return request


async def write_within(context: grpc.aio.ServicerContext[Any, Any], response: Any, seconds: float) -> None:
    """Send one response; a client that takes none for ``seconds`` has its stream ended DEADLINE_EXCEEDED."""
    try:
        await asyncio.wait_for(context.write(response), seconds)
    except TimeoutError:
        raise CallError(grpc.StatusCode.DEADLINE_EXCEEDED,
                        f"the client took no response for {seconds:g} s (stream_idle_seconds): the stream is "
                        "closed") from None


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Correlation id, the caller's identity and role, and isolation for every call (unary or streaming, any
    service). ``certificate_names`` gives the names of a call's client certificate (server/tls.py)."""

    def __init__(self, authenticator: Authenticator,
                 certificate_names: Callable[[grpc.aio.ServicerContext[Any, Any]], tuple[str, ...]]) -> None:
        self.authenticator = authenticator
        self.certificate_names = certificate_names

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        correlation_id = correlation_id_from(handler_call_details.invocation_metadata)

        async def bind(context: grpc.aio.ServicerContext[Any, Any]) -> None:
            """Bind the correlation id and the caller to the call's logs; refuse a caller who may not call."""
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(correlation_id=correlation_id, method=method)
            await context.send_initial_metadata(((CORRELATION_METADATA_KEY, correlation_id),))
            try:
                caller = self.authenticator.check(method, context.invocation_metadata() or (),
                                                  self.certificate_names(context))
            except AccessRefusedError as refusal:
                await refuse(context, refusal)
            current_caller.set(caller)
            structlog.contextvars.bind_contextvars(caller=caller.name)

        async def refuse(context: grpc.aio.ServicerContext[Any, Any], refusal: AccessRefusedError) -> NoReturn:
            metrics.AUTH_REFUSALS.labels(method, refusal.reason).inc()
            log.warning("call_unauthorized", reason=refusal.reason, claimed=refusal.claimed, peer=context.peer(),
                        role_required=refusal.role, message=refusal.message)
            role = {} if refusal.role is None else {"role_required": str(refusal.role)}
            code = grpc.StatusCode.UNAUTHENTICATED if refusal.unauthenticated else grpc.StatusCode.PERMISSION_DENIED
            status = failure(code, refusal.message, refusal.reason, method=method, **role).status()
            await context.abort(status.code, status.details, status.trailing_metadata)
            raise AssertionError("context.abort raises")  # pragma: no cover

        async def fail(context: grpc.aio.ServicerContext[Any, Any], error: Exception) -> None:
            """End the call with a status for ``error`` (raises grpc.aio.AbortError, as context.abort does)."""
            if isinstance(error, CallError):
                call_error = error
                log.info("call_refused", code=error.code.name, message=error.message)
            elif isinstance(error, NotImplementedError):  # a generated servicer's method no one wrote (Health.List)
                call_error = CallError(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented by this server")
            else:
                call_error = internal_error(error, method)
                metrics.CALL_FAILURES.labels(method).inc()
                log.error("call_failed", error_type=type(error).__name__, exc_info=error)
            status = call_error.status()
            await context.abort(status.code, status.details, status.trailing_metadata)

        def wrap(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.isasyncgenfunction(behaviour):
                async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                    await bind(context)
                    try:
                        async for response in behaviour(request, context):
                            yield response
                    except grpc.aio.AbortError:
                        raise
                    except Exception as error:  # every failure ends the call with a status
                        await fail(context, error)
                    finally:
                        structlog.contextvars.clear_contextvars()

                return streaming

            async def answering(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await bind(context)
                try:
                    return await behaviour(request, context)
                except grpc.aio.AbortError:
                    raise
                except Exception as error:  # every failure ends the call with a status
                    await fail(context, error)
                    raise AssertionError("context.abort raises") from error  # pragma: no cover
                finally:
                    structlog.contextvars.clear_contextvars()

            return answering

        for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return handler._replace(**{kind: wrap(behaviour)})
        return handler

"""The AdminService servicer: what an operator would otherwise need a shell for (today: reload)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import grpc
import structlog

from tollgate.api.v1 import admin_pb2, admin_pb2_grpc
from tollgate.server.authentication import Authenticator
from tollgate.server.calls import off_loop
from tollgate.server.runtime import Runtime

log = structlog.get_logger("tollgate.admin")


@dataclass(frozen=True, slots=True)
class Reloader:
    """What SIGHUP and AdminService.Reload do: reread the rulesets (and the export directory) and the identities.

    Each part is refused alone: bad identities leave the rulesets reloaded, and the other way round."""

    runtime: Runtime
    authenticator: Authenticator

    def __call__(self) -> admin_pb2.ReloadResponse:
        ruleset_problems = self.runtime.reload()
        identity_problems = self.authenticator.reload()
        return admin_pb2.ReloadResponse(
            rulesets_reloaded=not ruleset_problems,
            identities_reloaded=self.authenticator.enabled and not identity_problems,
            problems=[*ruleset_problems, *identity_problems],
            rulesets=[f"{ruleset.id}@{ruleset.version}" for ruleset in self.runtime.rulesets.all],
            identities=len(self.authenticator.identities),
        )


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, reload: Callable[[], admin_pb2.ReloadResponse], executor: Executor, worker_group: int) -> None:
        self._reload = reload
        self._executor = executor
        self._worker_group = worker_group

    async def Reload(self, request: admin_pb2.ReloadRequest,  # noqa: N802 (gRPC's method name)
                     context: grpc.aio.ServicerContext[Any, Any]) -> admin_pb2.ReloadResponse:
        response = await off_loop(self._executor, self._reload)
        if self._worker_group > 1:
            # A worker of the supervisor: it forwards SIGHUP to every worker (this one reloads again: the same files).
            os.kill(os.getppid(), signal.SIGHUP)
            response.workers_signalled = self._worker_group - 1
        log.info("reloaded_on_request", rulesets_reloaded=response.rulesets_reloaded,
                 identities_reloaded=response.identities_reloaded, problems=list(response.problems))
        return response

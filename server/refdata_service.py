"""The ReferenceDataService servicer: loads, upserts, deletes, status and diffs of reference snapshots.

Every change makes a new snapshot and publishes it to the store (so every replica switches to it);
the call answers once this replica decides with it. Refused changes name every problem (file:line:
field for loads) in a google.rpc.BadRequest, and change nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from tollgate.api.v1 import refdata_pb2 as pb
from tollgate.api.v1 import refdata_pb2_grpc as pb_grpc
from tollgate.refdata.diff import diff_snapshots
from tollgate.refdata.loaders import upload_problem
from tollgate.refdata.snapshot import (
    ReferenceSnapshot,
    Table,
    apply_changes,
    build_snapshot,
    load_exports,
    replacing,
)
from tollgate.refdata.store import (
    ANY_CURRENT,
    SnapshotConflictError,
    SnapshotInfo,
    SnapshotNotFoundError,
    StoreUnavailableError,
)
from tollgate.rules.entities import ENTITIES
from tollgate.rules.problems import Problem, ProblemsError
from tollgate.server.runtime import Runtime
from tollgate.server.settings import DEFAULT_MAX_UPLOAD_BYTES

log = structlog.get_logger("tollgate.refdata")

# Error details travel in trailing metadata, which is small (8 KiB by default): name the first problems
# in detail and count the rest.
MAX_PROBLEMS_IN_DETAILS = 40
CONFLICT_RETRIES = 5
SWITCH_WAIT_SECONDS = 5.0


def snapshot_info_message(info: SnapshotInfo) -> pb.SnapshotInfo:
    return pb.SnapshotInfo(snapshot_id=info.snapshot_id, source=info.source, loaded_at=info.loaded_at.isoformat(),
                           counts=info.counts)


def _problem_message(problem: Problem, root: Path | None) -> pb.Problem:
    path = problem.path
    if root is not None and Path(path).is_relative_to(root):
        path = str(Path(path).relative_to(root))
    message = problem.message if root is None else problem.message.replace(f"{root}/", "").replace(str(root), ".")
    return pb.Problem(path=path, line=problem.line or 0, field=problem.subject or "", message=message)


def _where(problem: pb.Problem) -> str:
    return f"{problem.path}:{problem.line}" if problem.line else problem.path


def _abort_with_problems(context: grpc.ServicerContext, what: str, problems: Sequence[Problem],
                         root: Path | None = None) -> None:
    messages = [_problem_message(p, root) for p in problems]
    violations = [
        error_details_pb2.BadRequest.FieldViolation(field=f"{_where(m)}: {m.field}" if m.field else _where(m),
                                                    description=m.message)
        for m in messages[:MAX_PROBLEMS_IN_DETAILS]
    ]
    first = messages[0]
    summary = f"{what} refused: {len(messages)} problem(s), nothing changed; first: {_where(first)}: " \
              f"{first.field + ': ' if first.field else ''}{first.message}"
    if len(messages) > MAX_PROBLEMS_IN_DETAILS:
        summary += f" (the first {MAX_PROBLEMS_IN_DETAILS} are in the details)"
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=violations))
    context.abort_with_status(rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=summary, details=[detail])
    ))


def _upload_path(root: Path, relative: str, context: grpc.ServicerContext) -> Path:
    """Where an uploaded file goes: inside the upload directory, as an entity file or a file of its folder."""
    problem = upload_problem(relative)
    if problem is not None:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"file path {relative!r}: {problem}")
    return root.joinpath(*PurePosixPath(relative).parts)


def _empty_snapshot() -> ReferenceSnapshot:
    return build_snapshot({name: Table(entity, {}) for name, entity in ENTITIES.items()}, "empty")


def _store_lost(runtime: Runtime) -> str:
    return (f"the snapshot store ({runtime.store.description}) holds no current snapshot while this replica "
            f"decides with {runtime.generation.snapshot.snapshot_id}: it lost its data. Nothing was changed; load "
            "the full exports (tollgate refdata load DIR) to make a snapshot current again")


def upload_too_large(limit: int) -> str:
    return (f"the upload is larger than this server accepts: {limit:,} bytes over all files (max_upload_bytes); "
            "nothing was loaded. Start the server with a larger --max-upload-bytes (TOLLGATE_MAX_UPLOAD_BYTES), "
            "or send only the files that changed")


class ReferenceDataService(pb_grpc.ReferenceDataServiceServicer):
    def __init__(self, runtime: Runtime, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> None:
        self.runtime = runtime
        self.max_upload_bytes = max_upload_bytes

    def _publish(self, snapshot: ReferenceSnapshot, context: grpc.ServicerContext, *,
                 if_current: str = ANY_CURRENT) -> None:
        try:
            switched = self.runtime.publish(snapshot, if_current=if_current, wait_seconds=SWITCH_WAIT_SECONDS)
        except StoreUnavailableError as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot publish the snapshot: {error}")
        except ProblemsError as error:  # the rulesets' lookups would find several rows at once in it
            _abort_with_problems(context, "publishing", error.problems)
        if not switched:
            log.warning("snapshot_published_not_yet_adopted", snapshot_id=snapshot.snapshot_id)

    def Load(  # noqa: N802 - gRPC method name
        self, requests: Iterator[pb.LoadRequest], context: grpc.ServicerContext
    ) -> pb.LoadResponse:
        header = pb.LoadHeader()
        with tempfile.TemporaryDirectory(prefix="tollgate-upload-") as directory:
            root = Path(directory)
            handles: dict[str, Any] = {}
            received = 0
            try:
                for request in requests:
                    if request.HasField("header"):
                        header = request.header
                        continue
                    chunk = request.chunk
                    received += len(chunk.data)
                    if received > self.max_upload_bytes:
                        # Refused before anything is read: the files received so far go with the directory.
                        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, upload_too_large(self.max_upload_bytes))
                    handle = handles.get(chunk.path)
                    if handle is None:
                        target = _upload_path(root, chunk.path, context)
                        try:
                            target.parent.mkdir(parents=True, exist_ok=True)
                            handle = handles[chunk.path] = target.open("wb")
                        except OSError as error:  # never the message: it names the server's upload directory
                            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                          f"file path {chunk.path!r}: cannot be written ({error.strerror})")
                            raise AssertionError("context.abort raises") from None  # pragma: no cover
                    handle.write(chunk.data)
            finally:
                for handle in handles.values():
                    handle.close()
            if not handles:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no files uploaded")
            source = header.source or f"upload of {', '.join(sorted(handles))}"
            try:
                loaded = load_exports(root, partial=header.partial, source=source)
            except ProblemsError as error:
                _abort_with_problems(context, "load", error.problems, root)
            rejected = [_problem_message(p, root) for p in loaded.rejected]
            for _attempt in range(CONFLICT_RETRIES):  # what it replaces is checked again if another change won
                base, base_id = self._base(context)
                try:
                    replaced = replacing(loaded, base, keep_missing=header.keep_missing,
                                         allow_emptying=header.allow_emptying, where=directory)
                except ProblemsError as error:
                    _abort_with_problems(context, "load", error.problems, root)
                try:
                    self._publish(replaced.snapshot, context, if_current=base_id)
                    break
                except SnapshotConflictError:
                    continue
            else:
                context.abort(grpc.StatusCode.ABORTED, "the current snapshot kept changing during this load; retry")
        log.info("refdata_loaded", snapshot_id=replaced.snapshot.snapshot_id, source=source,
                 counts=replaced.snapshot.counts(), rejected_rows=len(rejected),
                 previous_snapshot_id=replaced.previous_id, emptied=replaced.emptied, kept=replaced.kept)
        return pb.LoadResponse(snapshot=snapshot_info_message(SnapshotInfo.of(replaced.snapshot)),
                               rejected_rows=rejected, previous_snapshot_id=replaced.previous_id,
                               emptied=replaced.emptied, kept=replaced.kept)

    def _base(self, context: grpc.ServicerContext) -> tuple[ReferenceSnapshot | None, str]:
        """What a load replaces, and the store's current id to publish over. A store with no snapshot while
        this replica decides with one has lost its data: the load replaces the replica's snapshot."""
        try:
            current = self.runtime.store.current()
        except StoreUnavailableError as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot read the current snapshot: {error}")
        if current is None and self.runtime.has_data:
            return self.runtime.generation.snapshot, ""
        return current, current.snapshot_id if current is not None else ""

    def _change(self, context: grpc.ServicerContext, if_current: str,
                make: Callable[[ReferenceSnapshot], ReferenceSnapshot]) -> pb.ChangeResponse:
        """Apply a change to the store's current snapshot and publish it, retrying if another change won."""
        for _attempt in range(1 if if_current else CONFLICT_RETRIES):
            try:
                current = self.runtime.store.current()
            except StoreUnavailableError as error:
                context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot read the current snapshot: {error}")
            if current is None and self.runtime.has_data:  # the store lost its data: this change would be all
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, _store_lost(self.runtime))
            base_id = current.snapshot_id if current is not None else ""
            if if_current and base_id != if_current:
                break
            try:
                changed = make(current or _empty_snapshot())
            except ProblemsError as error:
                _abort_with_problems(context, "change", error.problems)
            try:
                self._publish(changed, context, if_current=base_id)
            except SnapshotConflictError:
                continue
            log.info("refdata_changed", snapshot_id=changed.snapshot_id, previous_snapshot_id=base_id,
                     source=changed.source)
            return pb.ChangeResponse(snapshot=snapshot_info_message(SnapshotInfo.of(changed)),
                                     previous_snapshot_id=base_id)
        context.abort(grpc.StatusCode.ABORTED,
                      f"the current snapshot changed while applying this change (expected {if_current or 'any'}); "
                      "read the status and retry")
        raise AssertionError("context.abort raises")  # pragma: no cover

    def Upsert(  # noqa: N802 - gRPC method name
        self, request: pb.UpsertRequest, context: grpc.ServicerContext
    ) -> pb.ChangeResponse:
        records = [dict(record.fields) for record in request.records]
        if not records:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no records to upsert")
        return self._change(context, request.if_current,
                            lambda base: apply_changes(base, request.entity, upserts=records))

    def Delete(  # noqa: N802 - gRPC method name
        self, request: pb.DeleteRequest, context: grpc.ServicerContext
    ) -> pb.ChangeResponse:
        if request.entity not in ENTITIES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown entity {request.entity!r}; one of {', '.join(ENTITIES)}")
        entity = ENTITIES[request.entity]
        keys = []
        for position, record in enumerate(request.keys, start=1):
            missing = [name for name in entity.key if not record.fields.get(name)]
            if missing or set(record.fields) - set(entity.key):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"key {position}: a {entity.name} key has exactly the fields {', '.join(entity.key)}")
            keys.append(tuple(record.fields[name] for name in entity.key))
        if not keys:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no keys to delete")
        return self._change(context, request.if_current,
                            lambda base: apply_changes(base, entity.name, deletes=keys))

    def Status(  # noqa: N802 - gRPC method name
        self, request: pb.StatusRequest, context: grpc.ServicerContext
    ) -> pb.StatusResponse:
        status = self.runtime.status()
        response = pb.StatusResponse(
            kept=[snapshot_info_message(info) for info in status.kept],
            store=status.store,
            store_reachable=status.store_reachable,
            stale_seconds=status.stale_seconds,
            store_current_id=status.store_current_id or "",
            store_lost=status.store_lost or "",
        )
        if status.current is not None:
            response.current.CopyFrom(snapshot_info_message(status.current))
        return response

    def Diff(  # noqa: N802 - gRPC method name
        self, request: pb.DiffRequest, context: grpc.ServicerContext
    ) -> pb.DiffResponse:
        try:
            before = self.runtime.store.fetch(request.from_snapshot_id)
            after = self.runtime.store.fetch(request.to_snapshot_id)
        except SnapshotNotFoundError as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except StoreUnavailableError as error:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(error))
        return pb.DiffResponse(entities=[
            pb.EntityDiff(entity=d.entity, added=d.added, removed=d.removed, changed=d.changed)
            for d in diff_snapshots(before, after)
        ])

"""The ReferenceDataService servicer: loads, upserts, deletes, status and diffs of reference snapshots.

Every change makes a new snapshot and publishes it to the store (so every replica switches to it);
the call answers once this replica decides with it. Refused changes name every problem (file:line:
field for loads) in a google.rpc.BadRequest, and change nothing.

The work of every call (writing an upload, loading, publishing, reading the store) runs in the load
thread pool, off the event loop and apart from the deciding threads: a load never delays deciding.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from pathlib import Path, PurePosixPath
from typing import Any

import grpc
import structlog

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
from tollgate.server.calls import CallError, StreamSlots, bad_request, off_loop, read_within
from tollgate.server.runtime import Runtime

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


def _problems_error(what: str, problems: Sequence[Problem], root: Path | None = None) -> CallError:
    messages = [_problem_message(p, root) for p in problems]
    violations = [(f"{_where(m)}: {m.field}" if m.field else _where(m), m.message)
                  for m in messages[:MAX_PROBLEMS_IN_DETAILS]]
    first = messages[0]
    summary = f"{what} refused: {len(messages)} problem(s), nothing changed; first: {_where(first)}: " \
              f"{first.field + ': ' if first.field else ''}{first.message}"
    if len(messages) > MAX_PROBLEMS_IN_DETAILS:
        summary += f" (the first {MAX_PROBLEMS_IN_DETAILS} are in the details)"
    return bad_request(summary, violations)


def _upload_path(root: Path, relative: str) -> Path:
    """Where an uploaded file goes: inside the upload directory, as an entity file or a file of its folder."""
    problem = upload_problem(relative)
    if problem is not None:
        raise CallError(grpc.StatusCode.INVALID_ARGUMENT, f"file path {relative!r}: {problem}")
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


class _Upload:
    """The files of one Load call, written as their chunks arrive (in the load pool), into a temporary directory."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.directory = tempfile.TemporaryDirectory(prefix="tollgate-upload-")
        self.root = Path(self.directory.name)
        self.handles: dict[str, Any] = {}
        self.received = 0

    def write(self, path: str, data: bytes) -> None:
        self.received += len(data)
        if self.received > self.max_bytes:
            # Refused before anything is read: the files received so far go with the directory.
            raise CallError(grpc.StatusCode.RESOURCE_EXHAUSTED, upload_too_large(self.max_bytes))
        handle = self.handles.get(path)
        if handle is None:
            target = _upload_path(self.root, path)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                handle = self.handles[path] = target.open("wb")
            except OSError as error:  # never the message: it names the server's upload directory
                raise CallError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"file path {path!r}: cannot be written ({error.strerror})") from None
        handle.write(data)

    def close_files(self) -> None:
        for handle in self.handles.values():
            handle.close()

    def remove(self) -> None:
        self.close_files()
        self.directory.cleanup()


class ReferenceDataService(pb_grpc.ReferenceDataServiceServicer):
    def __init__(self, runtime: Runtime, *, loads: Executor, streams: StreamSlots, max_upload_bytes: int,
                 idle_seconds: float) -> None:
        self.runtime = runtime
        self.loads = loads
        self.streams = streams
        self.max_upload_bytes = max_upload_bytes
        self.idle_seconds = idle_seconds

    def _publish(self, snapshot: ReferenceSnapshot, *, if_current: str = ANY_CURRENT) -> None:
        try:
            switched = self.runtime.publish(snapshot, if_current=if_current, wait_seconds=SWITCH_WAIT_SECONDS)
        except StoreUnavailableError as error:
            raise CallError(grpc.StatusCode.UNAVAILABLE, f"cannot publish the snapshot: {error}") from error
        except ProblemsError as error:  # the rulesets' lookups would find several rows at once in it
            raise _problems_error("publishing", error.problems) from error
        if not switched:
            log.warning("snapshot_published_not_yet_adopted", snapshot_id=snapshot.snapshot_id)

    async def Load(  # noqa: N802 - gRPC method name
        self, requests: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.LoadResponse:
        with self.streams.hold():
            header = pb.LoadHeader()
            upload = _Upload(self.max_upload_bytes)
            try:
                while (request := await read_within(context, self.idle_seconds, "upload chunk")) is not None:
                    if request.HasField("header"):
                        header = request.header
                        continue
                    await off_loop(self.loads, upload.write, request.chunk.path, request.chunk.data)
                return await off_loop(self.loads, self._load, upload, header)
            finally:
                await off_loop(self.loads, upload.remove)

    def _load(self, upload: _Upload, header: pb.LoadHeader) -> pb.LoadResponse:
        upload.close_files()
        if not upload.handles:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "no files uploaded")
        source = header.source or f"upload of {', '.join(sorted(upload.handles))}"
        try:
            loaded = load_exports(upload.root, partial=header.partial, source=source)
        except ProblemsError as error:
            raise _problems_error("load", error.problems, upload.root) from error
        rejected = [_problem_message(p, upload.root) for p in loaded.rejected]
        for _attempt in range(CONFLICT_RETRIES):  # what it replaces is checked again if another change won
            base, base_id = self._base()
            try:
                replaced = replacing(loaded, base, keep_missing=header.keep_missing,
                                     allow_emptying=header.allow_emptying, where=str(upload.root))
            except ProblemsError as error:
                raise _problems_error("load", error.problems, upload.root) from error
            try:
                self._publish(replaced.snapshot, if_current=base_id)
                break
            except SnapshotConflictError:
                continue
        else:
            raise CallError(grpc.StatusCode.ABORTED, "the current snapshot kept changing during this load; retry")
        log.info("refdata_loaded", snapshot_id=replaced.snapshot.snapshot_id, source=source,
                 counts=replaced.snapshot.counts(), rejected_rows=len(rejected),
                 previous_snapshot_id=replaced.previous_id, emptied=replaced.emptied, kept=replaced.kept)
        return pb.LoadResponse(snapshot=snapshot_info_message(SnapshotInfo.of(replaced.snapshot)),
                               rejected_rows=rejected, previous_snapshot_id=replaced.previous_id,
                               emptied=replaced.emptied, kept=replaced.kept)

    def _base(self) -> tuple[ReferenceSnapshot | None, str]:
        """What a load replaces, and the store's current id to publish over. A store with no snapshot while
        this replica decides with one has lost its data: the load replaces the replica's snapshot."""
        try:
            current = self.runtime.store.current()
        except StoreUnavailableError as error:
            raise CallError(grpc.StatusCode.UNAVAILABLE, f"cannot read the current snapshot: {error}") from error
        if current is None and self.runtime.has_data:
            return self.runtime.generation.snapshot, ""
        return current, current.snapshot_id if current is not None else ""

    def _change(self, if_current: str, make: Callable[[ReferenceSnapshot], ReferenceSnapshot]) -> pb.ChangeResponse:
        """Apply a change to the store's current snapshot and publish it, retrying if another change won."""
        for _attempt in range(1 if if_current else CONFLICT_RETRIES):
            try:
                current = self.runtime.store.current()
            except StoreUnavailableError as error:
                raise CallError(grpc.StatusCode.UNAVAILABLE, f"cannot read the current snapshot: {error}") from error
            if current is None and self.runtime.has_data:  # the store lost its data: this change would be all
                raise CallError(grpc.StatusCode.FAILED_PRECONDITION, _store_lost(self.runtime))
            base_id = current.snapshot_id if current is not None else ""
            if if_current and base_id != if_current:
                break
            try:
                changed = make(current or _empty_snapshot())
            except ProblemsError as error:
                raise _problems_error("change", error.problems) from error
            try:
                self._publish(changed, if_current=base_id)
            except SnapshotConflictError:
                continue
            log.info("refdata_changed", snapshot_id=changed.snapshot_id, previous_snapshot_id=base_id,
                     source=changed.source)
            return pb.ChangeResponse(snapshot=snapshot_info_message(SnapshotInfo.of(changed)),
                                     previous_snapshot_id=base_id)
        raise CallError(grpc.StatusCode.ABORTED,
                        f"the current snapshot changed while applying this change (expected {if_current or 'any'}); "
                        "read the status and retry")

    async def Upsert(  # noqa: N802 - gRPC method name
        self, request: pb.UpsertRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ChangeResponse:
        return await off_loop(self.loads, self._upsert, request)

    def _upsert(self, request: pb.UpsertRequest) -> pb.ChangeResponse:
        records = [dict(record.fields) for record in request.records]
        if not records:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "no records to upsert")
        return self._change(request.if_current, lambda base: apply_changes(base, request.entity, upserts=records))

    async def Delete(  # noqa: N802 - gRPC method name
        self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ChangeResponse:
        return await off_loop(self.loads, self._delete, request)

    def _delete(self, request: pb.DeleteRequest) -> pb.ChangeResponse:
        if request.entity not in ENTITIES:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT,
                            f"unknown entity {request.entity!r}; one of {', '.join(ENTITIES)}")
        entity = ENTITIES[request.entity]
        keys = []
        for position, record in enumerate(request.keys, start=1):
            missing = [name for name in entity.key if not record.fields.get(name)]
            if missing or set(record.fields) - set(entity.key):
                raise CallError(grpc.StatusCode.INVALID_ARGUMENT,
                                f"key {position}: a {entity.name} key has exactly the fields {', '.join(entity.key)}")
            keys.append(tuple(record.fields[name] for name in entity.key))
        if not keys:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "no keys to delete")
        return self._change(request.if_current, lambda base: apply_changes(base, entity.name, deletes=keys))

    async def Status(  # noqa: N802 - gRPC method name
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StatusResponse:
        return await off_loop(self.loads, self._status)

    def _status(self) -> pb.StatusResponse:
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

    async def Diff(  # noqa: N802 - gRPC method name
        self, request: pb.DiffRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DiffResponse:
        return await off_loop(self.loads, self._diff, request)

    def _diff(self, request: pb.DiffRequest) -> pb.DiffResponse:
        try:
            before = self.runtime.store.fetch(request.from_snapshot_id)
            after = self.runtime.store.fetch(request.to_snapshot_id)
        except SnapshotNotFoundError as error:
            raise CallError(grpc.StatusCode.NOT_FOUND, str(error)) from error
        except StoreUnavailableError as error:
            raise CallError(grpc.StatusCode.UNAVAILABLE, str(error)) from error
        return pb.DiffResponse(entities=[
            pb.EntityDiff(entity=d.entity, added=d.added, removed=d.removed, changed=d.changed)
            for d in diff_snapshots(before, after)
        ])

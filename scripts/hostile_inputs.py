"""Try what a careless or hostile caller sends, surface by surface, against the real service; print the table.

    python scripts/hostile_inputs.py                  # the table on standard output (markdown)
    python scripts/hostile_inputs.py --out docs/hostile-inputs.md

It starts the real gRPC server on a free port (bundled rulesets, sample data), and while the cases run a
prober calls it with a one-entry timesheet every 20 ms: the worst latency it sees is what another caller
suffered meanwhile. Each case is refused as it should be (the item rejected naming the field, the call
answered with a clear status, the ruleset or load refused naming file and line, the snapshot unchanged),
or counts as a silent accept, or as a crash (UNKNOWN, INTERNAL, a traceback, the server gone, or another
caller kept waiting by it).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tollgate.api.v1 import audit_pb2, audit_pb2_grpc, refdata_pb2, refdata_pb2_grpc  # noqa: E402
from tollgate.api.v1 import validation_pb2 as pb  # noqa: E402
from tollgate.api.v1 import validation_pb2_grpc as pb_grpc  # noqa: E402
from tollgate.clients.client import ExceptionClient, RefDataClient, ValidationClient  # noqa: E402
from tollgate.rules.loader import load_rulesets  # noqa: E402
from tollgate.rules.problems import ProblemsError  # noqa: E402
from tollgate.server.app import start  # noqa: E402
from tollgate.server.identities import new_token, write_identity  # noqa: E402
from tollgate.server.logs import configure_logging  # noqa: E402
from tollgate.server.roles import Role  # noqa: E402
from tollgate.server.settings import Settings  # noqa: E402

ENTRY = {"entry_id": "TE-H", "worker_id": "W-1", "project_id": "P-100", "task_id": "T-1", "work_date": "2026-11-03",
         "hours": "8", "labor_category": "SENIOR_CONSULTANT", "submitted_at": "2026-11-07T17:00:00Z"}
INVOICE = {"invoice_id": "INV-H", "invoice_date": "2026-11-10", "contract_id": "C-200", "customer_id": "CU-GLOBEX",
           "currency": "USD", "lines": [{"line_id": "INV-H-1", "line_type": "FIXED_FEE", "amount": "30000.00"}]}

REFUSED, SILENT, CRASH = "refused", "silent accept", "crash"


@dataclass
class Surface:
    name: str
    outcomes: list[tuple[str, str, float]] = field(default_factory=list)  # (case, outcome, seconds)


class Prober:
    """Another caller: one-entry calls every 20 ms, the worst latency kept per surface."""

    def __init__(self, target: str) -> None:
        self.client = ValidationClient(target, timeout=30)
        self.worst: dict[str, float] = {}
        self.surface = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            started = time.perf_counter()
            with contextlib.suppress(grpc.RpcError):  # a refusal is an answer too: its latency counts
                self.client.validate_time_entries([{**ENTRY, "entry_id": "TE-PROBE"}])
            seconds = time.perf_counter() - started
            self.worst[self.surface] = max(self.worst.get(self.surface, 0.0), seconds)


def _entry_cases() -> Iterator[tuple[str, Callable[[ValidationClient], str]]]:
    values = [("hours", "\u0668"), ("hours", "\uff18"), ("hours", "1_0"), ("hours", "+8"), ("hours", "8."),
              ("hours", ".5"),
              ("hours", "8\n"), ("hours", "\xa08"), ("hours", "1E+2"), ("hours", "8e0"), ("hours", "1e-999999"),
              ("hours", "1e999999"), ("hours", "99999999999999999999999999999"), ("hours", "1" * 10_000),
              ("work_date", "20261103"), ("work_date", "2026-W45-2"), ("submitted_at", "2026-11-03 10:00Z"),
              ("time_type", "XYZ"), ("time_type", "ot"), ("worker_id", "W-1\x00"), ("currency", "usd"),
              ("billable", "yes"), ("worker_id", "W" * (1 << 20))]
    for name, value in values:
        def case(client: ValidationClient, name: str = name, value: str = value) -> str:
            bad, good = client.validate_time_entries([{**ENTRY, name: value}, {**ENTRY, "entry_id": "TE-OK"}]).decisions
            if len(str(bad.reasons)) > 100_000:
                return CRASH  # an amplified answer
            if bad.outcome.value != "reject" or "INVALID_FIELD" not in bad.codes:
                return SILENT
            return REFUSED if good.outcome.value != "reject" else CRASH
        yield f"{name} {value[:12]!r}{'...' if len(value) > 12 else ''}", case
    def copy(client: ValidationClient) -> str:
        _first, later = client.validate_time_entries([ENTRY, {**ENTRY, "hours": "2"}]).decisions
        return REFUSED if later.codes == ["DUPLICATE_ITEM"] else SILENT
    yield "the same entry_id twice", copy


def _invoice_cases() -> Iterator[tuple[str, Callable[[ValidationClient], str]]]:
    for amount in ("-30000.00", "30000.001", "3E+4"):
        def case(client: ValidationClient, amount: str = amount) -> str:
            invoice = {**INVOICE, "lines": [{**INVOICE["lines"][0], "amount": amount}]}
            [decision] = client.validate_invoices([invoice]).decisions
            return REFUSED if "INVALID_FIELD" in decision.codes else SILENT
        yield f"amount {amount}", case
    def twice(client: ValidationClient) -> str:
        decisions = client.validate_invoices([INVOICE, {**INVOICE, "lines": [{**INVOICE["lines"][0],
                                                                               "line_id": "INV-H-2"}]}]).decisions
        return REFUSED if decisions[-1].codes == ["DUPLICATE_ITEM"] else SILENT
    yield "one invoice_id as two invoices", twice
    def source_twice(client: ValidationClient) -> str:
        invoice = {**INVOICE, "lines": [{**INVOICE["lines"][0], "line_type": "TIME",
                                         "source_ids": ["WI-4001", "WI-4001"]}]}
        [decision] = client.validate_invoices([invoice]).decisions
        return REFUSED if "INVALID_FIELD" in decision.codes else SILENT
    yield "a source item twice on a line", source_twice


def _request_cases(target: str) -> Iterator[tuple[str, Callable[[ValidationClient], str]]]:
    def acceptance(_client: ValidationClient) -> str:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.ValidationServiceStub(channel)
            try:
                stub.ValidateTimeEntries(pb.ValidateTimeEntriesRequest(entries=[pb.TimeEntry(**ENTRY)],
                                                                       acceptance=65), timeout=10)
            except grpc.RpcError as error:
                return REFUSED if error.code() is grpc.StatusCode.INVALID_ARGUMENT else CRASH
            return SILENT
    yield "acceptance = 65", acceptance
    def idle_streams(_client: ValidationClient) -> str:
        channels = [grpc.insecure_channel(target) for _ in range(8)]
        release = threading.Event()

        def nothing() -> Iterator[pb.ValidateTimeEntriesRequest]:
            release.wait(5)
            yield from ()

        calls = [pb_grpc.ValidationServiceStub(c).StreamTimeEntries(nothing(), timeout=30) for c in channels]
        time.sleep(0.5)
        started = time.perf_counter()
        with ValidationClient(target, timeout=10) as other:
            other.validate_time_entries([ENTRY])
        stalled = time.perf_counter() - started > 0.5  # another caller waited for the idle streams
        time.sleep(2)  # the prober meanwhile measures what the idle streams cost others
        release.set()
        for call in calls:
            list(call)
        for channel in channels:
            channel.close()
        return CRASH if stalled else REFUSED
    yield "8 streams that send nothing for 2.5 s", idle_streams


def _audit_cases(target: str) -> Iterator[tuple[str, Callable[[ValidationClient], str]]]:
    """The AuditService: each case must be refused with ``expected`` (this server has no masking key)."""
    invalid, no_key = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION
    cases: list[tuple[str, str, Any, grpc.StatusCode]] = [
        ("GetBatch batch_id 'garbage'", "GetBatch", audit_pb2.GetBatchRequest(batch_id="garbage"), invalid),
        ("GetBatch batch_id of 1 MB", "GetBatch", audit_pb2.GetBatchRequest(batch_id="0" * (1 << 20)), invalid),
        ("Replay batch_id with SQL", "Replay", audit_pb2.ReplayRequest(batch_id="1' OR '1'='1"), invalid),
        ("ItemHistory item_kind 'x'", "ItemHistory", audit_pb2.ItemHistoryRequest(item_id="X", item_kind="x"),
         invalid),
        ("Export from 'yesterday'", "Export", audit_pb2.ExportRequest(from_time="yesterday", to_time="2026-11-30"),
         invalid),
        ("Export from after to", "Export", audit_pb2.ExportRequest(from_time="2026-12-01", to_time="2026-11-01"),
         invalid),
        ("Export to 2026-13-45", "Export", audit_pb2.ExportRequest(from_time="2026-11-01", to_time="2026-13-45"),
         invalid),
        ("Export without a masking key", "Export",
         audit_pb2.ExportRequest(from_time="2026-11-01", to_time="2026-11-30"), no_key),
        ("Purge before 2099-01-01", "Purge", audit_pb2.PurgeRequest(before="2099-01-01"), invalid),
        ("Purge before ''", "Purge", audit_pb2.PurgeRequest(before=""), invalid),
    ]
    for case_name, method, request, expected in cases:
        def case(_client: ValidationClient, method: str = method, request: Any = request,
                 expected: grpc.StatusCode = expected) -> str:
            with grpc.insecure_channel(target) as channel:
                call = getattr(audit_pb2_grpc.AuditServiceStub(channel), method)
                try:
                    answer = call(request, timeout=10)
                    if method == "Export":
                        next(answer)
                except grpc.RpcError as error:
                    return REFUSED if error.code() is expected else CRASH
            return SILENT
        yield case_name, case


def _ruleset_cases(work: Path) -> Iterator[tuple[str, Callable[[ValidationClient], str]]]:
    shipped = (ROOT / "rulesets" / "time_entry" / "10-project-status.yaml").read_text()
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
        f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join(['*' + chr(97 + n)] * 10)}]" for n in range(8)]
    bomb = shipped.replace("params:\n", "params:\n  bomb:\n" + "".join(f"    {line}\n" for line in lines), 1)
    cases = {
        "an alias bomb nine deep": bomb,
        "YAML nested 10,000 deep": "x: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "`not` x 1,000": shipped.replace("when: project.status in params.closed_statuses",
                                         "when: " + "not " * 1000 + "true", 1),
        "a 20,000-term sum": shipped.replace("when: project.status in params.closed_statuses",
                                             "when: " + " + ".join(["hours"] * 20_000) + " > 0", 1),
        "entry_id =~ '(a+)+$'": shipped.replace("when: project.status in params.closed_statuses",
                                                "when: entry_id =~ '(a+)+$'", 1),
        "50 MB of params": shipped.replace("params:\n", "params:\n  big: '" + "x" * (50 << 20) + "'\n", 1),
    }
    for name, text in cases.items():
        def case(_client: ValidationClient, text: str = text, name: str = name) -> str:
            directory = work / f"rulesets-{abs(hash(name))}"
            (directory / "time_entry").mkdir(parents=True)
            (directory / "time_entry" / "10-project-status.yaml").write_text(text)
            try:
                load_rulesets(directory)
            except ProblemsError as error:
                return REFUSED if all(p.path.endswith(".yaml") for p in error.problems) else CRASH
            except Exception:
                return CRASH
            return REFUSED if "=~" in name else SILENT  # RE2 takes (a+)+$ in linear time: loaded, and safe
        yield name, case


def _load_cases(target: str, work: Path) -> Iterator[tuple[str, Callable[[ValidationClient], str]]]:
    sample = ROOT / "examples" / "refdata"

    def variant(name: str, change: Callable[[Path], None]) -> tuple[str, Callable[[ValidationClient], str]]:
        def case(_client: ValidationClient) -> str:
            directory = work / f"refdata-{abs(hash(name))}"
            shutil.copytree(sample, directory)
            change(directory)
            with RefDataClient(target, timeout=60) as refdata:
                before = refdata.status().current.snapshot_id
                try:
                    refdata.load_directory(directory)
                except grpc.RpcError as error:
                    refused = error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
                    return REFUSED if refused and refdata.status().current.snapshot_id == before else CRASH
                except (OSError, ValueError):
                    return REFUSED if refdata.status().current.snapshot_id == before else CRASH
                return SILENT
        return name, case

    def edit(file: str, old: str, new: str) -> Callable[[Path], None]:
        def change(directory: Path) -> None:
            path = directory / file
            path.write_text(path.read_text().replace(old, new, 1))
        return change

    yield variant("Projects.csv for projects.csv", lambda d: (d / "projects.csv").rename(d / "Projects.csv"))
    yield variant("project.csv for projects.csv", lambda d: (d / "projects.csv").rename(d / "project.csv"))
    yield variant("projects.csv alone", lambda d: [p.unlink() for p in d.iterdir() if p.name != "projects.csv"])
    yield variant("a NUL inside a worker id", edit("workers.csv", "W-1,", "W-1\x00,"))
    yield variant("a rate in other digits", edit("rate_cards.csv", ",165.00", ",\u0661\u0666\u0665.00"))
    yield variant("a rate of 1e999999", edit("rate_cards.csv", ",165.00", ",1e999999"))
    yield variant("effective_to before effective_from",
                  edit("projects.csv", ",2026-11-16,\n", ",2026-11-16,2026-01-01\n"))


def _exception_cases(target: str) -> Iterator[tuple[str, Callable[[ValidationClient], str]]]:
    """The exception queue's requests: each refused with the status it should be, naming the field (or the id)."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    def refused_as(code: grpc.StatusCode, named: str, call: Callable[[ExceptionClient], Any]) -> str:
        with ExceptionClient(target, timeout=10) as queue:
            try:
                call(queue)
            except grpc.RpcError as error:
                status = rpc_status.from_call(error)
                details = error_details_pb2.BadRequest(), error_details_pb2.ErrorInfo()
                for detail in status.details if status is not None else ():
                    for message in details:
                        detail.Unpack(message)
                fields = {v.field for v in details[0].field_violations} | {details[1].metadata.get("exception_id")}
                return REFUSED if error.code() is code and named in fields else CRASH
        return SILENT

    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    yield "status 'bogus'", lambda _c: refused_as(invalid, "filter.status", lambda q: q.list(status="bogus"))
    yield "since 'yesterday'", lambda _c: refused_as(invalid, "filter.since", lambda q: q.list(since="yesterday"))
    yield "a code with a NUL", lambda _c: refused_as(invalid, "filter.code", lambda q: q.list(code="NO_RATE\x00"))
    yield "a forged page_token", lambda _c: refused_as(invalid, "page_token", lambda q: q.list(
        page_token="eyJhZnRlciI6IDAsICJmaWx0ZXIiOiAiIn0="))
    yield "exception id '1 OR 1=1'", lambda _c: refused_as(invalid, "exception_id", lambda q: q.get("1 OR 1=1"))
    yield "an unknown exception id", lambda _c: refused_as(not_found, "999999999", lambda q: q.get("999999999"))
    yield "a waiver without a reason", lambda _c: refused_as(invalid, "reason", lambda q: q.waive("1", ""))
    yield "a 1 MB waive reason", lambda _c: refused_as(invalid, "reason", lambda q: q.waive("1", "x" * (1 << 20)))
    yield "a waive reason with ANSI escapes", lambda _c: refused_as(invalid, "reason", lambda q: q.waive(
        "1", "ok\x1b[2J\x1b[31mdone"))
    yield "revalidate the waived", lambda _c: refused_as(invalid, "filter.status", lambda q: q.revalidate(
        status="waived"))


def _access_cases(work: Path) -> Iterator[tuple[str, Callable[[ValidationClient], str]]]:
    """Against a second server in the same process (one event loop for both), with identities: who may not."""
    identities = work / "identities.yaml"
    caller_token, caller_hash = new_token("psa")
    write_identity(identities, "psa", [Role.CALLER], caller_hash)
    secured = start(Settings(port=0, threads=2, shutdown_grace_seconds=1, log_level="error",
                             refdata=ROOT / "examples" / "refdata", identities_file=identities))
    target = f"127.0.0.1:{secured.port}"

    def refused_as(codes: set[grpc.StatusCode], call: Callable[[Any], Any], *metadata: tuple[str, str]) -> str:
        with grpc.insecure_channel(target) as channel:
            try:
                call(channel)(metadata=metadata, timeout=10)
            except grpc.RpcError as error:
                return REFUSED if error.code() in codes else CRASH
        return SILENT

    def upsert(channel: grpc.Channel) -> Callable[..., Any]:
        request = refdata_pb2.UpsertRequest(entity="rate_card", records=[refdata_pb2.Record(fields={
            "rate_card_id": "R-10", "labor_category": "SENIOR_CONSULTANT", "rate": "0.01"})])
        return lambda **options: refdata_pb2_grpc.ReferenceDataServiceStub(channel).Upsert(request, **options)

    unauthenticated, denied = {grpc.StatusCode.UNAUTHENTICATED}, {grpc.StatusCode.PERMISSION_DENIED}
    yield "an upsert of rate R-10 to 0.01 without a credential", lambda _c: refused_as(unauthenticated, upsert)
    yield "the same upsert with a caller's token", \
        lambda _c: refused_as(denied, upsert, ("authorization", f"Bearer {caller_token}"))
    yield "a JWT with alg none", lambda _c: refused_as(unauthenticated, upsert, (
        "authorization", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJwc2EiLCJyb2xlcyI6WyJvcGVyYXRvciJdfQ."))
    yield "a 7 KiB authorization header", lambda _c: refused_as(
        unauthenticated | {grpc.StatusCode.RESOURCE_EXHAUSTED}, upsert, ("authorization", "Bearer " + "x" * 7000))

    def flood(_client: ValidationClient) -> str:
        outcomes: list[str] = []

        def guesses() -> None:
            for attempt in range(500):
                outcomes.append(refused_as(unauthenticated, upsert, ("authorization", f"Bearer tg_psa.guess{attempt}")))

        threads = [threading.Thread(target=guesses) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return REFUSED if set(outcomes) == {REFUSED} else CRASH

    yield "2,000 guessed tokens from 4 callers at once", flood
    secured.stop()


def run(out: Any) -> int:
    settings = Settings(port=0, threads=4, shutdown_grace_seconds=2, log_level="error", refdata=ROOT / "examples" /
                        "refdata")
    configure_logging("error")  # to standard error: the table alone goes to standard output
    running = start(settings)
    target = f"127.0.0.1:{running.port}"
    surfaces: list[Surface] = []
    with tempfile.TemporaryDirectory(prefix="tollgate-hostile-") as tmp, Prober(target) as prober, \
            ValidationClient(target, timeout=60) as client:
        work = Path(tmp)
        for name, cases in (("time entry fields (ValidateTimeEntries)", _entry_cases()),
                            ("invoices (ValidateInvoices)", _invoice_cases()),
                            ("requests and streams", _request_cases(target)),
                            ("the decision ledger (AuditService)", _audit_cases(target)),
                            ("rulesets (load, lint, reload)", _ruleset_cases(work)),
                            ("reference data loads (Load)", _load_cases(target, work)),
                            ("exception queue (ExceptionService)", _exception_cases(target)),
                            ("access control (tokens, roles)", _access_cases(work))):
            surface = Surface(name)
            prober.surface = name
            for case_name, case in cases:
                started = time.perf_counter()
                try:
                    outcome = case(client)
                except grpc.RpcError as error:
                    outcome = CRASH if error.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL) else REFUSED
                except Exception as error:  # a crash of the case is what is counted
                    print(f"{name}: {case_name}: {type(error).__name__}: {str(error)[:200]}", file=sys.stderr)
                    outcome = CRASH
                surface.outcomes.append((case_name, outcome, time.perf_counter() - started))
            surfaces.append(surface)
        worst = dict(prober.worst)
    running.stop()
    out.write("| surface | hostile inputs tried | refused as they should be | silent accepts | crashes or stalls "
              "| slowest case | worst latency another caller saw |\n|---|---|---|---|---|---|---|\n")
    for surface in surfaces:
        counts = {kind: sum(1 for _n, o, _s in surface.outcomes if o == kind) for kind in (REFUSED, SILENT, CRASH)}
        slowest = max(surface.outcomes, key=lambda o: o[2])
        out.write(f"| {surface.name} | {len(surface.outcomes)} | {counts[REFUSED]} | {counts[SILENT]} "
                  f"| {counts[CRASH]} | {slowest[2]:.2f} s ({slowest[0]}) "
                  f"| {worst.get(surface.name, 0) * 1000:.0f} ms |\n")
    out.write("\nCases: " + "; ".join(f"{s.name}: " + ", ".join(f"{n} ({o})" for n, o, _ in s.outcomes)
                                      for s in surfaces) + "\n")
    bad = sum(1 for s in surfaces for _n, o, _s in s.outcomes if o != REFUSED)
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the table to this file (default: standard output)")
    args = parser.parse_args()
    if args.out is None:
        return run(sys.stdout)
    with args.out.open("w") as handle:
        return run(handle)


if __name__ == "__main__":
    sys.exit(main())

"""Shared benchmark fixtures: sizes, the generated firm and its snapshot, the shipped rulesets, entries.

Sizes come from environment variables (defaults in ``Sizes``); everything is generated from one seed,
so every row of a comparison decides the same items against the same reference data.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from benchmarks.comparators import Prebound, RuleFacts, prebind, rule_facts
from benchmarks.data import Firm, generate_firm
from tests.data_dir import remove_temporary_data_dir, use_temporary_data_dir
from tollgate.evaluators import ENGINE_VERSION
from tollgate.evaluators.binding import FixedBinder, SnapshotBinder
from tollgate.evaluators.engine import Evaluator
from tollgate.refdata.snapshot import ReferenceSnapshot, load_snapshot
from tollgate.rules.item_kinds import TIME_ENTRY
from tollgate.rules.loader import load_rulesets
from tollgate.rules.typecheck import CompiledRuleset

ROOT = Path(__file__).resolve().parent.parent
RULESETS = ROOT / "rulesets"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value.replace("_", "")) if value else default


@dataclass(frozen=True, slots=True)
class Sizes:
    seed: int = _env_int("TOLLGATE_BENCH_SEED", 20261130)
    people: int = _env_int("TOLLGATE_BENCH_PEOPLE", 3000)  # firm size: workers (500-10,000 is realistic)
    entries: int = _env_int("TOLLGATE_BENCH_ENTRIES", 100_000)  # in-process comparison, every row but the naive one
    naive_entries: int = _env_int("TOLLGATE_BENCH_NAIVE_ENTRIES", 3000)  # rule-engine Rule.matches sample
    chunk: int = _env_int("TOLLGATE_BENCH_CHUNK", 1000)  # entries per timed round, in-process
    agree_entries: int = _env_int("TOLLGATE_BENCH_AGREE_ENTRIES", 5000)  # items checked for agreement
    grpc_rounds: int = _env_int("TOLLGATE_BENCH_GRPC_ROUNDS", 10)  # calls per batch-size row
    latency_calls: int = _env_int("TOLLGATE_BENCH_LATENCY_CALLS", 2000)  # calls per latency row
    server_threads: int = _env_int("TOLLGATE_BENCH_SERVER_THREADS", 4)
    tp_batch: int = _env_int("TOLLGATE_BENCH_TP_BATCH", 1000)  # entries per call, throughput
    tp_seconds: float = float(os.environ.get("TOLLGATE_BENCH_TP_SECONDS", "") or 3.0)  # length of a round
    tp_rounds: int = _env_int("TOLLGATE_BENCH_TP_ROUNDS", 3)
    tp_clients: int = _env_int("TOLLGATE_BENCH_TP_CLIENTS", 2)  # client processes
    tp_channels: int = _env_int("TOLLGATE_BENCH_TP_CHANNELS", 4)  # connections per client process, 1 call each


SIZES = Sizes()


def git_state() -> str:
    """The commit and whether the engine's files differ from it (the numbers describe the files on disk)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "evaluators", "rules", "server"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (no git)"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return head + (f" + local changes in {', '.join(changed)}" if changed else "")


def evaluator_kind() -> str:
    """Whether the rulesets the evaluator runs are fused into generated functions (``CompiledRuleset.run``)."""
    try:
        rulesets = load_rulesets(RULESETS).for_kind(TIME_ENTRY.name)
    except Exception as error:  # only a label for the report
        return f"unknown ({type(error).__name__})"
    fused = sum(1 for r in rulesets if getattr(r, "run", None) is not None)
    conditions = [rule.condition for r in rulesets for rule in r.rules]
    compiled = sum(1 for c in conditions if getattr(c, "is_compiled", False))
    if fused:
        chains = Evaluator(TIME_ENTRY, rulesets, FixedBinder({}), "label", ENGINE_VERSION).chains.values()
        chained = "; ".join(" + ".join(version.ruleset.id for version in chain.versions) for chain in chains)
        return (f"compiled: {fused}/{len(rulesets)} rulesets fused into one generated function each"
                + (f", chained per item: {chained}" if chained else ""))
    return (f"pre-compiler: rules interpreted one by one ({compiled}/{len(conditions)} conditions compiled "
            "per expression), no generated per-ruleset function")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pytest_configure(config: pytest.Config) -> None:
    """The servers benchmarked keep their ledger (on by default) in a temporary directory, not in ./var."""
    use_temporary_data_dir(config, "tollgate-bench-data-")


def pytest_unconfigure(config: pytest.Config) -> None:
    remove_temporary_data_dir(config)



def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"tollgate benchmarks: {os.cpu_count()} cpus ({cpu_model()}), Python {platform.python_version()}, "
        f"engine {ENGINE_VERSION}, code {git_state()}",
        f"evaluator: {evaluator_kind()}; load average at start {load_average()}",
        "sizes: " + ", ".join(f"{k}={getattr(SIZES, k)}" for k in SIZES.__slots__),  # type: ignore[attr-defined]
    ]


# ---------------------------------------------------------------------------------------------------
# Results, summarised at the end of the run (per entry, entries/s, ratios within each comparison)


@dataclass(slots=True)
class Result:
    group: str
    name: str
    values: dict[str, Any] = field(default_factory=dict)


RESULTS: list[Result] = []


def per_entry(benchmark: Any, group: str, name: str, entries_per_round: int, *, cpu_seconds: float | None = None,
              rounds: int | None = None, **extra: Any) -> Result:
    """Record per-entry cost and entries/s of a benchmark whose rounds each decide ``entries_per_round``."""
    stats = getattr(getattr(benchmark, "stats", None), "stats", None)
    result = Result(group, name, {"entries_per_round": entries_per_round, **extra})
    if stats is not None and stats.data:
        median, mean = stats.median, stats.mean
        result.values.update(
            per_entry_us=round(median / entries_per_round * 1e6, 3),
            per_entry_us_mean=round(mean / entries_per_round * 1e6, 3),
            entries_per_s=round(entries_per_round / median),
            rounds=len(stats.data),
        )
        if cpu_seconds is not None and rounds:
            result.values["cpu_per_entry_us"] = round(cpu_seconds / (rounds * entries_per_round) * 1e6, 3)
    benchmark.extra_info.update(result.values)
    RESULTS.append(result)
    return result


def record(benchmark: Any, group: str, name: str, **values: Any) -> Result:
    result = Result(group, name, dict(values))
    if benchmark is not None:
        benchmark.extra_info.update(values)
    RESULTS.append(result)
    return result


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("tollgate benchmark summary")
    write(f"machine: {os.cpu_count()} cpus, {cpu_model()}, Python {platform.python_version()}; code {git_state()}")
    write(f"evaluator: {evaluator_kind()}; garbage collector held off while batches are decided "
          f"(evaluators/collector.py); load average at the end {load_average()} (other work on the machine "
          "competes for the same cores)")
    groups: dict[str, list[Result]] = {}
    for result in RESULTS:
        groups.setdefault(result.group, []).append(result)
    for group, results in groups.items():
        write("")
        write(f"[{group}]")
        bases = [r for r in results if r.name.startswith("tollgate") and r.values.get("per_entry_us")]
        ceiling = next((r for r in results if r.name == "ceiling" and r.values.get("per_entry_us")), None)
        for result in results:
            values = dict(result.values)
            mine = values.get("per_entry_us")
            if ceiling is not None and mine and result.name.startswith("tollgate"):
                # entries/s of this row as a share of the transport ceiling's
                values["pct_of_ceiling"] = f"{100 * ceiling.values['per_entry_us'] / mine:.1f}%"
            for base in bases:
                if mine and base is not result and not result.name.startswith("tollgate"):
                    # how many times the cost of this row is the cost of the tollgate row
                    values[f"cost_vs_{base.name}"] = f"{mine / base.values['per_entry_us']:.2f}x"
            write(f"  {result.name:<34} " + "  ".join(f"{k}={_format(v)}" for k, v in values.items()))


# ---------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return SIZES


@pytest.fixture(scope="session")
def firm(sizes: Sizes) -> Firm:
    return generate_firm(sizes.people, sizes.seed)


@pytest.fixture(scope="session")
def refdata_dir(firm: Firm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return firm.write(tmp_path_factory.mktemp("refdata"))


@pytest.fixture(scope="session")
def snapshot(refdata_dir: Path) -> ReferenceSnapshot:
    return load_snapshot(refdata_dir)


@pytest.fixture(scope="session")
def rulesets() -> tuple[CompiledRuleset, ...]:
    # The per-entry rulesets: the comparisons (Rule.matches, zen-engine, hand-written) decide entries one by
    # one; the batch checks (aggregates over the batch) have no counterpart there.
    return tuple(r for r in load_rulesets(RULESETS).for_kind(TIME_ENTRY.name) if not r.spec.aggregates)


@pytest.fixture(scope="session")
def evaluator(rulesets: tuple[CompiledRuleset, ...], snapshot: ReferenceSnapshot) -> Evaluator:
    """Built exactly as the service builds it (server/runtime.py)."""
    return Evaluator(TIME_ENTRY, rulesets, SnapshotBinder(TIME_ENTRY, snapshot), snapshot.snapshot_id, ENGINE_VERSION)


@pytest.fixture(scope="session")
def entries(firm: Firm, sizes: Sizes) -> list[dict[str, str]]:
    return firm.entries(sizes.entries, sizes.seed)


@pytest.fixture(scope="session")
def prebound(rulesets: tuple[CompiledRuleset, ...], snapshot: ReferenceSnapshot,
             entries: list[dict[str, str]]) -> Prebound:
    return prebind(TIME_ENTRY, rulesets, snapshot, entries)


@pytest.fixture(scope="session")
def facts(rulesets: tuple[CompiledRuleset, ...]) -> RuleFacts:
    return rule_facts(TIME_ENTRY, rulesets)


Setup = Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]


def chunked_rounds(items: Sequence[Any], chunk: int) -> tuple[Setup, int]:
    """A pytest-benchmark ``setup`` handing out consecutive chunks (cycling), and the number of chunks."""
    chunks = [items[start : start + chunk] for start in range(0, len(items) - chunk + 1, chunk)] or [items]
    position = iter(range(10**12))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (chunks[next(position) % len(chunks)],), {}

    return setup, len(chunks)


class CpuClock:
    """Process CPU time spent inside ``with`` blocks (all threads: zen-engine's batches use several)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __enter__(self) -> CpuClock:
        self._started = time.process_time()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.seconds += time.process_time() - self._started


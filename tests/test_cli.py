"""The ``tollgate`` command as a Unix tool: flags derived from the settings, a closed pipe ends quietly."""

from __future__ import annotations

import argparse
import os
import subprocess
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLE_TIMESHEET, TOLLGATE
from tollgate.clients.cli import EXIT_BROKEN_PIPE, build_parser
from tollgate.server.app import RunningServer
from tollgate.server.settings import SUPERVISOR_ONLY, Settings
from tollgate.server.supervisor import _worker_environment


def _serve_parser() -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = commands.choices["serve"]
    return parser


def _flags() -> dict[str, argparse.Action]:
    return {action.dest: action for action in _serve_parser()._actions if action.dest != "help"}


def test_every_setting_is_a_flag_with_its_description_as_help() -> None:
    settings = {name: field for name, field in Settings.model_fields.items()
                if field.json_schema_extra != SUPERVISOR_ONLY}
    flags = _flags()
    assert set(flags) == set(settings)
    for name, field in settings.items():
        assert field.description, f"setting {name} has no description"
        flag = flags[name]
        assert flag.option_strings == [f"--{name.replace('_', '-')}"]
        assert flag.help is not None
        assert flag.help.startswith(field.description.replace("%", "%%"))
        assert f"TOLLGATE_{name.upper()}" in flag.help


def test_the_help_prints_every_flag() -> None:
    text = _serve_parser().format_help()
    for name in _flags():
        assert f"--{name.replace('_', '-')}" in text


def _serve(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOLLGATE, "serve", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, **env})


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--port", "99999"], {}, "--port"),
    (["--port", "eighty"], {}, "--port"),
    (["--port", "-1"], {}, "--port"),
    (["--workers", "0"], {}, "--workers"),
    (["--threads", "1e3"], {}, "--threads"),
    (["--shutdown-grace-seconds", "-5"], {}, "--shutdown-grace-seconds"),
    (["--max-batch-items", ""], {}, "--max-batch-items"),
    (["--redis-prefix", ""], {}, "--redis-prefix"),
    (["--spool-max-bytes", "-1"], {}, "--spool-max-bytes"),
    (["--spool-max-bytes", "1GiB"], {}, "--spool-max-bytes"),
    ([], {"TOLLGATE_SPOOL_MAX_BYTES": "lots"}, "TOLLGATE_SPOOL_MAX_BYTES"),
    ([], {"TOLLGATE_THREADS": "many"}, "TOLLGATE_THREADS"),
    ([], {"TOLLGATE_WORKERS": "-2"}, "TOLLGATE_WORKERS"),
])
def test_a_bad_setting_refuses_to_start_naming_it(args: list[str], env: dict[str, str], named: str) -> None:
    completed = _serve(*args, **env)
    assert completed.returncode == 2
    assert named in completed.stderr
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("args", [["--log-level", "loud"], ["--prot", "1"], ["--port"]])
def test_a_malformed_command_line_is_a_usage_error(args: list[str]) -> None:
    completed = _serve(*args)
    assert completed.returncode == 2
    assert "usage: tollgate" in completed.stderr
    assert args[0] in completed.stderr


def _into_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with its output going into a pipe nobody reads any more (``... | head`` after head ended)."""
    reading, writing = os.pipe()
    os.close(reading)
    try:
        return subprocess.run([*TOLLGATE, *args], cwd=ROOT, stdout=writing, stderr=subprocess.PIPE, text=True,
                              timeout=60, check=False)
    finally:
        os.close(writing)


@pytest.mark.parametrize("args", [["rules", "lint"], ["rules", "test"]])
def test_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    completed = _into_a_closed_pipe(*args)
    assert completed.returncode == EXIT_BROKEN_PIPE
    assert completed.stderr == ""


def test_validate_into_a_closed_pipe_ends_quietly(server: RunningServer) -> None:
    completed = _into_a_closed_pipe("validate", str(SAMPLE_TIMESHEET), "--server", f"127.0.0.1:{server.port}")
    assert completed.returncode == EXIT_BROKEN_PIPE
    assert completed.stderr == ""


def test_parsed_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("tollgate.server.app.run", lambda settings: seen.setdefault("settings", settings) and 0)
    from tollgate.clients.cli import main

    assert main(["serve", "--port", "6001", "--max-batch-items", "7", "--refdata", "none", "--log-level", "error"]) == 0
    settings: Settings = seen["settings"]
    assert (settings.port, settings.max_batch_items, settings.refdata, settings.log_level) == (6001, 7, None, "error")


def test_every_setting_survives_the_supervisor_passing_it_to_a_worker_as_text() -> None:
    """The supervisor hands each worker every setting as an environment variable (server/supervisor.py): unset ones
    arrive as "None" and must read as unset again, whatever setting is added next."""
    defaults = Settings()
    environment = _worker_environment(defaults, 0)
    as_text = {name: environment[f"TOLLGATE_{name.upper()}"] for name in Settings.model_fields}
    worker = Settings(**as_text).model_dump()
    expected = defaults.model_dump() | {"workers": 1, "worker_group": defaults.workers, "worker_index": 0}
    assert worker == expected

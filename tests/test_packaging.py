"""One import name: the wheel installs the package ``tollgate`` and nothing else, whole."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

# The top-level folders the repository shows; each is importable only as tollgate.<name>.
SOURCE_PACKAGES = ("rules", "refdata", "evaluators", "server", "clients", "ledger")
FORMER_NAMES = (*SOURCE_PACKAGES, "tollgate_api")


def _tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns], cwd=ROOT,
                            capture_output=True, text=True, check=True, timeout=30).stdout.split()
    return [Path(name) for name in listed]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build_folder_before = (ROOT / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out)], check=True, capture_output=True, timeout=300)
    finally:
        if not build_folder_before:  # setuptools builds in the tree: leave it as it was
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    [built] = out.glob("tollgate-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package_with_every_module(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"tollgate", wheel.name.split("-py3")[0] + ".dist-info"}
    modules = {f"tollgate/{path}" for path in _tracked(*(f"{p}/*.py" for p in SOURCE_PACKAGES))}
    modules |= {str(path) for path in _tracked("tollgate/*.py", "tollgate/*.pyi")}
    assert modules - set(names) == set(), "modules missing from the wheel (a folder without __init__.py?)"
    bundled = {f"tollgate/{path}" for path in _tracked("rulesets/*.yaml", "examples/refdata/*")}
    assert bundled - set(names) == set(), "the bundled rulesets and sample data belong in the wheel"


def test_only_tollgate_imports_from_a_fresh_environment(wheel: Path, tmp_path: Path) -> None:
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=False)
    [site_packages] = environment.glob("lib/python*/site-packages")
    zipfile.ZipFile(wheel).extractall(site_packages)
    script = (
        "import importlib.util, importlib.resources, sys\n"
        f"clashing = [n for n in {FORMER_NAMES!r} if importlib.util.find_spec(n) is not None]\n"
        "assert not clashing, clashing\n"
        "import tollgate\n"
        "bundled = importlib.resources.files('tollgate')\n"
        "assert (bundled / 'rulesets' / 'time_entry').is_dir() and (bundled / 'examples' / 'refdata').is_dir()\n"
        "print(tollgate.__file__)\n"
    )
    completed = subprocess.run([str(environment / "bin" / "python"), "-I", "-c", script], cwd=tmp_path,
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip().startswith(str(site_packages))


def test_no_module_imports_a_former_top_level_name() -> None:
    offending = []
    for path in _tracked("*.py"):
        for node in ast.walk(ast.parse((ROOT / path).read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            offending += [f"{path}:{node.lineno}: {name}" for name in names if name.split(".")[0] in FORMER_NAMES]
    assert offending == []

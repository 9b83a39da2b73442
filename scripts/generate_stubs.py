"""Regenerate the protobuf and gRPC stubs in tollgate/api/ from proto/.

    python scripts/generate_stubs.py          # write the stubs
    python scripts/generate_stubs.py --check  # exit 1 if the committed stubs are stale

The stubs are committed so that the service runs without a code-generation step; the test suite
runs --check so a .proto change without regenerated stubs fails CI.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
# proto/tollgate/api/v1/x.proto generates tollgate/api/v1/x_pb2.py, importing its siblings as tollgate.api.v1.
API = Path("tollgate", "api")


def generate(out_dir: Path) -> list[Path]:
    """Run protoc over every .proto under proto/ into out_dir; return the files written."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *protos,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    # Packages need an __init__.py (tollgate/ itself has its own; tollgate/py.typed marks the .pyi files real).
    for directory in [out_dir / API, *sorted((out_dir / API).rglob("*/"))]:
        if directory.is_dir() and directory.name != "__pycache__":
            (directory / "__init__.py").touch()
    return sorted(p for p in (out_dir / API).rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def stale_files() -> list[str]:
    """Committed stub files that differ from, or are missing against, a fresh generation."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = []
        for path in fresh:
            relative = path.relative_to(tmp)
            committed = ROOT / relative
            if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                stale.append(str(relative))
        return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed stubs are stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print("stale protobuf stubs (run: python scripts/generate_stubs.py):", *stale, sep="\n  ")
            return 1
        print("protobuf stubs are up to date")
        return 0
    for path in generate(ROOT):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())

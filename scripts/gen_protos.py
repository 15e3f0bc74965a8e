#!/usr/bin/env python3
"""Regenerate ``frames_pb2.py`` and ``frames_pb2.pyi`` from ``frames.proto``.

Usage (in a throwaway venv, so the project's own protobuf runtime is not downgraded)::

    python -m venv /tmp/protogen
    /tmp/protogen/bin/pip install "grpcio-tools==1.71.2" "mypy-protobuf==3.7.0"
    /tmp/protogen/bin/python scripts/gen_protos.py

Why that protoc: generated Python code calls ``ValidateProtobufRuntimeVersion`` with the
version of the protoc that wrote it, and refuses to load on any OLDER runtime. grpcio-tools
1.69.0 to 1.71.2 bundle protoc 29.0, whose gencode (5.29.0) loads on every runtime the
project supports (``protobuf>=5.29``: 5.29.x, 6.x and 7.x). A newer protoc would silently
raise that floor, so the script refuses any other protoc unless ``--any-protoc`` is given
(and then pyproject's ``protobuf>=`` pin must be raised to the version it prints).

mypy-protobuf 3.7.0 because it is the newest whose plugin itself runs on protobuf 5.29 (4.0
and later ship gencode needing runtime >= 6.32.1, which grpcio-tools 1.71 does not allow).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PB_DIR = ROOT / "src" / "wavewire" / "core" / "serializers" / "_pb"
PROTO = "frames.proto"
EXPECTED_PROTOC = "libprotoc 29.0"


def _protoc(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        sys.exit(f"protoc failed with exit status {result.returncode}")
    return result.stdout


def _mypy_plugin() -> str:
    # The venv's bin/ may not be on PATH when the script runs as /venv/bin/python.
    beside = Path(sys.executable).with_name("protoc-gen-mypy")
    found = str(beside) if beside.exists() else shutil.which("protoc-gen-mypy")
    if found is None:
        sys.exit("protoc-gen-mypy not found: pip install mypy-protobuf")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--any-protoc",
        action="store_true",
        help=f"accept a protoc other than {EXPECTED_PROTOC!r} (raises the runtime floor)",
    )
    args = parser.parse_args()

    version = _protoc("--version").strip()
    if version != EXPECTED_PROTOC and not args.any_protoc:
        sys.exit(
            f"found {version!r}, want {EXPECTED_PROTOC!r} (grpcio-tools 1.69.0-1.71.2); "
            "pass --any-protoc to generate anyway"
        )

    # --proto_path is the _pb folder itself, so the descriptor is registered as
    # "frames.proto", exactly as Pipecat's own frames_pb2 registers it: the two files are
    # then identical and can share the default descriptor pool in one process.
    _protoc(
        f"--plugin=protoc-gen-mypy={_mypy_plugin()}",
        f"--proto_path={PB_DIR}",
        f"--python_out={PB_DIR}",
        f"--mypy_out={PB_DIR}",
        str(PB_DIR / PROTO),
    )

    gencode = (PB_DIR / "frames_pb2.py").read_text(encoding="utf-8")
    match = re.search(r"^# Protobuf Python Version: (\S+)$", gencode, re.MULTILINE)
    floor = match.group(1) if match else "unknown"
    print(f"{version}: wrote frames_pb2.py and frames_pb2.pyi; runtime must be >= {floor}")


if __name__ == "__main__":
    main()

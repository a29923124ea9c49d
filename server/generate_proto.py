"""Regenerate the Python gRPC stubs from ``proto/`` into ``server/api/``.

    python -m server.generate_proto

The generated modules are committed (so installs need no protoc) and
``tests/test_proto.py`` fails when they drift from the .proto file. protoc
writes absolute imports (``from origin.v1 import ...``); they are rewritten to
relative ones so the stubs live inside the ``server`` package.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO_FILE = "origin/v1/origin.proto"


def generate(out_dir: Path) -> list[Path]:
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={out_dir}",
                        f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", PROTO_FILE])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    generated = sorted((out_dir / "origin" / "v1").glob("origin_pb2*"))
    for path in generated:
        text = re.sub(r"^from origin\.v1 import ", "from . import ", path.read_text(), flags=re.M)
        path.write_text(text)
    for pkg in (out_dir, out_dir / "origin", out_dir / "origin" / "v1"):
        (pkg / "__init__.py").touch()
    return generated


if __name__ == "__main__":
    for p in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "server" / "api"):
        print(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)

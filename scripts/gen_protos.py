"""Generate the Python gRPC code from proto/ into src/hodei/_proto (committed).

`python scripts/gen_protos.py --check` regenerates into a temp dir and fails if the committed
code differs, so a proto change without regeneration is caught by the tests.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src" / "hodei" / "_proto"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # imported here: a test-time dependency only

    files = sorted(PROTO_DIR.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *[str(f) for f in files],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = sorted(p for p in out.rglob("*") if p.suffix in {".py", ".pyi"})
    for path in generated:
        # protoc writes absolute imports of the proto package; ours lives under hodei._proto.
        text = re.sub(
            r"^from hodei\.v1 import",
            "from hodei._proto.hodei.v1 import",
            path.read_text(),
            flags=re.M,
        )
        path.write_text(text)
    for pkg in {out, *(p.parent for p in generated)}:
        while pkg != out.parent:
            (pkg / "__init__.py").touch()
            pkg = pkg.parent
    return generated


def _same(fresh: Path, committed: Path) -> bool:
    return committed.exists() and filecmp.cmp(fresh, committed, shallow=False)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    ns = parser.parse_args()
    if not ns.check:
        generate(OUT_DIR)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "_proto"
        fresh.mkdir()
        generate(fresh)
        stale = [
            str(p.relative_to(fresh))
            for p in fresh.rglob("*")
            if p.is_file() and not _same(p, OUT_DIR / p.relative_to(fresh))
        ]
    if stale:
        print("stale generated code, run scripts/gen_protos.py:", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Repository-wide checks: generated protobuf code is current, and the tree is ruff-clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_generated_proto_code_is_up_to_date() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]])
def test_ruff_is_clean(args: list[str]) -> None:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed (pip install -e '.[test]')")
    dirs = [d for d in ("src", "tests", "scripts", "bench") if (ROOT / d).is_dir()]
    out = subprocess.run(
        [ruff, *args, *dirs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_is_clean() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "src/hodei"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_test_modules_have_unique_basenames() -> None:
    # pytest's default import mode keys test modules by basename: two test_x.py in different
    # folders (without __init__.py) abort collection on a fresh clone.
    seen: dict[str, Path] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        other = seen.setdefault(path.name, path)
        assert other == path, f"{path} and {other} share a basename"


def test_no_top_level_folder_shadows_an_imported_package() -> None:
    # mypy and ruff run from the root, where a folder named like a dependency (docker/, say)
    # is taken for that package.
    shadowing = {"docker", "grpc", "asyncpg", "hodei", "fastapi", "psutil"}
    clashes = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and p.name in shadowing)
    assert not clashes, f"top-level folders shadow imported packages: {clashes}"

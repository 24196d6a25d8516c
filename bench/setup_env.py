"""What the benchmark needs, installed by the benchmark itself (stdlib only in this module).

- A Python environment with Hodei: the current virtualenv, or `bench/.venv` created on first
  use when the bench runs outside of one (the bench then re-executes itself in it).
- Celery, redis-py and py-spy from PyPI (pip, into that environment) when they are missing.
- Debian's `redis-server` (apt-get, which needs root) when it is not on PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_VENV = ROOT / "bench" / ".venv"
# pip requirement -> how to tell it is installed (modules to import, or an executable beside
# python). Celery's redis extra brings kombu's (redis-py and `packaging`, which kombu's redis
# transport imports): without it a fresh environment fails at the first apply_async.
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "celery[redis]": ("celery", "redis", "packaging"),
    "py-spy": ("bin:py-spy",),
}


def _say(text: str) -> None:
    print(f"[setup] {text}", flush=True)


def in_venv() -> bool:
    return sys.prefix != sys.base_prefix


def _installed(probe: str) -> bool:
    if probe.startswith("bin:"):
        return (Path(sys.executable).parent / probe[4:]).exists() or bool(shutil.which(probe[4:]))
    return importlib.util.find_spec(probe) is not None


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    _say(" ".join(["pip install", *args]))
    subprocess.run(cmd, check=True)


def ensure_python_env() -> None:
    """Make the running interpreter one with Hodei, Celery, redis-py and py-spy."""
    if not in_venv():
        python = BENCH_VENV / "bin" / "python"
        if not python.exists():
            _say(f"no virtualenv active: creating {BENCH_VENV}")
            subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        _say(f"re-running in {BENCH_VENV}")
        os.execv(str(python), [str(python), *sys.argv])
    if importlib.util.find_spec("hodei") is None:
        _pip("-e", str(ROOT))
    missing = [name for name, probes in REQUIREMENTS.items() if not all(map(_installed, probes))]
    if missing:
        _pip(*missing)
    importlib.invalidate_caches()


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def ensure_redis_server() -> str:
    """Path of redis-server, installing Debian's package when it is missing."""
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit(
            "redis-server is missing and installing it needs root: "
            "sudo apt-get install -y redis-server (then run the bench again)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _say("apt-get install redis-server")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
        check=True,
        env=env,
    )
    path = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(path).exists():
        raise SystemExit("apt-get installed redis-server but it is not on PATH")
    return path

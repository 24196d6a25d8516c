"""Submit to job start on a new microVM (boot + agent registration + dispatch), and the RSS of
one idle VM, with the microVM provider (QEMU microvm; under TCG where KVM does not work).

    python bench/microvm_bench.py --assets DIR [--vms N]

A real `hodei server --provider microvm --max-workers 1` runs with a fresh home. Each round
submits `true` once no VM runs (so each job gets a new VM), and the time from the submit
request to the job's `running` state (polled every 20 ms) is one sample; while that VM idles
(--worker-idle 4s) the QEMU process's RSS is read. Prints p50/p99 and the RSS, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from stats import summary_ms

READY = re.compile(r"ready: (http://\S+) grpc")
ROUND_TIMEOUT_S = 120.0
LOG: list[str] = []  # the server's last log lines, shown when a round fails


def vm_processes(home: Path) -> list[psutil.Process]:
    prefix = f"hodei-vm-{(home / 'server-id').read_text().strip()}-"
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(a.startswith(prefix) for a in p.info["cmdline"] or [])
    ]


def start_server(home: Path, assets: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "HODEI_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hodei", "server", "--dev", "--provider", "microvm",
         "--microvm-dir", str(assets), "--max-workers", "1", "--worker-idle", "4s",
         "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            LOG.append(raw.decode(errors="replace"))
            del LOG[:-40]
            match = READY.search(LOG[-1])
            if match and not found:
                found.append(match.group(1))
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(30):
        proc.kill()
        raise SystemExit("the server did not start")
    return proc, found[0]


def run(assets: Path, vms: int) -> dict[str, Any]:
    samples: list[float] = []
    rss: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        server, url = start_server(home, assets)
        try:
            with httpx.Client(base_url=url, timeout=30) as client:
                for _ in range(vms):
                    deadline = time.monotonic() + ROUND_TIMEOUT_S
                    while vm_processes(home) and time.monotonic() < deadline:
                        time.sleep(0.1)
                    began = time.monotonic()
                    job = client.post("/api/v1/jobs", json={"command": "true"}).json()["id"]
                    while time.monotonic() < deadline:
                        state = client.get(f"/api/v1/jobs/{job}").json()["state"]
                        if state in ("running", "succeeded", "failed"):
                            break
                        time.sleep(0.02)
                    else:
                        raise SystemExit(
                            f"job {job} did not start within {ROUND_TIMEOUT_S}s; the server's "
                            "log ends:\n" + "".join(LOG[-15:])
                        )
                    samples.append(time.monotonic() - began)
                    time.sleep(2.0)  # the job is done; the VM idles until --worker-idle
                    rss += [p.memory_info().rss for p in vm_processes(home)]
        finally:
            server.terminate()
            server.wait(60)
    return {
        "vms": vms,
        "submit_to_start": summary_ms(samples),
        "idle_vm_rss_mib": round(max(rss) / (1 << 20), 1) if rss else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=Path, default=os.environ.get("HODEI_TEST_MICROVM_DIR"))
    parser.add_argument("--vms", type=int, default=10)
    args = parser.parse_args()
    if args.assets is None:
        raise SystemExit("--assets DIR (scripts/build_microvm_assets.sh prints it)")
    print(json.dumps(run(args.assets, max(1, min(args.vms, 50))), indent=2))


if __name__ == "__main__":
    main()

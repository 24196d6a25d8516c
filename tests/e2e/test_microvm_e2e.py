"""The microVM provider end to end: `hodei server --provider microvm` as a real process, each
worker in a QEMU microvm under software emulation (TCG) booted from the assets of
scripts/build_microvm_assets.sh (.ci/services/microvm.sh builds them and exports
HODEI_TEST_MICROVM_DIR). At most one VM runs at a time; each is bounded by the boot timeout,
the idle stop and the server's stop, and the fixture kills any VM of the test's server left.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from harness import RunningServer, start_server, stop_server
from services import require_service

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

QEMU = "qemu-system-x86_64"


@pytest.fixture
def assets() -> Path:
    directory = os.environ.get("HODEI_TEST_MICROVM_DIR", "")
    require_service("qemu", shutil.which(QEMU) is not None, "apt-get install qemu-system-x86")
    require_service(
        "microVM assets",
        bool(directory) and (Path(directory) / "rootfs.ext4").is_file(),
        "HODEI_TEST_MICROVM_DIR names no assets (scripts/build_microvm_assets.sh)",
    )
    return Path(directory)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    yield path
    for proc in vms(path):  # a failed test must not leave VMs behind
        proc.kill()


def vms(home: Path) -> list[psutil.Process]:
    """The VM processes of this home's server (named by its instance id)."""
    id_file = home / "server-id"
    if not id_file.exists():
        return []
    prefix = f"hodei-vm-{id_file.read_text().strip()}-"
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(arg.startswith(prefix) for arg in proc.info["cmdline"] or []):
            found.append(proc)
    return found


def wait_no_vms(home: Path, timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := vms(home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def start(assets: Path, home: Path, *extra: str) -> RunningServer:
    return start_server(
        home,
        "--provider", "microvm", "--microvm-dir", str(assets), "--max-workers", "1", *extra,
        timeout=30,
    )  # fmt: skip


def submit(server: RunningServer, script: str) -> tuple[str, str]:
    """`hodei submit -f`, as a user would: the job's id and its streamed output."""
    done = server.hodei("submit", "-f", "--", "sh", "-c", script, timeout=150)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, out + err + "".join(server.stderr[-20:])
    match = re.search(r"job (\S+) submitted", err)
    assert match, err
    return match.group(1), out


def test_jobs_run_in_their_own_vm_kernel_and_file_system(assets: Path, home: Path) -> None:
    server = start(assets, home, "--worker-idle", "2s")
    try:
        _, out = submit(
            server,
            'echo "kernel $(uname -r)"; echo "init $(tr "\\0" " " </proc/1/cmdline)"; '
            "echo secret >/home/hodei/mark; echo done",
        )
        release = (assets / "kernel-release").read_text().strip()
        assert f"kernel {release}" in out  # the guest's kernel, streamed back
        assert "init /usr/bin/python3 /sbin/hodei-init" in out  # the VM's own PID 1
        assert "done" in out
        # Idle: the VM is stopped, the process is gone.
        assert wait_no_vms(home, 40) == []
        # A new VM for the next job, which does not see the first one's file.
        _, again = submit(server, "test -e /home/hodei/mark && echo seen || echo unseen")
        assert "unseen" in again and "seen\n" not in again.replace("unseen", "")
    finally:
        stop_server(server)
    assert wait_no_vms(home, 15) == []
    consoles = list((home / "run" / "microvm").glob("*.console"))
    assert len(consoles) == 2 and all(c.stat().st_mode & 0o077 == 0 for c in consoles)
    assert not list((home / "run" / "microvm").glob("*.config"))  # no OTP left on disk


def test_kill_9_of_the_server_leaves_no_vm_after_the_next_start(
    assets: Path, home: Path, tmp_path: Path
) -> None:
    server = start(assets, home)
    try:
        with server.http() as client:
            job = client.post("/api/v1/jobs", json={"command": "sleep 300"}).json()["id"]
        server.wait_state(job, {"running"}, timeout=120)
        assert len(vms(home)) == 1
    finally:
        stop_server(server, signal.SIGKILL)
    # A VM of this server that did not die with it (here: one started by hand, named as the
    # server names its VMs, with its pid file): the next start kills it.
    server_id = (home / "server-id").read_text().strip()
    leftover = subprocess.Popen(
        [QEMU, "-name", f"hodei-vm-{server_id}-microvm-0000dead", "-machine", "microvm,accel=tcg",
         "-m", "32M", "-nodefaults", "-no-user-config", "-display", "none"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        created = psutil.Process(leftover.pid).create_time()
        (home / "run" / "microvm" / "microvm-0000dead.pid").write_text(f"{leftover.pid} {created}")
        again = start(assets, home)
        try:
            assert leftover.wait(15) is not None
            assert wait_no_vms(home, 15) == []
        finally:
            stop_server(again)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()


def test_a_broken_root_file_system_fails_provisioning_with_the_console_reason(
    assets: Path, home: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.ext4"
    with broken.open("wb") as f:
        f.truncate(16 << 20)  # zeros: no file system at all
    server = start(assets, home, "--microvm-rootfs", str(broken))
    try:
        with server.http() as client:
            client.post("/api/v1/jobs", json={"command": "echo never"})
            deadline = time.monotonic() + 120
            error = ""
            while time.monotonic() < deadline:
                error = client.get("/api/v1/workers").json().get("provisioning_error", "")
                if error:
                    break
                time.sleep(0.5)
        assert "before its agent registered" in error
        assert "cannot mount the root file system" in error  # the console's own words
        listed = server.hodei("workers").stdout.decode() + server.hodei("workers").stderr.decode()
        assert "cannot mount the root file system" in listed
    finally:
        stop_server(server)
    assert wait_no_vms(home, 15) == []

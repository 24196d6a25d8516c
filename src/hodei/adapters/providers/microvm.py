"""MicroVM provider: each worker is an agent in a virtual machine of its own, with its own
kernel (docs/microvm.md).

The VM monitor is a `Vmm` (microvm_spec): QEMU's microvm machine (microvm_qemu; under software
emulation, TCG, where KVM does not work) or Firecracker (microvm_firecracker; KVM only). The
assets (kernel, initramfs, root file system) come from scripts/build_microvm_assets.sh.

- The agent's settings, the OTP among them, are on a per-VM config drive: a file of mode 0600
  given to the VM as a read-only disk, never on a command line; it is deleted once the agent
  has registered (or the VM has ended).
- The root file system is used copy-on-write (QEMU `snapshot=on`): no VM sees another's files.
- A VM is a child of the server that dies with it (`setpriv --pdeathsig KILL`); one that did
  not (the server was killed between two steps) is found on the next start by its pid file
  and its command line, which names this server's instance id, and killed. VMs are not
  adopted: their jobs were lost with the server, as the grace period then says.
- `provision()` returns once the VM's agent has registered (`connected()`); a VM that ends
  before or is not registered within the boot timeout is killed, and the error names its
  console's last lines (the provisioner shows it as its provisioning error). Each VM's serial
  console is kept in `<run dir>/<worker id>.console`.
- Blocking work (files, /proc, the KVM check) runs in threads; processes are asyncio's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from hodei.adapters.providers.local import ExitHandler
from hodei.adapters.providers.microvm_spec import (
    MicrovmOptions,
    Vmm,
    VmSpec,
    config_drive,
    guest_server_url,
    kernel_cmdline,
    tsc_khz,
    vm_size,
    write_private,
)
from hodei.errors import ProviderError
from hodei.ports import WorkerLaunch

log = logging.getLogger(__name__)

CONSOLE_TAIL_LINES = 12
CONSOLES_KEPT = 32  # the newest console files are kept, older ones removed at start
ASSETS_HELP = "build them with scripts/build_microvm_assets.sh (docs/microvm.md)"
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(slots=True)
class _Vm:
    spec: VmSpec
    proc: asyncio.subprocess.Process
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    silent: bool = False  # its end is not reported (provision() failed and said why)


class MicrovmProvider:
    name = "microvm"
    runs_images = False  # the VM boots the worker root file system, not a job's image

    def __init__(
        self,
        options: MicrovmOptions,
        vmm: Vmm,
        run_dir: Path,
        server_id: str,
        on_exit: ExitHandler,
    ) -> None:
        self._options = options
        self._vmm = vmm
        self._run_dir = run_dir
        self._server_id = server_id
        self._on_exit = on_exit
        self._kvm = False
        self._khz = 0
        self._vms: dict[str, _Vm] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def kvm(self) -> bool:
        """Whether VMs run on KVM (known after start())."""
        return self._kvm

    def vm_name(self, worker_id: str) -> str:
        return f"hodei-vm-{self._server_id}-{worker_id}"

    def console_path(self, worker_id: str) -> Path:
        return self._run_dir / f"{worker_id}.console"

    # ---- start: check the setup, kill what an earlier run left ------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self._check_files)
        mode = self._options.kvm
        usable = mode != "off" and await self._vmm.kvm_works()
        if mode == "on" and not usable:
            raise ProviderError("microvm: --microvm-kvm on, but KVM does not work here")
        if self._vmm.needs_kvm and not usable:
            raise ProviderError(
                f"microvm: {self._vmm.name} needs KVM, and KVM does not work here (or "
                "--microvm-kvm is off); use --microvm-vmm qemu, which runs without KVM"
            )
        self._kvm = usable
        await asyncio.to_thread(self._prepare)
        log.info("microvm: %s VMs on %s", self._vmm.name, "KVM" if self._kvm else "TCG (no KVM)")

    def _check_files(self) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._run_dir, 0o700)
        for what, path in (
            ("kernel", self._options.kernel),
            ("initramfs", self._options.initrd),
            ("root file system", self._options.rootfs),
        ):
            if not path.is_file():
                raise ProviderError(f"microvm: no {what} at {path}: {ASSETS_HELP}")
        binary = self._vmm_binary()
        if shutil.which(binary) is None:
            raise ProviderError(f"microvm: the {self._vmm.name} VMM {binary!r} is not on PATH")

    def _prepare(self) -> None:
        with contextlib.suppress(OSError):
            self._khz = tsc_khz(Path("/proc/cpuinfo").read_text())
        self._reconcile()
        self._prune_consoles()

    def _vmm_binary(self) -> str:
        if self._vmm.name == "qemu":
            return self._options.qemu_binary
        return self._options.jailer_binary or self._options.firecracker_binary

    def _reconcile(self) -> None:
        """Kill the VMs an earlier run of this server left: by pid file, then any process
        whose command line names this server's VMs (one started as the server died)."""
        prefix = f"hodei-vm-{self._server_id}-"
        for pidfile in self._run_dir.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError, psutil.Error):
                pid_text, started_text = pidfile.read_text().split()
                proc = psutil.Process(int(pid_text))
                if abs(proc.create_time() - float(started_text)) < 1.0 and any(
                    prefix in arg for arg in proc.cmdline()
                ):
                    _kill(proc, pidfile.stem)
            pidfile.unlink(missing_ok=True)
            (self._run_dir / f"{pidfile.stem}.config").unlink(missing_ok=True)
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                args = proc.info["cmdline"] or []
                named = next((a for a in args if a.startswith(prefix)), None)
                if named is not None:
                    _kill(proc, named[len(prefix) :])
        for config in self._run_dir.glob("*.config"):  # OTPs of VMs that are gone
            config.unlink(missing_ok=True)

    def _prune_consoles(self) -> None:
        consoles = sorted(self._run_dir.glob("*.console"), key=lambda p: p.stat().st_mtime)
        for path in consoles[:-CONSOLES_KEPT]:
            path.unlink(missing_ok=True)

    def connected(self, worker_id: str) -> None:
        vm = self._vms.get(worker_id)
        if vm is not None:
            vm.registered.set()

    # ---- provision --------------------------------------------------------------------------
    async def provision(self, launch: WorkerLaunch) -> None:
        options = self._options
        vcpus, memory = vm_size(launch, options.vcpus, options.memory_mib)
        url = options.server_url or guest_server_url(launch.server_url, options.gateway)
        worker_id = launch.worker_id
        spec = VmSpec(
            worker_id=worker_id,
            name=self.vm_name(worker_id),
            kernel=options.kernel,
            initrd=options.initrd,
            rootfs=options.rootfs,
            config_drive=self._run_dir / f"{worker_id}.config",
            workdir=self._run_dir / worker_id,
            vcpus=vcpus,
            memory_mib=memory,
            cmdline=kernel_cmdline(
                self._vmm.name,
                kvm=self._kvm,
                khz=self._khz,
                cidr=options.guest_cidr,
                gateway=options.gateway,
            ),
            kvm=self._kvm,
            tap_device=options.tap_device,
        )
        try:
            drive = config_drive(launch, url)
        except ValueError as exc:
            raise ProviderError(f"microvm: {exc}") from None
        await asyncio.to_thread(self._files_for, spec, drive)
        console = await asyncio.to_thread(_open_console, self.console_path(worker_id))
        argv = self._vmm.command(spec)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:  # the VM dies with the server (SIGKILL when its parent ends)
            argv = [setpriv, "--pdeathsig", "KILL", "--", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                start_new_session=True,  # terminal signals reach the server, which stops us
            )
        except OSError as exc:
            await asyncio.to_thread(self._remove_files, spec)
            raise ProviderError(f"microvm: cannot start {argv[0]}: {exc}") from None
        finally:
            os.close(console)
        vm = _Vm(spec, proc)
        self._vms[worker_id] = vm
        await asyncio.to_thread(_write_pidfile, self._run_dir / f"{worker_id}.pid", proc.pid)
        self._spawn(self._watch(vm))
        try:
            await self._vmm.configure(spec)
            await self._until_registered(vm)
        except BaseException:
            vm.silent = True
            await self._kill(vm)
            raise

    async def _until_registered(self, vm: _Vm) -> None:
        registered = asyncio.ensure_future(vm.registered.wait())
        ended = asyncio.ensure_future(vm.ended.wait())
        try:
            await asyncio.wait(
                (registered, ended),
                timeout=self._options.boot_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            registered.cancel()
            ended.cancel()
        if vm.registered.is_set():
            # The OTP is spent: its file goes (QEMU keeps its open descriptor).
            await asyncio.to_thread(vm.spec.config_drive.unlink, True)
            return
        path = self.console_path(vm.spec.worker_id)
        if vm.ended.is_set():
            why = f"VM ended (code {vm.proc.returncode}) before its agent registered"
        else:
            why = f"VM's agent did not register within {self._options.boot_timeout_s:g}s"
        tail = await asyncio.to_thread(console_tail, path)
        raise ProviderError(f"microvm {vm.spec.worker_id}: {why}; console {path} ends: {tail}")

    def _files_for(self, spec: VmSpec, drive: bytes) -> None:
        spec.workdir.mkdir(mode=0o700, exist_ok=True)
        write_private(spec.config_drive, drive)

    def _remove_files(self, spec: VmSpec) -> None:
        spec.config_drive.unlink(missing_ok=True)
        (self._run_dir / f"{spec.worker_id}.pid").unlink(missing_ok=True)
        shutil.rmtree(spec.workdir, ignore_errors=True)

    async def _watch(self, vm: _Vm) -> None:
        code = await vm.proc.wait()
        vm.ended.set()
        self._vms.pop(vm.spec.worker_id, None)
        await asyncio.to_thread(self._remove_files, vm.spec)
        log.info("microvm %s ended with code %d", vm.spec.worker_id, code)
        if not vm.silent:
            self._on_exit(vm.spec.worker_id, code)

    # ---- terminate and stop -----------------------------------------------------------------
    async def terminate(self, worker_id: str) -> None:
        vm = self._vms.get(worker_id)
        if vm is None or vm.ended.is_set():
            return
        asked = False
        with contextlib.suppress(ProviderError, OSError):
            asked = await self._vmm.shutdown(vm.spec)
        if not asked:
            _signal(vm.proc, signal.SIGTERM)
        try:
            await asyncio.wait_for(vm.ended.wait(), self._options.stop_grace_s)
        except TimeoutError:
            await self._kill(vm)

    async def _kill(self, vm: _Vm) -> None:
        _signal(vm.proc, signal.SIGKILL)
        await vm.ended.wait()

    async def stop(self) -> None:
        await asyncio.gather(*(self.terminate(w) for w in list(self._vms)))
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def running(self) -> list[str]:
        return list(self._vms)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def console_tail(path: Path, lines: int = CONSOLE_TAIL_LINES) -> str:
    """The console file's last lines, control characters removed, joined with ' | '."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    kept = [_CONTROL.sub("", line).strip() for line in text.splitlines()]
    kept = [line for line in kept if line][-lines:]
    return " | ".join(kept) or "(empty)"


def _open_console(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


def _write_pidfile(path: Path, pid: int) -> None:
    with contextlib.suppress(OSError, psutil.Error):
        path.write_text(f"{pid} {psutil.Process(pid).create_time()}")


def _signal(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _kill(proc: psutil.Process, worker_id: str) -> None:
    log.warning("microvm: killing VM %s (pid %d) left by an earlier run", worker_id, proc.pid)
    with contextlib.suppress(psutil.Error):
        proc.kill()
        proc.wait(timeout=5)

"""What the microVM provider and its VM monitors (VMMs) share: the options, one VM's spec, the
`Vmm` interface a monitor implements (QEMU microvm: microvm_qemu; Firecracker:
microvm_firecracker), whether KVM works here, and the guest kernel's command line."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from hodei.ports import WorkerLaunch

MIB = 1 << 20
# The guest kernel, its init and the agent take about 100 MiB: a job's memory request gets this
# much on top, and no VM gets less than MIN_MEMORY_MIB.
GUEST_OVERHEAD_MIB = 128
MIN_MEMORY_MIB = 256
CONFIG_DRIVE_BYTES = 64 * 1024  # the config drive's size (NUL-padded JSON)
VMMS = ("qemu", "firecracker")
KVM_MODES = ("auto", "on", "off")
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01
KVM_API_VERSION = 12


@dataclass(frozen=True, slots=True)
class MicrovmOptions:
    kernel: Path
    initrd: Path
    rootfs: Path
    vmm: str = "qemu"  # qemu | firecracker
    kvm: str = "auto"  # auto | on | off
    vcpus: int = 1  # per VM when its job asks no cpu
    memory_mib: int = 512  # per VM when its job asks no memory
    qemu_binary: str = "qemu-system-x86_64"
    firecracker_binary: str = "firecracker"
    jailer_binary: str = ""  # non-empty: Firecracker runs under this jailer
    jailer_uid: int = 10001
    jailer_gid: int = 10001
    jailer_chroot_base: str = "/srv/jailer"
    tap_device: str = ""  # Firecracker: the operator's TAP device (QEMU: user-mode networking)
    guest_cidr: str = "10.0.2.15/24"  # the guest's address (QEMU user-mode networking's)
    gateway: str = "10.0.2.2"  # the host as the guest sees it
    server_url: str = ""  # the gRPC address VMs dial (empty: the server's port at the gateway)
    boot_timeout_s: float = 50.0  # launch to registration, else the VM is killed
    stop_grace_s: float = 10.0  # a graceful stop, then SIGKILL


@dataclass(frozen=True, slots=True)
class VmSpec:
    """One VM, as a VMM starts it."""

    worker_id: str
    name: str  # on the VMM's command line: how a later server run finds its leftovers
    kernel: Path
    initrd: Path
    rootfs: Path
    config_drive: Path  # read-only disk with the agent's settings (mode 0600 on the host)
    workdir: Path  # the VM's own directory (sockets, overlays)
    vcpus: int
    memory_mib: int
    cmdline: str
    kvm: bool
    tap_device: str = ""
    extra: dict[str, str] = field(default_factory=dict)


class Vmm(Protocol):
    """A VM monitor: how to start one VM, configure it once started, and ask it to stop."""

    name: str
    needs_kvm: bool

    def command(self, vm: VmSpec) -> list[str]:
        """The argv that starts the VM (or the monitor that will run it)."""
        ...

    async def kvm_works(self) -> bool:
        """Whether this VMM can run VMs on KVM here."""
        ...

    async def configure(self, vm: VmSpec) -> None:
        """After the process started: whatever boots the VM (nothing for QEMU, whose command
        line says it all; the API calls for Firecracker). Raises ProviderError."""
        ...

    async def shutdown(self, vm: VmSpec) -> bool:
        """Ask the guest to stop; False when this VMM has no such request (then SIGTERM)."""
        ...


def kvm_usable(device: str = "/dev/kvm") -> bool:
    """Whether KVM works here: /dev/kvm opens, speaks API version 12 and creates a VM (the
    device exists on hosts whose CPU has no usable virtualisation, and fails there)."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if fcntl.ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION:
            return False
        vm = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def tsc_khz(cpuinfo: str) -> int:
    """The host CPU's clock in kHz from /proc/cpuinfo's first `cpu MHz` (0: unknown)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            with contextlib.suppress(ValueError):
                return int(float(value) * 1000)
    return 0


def kernel_cmdline(vmm: str, *, kvm: bool, khz: int, cidr: str, gateway: str) -> str:
    """The guest kernel's command line. Nothing secret goes in it (the host's other users can
    read a QEMU command line): the OTP is on the config drive."""
    args = ["console=ttyS0", "loglevel=4", "panic=-1", f"hodei.ip={cidr}", f"hodei.gw={gateway}"]
    args.append("reboot=t" if vmm == "qemu" else "reboot=k")
    if vmm == "firecracker":
        args += ["pci=off", "i8042.noaux", "i8042.nomux", "i8042.dumbkbd"]
    if not kvm and khz > 0:
        # Under TCG about 1 boot in 3 hangs at "Unable to calibrate against PIT" without these.
        args += [f"tsc_early_khz={khz}", "tsc=reliable"]
    return " ".join(args)


def vm_size(launch: WorkerLaunch, default_vcpus: int, default_memory_mib: int) -> tuple[int, int]:
    """vCPUs and memory (MiB) of the VM for a launch: the job's requests, else the defaults."""
    vcpus = max(1, math.ceil(launch.cpu)) if launch.cpu > 0 else default_vcpus
    if launch.memory_bytes > 0:
        memory = math.ceil(launch.memory_bytes / MIB) + GUEST_OVERHEAD_MIB
    else:
        memory = default_memory_mib
    return vcpus, max(memory, MIN_MEMORY_MIB)


def guest_server_url(server_url: str, gateway: str) -> str:
    """The server's gRPC address as a VM dials it: the host part becomes the gateway (QEMU's
    user-mode networking forwards 10.0.2.2 to the host's loopback)."""
    scheme, sep, rest = server_url.rpartition("://")
    _, colon, port = rest.rpartition(":")
    if not colon:
        return server_url
    return f"{scheme}{sep}{gateway}:{port}"


def config_drive(launch: WorkerLaunch, server_url: str) -> bytes:
    """The config drive's contents: what the guest's init gives the agent, NUL-padded."""
    args = ["--slots", str(launch.slots)]
    for key, value in sorted(launch.labels.items()):
        args += ["--label", f"{key}={value}"]
    env = {"HODEI_TOKEN": launch.otp, "HODEI_SERVER_URL": server_url}
    for key in ("HODEI_CA_PEM", "HODEI_ENROLL_URL"):
        if key in launch.env:
            env[key] = launch.env[key]
    data = json.dumps({"env": env, "args": args}).encode()
    if len(data) >= CONFIG_DRIVE_BYTES:
        raise ValueError(f"the agent's settings take {len(data)} bytes, more than the drive")
    return data + b"\0" * (CONFIG_DRIVE_BYTES - len(data))


def write_private(path: Path, data: bytes) -> None:
    """Write a new file only its owner can read (the config drive holds the OTP)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)

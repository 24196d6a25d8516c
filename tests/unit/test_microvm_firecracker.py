"""The Firecracker VMM against a fake Firecracker API server on a unix socket: the calls that
describe and start a VM, in order and with their bodies, the stop request, the jailer's
command line and files, and an API error named with Firecracker's fault message."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from hodei.adapters.providers.microvm_firecracker import FirecrackerVmm
from hodei.adapters.providers.microvm_spec import MicrovmOptions, VmSpec
from hodei.errors import ProviderError


@dataclass
class FakeFirecracker:
    """Answers 204 to every call, or 400 with a fault message for `fail_path`."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    fail_path: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = (await reader.readline()).decode().split()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = json.loads(await reader.readexactly(length)) if length else {}
        self.calls.append((request[0], request[1], body))
        if request[1] == self.fail_path:
            fault = json.dumps({"fault_message": "Invalid kernel path"}).encode()
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(fault), fault)
            )
        else:
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()
        writer.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="fc") as name:
        yield Path(name)


def make_vm(root: Path) -> VmSpec:
    for name in ("vmlinux", "initrd", "rootfs.ext4", "vm.config"):
        (root / name).write_bytes(b"x" * 4096)
    workdir = root / "vm"
    workdir.mkdir()
    return VmSpec(
        worker_id="microvm-1",
        name="hodei-vm-s-microvm-1",
        kernel=root / "vmlinux",
        initrd=root / "initrd",
        rootfs=root / "rootfs.ext4",
        config_drive=root / "vm.config",
        workdir=workdir,
        vcpus=2,
        memory_mib=384,
        cmdline="console=ttyS0 reboot=k",
        kvm=True,
        tap_device="tap-hodei0",
    )


@pytest.fixture
def fake() -> FakeFirecracker:
    return FakeFirecracker()


async def serve(fake: FakeFirecracker, socket: Path) -> asyncio.Server:
    socket.parent.mkdir(parents=True, exist_ok=True)
    return await asyncio.start_unix_server(fake.handle, path=str(socket))


async def test_a_vm_is_described_then_started_then_stopped(
    short_dir: Path, fake: FakeFirecracker
) -> None:
    vm = make_vm(short_dir)
    options = MicrovmOptions(vm.kernel, vm.initrd, vm.rootfs, vmm="firecracker")
    vmm = FirecrackerVmm(options)
    assert vmm.command(vm) == [
        "firecracker",
        *("--id", "hodei-vm-s-microvm-1", "--api-sock", str(vm.workdir / "firecracker.socket")),
    ]
    server = await serve(fake, vm.workdir / "firecracker.socket")
    async with server:
        await vmm.configure(vm)
        assert await vmm.shutdown(vm) is True
    copy = str(vm.workdir / "rootfs.ext4")  # the VM's own copy of the root file system
    assert (vm.workdir / "rootfs.ext4").read_bytes() == vm.rootfs.read_bytes()
    assert fake.calls == [
        (
            "PUT",
            "/boot-source",
            {
                "kernel_image_path": str(vm.kernel),
                "initrd_path": str(vm.initrd),
                "boot_args": "console=ttyS0 reboot=k",
            },
        ),
        (
            "PUT",
            "/drives/rootfs",
            {
                "drive_id": "rootfs",
                "path_on_host": copy,
                "is_root_device": False,
                "is_read_only": False,
            },
        ),
        (
            "PUT",
            "/drives/config",
            {
                "drive_id": "config",
                "path_on_host": str(vm.config_drive),
                "is_root_device": False,
                "is_read_only": True,
            },
        ),
        ("PUT", "/machine-config", {"vcpu_count": 2, "mem_size_mib": 384}),
        ("PUT", "/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": "tap-hodei0"}),
        ("PUT", "/actions", {"action_type": "InstanceStart"}),
        ("PUT", "/actions", {"action_type": "SendCtrlAltDel"}),
    ]


async def test_under_the_jailer_files_are_named_inside_the_jail(
    short_dir: Path, fake: FakeFirecracker
) -> None:
    vm = make_vm(short_dir)
    base = short_dir / "j"
    options = MicrovmOptions(
        vm.kernel,
        vm.initrd,
        vm.rootfs,
        vmm="firecracker",
        firecracker_binary="/usr/bin/firecracker",
        jailer_binary="jailer",
        jailer_uid=0,
        jailer_gid=0,
        jailer_chroot_base=str(base),
    )
    vmm = FirecrackerVmm(options)
    argv = vmm.command(vm)
    assert argv[:3] == ["jailer", "--id", "hodei-vm-s-microvm-1"]
    assert argv[argv.index("--chroot-base-dir") + 1] == str(base)
    assert argv[-2:] == ["--api-sock", "/run/firecracker.socket"]
    root = base / "firecracker" / "hodei-vm-s-microvm-1" / "root"
    server = await serve(fake, root / "run" / "firecracker.socket")
    async with server:
        await vmm.configure(vm)
    boot = fake.calls[0][2]
    assert boot["kernel_image_path"] == "/vmlinux" and boot["initrd_path"] == "/initrd"
    assert fake.calls[1][2]["path_on_host"] == "/rootfs.ext4"
    assert fake.calls[2][2]["path_on_host"] == "/vm.config"
    assert (root / "vmlinux").read_bytes() == vm.kernel.read_bytes()


async def test_an_api_error_is_a_provider_error_with_the_fault_message(
    short_dir: Path, fake: FakeFirecracker
) -> None:
    vm = replace(make_vm(short_dir), tap_device="")
    vmm = FirecrackerVmm(MicrovmOptions(vm.kernel, vm.initrd, vm.rootfs, vmm="firecracker"))
    fake.fail_path = "/boot-source"
    server = await serve(fake, vm.workdir / "firecracker.socket")
    async with server:
        with pytest.raises(ProviderError, match="400 Invalid kernel path"):
            await vmm.configure(vm)
    assert [c[1] for c in fake.calls] == ["/boot-source"]  # nothing after a refused call


async def test_no_api_socket_is_a_provider_error(short_dir: Path) -> None:
    vm = make_vm(short_dir)
    vmm = FirecrackerVmm(MicrovmOptions(vm.kernel, vm.initrd, vm.rootfs, vmm="firecracker"))
    assert await vmm.shutdown(vm) is False  # no socket: the provider sends SIGTERM instead

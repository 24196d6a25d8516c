"""Firecracker as the microVM provider's VM monitor (KVM only; docs/microvm.md).

Firecracker starts with nothing but its API socket; the VM is then described over that HTTP
API (a unix socket) and started: `PUT /boot-source` (kernel, initramfs, command line),
`PUT /drives/rootfs` and `PUT /drives/config` (the VM's own copy of the root file system, the
read-only config drive), `PUT /machine-config` (vCPUs, memory), `PUT /network-interfaces/eth0`
(the operator's TAP device) and `PUT /actions` `InstanceStart`. A stop is `PUT /actions`
`SendCtrlAltDel` (the guest's init then stops the agent and powers off).

Firecracker has no copy-on-write disk: each VM gets its own copy of the root file system
(`cp --reflink=auto --sparse=always`: instant on btrfs or XFS). Under the jailer, the files a VM
uses are linked into its chroot (`<chroot base>/firecracker/<id>/root`) and named there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hodei.adapters.providers.microvm_spec import MicrovmOptions, VmSpec, kvm_usable
from hodei.errors import ProviderError

API_TIMEOUT_S = 10.0
SOCKET_WAIT_S = 5.0
SOCKET_POLL_S = 0.05
MAX_RESPONSE = 1 << 20
JAILED_SOCKET = "run/firecracker.socket"  # inside the jail's root


@dataclass(frozen=True, slots=True)
class ApiCall:
    method: str
    path: str
    body: dict[str, Any]


def boot_calls(vm: VmSpec, paths: dict[str, str]) -> list[ApiCall]:
    """The API calls that describe and start `vm`, in order (`paths`: kernel, initrd, rootfs
    and config as Firecracker sees them)."""
    calls = [
        ApiCall(
            "PUT",
            "/boot-source",
            {
                "kernel_image_path": paths["kernel"],
                "initrd_path": paths["initrd"],
                "boot_args": vm.cmdline,
            },
        ),
        ApiCall(
            "PUT",
            "/drives/rootfs",
            {
                "drive_id": "rootfs",
                "path_on_host": paths["rootfs"],
                "is_root_device": False,  # the initramfs mounts it
                "is_read_only": False,
            },
        ),
        ApiCall(
            "PUT",
            "/drives/config",
            {
                "drive_id": "config",
                "path_on_host": paths["config"],
                "is_root_device": False,
                "is_read_only": True,
            },
        ),
        ApiCall("PUT", "/machine-config", {"vcpu_count": vm.vcpus, "mem_size_mib": vm.memory_mib}),
    ]
    if vm.tap_device:
        calls.append(
            ApiCall(
                "PUT",
                "/network-interfaces/eth0",
                {"iface_id": "eth0", "host_dev_name": vm.tap_device},
            )
        )
    calls.append(ApiCall("PUT", "/actions", {"action_type": "InstanceStart"}))
    return calls


SHUTDOWN = ApiCall("PUT", "/actions", {"action_type": "SendCtrlAltDel"})


async def api_request(socket: Path, call: ApiCall, timeout_s: float = API_TIMEOUT_S) -> None:
    """One HTTP/1.1 request to the Firecracker API on its unix socket; ProviderError unless the
    answer is a 2xx (with Firecracker's `fault_message`)."""
    body = json.dumps(call.body).encode()
    head = (
        f"{call.method} {call.path} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(str(socket))
            try:
                writer.write(head + body)
                await writer.drain()
                status_line = await reader.readline()
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = min(int(value.strip()), MAX_RESPONSE)
                answer = await reader.readexactly(length) if length else b""
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        raise ProviderError(f"firecracker API {call.path}: {exc or type(exc).__name__}") from None
    parts = status_line.decode("latin-1").split()
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    if not 200 <= status < 300:
        fault = answer.decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):
            fault = str(json.loads(answer).get("fault_message", fault))
        raise ProviderError(f"firecracker API {call.method} {call.path}: {status} {fault}")


class FirecrackerVmm:
    name = "firecracker"
    needs_kvm = True

    def __init__(self, options: MicrovmOptions) -> None:
        self._options = options

    async def kvm_works(self) -> bool:
        return await asyncio.to_thread(kvm_usable)

    def jail_root(self, vm: VmSpec) -> Path:
        binary = Path(self._options.firecracker_binary).name
        return Path(self._options.jailer_chroot_base) / binary / vm.name / "root"

    def api_socket(self, vm: VmSpec) -> Path:
        if self._options.jailer_binary:
            return self.jail_root(vm) / JAILED_SOCKET
        return vm.workdir / "firecracker.socket"

    def command(self, vm: VmSpec) -> list[str]:
        o = self._options
        if o.jailer_binary:
            return [
                o.jailer_binary,
                "--id",
                vm.name,
                "--exec-file",
                shutil.which(o.firecracker_binary) or o.firecracker_binary,
                "--uid",
                str(o.jailer_uid),
                "--gid",
                str(o.jailer_gid),
                "--chroot-base-dir",
                o.jailer_chroot_base,
                "--",
                "--api-sock",
                "/" + JAILED_SOCKET,
            ]
        return [o.firecracker_binary, "--id", vm.name, "--api-sock", str(self.api_socket(vm))]

    async def configure(self, vm: VmSpec) -> None:
        paths = await asyncio.to_thread(self._stage, vm)
        socket = self.api_socket(vm)
        await _wait_for(socket)
        for call in boot_calls(vm, paths):
            await api_request(socket, call)

    def _stage(self, vm: VmSpec) -> dict[str, str]:
        """The VM's files as Firecracker will name them: its own root file system copy, and
        under the jailer, everything linked into the jail."""
        rootfs = vm.workdir / "rootfs.ext4"
        done = subprocess.run(
            ["cp", "--reflink=auto", "--sparse=always", str(vm.rootfs), str(rootfs)],
            capture_output=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise ProviderError(f"firecracker: cannot copy the root file system {vm.rootfs}")
        files = {
            "kernel": vm.kernel,
            "initrd": vm.initrd,
            "rootfs": rootfs,
            "config": vm.config_drive,
        }
        if not self._options.jailer_binary:
            return {key: str(path) for key, path in files.items()}
        root = self.jail_root(vm)
        root.mkdir(parents=True, exist_ok=True)
        named = {}
        for key, path in files.items():
            target = root / path.name
            target.unlink(missing_ok=True)
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)
            os.chown(target, self._options.jailer_uid, self._options.jailer_gid)
            named[key] = "/" + path.name
        return named

    async def shutdown(self, vm: VmSpec) -> bool:
        socket = self.api_socket(vm)
        if not await asyncio.to_thread(socket.exists):
            return False
        await api_request(socket, SHUTDOWN)
        return True


async def _wait_for(socket: Path) -> None:
    for _ in range(int(SOCKET_WAIT_S / SOCKET_POLL_S)):
        if await asyncio.to_thread(socket.exists):
            return
        await asyncio.sleep(SOCKET_POLL_S)
    raise ProviderError(f"firecracker: no API socket at {socket} after {SOCKET_WAIT_S:g}s")

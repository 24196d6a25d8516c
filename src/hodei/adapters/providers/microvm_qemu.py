"""QEMU's `microvm` machine as the microVM provider's VM monitor.

Everything is on the command line: the ELF kernel and the initramfs, the root file system as
a virtio-blk disk opened with `snapshot=on` (the VM's writes go to a temporary file QEMU
deletes, so no VM sees another's files and the image is never changed), the config drive as a
read-only virtio-blk disk, user-mode networking (`-netdev user`: the guest is 10.0.2.15, the
host's loopback is 10.0.2.2, nothing is configured on the host), the serial console on stdout
(the provider sends it to the worker's console file) and `-no-reboot`, so the guest's reboot
at the end of its agent ends the process. With KVM it runs `-cpu host` on KVM, else under
software emulation (TCG, `-cpu max`)."""

from __future__ import annotations

import asyncio
import contextlib

from hodei.adapters.providers.microvm_spec import VmSpec, kvm_usable

KVM_PROBE_S = 3.0  # a QEMU on a KVM that cannot run a vCPU aborts well within this


class QemuVmm:
    name = "qemu"
    needs_kvm = False

    def __init__(self, binary: str = "qemu-system-x86_64") -> None:
        self.binary = binary

    def command(self, vm: VmSpec) -> list[str]:
        accel = "kvm" if vm.kvm else "tcg"
        return [
            self.binary,
            "-name",
            vm.name,
            "-machine",
            f"microvm,accel={accel}",
            "-cpu",
            "host" if vm.kvm else "max",
            "-smp",
            str(vm.vcpus),
            "-m",
            f"{vm.memory_mib}M",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            str(vm.kernel),
            "-initrd",
            str(vm.initrd),
            "-append",
            vm.cmdline,
            "-drive",
            f"id=root,file={_escaped(str(vm.rootfs))},format=raw,if=none,snapshot=on",
            "-device",
            "virtio-blk-device,drive=root",
            "-drive",
            f"id=config,file={_escaped(str(vm.config_drive))},format=raw,if=none,readonly=on",
            "-device",
            "virtio-blk-device,drive=config",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-device,netdev=net0",
        ]

    async def kvm_works(self) -> bool:
        """Whether QEMU runs a VM on KVM here. /dev/kvm may open and create VMs on a host
        whose vCPUs then fail (QEMU aborts: "failed to set MSR"): a QEMU with no kernel (its
        firmware idles) is started on KVM, and KVM works if it still runs after a moment."""
        if not await asyncio.to_thread(kvm_usable):
            return False
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                *("-machine", "microvm,accel=kvm", "-cpu", "host", "-m", "32M"),
                *("-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError:
            return False
        try:
            await asyncio.wait_for(proc.wait(), KVM_PROBE_S)
            return False  # it ended: KVM (or QEMU) does not work
        except TimeoutError:
            return True
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def configure(self, vm: VmSpec) -> None:
        return None  # the command line says it all

    async def shutdown(self, vm: VmSpec) -> bool:
        # No monitor socket: QEMU ends cleanly on SIGTERM (the guest has no state to keep:
        # its disk writes were only ever in the snapshot).
        return False


def _escaped(value: str) -> str:
    """A value inside QEMU's comma-separated options (a comma is written twice)."""
    return value.replace(",", ",,")

"""The microVM provider's pure logic: vmlinux extraction, module order, sizes, the guest's
server address, the config drive, the kernel and QEMU command lines, the console tail, and
the settings' validation."""

from __future__ import annotations

import gzip
import json
import lzma
import os
from pathlib import Path

import pytest

from hodei.adapters.providers.microvm import console_tail
from hodei.adapters.providers.microvm_assets import extract_vmlinux, module_order
from hodei.adapters.providers.microvm_qemu import QemuVmm
from hodei.adapters.providers.microvm_spec import (
    CONFIG_DRIVE_BYTES,
    VmSpec,
    config_drive,
    guest_server_url,
    kernel_cmdline,
    tsc_khz,
    vm_size,
    write_private,
)
from hodei.config import ServerSettings
from hodei.errors import ValidationError
from hodei.ports import WorkerLaunch

ELF = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8


def bzimage(payload: bytes) -> bytes:
    """A synthetic bzImage: setup code with stray magic-like bytes, then the payload, then
    trailing bytes (as the real image has after its compressed kernel)."""
    return b"MZ" + b"\x1f\x8b\x08junk" + b"\x00" * 500 + payload + b"\xff" * 300


@pytest.mark.parametrize(
    ("kind", "compress"),
    [("gzip", gzip.compress), ("xz", lambda d: lzma.compress(d, format=lzma.FORMAT_XZ))],
)
def test_the_elf_kernel_is_found_past_false_magic(kind: str, compress: object) -> None:
    assert callable(compress)
    found, data = extract_vmlinux(bzimage(compress(ELF)))
    assert (found, data) == (kind, ELF)


def test_an_image_without_an_elf_kernel_is_refused_and_an_elf_kept() -> None:
    with pytest.raises(ValueError, match="no compressed ELF"):
        extract_vmlinux(bzimage(gzip.compress(b"not an elf" * 100)))
    assert extract_vmlinux(ELF) == ("none", ELF)


def test_modules_load_after_their_dependencies() -> None:
    def ko(depends: str) -> bytes:
        return b"\x00license=GPL\x00depends=" + depends.encode() + b"\x00vermagic=6.1\x00"

    files = {
        "virtio": ko(""),
        "virtio_ring": ko(""),
        "virtio_mmio": ko("virtio,virtio_ring"),
        "virtio_blk": ko("virtio,virtio_ring"),
        "ext4": ko("jbd2,mbcache,crc16"),  # crc16 built in: not in the package
        "jbd2": ko(""),
        "mbcache": ko(""),
    }
    order = module_order(files, ["virtio_mmio", "virtio-blk", "ext4"])
    assert order == [
        "virtio",
        "virtio_ring",
        "virtio_mmio",
        "virtio_blk",
        "jbd2",
        "mbcache",
        "ext4",
    ]
    with pytest.raises(ValueError, match="not in the kernel package"):
        module_order(files, ["virtio_net"])
    with pytest.raises(ValueError, match="cycle"):
        module_order({"a": ko("b"), "b": ko("a")}, ["a"])


def test_a_vm_is_sized_from_its_job_or_the_defaults() -> None:
    launch = WorkerLaunch("microvm-1", "otp", "127.0.0.1:5")
    assert vm_size(launch, 1, 512) == (1, 512)
    sized = WorkerLaunch("microvm-1", "otp", "127.0.0.1:5", cpu=1.5, memory_bytes=256 << 20)
    assert vm_size(sized, 1, 512) == (2, 256 + 128)
    tiny = WorkerLaunch("microvm-1", "otp", "127.0.0.1:5", memory_bytes=1 << 20)
    assert vm_size(tiny, 1, 512) == (1, 256)


def test_the_guest_dials_the_servers_port_at_the_gateway() -> None:
    assert guest_server_url("127.0.0.1:50051", "10.0.2.2") == "10.0.2.2:50051"
    assert guest_server_url("https://localhost:443", "10.0.2.2") == "https://10.0.2.2:443"
    assert guest_server_url("[::1]:7000", "10.0.2.2") == "10.0.2.2:7000"


def test_the_config_drive_carries_the_otp_and_the_agents_arguments(tmp_path: Path) -> None:
    launch = WorkerLaunch(
        "microvm-1",
        "otp-secret",
        "127.0.0.1:5",
        labels={"b": "2", "a": "1"},
        slots=2,
        env={"HODEI_CA_PEM": "PEM", "OTHER": "not passed"},
    )
    data = config_drive(launch, "10.0.2.2:5")
    assert len(data) == CONFIG_DRIVE_BYTES
    config = json.loads(data.rstrip(b"\0"))
    assert config == {
        "env": {
            "HODEI_TOKEN": "otp-secret",
            "HODEI_SERVER_URL": "10.0.2.2:5",
            "HODEI_CA_PEM": "PEM",
        },
        "args": ["--slots", "2", "--label", "a=1", "--label", "b=2"],
    }
    path = tmp_path / "w.config"
    path.write_text("stale")
    write_private(path, data)
    assert path.stat().st_mode & 0o777 == 0o600 and path.read_bytes() == data
    huge = WorkerLaunch("microvm-1", "otp", "x:1", labels={"k": "v" * CONFIG_DRIVE_BYTES})
    with pytest.raises(ValueError, match="more than the drive"):
        config_drive(huge, "x:1")


def test_the_kernel_command_line_holds_no_secret_and_the_tsc_fix_under_tcg() -> None:
    tcg = kernel_cmdline("qemu", kvm=False, khz=2596142, cidr="10.0.2.15/24", gateway="10.0.2.2")
    assert "tsc_early_khz=2596142" in tcg.split() and "tsc=reliable" in tcg.split()
    assert "hodei.ip=10.0.2.15/24" in tcg and "hodei.gw=10.0.2.2" in tcg
    assert "console=ttyS0" in tcg and "reboot=t" in tcg
    kvm = kernel_cmdline(
        "firecracker", kvm=True, khz=2596142, cidr="172.16.0.2/30", gateway="172.16.0.1"
    )
    assert "tsc_early_khz" not in kvm and "pci=off" in kvm and "reboot=k" in kvm
    assert tsc_khz("processor: 0\ncpu MHz\t\t: 2596.142\n") == 2596142
    assert tsc_khz("no clock here") == 0


def spec(tmp_path: Path, *, kvm: bool) -> VmSpec:
    return VmSpec(
        worker_id="microvm-1",
        name="hodei-vm-abc-microvm-1",
        kernel=tmp_path / "vmlinux",
        initrd=tmp_path / "initrd",
        rootfs=tmp_path / "root,fs.ext4",
        config_drive=tmp_path / "microvm-1.config",
        workdir=tmp_path / "microvm-1",
        vcpus=2,
        memory_mib=384,
        cmdline="console=ttyS0",
        kvm=kvm,
    )


def test_the_qemu_command_line(tmp_path: Path) -> None:
    argv = QemuVmm("qemu").command(spec(tmp_path, kvm=False))

    def arg(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert argv[0] == "qemu" and arg("-name") == "hodei-vm-abc-microvm-1"
    assert arg("-machine") == "microvm,accel=tcg" and arg("-cpu") == "max"
    assert arg("-smp") == "2" and arg("-m") == "384M"
    assert "-no-reboot" in argv and arg("-append") == "console=ttyS0"
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    # Copy-on-write root (a comma in its path doubled), read-only config drive.
    assert drives[0] == f"id=root,file={tmp_path}/root,,fs.ext4,format=raw,if=none,snapshot=on"
    assert drives[1].endswith("readonly=on") and "microvm-1.config" in drives[1]
    assert "user,id=net0" in argv and "otp" not in " ".join(argv)
    kvm = QemuVmm().command(spec(tmp_path, kvm=True))
    assert "microvm,accel=kvm" in kvm and "host" in kvm


def test_the_console_tail_is_the_last_lines_without_control_characters(tmp_path: Path) -> None:
    path = tmp_path / "c.console"
    path.write_bytes(b"".join(b"line %d\r\n" % i for i in range(40)) + b"\x1b[0mlast\x07\n\n")
    assert console_tail(path, 3) == "line 38 | line 39 | last"
    assert console_tail(tmp_path / "missing").startswith("(unreadable")
    os.truncate(path, 0)
    assert console_tail(path) == "(empty)"


def test_settings_validate_the_microvm_options(tmp_path: Path) -> None:
    base = ServerSettings(home=tmp_path, provider="microvm")
    options = base.validate().microvm_options()
    assert options.kernel == tmp_path / "microvm" / "vmlinux" and options.memory_mib == 512
    for wrong, message in (
        ({"microvm_vmm": "xen"}, "VMM must be"),
        ({"microvm_kvm": "maybe"}, "KVM must be"),
        ({"microvm_vcpus": 0}, "vCPUs"),
        ({"microvm_memory": 1 << 20}, "memory"),
        ({"microvm_vmm": "firecracker"}, "--microvm-tap"),
    ):
        settings = ServerSettings(home=tmp_path, provider="microvm", **wrong)
        with pytest.raises(ValidationError, match=message):
            settings.validate()

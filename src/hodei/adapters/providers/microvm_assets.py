"""The microVM provider's assets: the pure parts of scripts/build_microvm_assets.sh.

Standard library only: the build script runs this module with the system's python3 before the
project is installed (`python3 microvm_assets.py extract-vmlinux VMLINUZ VMLINUX`,
`python3 microvm_assets.py module-order MODULES_DIR NAME...`).

- `extract_vmlinux`: the uncompressed kernel (an ELF file) inside a `vmlinuz` (a bzImage),
  as the kernel tree's scripts/extract-vmlinux finds it: look for each compression format's
  magic, try to decompress from there, keep the first result that is an ELF file. Booting the
  ELF `vmlinux` directly skips the kernel's own decompression, which under software emulation
  (TCG) takes about half of the boot.
- `module_order`: the kernel modules to load, dependencies first, read from each module's
  `.modinfo` (`depends=`), so the initramfs can `insmod` them in order without modprobe.
"""

from __future__ import annotations

import bz2
import lzma
import re
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

ELF_MAGIC = b"\x7fELF"


def _gunzip(data: bytes) -> bytes:
    # Trailing bytes after the gzip stream (the rest of the bzImage) are ignored.
    return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)


def _unxz(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)


def _unlzma(data: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)


def _bunzip2(data: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(data)


def _unzstd(data: bytes) -> bytes:
    tool = shutil.which("zstd")
    if tool is None:
        return b""
    done = subprocess.run([tool, "-dc"], input=data, capture_output=True, timeout=120, check=False)
    return done.stdout  # a stream with trailing garbage exits non-zero, its output is whole


# Magic numbers, as scripts/extract-vmlinux of the kernel tree looks for them.
FORMATS: tuple[tuple[str, bytes, Callable[[bytes], bytes]], ...] = (
    ("gzip", b"\x1f\x8b\x08", _gunzip),
    ("xz", b"\xfd7zXZ\x00", _unxz),
    ("bzip2", b"BZh", _bunzip2),
    ("lzma", b"\x5d\x00\x00\x00", _unlzma),
    ("zstd", b"\x28\xb5\x2f\xfd", _unzstd),
)
MAX_CANDIDATES = 64  # offsets tried per format at most


def extract_vmlinux(image: bytes) -> tuple[str, bytes]:
    """The compression format and the ELF kernel inside a compressed kernel image. An image
    that already is an ELF file is returned as it is. ValueError when none is found."""
    if image.startswith(ELF_MAGIC):
        return "none", image
    for name, magic, decompress in FORMATS:
        start = 0
        for _ in range(MAX_CANDIDATES):
            offset = image.find(magic, start)
            if offset < 0:
                break
            start = offset + 1
            try:
                data = decompress(image[offset:])
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
                continue
            if data.startswith(ELF_MAGIC):
                return name, data
    raise ValueError("no compressed ELF kernel found in the image")


def module_depends(module: bytes) -> list[str]:
    """The `depends=` of a kernel module's .modinfo (module names, '-' read as '_')."""
    match = re.search(rb"(?:^|\x00)depends=([^\x00]*)", module)
    if match is None or not match.group(1):
        return []
    return [d.decode().replace("-", "_") for d in match.group(1).split(b",") if d]


def module_order(files: dict[str, bytes], wanted: Iterable[str]) -> list[str]:
    """The module names to load for `wanted`, each after what it depends on. `files` maps a
    module name to its contents; a dependency not in it is built into the kernel (skipped)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in seen or name not in files:
            return
        if name in path:
            raise ValueError(f"module dependency cycle: {' -> '.join((*path, name))}")
        for dep in module_depends(files[name]):
            visit(dep, (*path, name))
        seen.add(name)
        order.append(name)

    for name in wanted:
        name = name.replace("-", "_")
        if name not in files:
            raise ValueError(f"module {name} is not in the kernel package")
        visit(name, ())
    return order


def _modules_in(directory: Path) -> dict[str, Path]:
    return {p.name[: -len(".ko")].replace("-", "_"): p for p in directory.rglob("*.ko")}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "extract-vmlinux":
        kind, data = extract_vmlinux(Path(argv[1]).read_bytes())
        Path(argv[2]).write_bytes(data)
        print(f"{kind}-compressed kernel, {len(data)} bytes uncompressed", file=sys.stderr)
        return 0
    if len(argv) >= 3 and argv[0] == "module-order":
        paths = _modules_in(Path(argv[1]))
        files = {name: path.read_bytes() for name, path in paths.items()}
        for name in module_order(files, argv[2:]):
            print(paths[name].relative_to(argv[1]))
        return 0
    print(
        "usage: microvm_assets.py extract-vmlinux VMLINUZ VMLINUX | "
        "module-order MODULES_DIR NAME...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

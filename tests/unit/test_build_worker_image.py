"""scripts/build_worker_image.sh --print-mirror: the Debian mirror it debootstraps from is read
from apt's sources (HODEI_APT_DIR points it at a made-up apt directory), never a default."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_worker_image.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

DEBIAN_SOURCES = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def print_mirror(apt: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HODEI_APT_DIR": str(apt)}
    return subprocess.run(
        ["bash", str(SCRIPT), "--print-mirror"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def mirror(apt: Path) -> str:
    done = print_mirror(apt)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    for name, text in files.items():
        (apt / name).write_text(text)
    return apt


def test_deb822_sources(tmp_path: Path) -> None:
    apt = apt_dir(tmp_path, {"sources.list.d/debian.sources": DEBIAN_SOURCES})
    assert mirror(apt) == "http://mirror.example/debian"


def test_one_line_sources_list_with_options(tmp_path: Path) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list": (
                "# deb http://commented.example/debian bookworm main\n"
                "deb-src http://src.example/debian bookworm main\n"
                "deb http://security.example/debian-security bookworm-security main\n"
                "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] "
                "https://mirror.example/debian/ bookworm main contrib\n"
            )
        },
    )
    assert mirror(apt) == "https://mirror.example/debian/"


def test_apt_order_sources_list_first_then_the_directory_by_name(tmp_path: Path) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list": "deb http://first.example/debian bookworm main\n",
            "sources.list.d/a.list": "deb http://second.example/debian bookworm main\n",
        },
    )
    assert mirror(apt) == "http://first.example/debian"
    (apt / "sources.list").unlink()
    (apt / "sources.list.d/b.sources").write_text(DEBIAN_SOURCES)
    assert mirror(apt) == "http://second.example/debian"
    (apt / "sources.list.d/0.sources").write_text(DEBIAN_SOURCES)
    assert mirror(apt) == "http://mirror.example/debian"


def test_other_repositories_disabled_stanzas_and_other_files_do_not_count(tmp_path: Path) -> None:
    apt = apt_dir(
        tmp_path,
        {
            "sources.list.d/a-nodesource.sources": (
                "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
                "Components: main\n"
            ),
            "sources.list.d/b-off.sources": (
                "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\n"
                "Components: main\nEnabled: no\n\n"
                "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n"
                "Components: main\n\n"
                "Types: deb\nURIs: mirror+file:/etc/apt/mirrors.txt\nSuites: bookworm\n"
                "Components: main\n"
            ),
            "sources.list.d/c.list.disabled": "deb http://disabled.example/debian bookworm main\n",
            "sources.list.d/d.sources": (
                "Types: deb\nURIs: http://kept.example/debian\nSuites: bookworm\n"
                "Components: main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n"
                " URIs: http://inside-a-key.example/debian\n"
            ),
        },
    )
    assert mirror(apt) == "http://kept.example/debian"


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"sources.list.d/trixie.sources": DEBIAN_SOURCES.replace("bookworm", "trixie")},
        {"sources.list": "deb http://security.example/debian-security bookworm-security main\n"},
    ],
)
def test_no_bookworm_source_fails_naming_what_it_read(
    tmp_path: Path, files: dict[str, str]
) -> None:
    apt = apt_dir(tmp_path, files)
    done = print_mirror(apt)
    assert done.returncode != 0 and done.stdout == ""
    assert "no apt source of Debian bookworm" in done.stderr
    assert f"{apt}/sources.list, {apt}/sources.list.d/*.list and *.sources" in done.stderr
    for name in files:
        assert str(apt / name) in done.stderr
    if not files:
        assert "none of them exists" in done.stderr

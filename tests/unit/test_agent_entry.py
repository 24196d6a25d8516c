"""`python -m hodei.agent`: what local workers run; its arguments and environment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hodei.agent.__main__ import parse


def test_slots_and_labels() -> None:
    assert parse(["--slots", "3", "--label", "a=1", "--label", "b=x=y"]) == (
        3,
        {"a": "1", "b": "x=y"},
    )
    assert parse([]) == (1, {})


@pytest.mark.parametrize("argv", [["--slots", "0"], ["--label", "novalue"], ["--label", "=v"]])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2


def test_without_server_and_token_it_says_so() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "hodei.agent"], env=env, capture_output=True, timeout=60
    )
    assert out.returncode == 2
    assert b"HODEI_SERVER_URL and HODEI_TOKEN must be set" in out.stderr

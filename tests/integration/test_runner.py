"""The PTY runner with real processes: output, exit codes, scripts, secrets, cancel, cleanup."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from hodei.agent.runner import JobOutcome, run_job
from hodei.domain.work import Assignment


class Output:
    def __init__(self) -> None:
        self.data = b""
        self.changed = asyncio.Event()

    def __call__(self, chunk: bytes) -> None:
        self.data += chunk
        self.changed.set()

    async def wait_for(self, pattern: bytes, limit_s: float = 10) -> re.Match[bytes]:
        async with asyncio.timeout(limit_s):
            while not (m := re.search(pattern, self.data)):
                self.changed.clear()
                await self.changed.wait()
        return m


def assign(command: str, *arguments: str, **fields: Any) -> Assignment:
    return Assignment(job_id="job1", attempt=2, command=command, arguments=arguments, **fields)


async def run(job: Assignment, **kwargs: object) -> tuple[JobOutcome, bytes]:
    out = Output()
    outcome = await run_job(job, out, asyncio.Event(), **kwargs)  # type: ignore[arg-type]
    return outcome, out.data


def exists(path: str) -> bool:
    return os.path.exists(path)


async def until_gone(pid: int, limit_s: float = 2) -> None:
    async with asyncio.timeout(limit_s):
        while not gone(pid):  # noqa: ASYNC110 (polling the OS: there is no event to wait on)
            await asyncio.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_echo_output_keeps_plain_newlines() -> None:
    outcome, data = await run(assign("echo hello; echo world"))
    assert data == b"hello\nworld\n"
    assert outcome == JobOutcome(exit_code=0, pid=outcome.pid)


async def test_exit_code() -> None:
    outcome, _ = await run(assign("exit 3"))
    assert (outcome.exit_code, outcome.signal, outcome.error) == (3, 0, "")


async def test_stdout_is_a_tty_and_stdin_is_not() -> None:
    _, data = await run(assign("test -t 1 && echo tty-out; test -t 0 || echo no-tty-in"))
    assert data == b"tty-out\nno-tty-in\n"


async def test_script_with_shebang() -> None:
    script = f"#!{sys.executable}\nimport sys\nprint('from python')\nsys.exit(5)\n"
    outcome, data = await run(assign(script))
    assert data == b"from python\n"
    assert outcome.exit_code == 5


async def test_multiline_script_stops_at_first_failure() -> None:
    outcome, data = await run(assign("echo one\nfalse\necho two\n"))
    assert data == b"one\n"
    assert outcome.exit_code == 1


async def test_multiline_script_pipefail_and_unset() -> None:
    outcome, data = await run(assign("false | true\necho not reached"))
    assert (outcome.exit_code, data) == (1, b"")
    outcome, data = await run(assign("echo $UNSET_VARIABLE_X\necho not reached"))
    assert outcome.exit_code != 0
    assert b"not reached" not in data


async def test_arguments_are_exec_directly_and_inert() -> None:
    outcome, data = await run(assign("echo", "$(whoami); rm -rf /", "*"))
    assert data == b"$(whoami); rm -rf / *\n"
    assert outcome.exit_code == 0


async def test_environment_and_secrets_reach_the_job_masked() -> None:
    job = assign(
        'echo "$FOO"; echo "${#TOKEN}"; echo "$TOKEN"; echo "$HODEI_JOB_ID/$HODEI_ATTEMPT"',
        env={"FOO": "bar"},
        secrets={"TOKEN": "s3cr3t-value"},
    )
    _, data = await run(job)
    assert data == b"bar\n12\n***\njob1/2\n"
    assert b"s3cr3t" not in data


async def test_secret_split_across_writes_never_appears() -> None:
    job = assign(
        "printf 'sec'; sleep 0.05; printf 'ret\\n'; printf 'x%s\\n' \"$S\"", secrets={"S": "secret"}
    )
    _, data = await run(job)
    assert data == b"***\nx***\n"


async def test_agent_credentials_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HODEI_TOKEN", "otp-credential")
    monkeypatch.setenv("HODEI_SERVER_URL", "http://x")
    monkeypatch.setenv("PLAIN_AGENT_VAR", "kept")
    _, data = await run(
        assign(
            'echo "[${HODEI_TOKEN:-none}] [${HODEI_SERVER_URL:-none}] [$PLAIN_AGENT_VAR] [$TERM]"'
        )
    )
    assert data.startswith(b"[none] [none] [kept] [")
    assert data != b"[none] [none] [kept] []\n"


async def test_private_temp_dir_is_cwd_and_removed() -> None:
    outcome, data = await run(assign("pwd; stat -c %a .; touch file; echo ok"))
    path, mode, ok = data.decode().splitlines()
    assert (mode, ok, outcome.exit_code) == ("700", "ok", 0)
    assert not exists(path)


async def test_working_dir(tmp_path: Path) -> None:
    _, data = await run(assign("pwd", working_dir=str(tmp_path)))
    assert data.decode().strip() == str(tmp_path)
    outcome, data = await run(assign("pwd", working_dir="/nonexistent/dir"))
    assert outcome.exit_code == 127
    assert b"does not exist" in data


async def test_command_not_found_exec() -> None:
    outcome, data = await run(assign("/nonexistent/program", "arg"))
    assert outcome.exit_code == 127
    assert "No such file" in outcome.error
    assert b"hodei: cannot run '/nonexistent/program'" in data


async def test_command_not_found_on_path() -> None:
    outcome, data = await run(assign("no-such-program-hodei", "arg"))
    assert outcome.exit_code == 127
    assert data == b"hodei: cannot run 'no-such-program-hodei': command not found\n"


async def test_script_interpreter_missing() -> None:
    outcome, data = await run(assign("#!/nonexistent/python3 -u\nprint(1)\n"))
    assert outcome.exit_code == 127
    assert data == (
        b"hodei: cannot run '/nonexistent/python3': the interpreter of the script's #! line is "
        b"not on this worker (its image may lack it; a script without #! runs under bash or sh)\n"
    )


async def test_not_executable_exec(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("data\n")
    plain.chmod(0o644)
    outcome, _ = await run(assign(str(plain), "arg"))
    assert outcome.exit_code == 126
    assert "Permission denied" in outcome.error


async def test_started_pid_is_the_job() -> None:
    out, pids = Output(), []
    await run_job(assign("echo $$"), out, asyncio.Event(), on_started=pids.append)
    assert out.data == f"{pids[0]}\n".encode()


async def test_command_not_found_in_shell() -> None:
    outcome, data = await run(assign("no-such-command-hodei"))
    assert outcome.exit_code == 127
    assert b"not found" in data


async def start(
    job: Assignment, grace: float = 5.0
) -> tuple[asyncio.Task[JobOutcome], Output, asyncio.Event, list[int]]:
    out, cancel, pids = Output(), asyncio.Event(), []
    task = asyncio.create_task(run_job(job, out, cancel, grace=grace, on_started=pids.append))
    return task, out, cancel, pids


async def test_cancel_kills_the_job() -> None:
    task, out, cancel, pids = await start(assign("echo up; sleep 300"))
    await out.wait_for(b"up\n")
    began = time.monotonic()
    cancel.set()
    outcome = await asyncio.wait_for(task, 5)
    assert time.monotonic() - began < 2
    assert outcome.cancelled and not outcome.timed_out
    assert outcome.exit_code in (143, 128 + signal.SIGTERM)
    assert gone(pids[0])


async def test_cancel_kills_the_whole_group() -> None:
    task, out, cancel, _ = await start(assign("sh -c 'sleep 300 & echo bg=$!; sleep 300'"))
    grandchild = int((await out.wait_for(rb"bg=(\d+)")).group(1))
    assert not gone(grandchild)
    cancel.set()
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.cancelled
    await until_gone(grandchild)


async def test_sigkill_after_grace_when_sigterm_is_ignored() -> None:
    task, out, cancel, _ = await start(assign("trap '' TERM; echo up; sleep 300"), grace=0.3)
    await out.wait_for(b"up\n")
    began = time.monotonic()
    cancel.set()
    outcome = await asyncio.wait_for(task, 5)
    assert 0.25 < time.monotonic() - began < 3
    assert (outcome.exit_code, outcome.signal, outcome.cancelled) == (137, 9, True)


async def test_grace_callable_is_read_at_cancel_time() -> None:
    grace = [60.0]
    out, cancel = Output(), asyncio.Event()
    task = asyncio.create_task(
        run_job(assign("trap '' TERM; echo up; sleep 300"), out, cancel, grace=lambda: grace[0])
    )
    await out.wait_for(b"up\n")
    grace[0] = 0.0
    cancel.set()
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.signal == signal.SIGKILL


async def test_timeout() -> None:
    began = time.monotonic()
    outcome, _ = await run(assign("sleep 300", timeout_s=0.3))
    assert outcome.timed_out and not outcome.cancelled
    assert time.monotonic() - began < 3


async def test_background_children_do_not_outlive_the_job() -> None:
    outcome, data = await run(assign("sleep 300 & echo bg=$!"))
    grandchild = int(re.search(rb"bg=(\d+)", data).group(1))  # type: ignore[union-attr]
    assert outcome.exit_code == 0
    await until_gone(grandchild)


async def test_runner_task_cancelled_kills_the_job() -> None:
    task, out, _, pids = await start(assign("echo up; sleep 300"))
    await out.wait_for(b"up\n")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until_gone(pids[0])


async def test_large_output_is_complete() -> None:
    outcome, data = await run(assign("head -c 3000000 /dev/zero | tr '\\0' 'a'; echo"))
    assert outcome.exit_code == 0
    assert data == b"a" * 3_000_000 + b"\n"


AGENT = textwrap.dedent("""
    import asyncio, sys
    from hodei.agent.runner import run_job
    from hodei.domain.work import Assignment
    def show(pid):
        print(pid, flush=True)
    job = Assignment(job_id="j", attempt=0, command="sleep", arguments=("300",))
    asyncio.run(run_job(job, lambda d: None, asyncio.Event(), on_started=show))
""")


def test_job_dies_with_its_agent() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with subprocess.Popen([sys.executable, "-c", AGENT], stdout=subprocess.PIPE, env=env) as agent:
        assert agent.stdout is not None
        job_pid = int(agent.stdout.readline())
        assert not gone(job_pid)
        # Wait for the job's exec (its start is reported as soon as Popen returns).
        deadline = time.monotonic() + 5
        while psutil.Process(job_pid).name() != "sleep" and time.monotonic() < deadline:
            time.sleep(0.01)
        agent.kill()  # no chance to clean up: its job reaper must do it
    deadline = time.monotonic() + 5
    while not gone(job_pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(job_pid)

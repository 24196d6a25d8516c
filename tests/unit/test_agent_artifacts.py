"""The agent's artifact pieces on real (temporary) files: packing checks, unpacking checks,
input staging, the outputs file, a job run with them, and path patterns."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hodei.agent import artifacts
from hodei.agent.artifacts import (
    MAX_OUTPUTS,
    ArtifactError,
    InputStaging,
    Spool,
    StagedInput,
    pack,
    read_outputs,
    unpack,
)
from hodei.agent.globs import expand
from hodei.agent.job_files import OUTPUTS_ENV, run_with_files
from hodei.agent.runner import JobOutcome
from hodei.domain.work import NOT_RUN, Assignment


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def names(archive: str) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


def packed(work: Path, tmp_path: Path, *paths: str, limit: int = 1 << 20) -> str:
    dest = str(tmp_path / "out.tar")
    archive = pack(str(work), paths, limit, dest)
    data = Path(dest).read_bytes()
    assert (archive.size, archive.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    return dest


def test_files_and_directories_are_packed_recursively_in_name_order(
    work: Path, tmp_path: Path
) -> None:
    (work / "out.txt").write_text("hello")
    (work / "dist" / "b").mkdir(parents=True)
    (work / "dist" / "b" / "z.txt").write_text("z")
    (work / "dist" / "a.txt").write_text("a")
    (work / "dist" / "link").symlink_to("a.txt")
    (work / "ignored.txt").write_text("not asked for")
    dest = packed(work, tmp_path, "out.txt", "dist/", "dist/a.txt")
    assert names(dest) == ["out.txt", "dist", "dist/a.txt", "dist/b", "dist/b/z.txt", "dist/link"]
    with tarfile.open(dest) as tar:
        assert tar.getmember("dist/link").linkname == "a.txt"
        extracted = tar.extractfile("dist/b/z.txt")
        assert extracted is not None and extracted.read() == b"z"


def test_the_whole_work_dir_can_be_named(work: Path, tmp_path: Path) -> None:
    (work / "f").write_text("x")
    assert names(packed(work, tmp_path, ".")) == ["f"]


def test_a_path_not_produced_fails(work: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"^artifact dist/ was not produced$"):
        pack(str(work), ["dist/"], 1 << 20, str(tmp_path / "out.tar"))
    assert not (tmp_path / "out.tar").exists()


@pytest.mark.parametrize("target", ["/etc", "../../..", "/etc/passwd"])
def test_a_symlink_out_of_the_work_dir_anywhere_in_the_tree_fails(
    work: Path, tmp_path: Path, target: str
) -> None:
    (work / "dist" / "deep").mkdir(parents=True)
    (work / "dist" / "deep" / "escape").symlink_to(target)
    with pytest.raises(ArtifactError, match="symlink dist/deep/escape points outside"):
        pack(str(work), ["dist"], 1 << 20, str(tmp_path / "out.tar"))
    assert not (tmp_path / "out.tar").exists()


def test_a_path_through_a_symlinked_directory_out_fails(work: Path, tmp_path: Path) -> None:
    (work / "etc").symlink_to("/etc")
    with pytest.raises(ArtifactError, match="outside the work directory"):
        pack(str(work), ["etc/passwd"], 1 << 20, str(tmp_path / "out.tar"))
    with pytest.raises(ArtifactError, match="points outside"):
        pack(str(work), ["etc"], 1 << 20, str(tmp_path / "out.tar"))


def test_an_absolute_symlink_inside_is_kept_relative(work: Path, tmp_path: Path) -> None:
    (work / "d").mkdir()
    (work / "d" / "real").write_text("x")
    (work / "d" / "abs").symlink_to(work / "d" / "real")
    with tarfile.open(packed(work, tmp_path, "d")) as tar:
        assert tar.getmember("d/abs").linkname == "real"


def test_special_files_are_refused(work: Path, tmp_path: Path) -> None:
    (work / "d").mkdir()
    os.mkfifo(work / "d" / "pipe")
    with pytest.raises(ArtifactError, match="d/pipe is not a regular file, directory or symlink"):
        pack(str(work), ["d"], 1 << 20, str(tmp_path / "out.tar"))


def test_an_archive_past_the_limit_stops_with_the_sizes(work: Path, tmp_path: Path) -> None:
    (work / "small").write_bytes(b"x" * 100)
    (work / "big").write_bytes(os.urandom(200_000))
    with pytest.raises(
        ArtifactError, match=r"^artifacts larger than the limit \((\d+) bytes > 65536\)$"
    ):
        pack(str(work), ["small", "big"], 65536, str(tmp_path / "out.tar"))
    assert not (tmp_path / "out.tar").exists()
    (work / "many").mkdir()
    for i in range(40):  # each fits, together they do not: stopped while writing
        (work / "many" / f"f{i}").write_bytes(b"y" * 2000)
    with pytest.raises(ArtifactError, match="larger than the limit"):
        pack(str(work), ["many"], 65536, str(tmp_path / "out.tar"))


def test_an_invalid_path_is_refused(work: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"must not contain '\.\.'"):
        pack(str(work), ["a/../../b"], 1 << 20, str(tmp_path / "out.tar"))


# ---- unpacking ------------------------------------------------------------------------------


@pytest.fixture(params=["stdlib filter", "own checks only"])
def filters(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpack both with tarfile's "data" filter and without it (a Python before 3.11.4, as
    in the worker image): the agent's own checks must hold alone."""
    if request.param == "own checks only":
        monkeypatch.setattr(artifacts, "_DATA_FILTER", {})


def staged(path: Path, key: str = "a/1") -> StagedInput:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    return StagedInput(key, digest, len(data), str(path), digest, len(data), complete=True)


def tar_of(path: Path, *members: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def member(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


def test_a_packed_archive_unpacks_into_another_work_dir(
    work: Path, tmp_path: Path, filters: None
) -> None:
    (work / "out.txt").write_text("hello")
    (work / "dir" / "sub").mkdir(parents=True)
    (work / "dir" / "sub" / "x.sh").write_text("#!/bin/sh\n")
    (work / "dir" / "sub" / "x.sh").chmod(0o4777)
    (work / "dir" / "link").symlink_to("sub/x.sh")
    dest = Path(packed(work, tmp_path, "out.txt", "dir"))
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    unpack([staged(dest)], str(other))
    assert (other / "out.txt").read_text() == "hello"
    assert os.readlink(other / "dir" / "link") == "sub/x.sh"
    assert (other / "dir" / "link").read_text() == "#!/bin/sh\n"
    assert (other / "dir" / "sub" / "x.sh").stat().st_mode & 0o7777 == 0o755  # no setuid, go-w
    assert other.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("hostile", "why"),
    [
        (member("/etc/evil"), "absolute path"),
        (member("../evil"), "outside the work directory"),
        (member("a/../../evil"), "outside the work directory"),
        (member("l", tarfile.SYMTYPE, "/etc/passwd"), "absolute target"),
        (member("l", tarfile.SYMTYPE, "../../x"), "points outside"),
        (member("h", tarfile.LNKTYPE, "../x"), "points outside"),
        (member("dev", tarfile.CHRTYPE), "not a regular file"),
        (member("fifo", tarfile.FIFOTYPE), "not a regular file"),
    ],
)
def test_a_hostile_member_is_refused(
    tmp_path: Path, hostile: tarfile.TarInfo, why: str, filters: None
) -> None:
    archive = tar_of(tmp_path / "in.tar", (member("ok.txt"), b"ok"), (hostile, b"bad"))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArtifactError, match=f"input artifact a/1 cannot be unpacked: .*{why}"):
        unpack([staged(archive)], str(dest))
    assert not (tmp_path / "evil").exists()


def test_a_symlink_then_a_file_through_it_is_refused(tmp_path: Path, filters: None) -> None:
    archive = tar_of(
        tmp_path / "in.tar",
        (member("up", tarfile.SYMTYPE, ".."), b""),
        (member("up/evil"), b"bad"),
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArtifactError, match="points outside"):
        unpack([staged(archive)], str(dest))
    assert not (tmp_path / "evil").exists()


def test_missing_incomplete_and_corrupt_inputs_fail_with_the_key(tmp_path: Path) -> None:
    archive = tar_of(tmp_path / "in.tar", (member("f"), b"data"))
    dest = str(tmp_path)
    with pytest.raises(ArtifactError, match=r"^input artifact j/2 is missing \(expired\?\)$"):
        unpack([StagedInput("j/2", "", 0)], dest)
    item = staged(archive, "j/3")
    item.complete = False
    with pytest.raises(ArtifactError, match="input artifact j/3 is incomplete"):
        unpack([item], dest)
    item = staged(archive, "j/4")
    item.received_sha256 = "0" * 64
    with pytest.raises(ArtifactError, match="input artifact j/4 is corrupt"):
        unpack([item], dest)


# ---- staging --------------------------------------------------------------------------------


def test_staging_keeps_pieces_in_order_and_restarts_at_offset_zero(tmp_path: Path) -> None:
    spool = Spool()
    staging = InputStaging(spool)
    try:
        staging.receive("a/1", 0, b"stale", False)
        staging.receive("a/1", 0, b"abc", False)  # sent again from the start
        staging.receive("a/1", 3, b"def", True)
        staging.receive("b/1", 0, b"x", False)
        staging.receive("b/1", 5, b"y", True)  # a gap
        staging.receive("c/1", 0, b"left over", True)
        a, b, missing = staging.claim([("a/1", "s", 6), ("b/1", "s", 2), ("z/1", "", 0)])
        assert Path(a.path).read_bytes() == b"abcdef"
        assert (a.received_size, a.complete, a.problem) == (6, True, "")
        assert a.received_sha256 == hashlib.sha256(b"abcdef").hexdigest()
        assert "offset 5" in b.problem
        assert missing.path == "" and not missing.complete
        assert staging.claim([("c/1", "s", 9)])[0].path == ""  # discarded by the first claim
        a.discard()
        b.discard()
        assert not os.path.exists(a.path)
    finally:
        spool.close()


# ---- outputs --------------------------------------------------------------------------------


def test_outputs_are_read_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "outputs"
    assert read_outputs(str(path), []) == b""
    path.write_bytes(b"A=1\nB=two\n")
    assert read_outputs(str(path), ["some-secret"]) == b"A=1\nB=two\n"
    path.write_bytes(b"x" * (MAX_OUTPUTS + 1))
    with pytest.raises(
        ArtifactError, match=rf"outputs larger than the limit \({MAX_OUTPUTS + 1} bytes"
    ):
        read_outputs(str(path), [])


@pytest.mark.parametrize(
    "leak",
    [
        "s3cr3t-value!",
        base64.b64encode(b"s3cr3t-value!").decode(),
        "s3cr3t-value%21",  # URL-encoded
        "s3cr3t-value\\!",  # shell-escaped
    ],
)
def test_outputs_holding_a_secret_in_any_known_form_are_refused(tmp_path: Path, leak: str) -> None:
    path = tmp_path / "outputs"
    path.write_text(f"OK=1\nTOKEN={leak}\n")
    with pytest.raises(ArtifactError, match=r"^outputs contain a secret's value$"):
        read_outputs(str(path), ["s3cr3t-value!"])


def test_an_outputs_path_that_is_not_a_plain_file_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "outputs"
    link.symlink_to("/etc/passwd")
    with pytest.raises(ArtifactError, match="cannot be read"):
        read_outputs(str(link), [])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened without waiting for a writer
    with pytest.raises(ArtifactError, match="not a regular file"):
        read_outputs(str(fifo), [])


# ---- running with files ---------------------------------------------------------------------


def write(path: str, text: str) -> None:
    Path(path).write_text(text)


def exists(path: str) -> bool:
    return os.path.exists(path)


async def test_a_job_cancelled_before_its_inputs_came_never_starts(tmp_path: Path) -> None:
    ran: list[Assignment] = []

    async def execute(assign: Assignment, *args: Any, **kwargs: Any) -> JobOutcome:
        ran.append(assign)
        return JobOutcome(exit_code=0)

    part = tmp_path / "part"
    part.write_bytes(b"half")
    item = StagedInput("a/1", "f" * 64, 100, str(part), "", 4)
    cancel = asyncio.Event()
    cancel.set()
    spool = Spool()
    assign = Assignment(job_id="j", attempt=1, command="true", inputs=("a/1",))
    finished = await run_with_files(
        execute, assign, [item], spool, lambda data: None, cancel, grace=1.0, on_started=None
    )
    spool.close()
    assert ran == [] and not part.exists()
    assert (finished.outcome.exit_code, finished.outcome.cancelled) == (NOT_RUN, True)


async def test_every_job_gets_an_outputs_file_and_a_job_with_files_its_own_work_dir(
    tmp_path: Path,
) -> None:
    seen: list[Assignment] = []

    async def execute(assign: Assignment, *args: Any, **kwargs: Any) -> JobOutcome:
        seen.append(assign)
        write(assign.env[OUTPUTS_ENV], "A=1\n")
        if assign.working_dir:
            write(os.path.join(assign.working_dir, "f"), "x")
        return JobOutcome(exit_code=0)

    spool = Spool()
    try:
        plain = Assignment(job_id="p", attempt=1, command="true")
        done = await run_with_files(
            execute,
            plain,
            [],
            spool,
            lambda data: None,
            asyncio.Event(),
            grace=1.0,
            on_started=None,
        )
        assert (done.outputs, done.archive, seen[0].working_dir) == (b"A=1\n", None, "")
        with_files = Assignment(job_id="a", attempt=1, command="true", artifacts=("f",))
        done = await run_with_files(
            execute,
            with_files,
            [],
            spool,
            lambda data: None,
            asyncio.Event(),
            grace=1.0,
            on_started=None,
        )
        assert done.archive is not None and names(done.archive.path) == ["f"]
        assert seen[1].working_dir and not exists(seen[1].working_dir)  # cleaned
        assert not exists(seen[1].env[OUTPUTS_ENV])
        done.archive.discard()
    finally:
        spool.close()


# ---- patterns -------------------------------------------------------------------------------


def tree(work: Path, *paths: str) -> None:
    for path in paths:
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(path)


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        ("dist/*.whl", ["dist/a.whl", "dist/b.whl"]),
        ("dist/**/*.whl", ["dist/a.whl", "dist/b.whl", "dist/sub/deep/c.whl"]),
        ("**/c.whl", ["dist/sub/deep/c.whl"]),
        ("dist/?.whl", ["dist/a.whl", "dist/b.whl"]),
        ("dist/[a]*", ["dist/a.whl"]),
        ("dist/[!a]*", ["dist/b.whl", "dist/notes.txt", "dist/sub"]),
        ("*/notes.txt", ["dist/notes.txt"]),
        ("dist/sub/*", ["dist/sub/deep"]),
        ("nothing/*", []),
        ("dist/*.exe", []),
    ],
)
def test_patterns_match_within_components_and_across_directories(
    work: Path, pattern: str, matched: list[str]
) -> None:
    tree(work, "dist/a.whl", "dist/b.whl", "dist/notes.txt", "dist/sub/deep/c.whl", "top.txt")
    assert expand(str(work), pattern) == matched


def test_patterns_do_not_follow_a_symlinked_directory(work: Path, tmp_path: Path) -> None:
    tree(work, "real/x.txt")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text("no")
    (work / "out").symlink_to(tmp_path / "outside")
    assert expand(str(work), "**/*.txt") == ["real/x.txt"]
    assert expand(str(work), "out/*") == []
    assert expand(str(work), "o*") == ["out"]  # the link itself matches, and is then checked
    with pytest.raises(ArtifactError, match="symlink out points outside"):
        pack(str(work), ["o*"], 1 << 20, str(tmp_path / "out.tar"))


def test_a_pattern_packs_what_it_matches_and_one_matching_nothing_fails(
    work: Path, tmp_path: Path
) -> None:
    tree(work, "dist/a.whl", "dist/sub/b.whl", "dist/c.txt")
    assert names(packed(work, tmp_path, "dist/**/*.whl")) == ["dist/a.whl", "dist/sub/b.whl"]
    with pytest.raises(ArtifactError, match=r"^artifact dist/\*.exe was not produced"):
        pack(str(work), ["dist/*.exe"], 1 << 20, str(tmp_path / "none.tar"))

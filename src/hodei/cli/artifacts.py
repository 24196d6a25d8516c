"""`hodei artifacts JOB`: what a job's artifact archive is and holds, or (--out DIR) its files.

The archive is downloaded whole to a temporary file and its sha256 checked against the one
the server names before anything is read from it; extraction uses tarfile's "data" filter
(no absolute paths, nothing out of DIR, no links out, no devices, sane modes).
"""

from __future__ import annotations

import hashlib
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from hodei.cli.common import (
    DEFAULT_URL,
    Output,
    OutputOpt,
    ServerOpt,
    app,
    client,
    fail,
    guarded,
)


def archive_info(info: Mapping[str, Any]) -> list[str]:
    from hodei.cli_render import clean, size, when

    return [
        f"job:      {clean(info.get('job_id'))}",
        f"attempt:  {clean(info.get('attempt'))}",
        f"size:     {size(info.get('size'))} ({clean(info.get('size'))} bytes)",
        f"sha256:   {clean(info.get('sha256'))}",
        f"created:  {when(info.get('created_at'))}",
    ]


def member_lines(members: list[tarfile.TarInfo], root: str = "") -> list[str]:
    """One line per file or link of the archive (directories are implied)."""
    from hodei.cli_render import clean, size

    lines = []
    for member in members:
        if member.isdir():
            continue
        name = clean(f"{root}/{member.name}" if root else member.name)
        if member.issym() or member.islnk():
            lines.append(f"  {name} -> {clean(member.linkname)}")
        else:
            lines.append(f"  {name}  {size(member.size) if member.size else '0B'}")
    return lines


def download_checked(api: Any, path: str, expected: str, into: IO[bytes]) -> int:
    """Download `path` into `into`; error (exit 1) unless its sha256 is the one the server
    named (in its info and in the answer's X-Checksum-Sha256). Returns the size."""
    digest = hashlib.sha256()
    count = 0

    def write(data: bytes) -> None:
        nonlocal count
        digest.update(data)
        into.write(data)
        count += len(data)

    headers = api.download(path, write, headers={"Accept": "application/x-tar"})
    named = str(headers.get("x-checksum-sha256") or expected).lower()
    got = digest.hexdigest()
    if named != expected.lower() or got != named:
        fail(f"the archive's checksum is {got}, not {named}: not used (try again)")
    into.flush()
    into.seek(0)
    return count


def extract(archive: tarfile.TarFile, out: Path) -> list[tarfile.TarInfo]:
    """Every member into `out` through the "data" filter; what was written. Every member is
    checked before the first is written, so a bad archive leaves nothing behind."""
    if not hasattr(tarfile, "data_filter"):  # Python before 3.11.4
        fail("this Python's tarfile has no 'data' filter (3.11.4 or later needed): not extracted")
    members = archive.getmembers()
    checked = [tarfile.data_filter(member, str(out)) for member in members]
    archive.extractall(out, members=members, filter="data")
    return checked


@app.command()
@guarded
def artifacts(
    job: Annotated[str, typer.Argument(help="Job id (a pipeline step's job, say).")],
    out: Annotated[
        str | None, typer.Option("--out", help="Extract the files into this directory.")
    ] = None,
    attempt: Annotated[
        int | None, typer.Option(min=1, help="This attempt's archive (default: the latest).")
    ] = None,
    output: OutputOpt = Output.table,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Show a job's artifact archive and its files, or extract them with --out DIR."""
    from hodei.cli.jobs import job_arg
    from hodei.cli_client import decode_json, job_path
    from hodei.cli_render import write_json_verbatim

    job = job_arg(job)
    target = Path(out) if out is not None else None
    if target is not None and target.exists() and not target.is_dir():
        fail(f"{out} exists and is not a directory", 2)
    params = {"attempt": attempt} if attempt is not None else None
    with client(server) as api:
        response = api.request(
            "GET", job_path(job, "/artifacts"), params=params, not_found=f"no job {job!r}"
        )
        info = decode_json(response)
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str):
            fail("unexpected answer from the server (not an artifact archive)")
        if output is Output.json and target is None:
            write_json_verbatim(response.content)
            return
        path = job_path(job, f"/artifacts/archive?attempt={int(info.get('attempt') or 1)}")
        with tempfile.TemporaryFile() as spool:
            download_checked(api, path, info["sha256"], spool)
            _show_or_extract(info, spool, target)


def _show_or_extract(info: Mapping[str, Any], spool: IO[bytes], target: Path | None) -> None:
    from hodei.cli_render import clean

    try:
        with tarfile.open(fileobj=spool, mode="r:*") as archive:
            if target is None:
                for line in archive_info(info):
                    typer.echo(line)
                typer.echo("files:")
                for line in member_lines(archive.getmembers()) or ["  (none)"]:
                    typer.echo(line)
                return
            target.mkdir(parents=True, exist_ok=True)
            written = extract(archive, target)
    except tarfile.TarError as exc:  # FilterError too: a member that may not be extracted
        fail(f"cannot read or extract the archive: {exc}")
    except OSError as exc:
        fail(f"cannot read or extract the archive: {exc}")
    lines = member_lines(written, str(target))
    typer.echo(
        f"{len(lines)} file(s) of job {clean(info.get('job_id'))} attempt "
        f"{clean(info.get('attempt'))} written to {clean(target)}:"
    )
    for line in lines:
        typer.echo(line)

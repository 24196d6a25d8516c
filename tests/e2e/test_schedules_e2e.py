"""Schedules and templates as a user drives them: `hodei template ...` and `hodei schedule ...`
against a real server with local workers (a hostile parameter value reaches the job as data
and executes nothing; bad input is refused with what is wrong), and in real time a
`* * * * *` schedule with overlap forbid on two servers sharing PostgreSQL: each fire starts
at most one job, and the fire during the long run is skipped with the reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import RunningServer

pytestmark = pytest.mark.e2e

TEMPLATE = """\
description: print a value
parameters:
  - {name: value, type: string, required: true}
  - {name: times, type: int, default: 1}
job:
  command: printf
  arguments: ["[%s]\\n", "${{ params.value }}", "${{ params.times }}"]
"""


def out(result: object) -> str:
    return result.stdout.decode() + result.stderr.decode()  # type: ignore[attr-defined]


def test_a_hostile_template_value_executes_nothing(server: RunningServer, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "t.yaml"
    path.write_text(TEMPLATE)
    made = server.hodei("template", "create", "echo", "-f", str(path))
    assert made.returncode == 0 and "version 1" in made.stdout.decode(), out(made)
    hostile = f"$(touch {marker}); touch {marker} `touch {marker}`"
    ran = server.hodei("template", "run", "echo", "--param", f"value={hostile}", "-f", timeout=60)
    assert ran.returncode == 0, out(ran)
    assert f"[{hostile}]" in ran.stdout.decode()  # the value itself, printed as data
    assert not marker.exists()
    listed = server.hodei("templates")
    assert "echo" in listed.stdout.decode() and "job" in listed.stdout.decode()
    for params, message in [
        ([], "missing required parameter value"),
        (["--param", "value=x", "--param", "times=many"], "is not an integer"),
    ]:
        bad = server.hodei("template", "run", "echo", *params)
        assert bad.returncode == 1 and message in bad.stderr.decode(), out(bad)


def test_schedule_commands_and_bad_input(server: RunningServer) -> None:
    for args, message in [
        (["--cron", "61 * * * *"], "invalid minute field '61'"),
        (["--cron", "@daily", "--tz", "Mars/Base"], "unknown time zone"),
        (["--cron", "* * *"], "expected 5"),
        (["--cron", "@daily", "--overlap", "sometimes"], "overlap must be one of"),
    ]:
        bad = server.hodei("schedule", "create", "bad", *args, "--", "true")
        assert bad.returncode == 1 and message in bad.stderr.decode(), out(bad)
    made = server.hodei(
        "schedule", "create", "nightly", "--cron", "30 2 * * 1-5", "--tz", "Europe/Madrid",
        "--overlap", "forbid", "--catch-up", "once", "--pause-after", "3", "--", "echo", "hi",
    )  # fmt: skip
    assert made.returncode == 0 and "next:" in made.stdout.decode(), out(made)
    listed = server.hodei("schedules").stdout.decode()
    assert "nightly" in listed and "30 2 * * 1-5 Europe/Madrid" in listed and "active" in listed
    job_id = server.hodei("schedule", "run-now", "nightly").stdout.decode().strip()
    assert server.wait_state(job_id, {"succeeded"})["state"] == "succeeded"
    paused = server.hodei("schedule", "pause", "nightly", "--reason", "maintenance")
    assert paused.returncode == 0, out(paused)
    listed = server.hodei("schedules").stdout.decode()
    assert "paused: maintenance" in listed
    shown = server.hodei("schedule", "show", "nightly").stdout.decode()
    assert "run now" in shown and job_id in shown
    assert server.hodei("schedule", "resume", "nightly").returncode == 0
    assert server.hodei("schedule", "rm", "nightly").returncode == 0
    gone = server.hodei("schedule", "show", "nightly")
    assert gone.returncode == 1 and "no schedule nightly" in gone.stderr.decode()
    with server.http() as http:
        entries = http.get("/api/v1/audit", params={"limit": 200}).json()["items"]
    actions = {e["action"] for e in entries if e.get("target") == "nightly"}
    wanted = {"schedule.create", "schedule.run_now", "schedule.pause", "schedule.resume"}
    assert wanted | {"schedule.delete", "schedule.fire"} <= actions, actions


def test_every_minute_on_two_servers_fires_once_and_forbid_skips(
    server_factory: type, postgres_dsn: str, tmp_path: Path
) -> None:
    common = ("--database-url", postgres_dsn, "--log-dir", str(tmp_path / "logs"))
    a: RunningServer = server_factory.start(*common, home=tmp_path / "a")
    b: RunningServer = server_factory.start(*common, home=tmp_path / "b")
    made = a.hodei(
        "schedule", "create", "tick", "--cron", "* * * * *", "--overlap", "forbid",
        "--", "sleep", "150",
    )  # fmt: skip
    assert made.returncode == 0, out(made)
    fires: list[dict[str, object]] = []
    deadline = time.monotonic() + 140  # the first fire within 60 s, the next one 60 s later
    with b.http() as http:
        while time.monotonic() < deadline:
            fires = http.get("/api/v1/schedules/tick").json()["fires"]
            if len(fires) >= 2:
                break
            time.sleep(1)
        assert len(fires) >= 2, fires
        fires.reverse()  # oldest first
        assert fires[0]["outcome"] == "started" and fires[1]["outcome"] == "skipped"
        assert "still active (overlap: forbid)" in str(fires[1]["reason"])
        jobs = http.get("/api/v1/jobs", params={"limit": 100}).json()["items"]
        assert [j["id"] for j in jobs] == [fires[0]["job_id"]]  # one job, on either server
        http.post(f"/api/v1/jobs/{fires[0]['job_id']}/cancel")


def test_grpc_schedule_service(server: RunningServer) -> None:
    import grpc

    from hodei._proto.hodei.v1 import schedules_pb2 as pb
    from hodei._proto.hodei.v1 import schedules_pb2_grpc

    with server.grpc_channel() as channel:
        stub = schedules_pb2_grpc.ScheduleServiceStub(channel)
        made = stub.CreateTemplate(pb.CreateTemplateRequest(name="g", source=TEMPLATE))
        assert (made.name, made.version, made.kind) == ("g", 1, "job")
        ran = stub.RunTemplate(pb.RunTemplateRequest(name="g", params={"value": "; reboot"}))
        assert ran.version == 1 and ran.job_id
        assert server.wait_state(ran.job_id, {"succeeded"})["state"] == "succeeded"
        with pytest.raises(grpc.RpcError) as err:
            stub.RunTemplate(pb.RunTemplateRequest(name="g"))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "missing required parameter value" in (err.value.details() or "")
        with pytest.raises(grpc.RpcError) as err:
            stub.CreateSchedule(pb.CreateScheduleRequest(name="x", cron="* 25 * * *", template="g"))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid hour field '25'" in (err.value.details() or "")
        request = pb.CreateScheduleRequest(
            name="gs", cron="@daily", timezone="Europe/Madrid", template="g",
            params={"value": "v"}, overlap="forbid",
        )  # fmt: skip
        s = stub.CreateSchedule(request)
        assert (s.kind, s.target, s.overlap, len(s.upcoming)) == ("template", "g", "forbid", 5)
        fire = stub.RunScheduleNow(pb.ScheduleRequest(name="gs"))
        assert fire.manual and fire.job_id and fire.template_version == 1
        paused = stub.PauseSchedule(pb.PauseScheduleRequest(name="gs", reason="why"))
        assert paused.paused and paused.pause_reason == "why" and not paused.upcoming
        names = [x.name for x in stub.ListSchedules(pb.ListSchedulesRequest()).items]
        assert "gs" in names
        stub.DeleteSchedule(pb.ScheduleRequest(name="gs"))
        with pytest.raises(grpc.RpcError) as err:
            stub.GetSchedule(pb.ScheduleRequest(name="gs"))
        assert err.value.code() is grpc.StatusCode.NOT_FOUND

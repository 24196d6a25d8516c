"""Jobs in their own image, end to end on a real Docker engine: `hodei server --provider docker`
starts each worker in the job's image with the agent executable injected read-only, whatever the
image holds (a busybox-only root with no libc and no /tmp, an Alpine-like musl root with a
non-root user, Debian without Python). The images are built locally by
scripts/build_test_images.sh (.ci/services/docker.sh runs it): nothing is pulled.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from docker_containers import docker_home, ours
from harness import RunningServer, stop_server

pytestmark = pytest.mark.e2e
__all__ = ["docker_home"]  # the `home` fixture

WORKER_IMAGE = os.environ.get("HODEI_TEST_WORKER_IMAGE", "hodei-worker:latest")
IMAGES = {  # image -> what its /etc/os-release says
    "hodei-test-busybox:1": "busybox only",
    "hodei-test-musl:1": "musl, Alpine-like",
    "hodei-test-debian:1": "Debian GNU/Linux 12",
}


@pytest.fixture
def images(engine: Any) -> dict[str, str]:
    from services import require_service

    missing = [name for name in IMAGES if not engine.images.list(name=name)]
    require_service(
        "test job images",
        not missing,
        f"{', '.join(missing)} missing (run scripts/build_test_images.sh)",
    )
    return IMAGES


def start(factory: type, home: Path, *extra: str) -> RunningServer:
    server: RunningServer = factory.start(  # type: ignore[attr-defined]
        "--provider", "docker", "--worker-image", WORKER_IMAGE, *extra, home=home
    )
    return server


def submit(server: RunningServer, *args: str) -> str:
    out = server.hodei("submit", *args)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def test_the_same_jobs_give_the_same_results_in_every_image(
    server_factory: type, home: Path, engine: Any, images: dict[str, str]
) -> None:
    server = start(server_factory, home, "--max-workers", "6", "--worker-slots", "4")
    secret = "s3cr3t-" + uuid.uuid4().hex
    assert server.hodei("secret", "set", "TOKEN", input=secret.encode()).returncode == 0
    jobs: dict[str, dict[str, str]] = {}
    for image in images:
        jobs[image] = {
            "hello": submit(server, "--image", image, "--", "sh", "-c",
                            'echo "in $(head -1 /etc/os-release)"; id -u; echo "tmp=$TMPDIR"'),
            "exit": submit(server, "--image", image, "--", "sh", "-c", "echo failing; exit 3"),
            "secret": submit(server, "--image", image, "--secret", "TOKEN", "--",
                             "sh", "-c", 'echo "token=$TOKEN"'),
            "big": submit(server, "--image", image, "--", "sh", "-c",
                          "head -c 10485760 /dev/zero | tr '\\0' x; echo; echo end-of-big"),
            "cancel": submit(server, "--image", image, "--", "sh", "-c", "echo started; sleep 300"),
        }  # fmt: skip
    for image, ids in jobs.items():
        running = server.wait_state(ids["cancel"], {"running"}, timeout=120)
        container = engine.containers.get(f"hodei-{running['worker_id']}")
        assert container.attrs["Config"]["Image"] == image
        mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
        assert mounts["/.hodei/agent"]["RW"] is False  # a job cannot replace the agent
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert server.hodei("cancel", ids["cancel"]).returncode == 0

    for image, ids in jobs.items():
        done = {name: server.wait_state(job, {"succeeded", "failed", "cancelled"}, timeout=120)
                for name, job in ids.items()}  # fmt: skip
        assert done["hello"]["state"] == "succeeded", (image, done["hello"])
        hello = server.hodei("logs", ids["hello"]).stdout.decode()
        assert images[image] in hello, (image, hello)
        assert "tmp=/.hodei/tmp" in hello
        # The image's own user: uid 1000 in the musl image, root in the others.
        assert f"\n{'1000' if 'musl' in image else '0'}" in hello.replace("\r", "")
        assert done["exit"]["state"] == "failed" and done["exit"]["exit_code"] == 3
        assert done["secret"]["state"] == "succeeded"
        masked = server.hodei("logs", ids["secret"]).stdout.decode()
        assert "token=***" in masked and secret not in masked
        assert done["big"]["state"] == "succeeded"
        with server.http() as client:
            big = client.get(f"/api/v1/jobs/{ids['big']}/logs?offset=10485000")
        assert big.status_code == 200 and "end-of-big" in big.text
        assert int(big.headers["X-Log-Size"]) >= 10 * 1024 * 1024
        assert done["cancel"]["state"] == "cancelled"

    listed = server.hodei("workers").stdout.decode()
    assert "IMAGE" in listed and any(image in listed for image in images)
    stop_server(server)
    assert ours(engine, home) == []


def test_a_missing_image_fails_its_job_with_the_engines_reason_and_bash_is_not_assumed(
    server_factory: type, home: Path, engine: Any, images: dict[str, str]
) -> None:
    server = start(server_factory, home, "--max-workers", "2")
    missing = f"hodei-test-missing-{uuid.uuid4().hex[:8]}:1"
    job_id = submit(server, "--image", missing, "--", "true")
    plain = submit(server, "--image", "hodei-test-busybox:1", "--", "echo", "still fine")
    script = home.parent / "needs-bash.sh"
    script.write_text("#!/bin/bash\necho never\n")
    needs_bash = submit(server, "--image", "hodei-test-busybox:1", "--script", str(script))
    failed = server.wait_state(job_id, {"failed", "succeeded"}, timeout=120)
    assert failed["state"] == "failed" and failed["attempts"] == 0
    assert f"image {missing} is not on the Docker engine and cannot be pulled" in failed["reason"]
    # Another image is not held back by that failure.
    assert server.wait_state(plain, {"succeeded", "failed"}, timeout=120)["state"] == "succeeded"
    # A script that asks for bash in an image without it: a clear error, not a mystery.
    refused = server.wait_state(needs_bash, {"succeeded", "failed"}, timeout=120)
    assert refused["state"] == "failed" and refused["exit_code"] == 127
    assert "interpreter of the script's #! line is not on this worker" in refused["reason"]
    time.sleep(1)  # nothing retries it: no container of the missing image appears
    assert not [c for c in ours(engine, home) if c.attrs.get("Image") == missing]


def test_a_job_image_waits_with_the_image_named_where_no_provider_runs_images(
    server_factory: type, tmp_path: Path
) -> None:
    server = server_factory.start("--max-workers", "1")  # type: ignore[attr-defined]
    job_id = submit(server, "--image", "node:20", "--", "npm", "test")
    deadline = time.monotonic() + 30
    reason = ""
    while time.monotonic() < deadline and "unschedulable" not in reason:
        reason = str(server.wait_state(job_id, {"queued"})["reason"])
        time.sleep(0.2)
    assert "image node:20: the local provider runs no container images" in reason, reason
    shown = server.hodei("show", job_id).stdout.decode()  # "why is my job pending?"
    assert "image node:20" in shown

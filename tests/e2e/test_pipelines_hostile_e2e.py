"""Hostile pipeline files over REST: each gets a clear 4xx, nothing is stored or started, and
the server goes on serving."""

from __future__ import annotations

from typing import Any

import pytest
from harness import RunningServer

pytestmark = pytest.mark.e2e


def bomb() -> str:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for n in range(1, 12):
        lines.append(f"{chr(97 + n)}: &{chr(97 + n)} [" + ",".join([f"*{chr(96 + n)}"] * 10) + "]")
    return "name: bomb\n" + "\n".join(lines) + "\nsteps: {s: {run: 'true'}}\n"


def many_steps(count: int) -> str:
    return "name: many\nsteps:\n" + "".join(f"  s{n}: {{run: 'true'}}\n" for n in range(count))


CASES: dict[str, tuple[str, str]] = {
    "cycle": (
        "name: c\nsteps:\n  build: {run: 'true', needs: [test]}\n"
        "  test: {run: 'true', needs: [build]}\n",
        "build -> test -> build",
    ),
    "unknown need": ("name: c\nsteps:\n  a: {run: 'true', needs: [nope]}\n", "nope"),
    "shell metacharacters in a step name": (
        "name: c\nsteps:\n  'a; rm -rf /': {run: 'true'}\n",
        "step name",
    ),
    "artifact escaping the work dir": (
        "name: c\nsteps:\n  a: {run: 'true', artifacts: ['../../etc']}\n",
        "'..'",
    ),
    "unknown field": ("name: c\nsteps:\n  a: {run: 'true', nedds: [b]}\n", "nedds"),
    "YAML bomb": (bomb(), ""),
    "10,000 steps": (many_steps(10_000), "steps"),
    "a matrix past the limit": (
        "name: c\nsteps:\n  a:\n    run: 'true'\n    matrix:\n"
        + "".join(f"      k{n}: [a, b]\n" for n in range(10)),
        "256",
    ),
    "not YAML": ("name: [unclosed\n", "YAML"),
}


def runs(server: RunningServer) -> list[dict[str, Any]]:
    with server.http() as client:
        items: list[dict[str, Any]] = client.get("/api/v1/pipelines").json()["items"]
    return items


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_file_is_refused_with_where_and_why(server: RunningServer, case: str) -> None:
    source, needle = CASES[case]
    with server.http() as client:
        answer = client.post("/api/v1/pipelines", json={"source": source, "filename": "x.yaml"})
        assert answer.status_code == 400, answer.text
        error = answer.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["issues"], error
        assert all(i["line"] >= 1 and i["column"] >= 1 for i in error["issues"])
        assert needle in error["message"], error["message"]
        checked = client.post("/api/v1/pipelines/validate", json={"source": source}).json()
        assert checked["valid"] is False and checked["issues"]
        assert client.get("/api/v1/jobs").json()["items"] == []
    assert runs(server) == []


def test_a_10_mb_file_is_refused_before_it_is_read(server: RunningServer) -> None:
    source = "name: big\nsteps: {a: {run: 'true'}}\n# " + "x" * (10 << 20)
    with server.http() as client:
        answer = client.post("/api/v1/pipelines", json={"source": source})
        assert answer.status_code == 413, answer.text
        assert "larger than" in answer.json()["error"]["message"]
        ok = client.post(
            "/api/v1/pipelines", json={"source": "name: ok\nsteps: {a: {run: 'true'}}\n"}
        )
        assert ok.status_code == 201, ok.text
    assert [run["name"] for run in runs(server)] == ["ok"]


def test_bad_params_and_unknown_runs(server: RunningServer) -> None:
    source = "name: p\nparams:\n  n: {type: int}\nsteps:\n  a: {run: 'echo ${{ params.n }}'}\n"
    with server.http() as client:
        missing = client.post("/api/v1/pipelines", json={"source": source})
        assert missing.status_code == 400 and "required" in missing.text
        typed = client.post("/api/v1/pipelines", json={"source": source, "params": {"n": "x"}})
        assert typed.status_code == 400 and "whole number" in typed.text
        unknown = client.post(
            "/api/v1/pipelines", json={"source": source, "params": {"n": 1, "zz": 2}}
        )
        assert unknown.status_code == 400 and "zz" in unknown.text
        for path in ("/api/v1/pipelines/nope", "/api/v1/pipelines/r0000000000000000000"):
            assert client.get(path).status_code == 404
        assert client.post("/api/v1/pipelines/nope/cancel").status_code == 404
        assert client.post("/api/v1/pipelines/nope/approve", json={}).status_code in (400, 404)
    assert runs(server) == []

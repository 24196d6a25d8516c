"""The web dashboard in a real browser (headless Chromium), against a real `hodei server` with
real local workers: sign-in, the live jobs list and log, cancel, the pipeline graph, hostile
input shown as text, roles and CSRF, and a large log."""

from __future__ import annotations

import base64
import json
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from browser import Dashboard
from harness import RunningServer

pytestmark = pytest.mark.e2e

Open = Callable[..., Dashboard]


def make_token(server: RunningServer, role: str) -> str:
    out = server.hodei("token", "create", "--role", role, "--name", f"e2e {role}")
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def submit(server: RunningServer, *args: str) -> str:
    out = server.hodei("submit", *args)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def rgb(text: str) -> tuple[int, int, int]:
    m = re.match(r"rgba?\((\d+),\s*(\d+),\s*(\d+)", text)
    assert m, f"not a colour: {text!r}"
    return int(m[1]), int(m[2]), int(m[3])


def clean(board: Dashboard) -> None:
    """Nothing went wrong in the page: no script error, nothing the CSP had to refuse."""
    assert board.page_errors == [], board.page_errors
    assert board.csp_violations() == [], board.csp_violations()
    assert board.dialogs == [], board.dialogs
    assert board.foreign_requests() == [], board.foreign_requests()


def shown_lines(board: Dashboard) -> list[tuple[int, str]]:
    rows = board.eval(
        """() => [...document.querySelectorAll('.log-row:not([hidden]):not(.loading)')]
              .map(r => [Number(r.dataset.line), r.querySelector('.lt').textContent])"""
    )
    return [(int(n), str(t)) for n, t in rows]


# A job that prints coloured lines slowly: truecolor red, 16-colour green, bold underline.
COLOURS = (
    "for i in $(seq 1 600); do "
    r"printf '\033[38;2;255;0;0mred %d\033[0m \033[32mgreen\033[0m \033[1;4mloud\033[0m"
    r" plain\n' $i; sleep 0.1; done"
)


def test_live_list_live_log_and_cancel_from_the_page(
    server: RunningServer, dashboard: Open, tmp_path: Path
) -> None:
    board = dashboard(server)
    board.sign_in(server.token)
    assert board.eval("document.querySelector('.role').dataset.role") == "admin"
    board.route("#/jobs")
    board.page.wait_for_selector("table.jobs-table")
    board.eval("() => { window.__sameDocument = true; }")

    job = submit(server, "--name", "colours", "--", COLOURS)
    row = f'tr[data-id="{job}"]'
    board.page.wait_for_selector(row)  # from the job events: no reload, no polling
    assert board.eval("() => window.__sameDocument === true")
    board.wait_until(
        lambda: board.eval(f"document.querySelector('{row}').dataset.state") == "running",
        what="the row to show the job running",
    )
    board.screenshot("jobs-list")

    board.page.click(f"{row} a.row-link")
    board.page.wait_for_selector(".log-viewer[data-state=ready]")
    board.wait_until(lambda: any("red 3" in t for _, t in shown_lines(board)), what="line 3")
    red = board.eval(
        """() => getComputedStyle([...document.querySelectorAll('.log-row .lt span')]
              .find(s => s.textContent.startsWith('red '))).color"""
    )
    assert rgb(red) == (255, 0, 0)
    green = board.eval(
        """() => getComputedStyle([...document.querySelectorAll('.log-row .lt span')]
              .find(s => s.textContent === 'green')).color"""
    )
    r, g, b = rgb(green)
    assert g > r + 40 and g > b + 40, green
    loud = board.eval(
        """() => { const s = [...document.querySelectorAll('.log-row .lt span')]
              .find(s => s.textContent === 'loud'); const c = getComputedStyle(s);
              return [c.fontWeight, c.textDecorationLine]; }"""
    )
    assert int(loud[0]) >= 700 and "underline" in loud[1]
    # Lines keep arriving over the log stream, and follow keeps the newest in view.
    first = int(board.eval("document.querySelector('.log-viewer').dataset.lines"))
    board.wait_until(
        lambda: int(board.eval("document.querySelector('.log-viewer').dataset.lines")) > first + 5,
        what="new lines to arrive live",
    )
    newest = max(n for n, _ in shown_lines(board))
    assert newest >= first + 5
    board.screenshot("job-live")

    board.page.click("[data-action=cancel]")
    board.page.wait_for_selector(
        ".job-page .page-head .badge[data-state=cancelled]", timeout=30_000
    )
    assert server.wait_state(job, {"cancelled"})["state"] == "cancelled"
    board.screenshot("job-cancelled")
    board.route("#/jobs")
    board.page.wait_for_selector(f'{row}[data-state="cancelled"]')
    clean(board)


PIPELINE = """\
name: e2e-graph
steps:
  one:
    run: sleep 1; echo one done
  two:
    needs: [one]
    run: sleep 1; echo two done
  side:
    needs: [one]
    run: echo side done
  bad:
    needs: [two]
    run: sleep 1; echo "bad is broken"; exit 1
  after:
    needs: [bad]
    run: echo never
  gate:
    needs: [side]
    when: manual
    run: echo gate opened
"""


def statuses(board: Dashboard) -> dict[str, str]:
    found: dict[str, str] = board.eval(
        """() => Object.fromEntries([...document.querySelectorAll('svg.dag g.node')]
              .map(n => [n.dataset.step, n.dataset.status]))"""
    )
    return found


def test_pipeline_graph_follows_the_run(
    server: RunningServer, dashboard: Open, tmp_path: Path
) -> None:
    source = tmp_path / "graph.yaml"
    source.write_text(PIPELINE)
    board = dashboard(server)
    board.sign_in(server.token)
    out = server.hodei("pipeline", "run", str(source))
    assert out.returncode == 0, out.stderr.decode()
    run = out.stdout.decode().strip()
    board.route(f"#/pipelines/{run}")
    board.page.wait_for_selector("svg.dag g.node[data-step=one]")
    assert board.eval(
        "document.querySelectorAll('svg.dag path.edge[data-from=one][data-to=two]').length"
    )

    # Watch the graph change without reloading: when each step first shows each status.
    seen: dict[tuple[str, str], float] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = time.monotonic()
        for step, status in statuses(board).items():
            seen.setdefault((step, status), now)
        if ("after", "skipped") in seen and ("gate", "waiting") in seen:
            break
        time.sleep(0.05)
    assert ("after", "skipped") in seen, seen
    assert seen[("one", "succeeded")] < seen[("two", "succeeded")] < seen[("bad", "failed")]
    assert seen[("bad", "failed")] <= seen[("after", "skipped")]
    assert ("two", "running") in seen  # seen live, not only at the end
    box = "svg.dag g.node[data-step={}] > rect.box"
    r, g, b = rgb(
        board.eval(f"getComputedStyle(document.querySelector('{box.format('one')}')).stroke")
    )
    assert g > r and g > b
    r, g, b = rgb(
        board.eval(f"getComputedStyle(document.querySelector('{box.format('bad')}')).stroke")
    )
    assert r > g and r > b
    board.screenshot("pipeline-failed-step")

    # A click on a node shows its job's log.
    board.page.click("svg.dag g.node[data-step=bad]")
    board.wait_until(
        lambda: any("bad is broken" in t for _, t in shown_lines(board)), what="the step's log"
    )

    # The manual gate: approve it from the page.
    board.page.click("[data-action=approve][data-step=gate]")
    board.wait_until(lambda: statuses(board).get("gate") == "succeeded", what="gate to run")
    board.page.wait_for_selector(".run-page .page-head .badge[data-state=failed]", timeout=30_000)

    # Retry the failed steps: bad runs (and fails) again as a new job.
    old_job = board.eval("document.querySelector('svg.dag g.node[data-step=bad]').dataset.job")
    board.page.click("[data-action=retry]")
    board.wait_until(
        lambda: (
            board.eval("document.querySelector('svg.dag g.node[data-step=bad]').dataset.job")
            not in ("", old_job)
            and statuses(board).get("bad") == "failed"
        ),
        timeout=40,
        what="bad to run again",
    )
    assert statuses(board)["after"] == "skipped"
    board.screenshot("pipeline-retried")
    clean(board)


LEAK = "http://127.0.0.1:9/leak.png"  # another origin (a closed port on loopback)
NAME = (
    f'<img src=x onerror="alert(1)"><script>alert(2)</script><img src="{LEAK}">'
    '<a href="javascript:alert(3)">j</a> \x1b[31mred\x1b]0;title\x07'
)
HOSTILE_LOG = (
    f'printf \'%s\\n\' \'<img src="{LEAK}" onerror="alert(4)"><script>alert(5)</script>'
    '<a href="javascript:alert(6)">click me</a>\'; '
    r"printf '\033]8;;javascript:alert(7)\033\\osc link\033]8;;\033\\ \033[2J\033[H"
    r" \033]0;title\007 \342\200\256 reversed \233 31m end\n'; sleep 30"
)


def test_hostile_names_and_log_lines_stay_text(
    server: RunningServer, dashboard: Open, tmp_path: Path
) -> None:
    with server.http() as client:
        created = client.post("/api/v1/jobs", json={"name": NAME, "command": HOSTILE_LOG})
        assert created.status_code == 201, created.text
        job = created.json()["id"]
    board = dashboard(server)
    board.sign_in(server.token)
    board.route("#/jobs")
    board.page.wait_for_selector(f'tr[data-id="{job}"]')
    name_cell = board.eval(f"document.querySelector('tr[data-id=\"{job}\"] .c-name').textContent")
    assert '<img src=x onerror="alert(1)"><script>alert(2)</script>' in name_cell
    assert "\\x1b[31mred\\x1b]0;title\\x07" in name_cell  # escapes shown, not applied

    board.page.click(f'tr[data-id="{job}"] a.row-link')
    board.page.wait_for_selector(".log-viewer[data-state=ready]")
    board.wait_until(lambda: any("end" in t for _, t in shown_lines(board)), what="the log")
    heading = board.eval("document.querySelector('.job-name').textContent")
    assert heading.startswith('<img src=x onerror="alert(1)">')
    text = "\n".join(t for _, t in shown_lines(board))
    assert '<script>alert(5)</script><a href="javascript:alert(6)">click me</a>' in text
    assert "\\x1b]8;;javascript:alert(7)\\x1b\\osc link" in text
    assert "\\x1b[2J\\x1b[H" in text and "\\x1b]0;title\\x07" in text
    assert "\\u202e reversed" in text and "\\x9b 31m" in text
    # Nothing of it became markup: no element from the data, no link to follow.
    made = board.eval(
        """() => document.querySelectorAll(
              'main img, main script, main iframe, main a[href^="javascript"], .log-lines a'
            ).length"""
    )
    assert made == 0
    board.page.get_by_text("click me", exact=False).first.click()
    board.page.get_by_text("osc link", exact=False).first.click()
    time.sleep(0.5)
    assert board.eval("location.hash").startswith(f"#/jobs/{job}")
    board.screenshot("hostile")
    clean(board)
    assert not any(u.startswith(LEAK) for u in board.requests)


def test_a_viewer_sees_no_cancel_and_posts_need_the_csrf_token(
    server: RunningServer, dashboard: Open
) -> None:
    viewer = make_token(server, "viewer")
    job = submit(server, "--name", "long", "--", "sleep 120")
    server.wait_state(job, {"running"})

    seer = dashboard(server)
    seer.sign_in(viewer)
    assert seer.eval("document.querySelector('.role').dataset.role") == "viewer"
    assert seer.eval("document.querySelectorAll('[data-nav=audit]').length") == 0
    seer.route(f"#/jobs/{job}")
    seer.page.wait_for_selector(".job-page .page-head .badge[data-state=running]")
    seer.page.wait_for_selector(".log-viewer[data-state=ready]")
    assert seer.eval("document.querySelectorAll('[data-action]').length") == 0
    seer.screenshot("viewer")
    # The workers page shows the worker running it; the audit trail is not a viewer's page.
    seer.route("#/workers")
    seer.page.wait_for_selector(f'.workers-table tr[data-state=busy] a[href="#/jobs/{job}"]')
    seer.route("#/audit")
    seer.page.wait_for_selector("main h1:text('Not found')")

    admin = dashboard(server)
    admin.sign_in(server.token)
    forge = """async ([id, header]) => {
        const headers = {};
        if (header) headers['X-Hodei-CSRF'] = (await (await fetch('/api/v1/session')).json()).csrf;
        const r = await fetch(`/api/v1/jobs/${id}/cancel`, {method: 'POST', headers});
        return r.status;
    }"""
    assert admin.eval(forge, [job, False]) == 403  # the cookie alone is not enough
    assert server.wait_state(job, {"running"})["state"] == "running"
    assert seer.eval(forge, [job, True]) == 403  # a viewer may not, with the token or not
    assert server.wait_state(job, {"running"})["state"] == "running"
    assert admin.eval(forge, [job, True]) == 200
    assert server.wait_state(job, {"cancelled"})["state"] == "cancelled"
    clean(seer)
    clean(admin)
    # The page's own answers carry the strict headers.
    page = httpx.get(server.url + "/", timeout=10)
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


LINES = 250_000
FILLER = "abcdefghijklmnopqrstuvwxyz0123456789" * 2  # a line is 86 bytes: 21.5 MB in all
BIG = f'awk \'BEGIN {{ for (i = 1; i <= {LINES}; i++) printf "line %07d %s\\n", i, "{FILLER}" }}\''


def test_jump_to_a_line_and_search_a_large_log(server: RunningServer, dashboard: Open) -> None:
    job = submit(server, "--name", "big log", "--", BIG)
    server.wait_state(job, {"succeeded"}, timeout=120)
    with server.http() as client:
        size = int(
            client.get(f"/api/v1/jobs/{job}/logs", headers={"Range": "bytes=0-0"}).headers[
                "x-log-size"
            ]
        )
    assert size > 20_000_000

    board = dashboard(server)
    board.sign_in(server.token)
    reads: list[tuple[str, str | None]] = []
    board.page.on("request", lambda r: reads.append((r.url, r.headers.get("range"))))
    board.route(f"#/jobs/{job}")
    board.page.wait_for_selector(".log-viewer[data-state=ready]", timeout=30_000)
    board.wait_until(lambda: shown_lines(board), what="the first lines")
    assert shown_lines(board)[0][1].startswith("line 0000001 ")
    assert int(board.eval("document.querySelector('.log-viewer').dataset.lines")) == LINES

    board.page.fill(".log-goto", "123456")
    board.page.press(".log-goto", "Enter")
    target = '.log-row.target[data-line="123456"]:not(.loading)'
    board.page.wait_for_selector(target)
    assert board.eval(f"document.querySelector('{target} .lt').textContent").startswith(
        "line 0123456 "
    )
    board.screenshot("large-log-line")

    board.page.focus(".log-scroller")
    board.page.keyboard.press("End")
    board.wait_until(
        lambda: any(
            n == LINES and t.startswith(f"line {LINES:07d}") for n, t in shown_lines(board)
        ),
        what="the last line",
    )

    board.page.fill(".log-search", "line 0200000 ")
    board.page.click("text=Search whole log")
    board.page.wait_for_selector(".log-results li button", timeout=60_000)
    board.wait_until(
        lambda: "whole log" in board.eval("document.querySelector('.log-matches').textContent"),
        timeout=90,
        what="the whole-log search to finish",
    )
    assert board.eval("document.querySelectorAll('.log-results li').length") == 1
    board.page.click(".log-results li button")
    board.page.wait_for_selector('.log-row.target[data-line="200000"]:not(.loading) mark')
    # The page read the log by byte ranges, never whole.
    log_reads = [(u, r) for u, r in reads if re.search(rf"/api/v1/jobs/{job}/logs(\?|$)", u)]
    assert log_reads and all(r and r.startswith("bytes=") for _, r in log_reads), log_reads
    clean(board)
    heap = board.eval("performance.memory ? performance.memory.usedJSHeapSize : 0")
    print(json.dumps({"log_bytes": size, "js_heap_bytes": heap}))
    assert heap < 200 * 1024 * 1024


def samples() -> list[bytes]:
    """Log bytes that exercise the terminal view's rules, and random mixes of their parts."""
    fixed = [
        b"plain\n\x1b[31mred\x1b[0m \x1b[1;4;38;5;208mx\x1b[m \x1b[38:2::10:20:30mtc\x1b[39m\n",
        b"\x1b[2J\x1b[H\x1b]0;title\x07\x1b]8;;javascript:alert(1)\x1b\\link\x1b]8;;\x1b\\\n",
        b"cr lf\r\nlone\rcr\r\n\r\nbs\x08 bel\x07 nul\x00 del\x7f tab\tend",
        b"\x9b31m c1 \xc2\x9b31m \xc2\x85 bad \xff\xfe \xe2\x82 \xf0\x9f\x98 \xed\xa0\x80 \xc0\xaf",
        b"\x1b[\x1b[31mm \x1b[" + b"1;" * 40 + b"m too long \x1b[31",
        "utf-8: \u00e9\u4e2d\U0001f600 ok\n".encode(),
        b"ends with cr\r",
    ]
    rng = random.Random(7)
    parts = [b"\x1b", b"[", b"]", b"3", b"1", b";", b":", b"m", b"\r", b"\n", b"a", b"\xc2",
             b"\x9b", b"\xe2\x82", b"\xac", b"\xff", b"\x07", b"\\", b"\t", b" "]  # fmt: skip
    fuzz = [b"".join(rng.choice(parts) for _ in range(rng.randint(1, 60))) for _ in range(300)]
    return fixed + fuzz


RENDER = """async (items) => {
  const a = await import('/static/js/ansi.js');
  return items.map((b64) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const lines = a.splitLines(a.decode(bytes));
    const shown = lines.map(a.plainText);
    const joined = lines.map((l) => a.parse(l).map((s) => s.t).join(''));
    const el = document.createElement('div');
    const rendered = lines.map((l) => {
      el.textContent = '';
      a.render(el, l);
      return el.textContent;
    });
    return {shown, joined, rendered};
  });
}"""


def test_log_lines_show_what_the_cli_shows(server: RunningServer, dashboard: Open) -> None:
    """The page's view of log bytes (ansi.js) is the CLI's terminal view (domain.terminal):
    the same text, SGR sequences aside, for every rule and for random mixes."""
    from hodei.domain.terminal import neutralise

    board = dashboard(server)
    board.goto("")
    board.page.wait_for_selector("#token")
    items = samples()
    got = board.eval(RENDER, [base64.b64encode(b).decode() for b in items])
    sgr = re.compile(r"\x1b\[[0-9;:]{0,62}m")
    for data, view in zip(items, got, strict=True):
        expected = sgr.sub("", neutralise(data).decode()).split("\n")
        assert view["shown"] == expected, data
        assert view["joined"] == expected and view["rendered"] == expected, data
    # Beyond the CLI: bidirectional overrides are shown as escapes, not applied.
    bidi = board.eval(RENDER, [base64.b64encode("a\u202eb\u2066c".encode()).decode()])
    assert bidi[0]["shown"] == ["a\\u202eb\\u2066c"]
    clean(board)

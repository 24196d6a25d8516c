"""The dashboard's log viewer on a 100 MB log: time to the first rendered line, and the page's
JavaScript heap. Nothing is asserted: the figures are printed.

    python bench/dashboard_log.py [megabytes]       # default 100

Starts `hodei server` in a fresh temporary home (local workers, loopback only), has a job
print the log (88-byte numbered lines), then opens the job's page in headless Chromium (the
system's, HODEI_TEST_CHROMIUM or /usr/bin/chromium, driven by the playwright package) and
measures:

- first line, cold: a fresh page load of #/jobs/ID (the scripts, the sign-in check, the job,
  the line index, the first range) until a log line is on screen;
- first line, in the page: the same route reached from another page of the loaded app;
- jump: to a line near the end (one index lookup and one byte range);
- scrolling: 300 frames of 300 px each, the frame times and how many frames showed a line
  still waiting for its range;
- the JS heap (Runtime.getHeapUsage, after a garbage collection) once the log is open, and
  after scrolling and jumping around it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

READY = re.compile(r"hodei server ready: (https?://\S+) grpc (\S+)")
FILLER = "abcdefghijklmnopqrstuvwxyz0123456789" * 2
LINE_BYTES = len(f"line {0:09d} {FILLER}\n")  # 88: nine digits keep every line this long


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "HODEI_HOME": str(home)}
    for key in ("HODEI_URL", "HODEI_DATABASE_URL", "HODEI_PROVIDER", "HODEI_DEV"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hodei",
            "server",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--max-output",
            "1G",
            "--max-workers",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    found: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            match = READY.search(raw.decode(errors="replace"))
            if match and not found:
                found.append(match.group(1))
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(30):
        proc.kill()
        raise SystemExit("the server did not start")
    return proc, found[0]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def make_log(url: str, token: str, megabytes: float) -> tuple[str, int, float]:
    lines = int(megabytes * 1_000_000 / LINE_BYTES)
    command = (
        f"awk 'BEGIN {{ for (i = 1; i <= {lines}; i++) "
        f'printf "line %09d %s\\n", i, "{FILLER}" }}\''
    )
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        job = client.post("/api/v1/jobs", json={"name": "bench log", "command": command}).json()
        started = time.monotonic()
        while True:
            state = client.get(f"/api/v1/jobs/{job['id']}").json()["state"]
            if state in ("succeeded", "failed", "cancelled", "timed_out"):
                break
            time.sleep(0.2)
        if state != "succeeded":
            raise SystemExit(f"the log job ended {state}")
        size = int(
            client.get(f"/api/v1/jobs/{job['id']}/logs", headers={"Range": "bytes=0-0"}).headers[
                "x-log-size"
            ]
        )
    return str(job["id"]), size, time.monotonic() - started


SCROLL = """async () => {
  const s = document.querySelector('.log-scroller');
  const times = [];
  let waiting = 0;
  let last = performance.now();
  for (let i = 0; i < 300; i++) {
    s.scrollTop += 300;
    await new Promise((r) => requestAnimationFrame(r));
    const now = performance.now();
    times.push(now - last);
    last = now;
    if (s.querySelector('.log-row.loading:not([hidden])')) waiting += 1;
  }
  times.sort((a, b) => a - b);
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  return {frame_mean_ms: mean, frame_p95_ms: times[Math.floor(times.length * 0.95)],
          frame_max_ms: times[times.length - 1], frames_waiting: waiting};
}"""


def heap_mb(cdp: Any) -> float:
    cdp.send("HeapProfiler.collectGarbage")
    used = cdp.send("Runtime.getHeapUsage")["usedSize"]
    return float(used) / 2**20


def first_line_ms(page: Any, start: float) -> float:
    page.wait_for_function(
        "() => document.querySelector('.log-row:not(.loading):not([hidden]) .lt')",
        polling="raf",
        timeout=60_000,
    )
    return (time.perf_counter() - start) * 1000


def measure(url: str, token: str, job: str, lines: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("HODEI_TEST_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        raise SystemExit("no Chromium: run .ci/services/chromium.sh or set HODEI_TEST_CHROMIUM")
    args = ["--disable-gpu", "--disable-dev-shm-usage"] + (
        ["--no-sandbox"] if os.geteuid() == 0 else []
    )
    out: dict[str, float] = {}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, headless=True, args=args)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        page.goto(url + "/")
        page.fill("#token", token)
        page.click("form.signin button[type=submit]")
        page.wait_for_selector("header.topbar")

        start = time.perf_counter()
        page.goto(f"{url}/#/jobs/{job}")
        out["first_line_cold_ms"] = first_line_ms(page, start)
        page.evaluate("() => { location.hash = '#/workers'; }")
        page.wait_for_selector(".workers-table")
        start = time.perf_counter()
        page.evaluate(f"() => {{ location.hash = '#/jobs/{job}'; }}")
        out["first_line_in_page_ms"] = first_line_ms(page, start)
        out["heap_open_mb"] = heap_mb(cdp)

        target = lines - 1234
        start = time.perf_counter()
        page.fill(".log-goto", str(target))
        page.press(".log-goto", "Enter")
        page.wait_for_selector(
            f'.log-row.target[data-line="{target}"]:not(.loading)', timeout=60_000
        )
        out["jump_ms"] = (time.perf_counter() - start) * 1000
        # Scroll through it, 300 px a frame for 300 frames: how long frames take, and in how
        # many a line was still waiting for its byte range.
        frames = page.evaluate(SCROLL)
        out.update({f"scroll_{k}": float(v) for k, v in frames.items()})
        for fraction in (0.1, 0.5, 0.9, 0.3, 0.7):
            line = max(1, int(lines * fraction))
            page.fill(".log-goto", str(line))
            page.press(".log-goto", "Enter")
            page.wait_for_selector(
                f'.log-row.target[data-line="{line}"]:not(.loading)', timeout=60_000
            )
        out["heap_after_scrolling_mb"] = heap_mb(cdp)
        out["dom_rows"] = float(page.evaluate("document.querySelectorAll('.log-row').length"))
        browser.close()
    return out


def main() -> None:
    megabytes = float(sys.argv[1]) if len(sys.argv) > 1 else 100.0
    home = Path(tempfile.mkdtemp(prefix="hodei-dashboard-bench-"))
    proc, url = start_server(home)
    try:
        token = (home / "admin.token").read_text().strip()
        job, size, made_s = make_log(url, token, megabytes)
        lines = size // LINE_BYTES
        print(f"log: {size / 1e6:.1f} MB, {lines:,} lines (written in {made_s:.1f}s)")
        figures = measure(url, token, job, lines)
        print(f"first line, cold page load:   {figures['first_line_cold_ms']:7.0f} ms")
        print(f"first line, in the page:      {figures['first_line_in_page_ms']:7.0f} ms")
        print(f"jump to line {lines - 1234:,}:  {figures['jump_ms']:7.0f} ms")
        print(
            f"scrolling 300 frames:         {figures['scroll_frame_mean_ms']:7.1f} ms a frame "
            f"(p95 {figures['scroll_frame_p95_ms']:.1f}, max {figures['scroll_frame_max_ms']:.1f}; "
            f"{figures['scroll_frames_waiting']:.0f} frames with a line still loading)"
        )
        print(f"JS heap, log open:            {figures['heap_open_mb']:7.1f} MiB")
        print(f"JS heap, after scrolling:     {figures['heap_after_scrolling_mb']:7.1f} MiB")
        print(f"log rows in the DOM:          {figures['dom_rows']:7.0f}")
        print(json.dumps({"log_bytes": size, "lines": lines, **figures}))
    finally:
        stop(proc)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

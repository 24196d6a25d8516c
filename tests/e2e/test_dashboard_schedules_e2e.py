"""The dashboard's Schedules page in a real browser (headless Chromium) against a real server:
schedules with their next fire times, state and last fires; pause with its reason shown,
resume and run-now from the page; templates listed; a hostile schedule reason stays text; a
viewer sees no buttons."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from browser import Dashboard
from harness import RunningServer

pytestmark = pytest.mark.e2e

Open = Callable[..., Dashboard]
HOSTILE = '<img src=x onerror="alert(1)">'
TEMPLATE = "description: a template\njob: {command: 'true'}\n"


def clean(board: Dashboard) -> None:
    assert board.page_errors == [], board.page_errors
    assert board.csp_violations() == [], board.csp_violations()
    assert board.dialogs == [], board.dialogs
    assert board.foreign_requests() == [], board.foreign_requests()


def test_schedules_page(server: RunningServer, dashboard: Open) -> None:
    made = server.hodei(
        "schedule", "create", "nightly", "--cron", "30 2 * * *", "--tz", "Europe/Madrid",
        "--", "echo", "hi",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr.decode()
    server.hodei("schedule", "create", "other", "--cron", "@hourly", "--", "true")
    assert server.hodei("schedule", "pause", "other", "--reason", HOSTILE).returncode == 0
    assert (
        server.hodei("template", "create", "tpl", "-f", "-", input=TEMPLATE.encode()).returncode
        == 0
    )

    board = dashboard(server)
    board.sign_in(server.token)
    board.route("#/schedules")
    row = 'tr[data-schedule="nightly"]'
    board.page.wait_for_selector(row)
    next_fire = board.page.text_content(f"{row} .c-next") or ""
    assert next_fire.strip() not in ("", "—")
    assert "30 2 * * * Europe/Madrid" in (board.page.text_content(row) or "")
    paused = board.page.text_content('tr[data-schedule="other"] .c-state') or ""
    assert "paused" in paused and HOSTILE in paused  # shown as text, not markup
    assert board.page.query_selector('tr[data-schedule="other"] img') is None
    board.page.wait_for_selector('tr[data-template="tpl"]')

    board.page.click(f'{row} button[data-action="run-now"]')
    board.page.wait_for_selector(f'{row} li.fire[data-outcome="started"] a')
    board.page.click(f'{row} button[data-action="pause"]')
    board.page.wait_for_selector(f'{row} button[data-action="resume"]')
    assert "paused by" in (board.page.text_content(f"{row} .c-state") or "")
    board.page.click(f'{row} button[data-action="resume"]')
    board.page.wait_for_selector(f'{row} button[data-action="pause"]')
    board.screenshot("schedules")
    clean(board)

    viewer = server.hodei("token", "create", "--role", "viewer", "--name", "e2e viewer")
    seer = dashboard(server)
    seer.sign_in(viewer.stdout.decode().strip())
    seer.route("#/schedules")
    seer.page.wait_for_selector(row)
    assert seer.page.query_selector(f"{row} button") is None
    clean(seer)

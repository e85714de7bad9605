"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright
(``executable_path`` set to the system Chromium; no browser download), on a real broker with a
scheduler, two workers, a projector and ``joblog ui``.

A submission goes live from PENDING to COMPLETED on the page, its DAG renders, the time
slider shows an earlier state, and a cancel from the page abandons the dependents. Screenshots
go to ``docs/ui/``.

Chromium comes from Debian (``apt-get install chromium``): when it is missing the test setup
installs it where it runs as root with apt, and skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.admin import ensure_topics
from engine.config import Settings
from engine.ui.config import UiConfig
from engine.ui.server import UiServer
from tests.integration.conftest import KafkaUnderTest
from tests.integration.test_client import engine_running
from tests.integration.test_ui_api import TOKEN, Api, eventually, job_status, submit

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "ui"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 90_000


def _chromium() -> str:
    """The system Chromium, installed from Debian's packages if it is missing and we can."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("Debian's chromium is not installed and this user cannot apt-get it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            pytest.skip(f"`{' '.join(argv)}` failed: {result.stderr.strip()[-300:]}")
    found = shutil.which("chromium")
    if not found:
        pytest.skip("apt-get installed chromium but no chromium is on the PATH")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright (the test extra) is not installed"
    )
    executable = _chromium()
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def dashboard(
    kafka_cluster: KafkaUnderTest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Api, str]]:
    settings = Settings.from_env(
        bootstrap_servers=kafka_cluster.bootstrap_servers,
        topic_prefix=f"uib{uuid.uuid4().hex[:8]}.",
        partitions=3,
    )
    ensure_topics(settings)
    db_path = tmp_path_factory.mktemp("ui-browser") / "joblog.duckdb"
    with engine_running(settings, db_path=db_path):
        config = UiConfig.from_env({}, port=0, token=TOKEN, db_path=db_path)
        with UiServer(config, settings) as server:
            yield Api(server.url), server.dashboard_url


@pytest.fixture
def page(browser: Any, dashboard: tuple[Api, str]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(dashboard[1])
    opened.wait_for_selector("#jobs-table table", timeout=WAIT_MS)
    yield opened
    context.close()
    assert not errors, f"the page raised: {errors}"


def node(page: Any, job_id: str, status: str) -> Any:
    return page.wait_for_selector(
        f'#dag g.node[data-job="{job_id}"][data-status="{status}"]', timeout=WAIT_MS
    )


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def test_a_submission_goes_live_from_pending_to_completed_and_travels_back(
    page: Any, dashboard: tuple[Api, str]
) -> None:
    api, _ = dashboard
    key = uuid.uuid4().hex
    sid = submit(
        api,
        {
            "id": "shot",
            "task": "double",
            "args": [5],
            "children": [
                # fails once, then waits 5 s for its retry: PENDING on the page
                {"id": "frame-1", "task": "flaky", "args": [key], "retries": 1, "retry_backoff": 5},
                {"id": "frame-2", "task": "render", "args": [2], "kwargs": {"steps": 6}},
            ],
        },
    )["submission_id"]
    page.goto(f"{api.url}/#/submission/{sid}")
    node(page, "frame-1", "PENDING")
    assert page.locator("#dag path.edge.child").count() == 2
    assert page.locator("#dag g.node").count() == 3
    shot(page, "submission-running.png")
    node(page, "shot", "COMPLETED")
    page.wait_for_selector('#sub-status[data-status="COMPLETED"]', timeout=WAIT_MS)
    node(page, "frame-1", "COMPLETED")
    # the Gantt: a run bar per attempt (frame-1 ran twice), beside its waits
    page.wait_for_function(
        "() => document.querySelectorAll('#gantt rect').length >= 4", timeout=WAIT_MS
    )
    shot(page, "submission-completed.png")

    # time travel: the slider back to an early event shows the jobs as they were then
    first_job = next(
        line["seq"]
        for line in api.ok("GET", f"/api/v1/submissions/{sid}/history")["history"]
        if line["event"] == "JobBlocked"
    )
    page.eval_on_selector(
        "#timeslider",
        "(el, v) => { el.value = String(v); el.dispatchEvent(new Event('input')); }",
        first_job,
    )
    page.wait_for_selector(f'#asof-banner[data-seq="{first_job}"]', timeout=WAIT_MS)
    statuses = page.eval_on_selector_all(
        "#dag g.node", "nodes => nodes.map(n => n.getAttribute('data-status'))"
    )
    assert statuses and "COMPLETED" not in statuses, statuses
    assert "BLOCKED" in statuses
    shot(page, "time-travel.png")
    page.click("#back-to-live")
    node(page, "shot", "COMPLETED")


def test_a_cancel_from_the_page_abandons_the_dependents(
    page: Any, dashboard: tuple[Api, str]
) -> None:
    api, _ = dashboard
    sid = submit(
        api,
        {"id": "train", "task": "double", "args": [1], "kwargs": {"seconds": 120}},
        {"id": "evaluate", "task": "print_it", "depends_on": ["train"]},
        {"id": "publish", "task": "print_it", "depends_on": ["evaluate"]},
    )["submission_id"]
    page.goto(f"{api.url}/#/submission/{sid}")
    node(page, "train", "RUNNING")
    page.click('button[data-action="cancel-job"][data-job="train"]')
    page.wait_for_selector('#decision[data-accepted="true"]', timeout=WAIT_MS)
    node(page, "train", "CANCELED")
    node(page, "publish", "ABANDONED")
    assert "CancelJobs accepted" in page.inner_text("#decision")
    shot(page, "cancel.png")
    assert job_status(api, sid, "evaluate") in ("ABANDONED", None)
    eventually(lambda: job_status(api, sid, "evaluate") == "ABANDONED", "evaluate ABANDONED")


def test_the_jobs_workers_analytics_and_job_pages_render(
    page: Any, dashboard: tuple[Api, str]
) -> None:
    api, _ = dashboard
    # the jobs page is open before the job is submitted: its counts move live, from the
    # events stream, without reloading the page
    page.wait_for_selector("#live-dot.on", timeout=WAIT_MS)
    failed = int(page.inner_text("[data-count=FAILED] b"))
    sid = submit(api, {"id": "boom", "task": "fail_with", "args": ["BadPlate", "not EXR"]})[
        "submission_id"
    ]
    page.wait_for_function(
        f"() => Number(document.querySelector('[data-count=FAILED] b').textContent) > {failed}",
        timeout=WAIT_MS,
    )
    eventually(lambda: job_status(api, sid, "boom") == "FAILED", "boom FAILED")
    page.reload()
    page.wait_for_selector(f'#jobs-table a[href="#/job/{sid}/boom"]', timeout=WAIT_MS)
    shot(page, "jobs.png")
    page.goto(f"{api.url}/#/job/{sid}/boom")
    page.wait_for_selector("#job-exceptions .sev0", timeout=WAIT_MS)
    assert "BadPlate" in page.inner_text("#job-exceptions")
    assert "Job raised fatal exception BadPlate" in page.inner_text("#job-history")
    shot(page, "job.png")
    page.goto(f"{api.url}/#/workers")
    page.wait_for_selector("#workers tbody tr", timeout=WAIT_MS)
    assert "w1" in page.inner_text("#workers")
    shot(page, "workers.png")
    page.goto(f"{api.url}/#/analytics")
    page.wait_for_selector(".grid svg", timeout=WAIT_MS)
    page.fill("#sql-text", "SELECT status, count(*) AS n FROM jobs GROUP BY status")
    page.click("#sql-run")
    page.wait_for_selector("#sql-result table", timeout=WAIT_MS)
    assert "FAILED" in page.inner_text("#sql-result")
    shot(page, "analytics.png")

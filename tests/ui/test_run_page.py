"""The Run page with real training: live curves from the SSE stream, stop / resume / extend, queue position, and a
dropped stream that reconnects with ``Last-Event-ID`` and misses nothing.

Training is a tiny ``simple_cnn`` on generated 16 px shapes; epochs are made observable by asking for many of
them (and stopping), never by sleeping.
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.helpers.browser import ARTIFACTS, DESKTOP, PHONE, open_view, screenshot
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.ui_forms import fill_tiny_experiment

#: a run needs a worker process (torch, Lightning) to start on a loaded 2-core machine, then trains
TRAINING_TIMEOUT_MS = 120_000
POINTS = "() => Number(document.querySelector('.chart-card .chart')?.dataset.points || 0)"


def points(page: Any) -> int:
    return int(page.evaluate(POINTS))


def wait_status(page: Any, *statuses: str) -> str:
    page.wait_for_function("(wanted) => wanted.includes(document.querySelector('#view > .page')?.dataset.status)",
                           arg=list(statuses), timeout=TRAINING_TIMEOUT_MS)
    return str(page.evaluate("() => document.querySelector('#view > .page')?.dataset.status"))


def test_a_run_started_from_the_form_trains_live_stops_resumes_extended_and_completes(services, new_page) -> None:
    project = create_project_with_dataset(services, per_class=12, size=16)
    page = new_page().page
    open_view(page, f"/p/{project}/training")
    form = page.locator("form.experiment-form")
    fill_tiny_experiment(form, "live", max_epochs=300)  # far more than the test waits for: it stops the run
    form.get_by_role("button", name="Create and train").click()

    # "Create and train" lands on the new run's page
    page.wait_for_function("() => location.hash.includes('/runs/run-') && document.querySelector('#view > .page')?.dataset.status")
    run_id = page.evaluate("() => location.hash.split('/runs/')[1]")
    assert page.locator("main h1").first.inner_text() == f"Run {run_id}"

    # the curves grow while it trains, fed by the stream
    page.wait_for_function(f"() => ({POINTS})() >= 2", timeout=TRAINING_TIMEOUT_MS)
    latest = page.locator(".chart-card .latest").first
    before, before_text = points(page), latest.inner_text()
    page.wait_for_function(f"(n) => ({POINTS})() > n", arg=before, timeout=TRAINING_TIMEOUT_MS)
    assert points(page) > before
    assert latest.inner_text() != before_text and latest.inner_text().startswith("Epoch ")
    assert "train/loss" in latest.inner_text() and "val/loss" in latest.inner_text()
    assert page.locator(".connection").inner_text() == "live"
    assert re.search(r"Epoch \d+ / 300", page.locator(".progress-text").inner_text())
    assert page.locator(".event-feed li[data-event='epoch']").count() >= 2
    assert page.get_by_role("button", name="Stop").is_enabled()
    assert page.get_by_role("button", name="Resume", exact=True).is_disabled()
    assert page.get_by_role("button", name="Delete run").is_disabled()  # running: stop it first
    screenshot(page, "run-training")

    # another run of the experiment waits for the CPU: the runs list shows its place in the queue
    page.get_by_role("link", name="Training").first.click()
    card = page.locator("article.experiment", has_text="live")
    card.get_by_role("button", name="Start a run of live").click()
    queued = card.locator("tr[data-status='pending']")
    queued.wait_for()
    assert re.search(r"#\d+ in the queue", queued.inner_text())
    assert card.locator(f"tr[data-run-id='{run_id}'][data-status='running']").count() == 1
    screenshot(page, "training-queue")
    queued.get_by_role("button", name=re.compile("Delete run")).click()
    page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
    queued.wait_for(state="detached")

    # stop while running -> stopped, with the epochs it finished
    card.get_by_role("link", name=run_id).click()
    wait_status(page, "running")
    page.get_by_role("button", name="Stop").click()
    assert wait_status(page, "stopped") == "stopped"
    done = points(page)
    assert done >= 3
    assert page.get_by_role("button", name="Stop").is_disabled()
    assert page.get_by_role("button", name="Resume", exact=True).is_enabled()

    # extend: resume with a new max_epochs (a bad one is refused with the API's message next to the input)
    epochs = page.get_by_label("Max epochs")
    epochs.fill("1")
    page.get_by_role("button", name="Resume with these epochs").click()
    page.locator("#extend-epochs-error").wait_for()
    assert "greater than the" in page.locator("#extend-epochs-error").inner_text()
    epochs.fill(str(done + 2))
    page.get_by_role("button", name="Resume with these epochs").click()
    wait_status(page, "pending", "running")
    assert wait_status(page, "completed") == "completed"
    page.wait_for_function(f"(n) => ({POINTS})() === n", arg=done + 2, timeout=TRAINING_TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('.connection').dataset.state === 'ended'")
    assert page.locator(".event-feed li[data-event='status']", has_text="(resumed)").count() == 1
    assert "Best epoch" in page.locator(".best-table caption").inner_text()
    assert page.get_by_role("button", name="Resume", exact=True).is_disabled()
    assert page.get_by_role("button", name="Resume with these epochs").is_disabled()
    assert "completed run cannot be resumed" in page.locator("#extend-hint").inner_text()
    assert page.get_by_role("link", name="Evaluate this run").get_attribute("href") == f"#/p/{project}/evaluation?run={run_id}"
    assert page.get_by_role("link", name="Export this run").get_attribute("href") == f"#/p/{project}/export?run={run_id}"
    screenshot(page, "run-completed")

    # delete, confirmed: back to the training page without it
    page.get_by_role("button", name="Delete run").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
    page.wait_for_function("() => location.hash.endsWith('/training')")
    page.locator("article.experiment", has_text="live").get_by_text("No runs yet.").wait_for()


def test_a_dropped_stream_reconnects_with_last_event_id_and_misses_nothing(trained_run, new_page, ui_url) -> None:
    stream = f"/api/training/{trained_run.project_id}/runs/{trained_run.run_id}/stream"
    full = httpx.get(ui_url + stream, timeout=30).text  # a finished run replays its history and closes
    blocks = [block for block in full.replace("\r\n", "\n").split("\n\n") if re.search(r"^id:", block, re.M)]
    cut = next(i for i, block in enumerate(blocks) if re.search(r"^event: ?epoch", block, re.M))
    cut_id = int(re.search(r"^id: ?(\d+)", blocks[cut], re.M).group(1))
    shown = [b for b in blocks if re.search(r"^event: ?(epoch|log|status|end)$", b, re.M)]

    page = new_page().page
    sent: list[str | None] = []

    def drop_the_first(route: Any, request: Any) -> None:
        sent.append(request.headers.get("last-event-id"))
        if len(sent) == 1:  # the server's own bytes up to the first epoch, then the connection closes
            route.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                          body="\n\n".join(blocks[:cut + 1]) + "\n\n")
        else:
            route.continue_()

    page.route(re.compile(r".*/stream(\?.*)?$"), drop_the_first)
    open_view(page, f"/p/{trained_run.project_id}/runs/{trained_run.run_id}")
    page.wait_for_function("() => document.querySelector('.connection').dataset.state === 'ended'", timeout=30_000)
    assert sent[0] is None, "the first connection starts from the beginning"
    assert sent[1] == str(cut_id), "the reconnect says what it saw last"
    ids = page.locator(".event-feed li").evaluate_all("(nodes) => nodes.map((n) => n.dataset.id)")
    assert len(ids) == len(set(ids)) == len(shown), "every event once: nothing missed, nothing twice"
    assert points(page) == 2
    assert page.locator(".connection").inner_text() == "stream closed"
    assert page.locator(".connection").get_attribute("data-reconnects") == "1"  # the indicator went through "reconnecting"


def test_a_completed_run_in_dark_and_on_a_phone(trained_run, new_page) -> None:
    for viewport, scheme, name in ((DESKTOP, "dark", "run-dark"), (PHONE, "light", "run-phone")):
        page = new_page(viewport=viewport, color_scheme=scheme).page
        open_view(page, f"/p/{trained_run.project_id}/runs/{trained_run.run_id}")
        page.wait_for_function("() => document.querySelector('.connection').dataset.state === 'ended'")
        assert page.evaluate("() => document.querySelector('#view > .page')?.dataset.status") == "completed"
        assert points(page) == 2 and page.locator(".chart-card canvas").count() == 2
        assert "val/loss" in page.locator(".best-table").inner_text()
        assert page.get_by_role("button", name="Stop").is_disabled()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, "nothing may force sideways scrolling"
        screenshot(page, name)
    assert ARTIFACTS.exists()

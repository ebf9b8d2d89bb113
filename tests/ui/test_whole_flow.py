"""The whole flow through the web UI alone, on generated data, as a new user walks it: create a project, upload a ZIP,
browse and filter, create a split, start a run and watch its curve grow live, stop and resume it, evaluate it and
open a confusion-matrix cell, export it and download the file. Each step asserts what the page shows (and checks it
against the API); every page is screenshotted (``.artifacts/ui/flow-*.png``)."""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import httpx

from modelyard.core.sample_data import generate_shapes
from tests.helpers.browser import DESKTOP, REPO, open_view, screenshot
from tests.helpers.ui_forms import fill_tiny_experiment, press

CLASSES = ("circle", "square", "triangle")
PER_CLASS = 20
#: a worker process (torch, Lightning) has to start on a loaded 2-core machine before anything trains
JOB_TIMEOUT_MS = 150_000
POINTS = "() => Number(document.querySelector('.chart-card .chart')?.dataset.points || 0)"
STATUS = "() => document.querySelector('#view > .page')?.dataset.status"


def shapes_zip(tmp_path: Path) -> Path:
    """An imagefolder ZIP of generated shapes: one folder per class."""
    folder = tmp_path / "shapes"
    generate_shapes(folder, per_class=PER_CLASS, size=20, seed=5, shapes=CLASSES)
    archive = tmp_path / "shapes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for image in sorted(folder.rglob("*.png")):
            zipped.write(image, image.relative_to(folder).as_posix())
    return archive


def doc_screenshot(page: Any, name: str) -> None:
    """The README's images (``docs/images/ui-<name>.png``, 1280x800), rewritten with MODELYARD_UI_DOC_SCREENSHOTS=1."""
    page.evaluate("() => window.scrollTo(0, 0)")
    shot = screenshot(page, f"flow-doc-{name}", full_page=False)
    if os.environ.get("MODELYARD_UI_DOC_SCREENSHOTS") == "1":
        assert page.viewport_size == DESKTOP
        shutil.copyfile(shot, REPO / "docs" / "images" / f"ui-{name}.png")


def api(ui_url: str, path: str, **params: Any) -> Any:
    response = httpx.get(ui_url + path, params=params, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def wait_status(page: Any, *statuses: str) -> str:
    page.wait_for_function(f"(wanted) => wanted.includes(({STATUS})())", arg=list(statuses), timeout=JOB_TIMEOUT_MS)
    return str(page.evaluate(STATUS))


def test_a_new_user_goes_from_a_zip_to_a_downloaded_model_in_the_browser(page, ui_url: str, tmp_path: Path) -> None:
    # 1. a project, from the projects page
    open_view(page, "/")
    page.get_by_label("Name").fill("Shapes from the UI")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_function("() => location.hash.endsWith('/dataset')")
    project = page.evaluate("() => location.hash.split('/')[2]")
    assert api(ui_url, f"/api/projects/{project}")["name"] == "Shapes from the UI"
    page.locator(".project-name", has_text="Shapes from the UI").wait_for()
    screenshot(page, "flow-1-project")

    # 2. upload a ZIP: progress, then the report, then the grid and the counts
    page.get_by_label("ZIP archive").set_input_files(str(shapes_zip(tmp_path)))
    page.get_by_role("button", name="Upload and import").click()
    report = page.locator(".import-report .report")
    report.wait_for(timeout=JOB_TIMEOUT_MS)
    total = PER_CLASS * len(CLASSES)
    assert report.locator('[data-report="imported"] .value').inner_text() == str(total)
    page.wait_for_function("(n) => document.querySelector('[data-stat=\"num_images\"] .value')?.textContent === String(n)", arg=total)
    assert page.locator('.upload-progress progress').evaluate("p => p.value") == 100
    screenshot(page, "flow-2-uploaded")

    # 3. browse and filter: one class, then a name search inside it
    page.locator('button.class-count[data-class="square"]').click()
    page.wait_for_function("() => location.hash.includes('class=square')")
    page.wait_for_function("(n) => document.querySelectorAll('.dataset-grid button.thumb').length === n", arg=PER_CLASS)
    names = page.locator(".dataset-grid button.thumb .name").all_inner_texts()
    listed = api(ui_url, f"/api/datasets/{project}/images", filter_class="square", page_size=100)["items"]
    assert sorted(names) == sorted(item["filename"] for item in listed)
    page.get_by_label("Search by name").fill(names[0])
    page.wait_for_function("(name) => { const cells = [...document.querySelectorAll('.dataset-grid button.thumb .name')];"
                           " return cells.length === 1 && cells[0].textContent === name; }", arg=names[0])
    page.wait_for_function("() => [...document.querySelectorAll('.dataset-grid img')].some(i => i.complete && i.naturalWidth > 0)")
    screenshot(page, "flow-3-filtered")

    # 4. a split, with the preview following the sliders
    page.locator("#project-nav").get_by_role("link", name="Splits").click()
    page.locator(".preview[data-version]").wait_for()
    page.get_by_label("Name").fill("60-20-20")
    press(page, "Training share", "ArrowLeft", 20)
    press(page, "Validation share", "ArrowRight", 10)
    press(page, "Test share", "ArrowRight", 10)
    page.get_by_role("button", name="Create split").click()
    row = page.locator('tr.split-row[data-name="60-20-20"]')
    row.wait_for()
    split = next(s for s in api(ui_url, f"/api/splits/{project}") if s["name"] == "60-20-20")
    assert row.locator('td[data-subset="train"]').inner_text() == str(split["stats"]["train"])
    for subset in ("train", "val", "test"):
        assert row.locator(f'td[data-subset="{subset}"]').inner_text() == str(split["stats"][subset])
    assert 0 < split["stats"]["train"] < total and split["stats"]["test"] > 0
    screenshot(page, "flow-4-split")

    # 5. an experiment from the form, trained at once; the curve grows while it trains
    page.locator("#project-nav").get_by_role("link", name="Training").click()
    form = page.locator("form.experiment-form")
    form.wait_for()
    fill_tiny_experiment(form, "first model", max_epochs=200)  # far more than it gets: the user stops it
    form.get_by_role("button", name="Create and train").click()
    page.wait_for_function(f"() => location.hash.includes('/runs/run-') && ({STATUS})()")
    run_id = page.evaluate("() => location.hash.split('/runs/')[1]")
    page.wait_for_function(f"() => ({POINTS})() >= 1", timeout=JOB_TIMEOUT_MS)
    seen = int(page.evaluate(POINTS))
    page.wait_for_function(f"(n) => ({POINTS})() > n", arg=seen, timeout=JOB_TIMEOUT_MS)
    assert page.locator(".connection").inner_text() == "live"
    assert re.search(r"Epoch \d+ / 200", page.locator(".progress-text").inner_text())
    screenshot(page, "flow-5-training")

    # 6. stop it, then resume it for a few more epochs (enough for a model worth a screenshot), to the end
    page.get_by_role("button", name="Stop").click()
    assert wait_status(page, "stopped") == "stopped"
    stopped_at = int(page.evaluate(POINTS))
    assert api(ui_url, f"/api/training/{project}/runs/{run_id}")["status"] == "stopped"
    page.get_by_label("Max epochs").fill(str(stopped_at + 6))
    page.get_by_role("button", name="Resume with these epochs").click()
    wait_status(page, "pending", "running", "completed")
    assert wait_status(page, "completed") == "completed"
    page.wait_for_function(f"(n) => ({POINTS})() === n", arg=stopped_at + 6, timeout=JOB_TIMEOUT_MS)
    run = api(ui_url, f"/api/training/{project}/runs/{run_id}")
    assert run["status"] == "completed" and len(run["resumes"]) == 1
    screenshot(page, "flow-6-completed")
    doc_screenshot(page, "run")

    # 7. evaluate it (the run page links there) and open a confusion-matrix cell
    page.get_by_role("link", name="Evaluate this run").click()
    assert "own split" in page.get_by_label("Split").locator("option:checked").inner_text()  # the run's 60-20-20
    page.get_by_label("Subset").select_option("test")
    page.get_by_role("button", name="Evaluate").click()
    page.wait_for_url("**/evaluation/eval-*", timeout=JOB_TIMEOUT_MS)
    page.locator("#metrics-title").wait_for(timeout=JOB_TIMEOUT_MS)
    eval_id = page.url.split("/evaluation/")[1].split("?")[0]
    record = api(ui_url, f"/api/evaluation/{project}/{eval_id}")
    assert page.locator('[data-metric="accuracy"] .value').inner_text() == f"{record['metrics']['accuracy'] * 100:.1f} %"
    page.wait_for_function("() => [...document.querySelectorAll('ul.mistakes img')].every(i => i.complete && i.naturalWidth > 0)")
    doc_screenshot(page, "evaluation")
    labels = record["metrics"]["confusion_matrix"]["labels"]
    matrix = record["metrics"]["confusion_matrix"]["matrix"]
    i, j = max(((a, b) for a in range(len(labels)) for b in range(len(labels))), key=lambda ab: matrix[ab[0]][ab[1]])
    page.locator(f'.cm-cell[data-true="{labels[i]}"][data-predicted="{labels[j]}"]').click()
    page.wait_for_function("(n) => document.querySelectorAll('#results tbody tr').length === n && "
                           "!document.querySelector('#results [aria-busy]')", arg=min(matrix[i][j], 50))
    assert set(page.locator("#results tbody td.truth").all_inner_texts()) == {labels[i]}
    assert set(page.locator("#results tbody td.predicted").all_inner_texts()) == {labels[j]}
    screenshot(page, "flow-7-evaluation")

    # 8. export to ONNX, verified, and download it
    open_view(page, f"/p/{project}/export?run={run_id}")
    page.get_by_label("Format").select_option("onnx")
    page.get_by_role("button", name="Export", exact=True).click()
    job = page.locator("section.export-job")
    job.locator('[data-verification="passed"]').wait_for(timeout=JOB_TIMEOUT_MS)
    export = api(ui_url, f"/api/export/{project}")[0]
    with page.expect_download() as download:
        job.get_by_role("button", name=f"Download the file of {export['id']}").click()
    saved = tmp_path / "model.onnx"
    download.value.save_as(saved)
    assert saved.read_bytes() == httpx.get(f"{ui_url}/api/export/{project}/{export['id']}/download").content
    assert saved.stat().st_size == export["file"]["size"] > 0
    screenshot(page, "flow-8-exported")

    # and the projects page now shows the run and its best metric
    open_view(page, "/")
    listed_row = page.locator(f'tr[data-project-id="{project}"]')
    assert str(total) in listed_row.inner_text() and run_id in listed_row.inner_text()
    assert "val/loss" in listed_row.inner_text()
    screenshot(page, "flow-9-projects")

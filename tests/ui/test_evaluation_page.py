"""The Evaluation page in a real browser: the create form runs an evaluation to the end, the detail shows the
API's metrics, the confusion matrix opens its images, the worst mistakes are shown with their images, detection
results draw boxes."""

from __future__ import annotations


import httpx

from tests.helpers.browser import PHONE, open_view, screenshot

TIMEOUT_MS = 90_000


def _api(ui_url: str, path: str, **params: object) -> object:
    response = httpx.get(f"{ui_url}{path}", params=params, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _evaluate_through_the_form(page, project_id: str, run_id: str, subset: str) -> str:
    open_view(page, f"/p/{project_id}/evaluation?run={run_id}")
    assert page.locator("main h1").first.inner_text() == "Evaluation"
    assert page.get_by_label("Run", exact=True).input_value() == run_id  # ?run= preselects it
    page.get_by_label("Subset").select_option(subset)
    page.get_by_role("button", name="Evaluate").click()
    # the page follows the job and opens the detail once it completed
    page.wait_for_url("**/evaluation/eval-*", timeout=TIMEOUT_MS)
    page.locator("#metrics-title").wait_for(timeout=TIMEOUT_MS)
    return page.url.split("/evaluation/")[1].split("?")[0]


def test_an_evaluation_from_the_form_completes_and_its_detail_matches_the_api(new_page, ui_url, trained_run) -> None:
    """One evaluation (the slow part) serves every check: detail, heat map, mistakes, list, dark, phone, delete."""
    page = new_page().page
    project = trained_run.project_id
    eval_id = _evaluate_through_the_form(page, project, trained_run.run_id, "test")
    record = _api(ui_url, f"/api/evaluation/{project}/{eval_id}")
    assert record["status"] == "completed"

    accuracy = page.locator('[data-metric="accuracy"] .value').inner_text()
    assert accuracy == f"{record['metrics']['accuracy'] * 100:.1f} %"
    assert page.locator("#per-class-title + .table-wrap tbody tr").count() == len(record["classes"])

    # the heat map: one button per cell with its count; a cell opens exactly its images
    labels = record["metrics"]["confusion_matrix"]["labels"]
    matrix = record["metrics"]["confusion_matrix"]["matrix"]
    assert page.locator("table.confusion .cm-cell").count() == len(labels) ** 2
    i, j = max(((i, j) for i in range(len(labels)) for j in range(len(labels)) if i != j and matrix[i][j]),
               key=lambda ij: matrix[ij[0]][ij[1]])
    cell = page.locator(f'.cm-cell[data-true="{labels[i]}"][data-predicted="{labels[j]}"]')
    assert cell.inner_text() == str(matrix[i][j])
    cell.click()
    rows = page.locator("#results tbody tr")
    page.wait_for_function("(n) => document.querySelectorAll('#results tbody tr').length === n && "
                           "!document.querySelector('#results [aria-busy]')", arg=matrix[i][j])
    assert rows.count() == matrix[i][j]
    for index in range(rows.count()):
        assert rows.nth(index).locator("td.truth").inner_text() == labels[i]
        assert rows.nth(index).locator("td.predicted").inner_text() == labels[j]
    assert f"class={labels[i]}" in page.url and f"predicted={labels[j]}" in page.url  # a link to this view
    expected = _api(ui_url, f"/api/evaluation/{project}/{eval_id}/results", filter_class=labels[i], filter_predicted=labels[j])
    shown = sorted(rows.nth(k).locator("td").nth(1).inner_text() for k in range(rows.count()))
    assert shown == sorted(item["filename"] for item in expected["items"])

    # PR curves: one line per class from the evaluation's own curves
    assert page.locator(".pr-chart polyline.pr-line").count() == len(record["classes"])

    # the worst mistakes: real images, each predicted != true
    mistakes = page.locator("ul.mistakes li.mistake")
    wrong = _api(ui_url, f"/api/evaluation/{project}/{eval_id}/results", filter_correct="false", sort_by="confidence", page_size=12)
    assert mistakes.count() == len(wrong["items"]) > 0
    page.wait_for_function("() => [...document.querySelectorAll('ul.mistakes img')].length > 0 && "
                           "[...document.querySelectorAll('ul.mistakes img')].every(i => i.complete && i.naturalWidth > 0)")
    for index in range(mistakes.count()):
        tile = mistakes.nth(index)
        predicted = tile.locator(".predicted").inner_text().split()[1]
        true = tile.locator(".truth").inner_text().split()[1]
        assert predicted != true
        assert tile.get_attribute("data-filename") == wrong["items"][index]["filename"]

    page.locator("main h1").scroll_into_view_if_needed()
    screenshot(page, "evaluation-detail-light")

    # the list shows it with its headline metric; a reload of a filtered deep link keeps the filters
    open_view(page, f"/p/{project}/evaluation")
    row = page.locator("tbody tr", has=page.get_by_role("link", name=eval_id))
    assert f"accuracy {accuracy}" in row.inner_text()
    screenshot(page, "evaluation-list-light")

    # dark: a deep link with filters comes back with them set
    dark = new_page(color_scheme="dark").page
    open_view(dark, f"/p/{project}/evaluation/{eval_id}?correct=false&sort=confidence")
    dark.locator("#results tbody tr").first.wait_for()
    assert dark.get_by_label("Correct", exact=True).input_value() == "false"
    assert dark.get_by_label("Sort by").input_value() == "confidence"
    assert all(cell == "wrong" for cell in dark.locator("#results tbody td:last-child").all_inner_texts())
    screenshot(dark, "evaluation-detail-dark")

    # phone: no sideways scroll; delete asks first (cancel keeps it, confirm removes it)
    phone = new_page(viewport=PHONE).page
    open_view(phone, f"/p/{project}/evaluation/{eval_id}")
    phone.locator("ul.mistakes li").first.wait_for()
    assert phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    screenshot(phone, "evaluation-detail-phone")
    open_view(phone, f"/p/{project}/evaluation")
    assert phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    screenshot(phone, "evaluation-list-phone")
    phone.get_by_role("button", name=f"Delete {eval_id}").click()
    phone.locator("#confirm-dialog").get_by_role("button", name="Cancel").click()
    assert len(_api(ui_url, f"/api/evaluation/{project}")) == 1
    phone.get_by_role("button", name=f"Delete {eval_id}").click()
    phone.locator("#confirm-ok").click()
    phone.get_by_text("No evaluation yet").wait_for()
    assert _api(ui_url, f"/api/evaluation/{project}") == []


def test_a_detection_evaluation_draws_true_and_predicted_boxes(new_page, ui_url, detection_run) -> None:
    page = new_page().page
    project = detection_run.project_id
    eval_id = _evaluate_through_the_form(page, project, detection_run.run_id, "val")
    record = _api(ui_url, f"/api/evaluation/{project}/{eval_id}")
    assert page.locator('[data-metric="map"] .value').inner_text() == f"{record['metrics']['map']:.3f}"
    wrong = _api(ui_url, f"/api/evaluation/{project}/{eval_id}/results", filter_correct="false", sort_by="error", page_size=12)
    page.wait_for_function("() => [...document.querySelectorAll('ul.mistakes .boxed-image img')].length > 0 && "
                           "[...document.querySelectorAll('ul.mistakes .boxed-image img')].every(i => i.naturalWidth > 0)")
    tiles = page.locator("ul.mistakes li.mistake")
    assert tiles.count() == len(wrong["items"])
    for index, item in enumerate(wrong["items"]):
        assert tiles.nth(index).locator(".box-truth rect").count() == len(item["ground_truth"])
        assert tiles.nth(index).locator(".box-predicted rect").count() == len(item["predictions"])
    assert page.locator("ul.mistakes .box-truth rect").count() > 0
    # a missed-box cell (true class, predicted background) lists images with errors of that class
    labels = record["metrics"]["confusion_matrix"]["labels"]
    matrix = record["metrics"]["confusion_matrix"]["matrix"]
    row = next(i for i in range(len(labels) - 1) if matrix[i][-1])
    page.locator(f'.cm-cell[data-true="{labels[row]}"][data-predicted="background"]').click()
    page.wait_for_function("() => !document.querySelector('#results [aria-busy]') && document.querySelector('#results tbody tr')")
    for text in page.locator("#results tbody td.truth").all_inner_texts():
        assert labels[row] in text
    screenshot(page, "evaluation-detection-light")

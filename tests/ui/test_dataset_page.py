"""The dataset page in real Chromium: counts, the paged grid (filter, search, sort), image detail, imports, 100k images."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.core.sample_data import generate_shapes, generate_shapes_detection
from tests.helpers.browser import PHONE, open_view, screenshot
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.ui_data import import_zip, write_large_dataset

GRID_CELLS = ".dataset-grid button.thumb"


def api_get(ui_url: str, path: str, **params: Any) -> Any:
    response = httpx.get(ui_url + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def shown_filenames(page: Any) -> list[str]:
    return page.locator(GRID_CELLS).evaluate_all("cells => cells.map(c => c.dataset.filename)")


def shown_classes(page: Any) -> list[str]:
    return page.locator(f"{GRID_CELLS} .label").evaluate_all("labels => labels.map(l => l.textContent)")


def wait_grid(page: Any, expected: list[str]) -> None:
    """Wait until the grid shows exactly ``expected`` (file names, in order)."""
    page.wait_for_function(
        "(want) => { const got = [...document.querySelectorAll('.dataset-grid button.thumb')].map(c => c.dataset.filename);"
        " return JSON.stringify(got) === JSON.stringify(want); }", arg=expected)


def api_names(ui_url: str, project: str, **params: Any) -> list[str]:
    data = api_get(ui_url, f"/api/datasets/{project}/images", page_size=100, **params)
    return [item["filename"] for item in data["items"]]


def test_counts_filter_search_sort_and_paging_show_what_the_api_lists(page, services, ui_url: str) -> None:
    project = create_project_with_dataset(services, per_class=40, size=24)  # 120 images: two pages of 100
    info = api_get(ui_url, f"/api/datasets/{project}")
    open_view(page, f"/p/{project}/dataset")
    page.locator(GRID_CELLS).nth(99).wait_for()

    # the counts shown are the API's
    for name, count in info["class_counts"].items():
        button = page.locator(f'button.class-count[data-class="{name}"]')
        assert button.locator(".count").inner_text() == str(count)
    assert page.locator('[data-stat="num_images"] .value').inner_text() == "120"

    # paging: page 1 is the API's first 100 names, next and previous move by one page
    wait_grid(page, api_names(ui_url, project))
    assert page.locator(".pager .page-text").inner_text() == "Page 1 of 2"
    page.get_by_role("button", name="Next ›").click()
    wait_grid(page, api_names(ui_url, project, page=2))
    assert page.locator(".pager .page-text").inner_text() == "Page 2 of 2"
    assert page.get_by_role("button", name="Next ›").is_disabled()
    page.get_by_role("button", name="‹ Previous").click()
    wait_grid(page, api_names(ui_url, project))

    # thumbnails load (lazily, through blob: URLs)
    page.wait_for_function("() => { const img = document.querySelector('.dataset-grid img');"
                           " return img && img.complete && img.naturalWidth > 0; }")

    # filter by class (the class button), then search, then sort
    page.locator('button.class-count[data-class="square"]').click()
    wait_grid(page, api_names(ui_url, project, filter_class="square"))
    assert set(shown_classes(page)) == {"square"} and len(shown_filenames(page)) == 40
    assert page.locator('button.class-count[data-class="square"]').get_attribute("aria-pressed") == "true"
    assert page.get_by_label("Class", exact=True).input_value() == "square"
    page.get_by_label("Search by name").fill("_001")
    expected = api_names(ui_url, project, filter_class="square", search="_001")
    assert len(expected) == 10 and all("_001" in name for name in expected)
    wait_grid(page, expected)
    assert set(shown_classes(page)) == {"square"}
    page.get_by_label("Order").select_option("desc")
    expected_desc = api_names(ui_url, project, filter_class="square", search="_001", sort_order="desc")
    assert expected_desc == sorted(expected, reverse=True)
    wait_grid(page, expected_desc)
    page.get_by_label("Sort by").select_option("size")
    wait_grid(page, api_names(ui_url, project, filter_class="square", search="_001", sort_by="size", sort_order="desc"))
    assert page.locator(".pager .total-text").inner_text() == "10 images match"

    # the state is in the URL: a reload shows the same images
    assert "class=square" in page.url and "search=_001" in page.url and "order=desc" in page.url
    shown = shown_filenames(page)
    page.reload()
    page.wait_for_function("() => Boolean(document.getElementById('view')?.dataset.ready)")
    wait_grid(page, shown)
    assert page.get_by_label("Search by name").input_value() == "_001"

    # another class through the select
    page.get_by_label("Class", exact=True).select_option("circle")
    wait_grid(page, api_names(ui_url, project, filter_class="circle", search="_001", sort_by="size", sort_order="desc"))
    assert set(shown_classes(page)) == {"circle"}
    screenshot(page, "dataset-filtered-light")


def test_image_detail_by_keyboard_shows_the_image_and_returns_focus(page, services, ui_url: str) -> None:
    project = create_project_with_dataset(services, per_class=4, size=24)
    open_view(page, f"/p/{project}/dataset")
    page.locator(GRID_CELLS).nth(11).wait_for()
    first_name = shown_filenames(page)[0]
    for _ in range(80):  # Tab through the page until a thumbnail has the focus
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.matches('button.thumb')"):
            break
    assert page.evaluate("() => document.activeElement.dataset.filename") == first_name
    page.keyboard.press("Enter")
    dialog = page.locator("dialog.image-dialog")
    dialog.wait_for(state="visible")
    page.wait_for_function("() => document.querySelector('dialog.image-dialog').dataset.state === 'ready'")
    info = api_get(ui_url, f"/api/datasets/{project}/images/{first_name}/info")
    assert dialog.locator("h2").inner_text() == first_name
    assert dialog.locator("img.detail-image").evaluate("img => img.naturalWidth") == info["width"]
    meta = dialog.locator(".detail-meta").inner_text()
    assert info["class_name"] in meta and f"{info['width']} × {info['height']} px" in meta and info["sha256"] in meta
    assert "default: " + info["split"][0] in meta
    screenshot(page, "dataset-detail-light", full_page=False)
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert page.evaluate("() => document.activeElement.dataset.filename") == first_name

    # next image within the page, then Escape: focus goes to that image's thumbnail
    page.keyboard.press("Enter")
    dialog.wait_for(state="visible")
    dialog.get_by_role("button", name="Next image ›").click()
    second_name = shown_filenames(page)[1]
    page.wait_for_function("(name) => { const d = document.querySelector('dialog.image-dialog');"
                           " return d.dataset.state === 'ready' && d.querySelector('h2').textContent === name; }", arg=second_name)
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    # the dialog's close event (which focuses the shown image's thumbnail) is a task queued after the dialog hides,
    # and until it runs the browser's own restore has put focus on the thumbnail that opened the dialog
    page.wait_for_function("(name) => document.activeElement.dataset.filename === name", arg=second_name, timeout=5000)
    assert page.evaluate("() => document.activeElement.dataset.filename") == second_name


def test_detection_boxes_are_drawn_over_the_image(new_page, services, import_root: Path, ui_url: str) -> None:
    generate_shapes_detection(import_root / "coco", num_images=12, size=64, seed=5, max_objects=3)
    project = services.projects.create("Boxes", task="object_detection").id
    assert services.datasets.import_local(project, str(import_root / "coco"), format="coco")["imported"] == 12
    info = api_get(ui_url, f"/api/datasets/{project}")
    page = new_page(color_scheme="dark").page
    open_view(page, f"/p/{project}/dataset?sort=num_boxes&order=desc")
    page.locator(GRID_CELLS).nth(11).wait_for()
    assert page.locator('[data-stat="num_boxes"] .value').inner_text() == str(info["num_boxes"])
    for name, count in info["class_counts"].items():
        assert page.locator(f'button.class-count[data-class="{name}"] .count').inner_text() == str(count)
    expected = api_names(ui_url, project, sort_by="num_boxes", sort_order="desc")
    wait_grid(page, expected)
    page.locator(GRID_CELLS).first.click()
    page.wait_for_function("() => document.querySelector('dialog.image-dialog').dataset.state === 'ready'")
    detail = api_get(ui_url, f"/api/datasets/{project}/images/{expected[0]}/info")
    boxes = [a for a in detail["annotations"] if a.get("bbox")]
    assert len(boxes) >= 2
    dialog = page.locator("dialog.image-dialog")
    assert dialog.locator("svg.boxes rect").count() == len(boxes)
    assert sorted(dialog.locator("svg.boxes text").all_text_contents()) == sorted(a["class_name"] for a in boxes)
    # the boxes are scaled to the displayed image: the first one's displayed x = bbox x * shown width / image width
    shown_width = dialog.locator("img.detail-image").evaluate("img => img.clientWidth")
    assert shown_width > detail["width"]  # a 64 px image is shown larger
    x = float(dialog.locator("svg.boxes rect").first.get_attribute("x"))
    assert x == pytest.approx(boxes[0]["bbox"][0] * shown_width / detail["width"], abs=0.5)
    screenshot(page, "dataset-detection-detail-dark", full_page=False)


def test_zip_upload_shows_progress_then_the_report_and_refreshes_the_grid(page, services, tmp_path: Path, ui_url: str) -> None:
    project = services.projects.create("Uploaded").id
    archive = tmp_path / "shapes.zip"
    expected = import_zip(archive, padding_bytes=3_000_000)
    open_view(page, f"/p/{project}/dataset")
    assert page.locator(".grid-message").inner_text().startswith("No images yet")
    page.get_by_label("ZIP archive").set_input_files(str(archive))
    assert "shapes.zip" in page.locator(".chosen").inner_text()
    # record every state the progress box goes through (uploading -> importing -> done)
    page.evaluate("""() => { const box = document.querySelector('.upload-progress'); window.seenStates = [];
        new MutationObserver(() => { const s = box.dataset.state; if (window.seenStates.at(-1) !== s) window.seenStates.push(s); })
          .observe(box, {attributes: true, attributeFilter: ['data-state']}); }""")
    page.get_by_role("button", name="Upload and import").click()
    report = page.locator(".import-report .report")
    report.wait_for()
    states = page.evaluate("() => window.seenStates")
    assert states[0] == "uploading" and states[-1] == "done", states
    assert page.locator(".upload-progress progress").evaluate("p => p.value") == 100
    for key in ("imported", "skipped", "duplicates"):
        assert report.locator(f'[data-report="{key}"] .value').inner_text() == str(expected[key]), key
    assert "notes.png" in report.inner_text() and "circle_copy.png" in report.inner_text()
    # the counts and the grid show the new images
    page.locator(GRID_CELLS).nth(expected["imported"] - 1).wait_for()
    assert page.locator('[data-stat="num_images"] .value').inner_text() == str(expected["imported"])
    assert page.locator('button.class-count[data-class="circle"] .count').inner_text() == "3"
    screenshot(page, "dataset-upload-report-light")


def test_local_import_reports_and_a_path_outside_the_roots_shows_the_api_message(page, services, import_root: Path, tmp_path: Path, ui_url: str) -> None:
    project = services.projects.create("Local").id
    generate_shapes(import_root / "shapes", per_class=3, size=20, seed=1, shapes=("circle", "square"))
    open_view(page, f"/p/{project}/dataset")
    form = page.locator("form.import-form").filter(has=page.get_by_role("heading", name="Import a folder on the server"))
    assert "--import-root" in form.inner_text()
    form.get_by_label("Folder on the server").fill(str(import_root / "shapes"))
    form.get_by_label("Format").select_option("imagefolder")
    form.get_by_role("button", name="Import folder").click()
    report = page.locator(".import-report .report")
    report.wait_for()
    assert report.locator('[data-report="imported"] .value').inner_text() == "6"
    page.locator(GRID_CELLS).nth(5).wait_for()

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    refused = httpx.post(f"{ui_url}/api/datasets/{project}/import/local", json={"path": str(outside)})
    assert refused.status_code == 403
    form.get_by_label("Folder on the server").fill(str(outside))
    form.get_by_role("button", name="Import folder").click()
    error = form.locator(".error-box")
    error.wait_for()
    assert refused.json()["error"]["message"] in error.inner_text()
    screenshot(page, "dataset-local-refused-light")


def test_clear_asks_first_then_empties_the_dataset(page, services) -> None:
    project = create_project_with_dataset(services, per_class=2, size=20)
    open_view(page, f"/p/{project}/dataset")
    page.locator(GRID_CELLS).nth(5).wait_for()
    page.get_by_role("button", name="Clear dataset").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Cancel").click()
    assert page.locator(GRID_CELLS).count() == 6
    page.get_by_role("button", name="Clear dataset").click()
    assert "6 images" in page.locator("#confirm-message").inner_text()
    page.locator("#confirm-dialog").get_by_role("button", name="Clear dataset").click()
    page.locator(".grid-message", has_text="No images yet").wait_for()
    assert page.locator(GRID_CELLS).count() == 0
    assert page.locator('[data-stat="num_images"] .value').inner_text() == "0"


def test_the_dataset_page_fits_a_phone_and_the_dark_scheme(new_page, services) -> None:
    project = create_project_with_dataset(services, per_class=6, size=24)
    for name, options in (("phone", {"viewport": PHONE}), ("dark", {"color_scheme": "dark"})):
        page = new_page(**options).page
        open_view(page, f"/p/{project}/dataset")
        page.locator(GRID_CELLS).nth(17).wait_for()
        # the visible thumbnails load (the ones below the fold wait until they are scrolled to)
        page.wait_for_function("() => [...document.querySelectorAll('.dataset-grid img')].slice(0, 3)"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, "nothing may force sideways scrolling"
        screenshot(page, f"dataset-{name}")
        if name == "phone":
            page.locator(GRID_CELLS).first.click()
            page.wait_for_function("() => document.querySelector('dialog.image-dialog').dataset.state === 'ready'")
            assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
            screenshot(page, "dataset-detail-phone", full_page=False)


#: the first page of the grid renders within this after navigation, with 100,000 images (issue 17)
FIRST_PAGE_BUDGET_MS = 300


def test_the_first_page_of_100k_images_renders_in_under_300_ms(page, services, ui_url: str) -> None:
    project = services.projects.create("Hundred thousand").id
    started = time.perf_counter()
    written = write_large_dataset(services.workspace.project_dir(project), num_images=100_000)
    fixture_s = time.perf_counter() - started
    route = f"/p/{project}/dataset"
    page.goto(f"/#{route}")  # warm-up: the server builds its index, the browser loads the modules
    page.locator(GRID_CELLS).nth(99).wait_for(timeout=120_000)  # building the index of 100k takes seconds on a busy machine
    for name, count in written["class_counts"].items():
        assert page.locator(f'button.class-count[data-class="{name}"] .count').inner_text() == f"{count:,}"
    assert page.locator(".pager .page-text").inner_text() == "Page 1 of 1,000"
    timings = []
    # Each navigation is the router's next render; waiting for its `data-ready` keeps one render at a time (a page
    # that is still finishing its last request while the next navigation starts would measure the router's overlap)
    renders = int(page.evaluate("() => document.getElementById('view').dataset.ready"))

    def settled() -> None:
        page.wait_for_function("(n) => Number(document.getElementById('view').dataset.ready) === n", arg=renders)

    settled()
    for round_ in range(5):
        page.evaluate("() => { location.hash = '/'; }")  # away, then back: a real navigation each time
        renders += 1
        settled()
        query = "" if round_ % 2 == 0 else "?page=517&sort=size&order=desc"
        started_at = page.evaluate("(hash) => { const t = performance.now(); location.hash = hash; return t; }", route + query)
        renders += 1
        page.wait_for_function("(t) => { const g = document.querySelector('.dataset-grid');"
                               " return g && Number(g.dataset.renderedAt) > t && g.querySelectorAll('button.thumb').length === 100; }",
                               arg=started_at)
        rendered_at = float(page.locator(".dataset-grid").get_attribute("data-rendered-at"))
        timings.append(rendered_at - started_at)
        settled()
        assert page.locator(".pager .page-text").inner_text() == ("Page 517 of 1,000" if query else "Page 1 of 1,000")
    median = statistics.median(timings)
    print(f"\n100k dataset: fixture {fixture_s:.1f} s; navigation -> first page rendered (ms): "
          f"{', '.join(f'{t:.0f}' for t in timings)}; median {median:.0f}")
    screenshot(page, "dataset-100k-light", full_page=False)
    assert median < FIRST_PAGE_BUDGET_MS, timings

"""The splits page in real Chromium: sliders drive the live preview, create, field errors, per-class details, delete."""

from __future__ import annotations

from typing import Any

import httpx

from tests.helpers.browser import PHONE, open_view, screenshot
from tests.helpers.datasets import create_project_with_dataset
from tests.helpers.ui_forms import press


def api_get(ui_url: str, path: str, **params: Any) -> Any:
    response = httpx.get(ui_url + path, params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def preview_counts(page: Any) -> dict[str, dict[str, int]]:
    """What the preview shows: {class (or "" for all images): {subset: count}}."""
    return page.locator(".preview .dist-row").evaluate_all(
        "rows => Object.fromEntries(rows.map(r => [r.dataset.class, Object.fromEntries("
        "[...r.querySelectorAll('.count')].map(c => [c.dataset.subset, Number(c.querySelector('b').textContent)]))]))")


def api_preview(ui_url: str, project: str, **params: Any) -> dict[str, dict[str, int]]:
    data = api_get(ui_url, f"/api/splits/{project}/preview", **params)
    shown = {"": {k: v for k, v in data["stats"].items() if k != "none" or v}}
    for name, stats in data["per_class"].items():
        shown[name] = {k: v for k, v in stats.items() if k != "none" or v}
    return shown


def wait_preview_after(page: Any, version: str | None) -> str:
    page.wait_for_function("(v) => { const p = document.querySelector('.preview');"
                           " return p.dataset.version && p.dataset.version !== v && !p.hasAttribute('aria-busy'); }", arg=version)
    return page.locator(".preview").get_attribute("data-version")


def test_moving_a_slider_updates_the_preview_bars_and_keeps_the_shares_consistent(page, services, ui_url: str) -> None:
    project = create_project_with_dataset(services, per_class=20, size=20)
    open_view(page, f"/p/{project}/splits")
    version = wait_preview_after(page, None)
    before = preview_counts(page)
    assert before == api_preview(ui_url, project, train=0.8, val=0.1, test=0.1, seed=42, stratified="true")
    assert page.get_by_label("Training share").input_value() == "80"

    press(page, "Training share", "ArrowLeft", 30)  # keyboard: 80 % -> 50 %
    assert page.locator("#ratio-train + .readout, output[for=ratio-train]").first.inner_text() == "50 %"
    assert "Unassigned: 30 %" in page.locator(".unassigned").inner_text()
    version = wait_preview_after(page, version)
    after = preview_counts(page)
    assert after == api_preview(ui_url, project, train=0.5, val=0.1, test=0.1, seed=42, stratified="true")
    assert after["circle"]["train"] < before["circle"]["train"] and after[""]["none"] > 0
    widths = page.locator('.preview .dist-row[data-class="circle"] .segment').evaluate_all("s => s.map(x => x.style.width)")
    assert len(widths) == 4  # train, val, test and the unassigned rest

    # the validation slider to its maximum: the others give way, the total never exceeds 100 %
    press(page, "Validation share", "End")
    shares = [int(page.get_by_label(label).input_value()) for label in ("Training share", "Validation share", "Test share")]
    assert sum(shares) == 100 and shares[0] >= 1, shares
    assert page.locator(".unassigned").inner_text() == "Every image is assigned."
    wait_preview_after(page, version)
    assert preview_counts(page)[""]["val"] > after[""]["val"]
    screenshot(page, "splits-preview-light")


def test_creating_a_split_lists_it_with_its_stats_and_per_class_distribution(page, services, ui_url: str) -> None:
    project = create_project_with_dataset(services, per_class=20, size=20)
    open_view(page, f"/p/{project}/splits")
    wait_preview_after(page, None)
    page.get_by_label("Name").fill("70-20-10")
    press(page, "Training share", "ArrowLeft", 10)
    press(page, "Validation share", "ArrowRight", 10)
    page.get_by_label("Seed").fill("7")
    page.get_by_label("Stratified (keep class proportions in each subset)").uncheck()
    page.get_by_role("button", name="Create split").click()
    row = page.locator('tr.split-row[data-name="70-20-10"]')
    row.wait_for()
    splits = api_get(ui_url, f"/api/splits/{project}")
    created = next(s for s in splits if s["name"] == "70-20-10")
    assert created["stats"]["train"] == 42 and created["stats"]["val"] == 12  # 70 % and 20 % of 60
    for subset, count in created["stats"].items():
        assert row.locator(f'td[data-subset="{subset}"]').inner_text() == str(count)
    assert page.get_by_label("Name").input_value() == ""

    # per class, on demand
    row.get_by_role("button", name="Per-class distribution of 70-20-10").click()
    detail = api_get(ui_url, f"/api/splits/{project}/{created['split_index']}")
    panel = page.locator(f"#split-detail-{created['split_index']}")
    panel.locator(".dist-row").nth(3).wait_for()
    for name, stats in detail["per_class"].items():
        shown = panel.locator(f'.dist-row[data-class="{name}"]')
        for subset in ("train", "val", "test"):
            assert shown.locator(f'.count[data-subset="{subset}"] b').inner_text() == str(stats[subset])
    assert row.get_by_role("button", name="Per-class distribution of 70-20-10").get_attribute("aria-expanded") == "true"
    screenshot(page, "splits-created-light")


def test_a_bad_or_taken_name_is_shown_next_to_the_name_field(page, services, ui_url: str) -> None:
    project = create_project_with_dataset(services, per_class=5, size=20)
    open_view(page, f"/p/{project}/splits")
    page.get_by_label("Name").fill("a/b")
    page.get_by_role("button", name="Create split").click()
    error = page.locator("#" + page.get_by_label("Name").get_attribute("id") + "-error")
    error.wait_for(state="visible")
    refused = httpx.post(f"{ui_url}/api/splits/{project}", json={"name": "a/b", "ratios": {"train": 0.8}})
    assert refused.status_code == 422
    assert "must not contain" in error.inner_text()
    assert page.get_by_label("Name").get_attribute("aria-invalid") == "true"
    # a name that exists already (the dataset's "default")
    page.get_by_label("Name").fill("default")
    page.get_by_role("button", name="Create split").click()
    page.wait_for_function("(id) => document.getElementById(id).textContent.includes('already exists')",
                           arg=page.get_by_label("Name").get_attribute("id") + "-error")
    assert [s["name"] for s in api_get(ui_url, f"/api/splits/{project}")] == ["default"]


def test_delete_asks_then_removes_the_split(page, services, ui_url: str) -> None:
    project = create_project_with_dataset(services, per_class=5, size=20)
    open_view(page, f"/p/{project}/splits")
    page.get_by_label("Name").fill("second")
    page.get_by_role("button", name="Create split").click()
    page.locator('tr.split-row[data-name="second"]').wait_for()
    page.get_by_role("button", name="Delete default").click()
    assert "default" in page.locator("#confirm-message").inner_text()
    page.locator("#confirm-dialog").get_by_role("button", name="Cancel").click()
    assert page.locator("tr.split-row").count() == 2
    page.get_by_role("button", name="Delete default").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
    page.locator('tr.split-row[data-name="default"]').wait_for(state="detached")
    # the API re-indexed: "second" is split 0 now, and the page says so
    assert [(s["split_index"], s["name"]) for s in api_get(ui_url, f"/api/splits/{project}")] == [(0, "second")]
    assert page.locator('tr.split-row[data-name="second"]').get_attribute("data-split-index") == "0"


def test_the_splits_page_fits_a_phone_and_the_dark_scheme(new_page, services) -> None:
    project = create_project_with_dataset(services, per_class=5, size=20)
    for name, options in (("phone", {"viewport": PHONE}), ("dark", {"color_scheme": "dark"})):
        page = new_page(**options).page
        open_view(page, f"/p/{project}/splits")
        wait_preview_after(page, None)
        page.get_by_role("button", name="Per-class distribution of default").click()
        page.locator("#split-detail-0 .dist-row").nth(3).wait_for()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, "nothing may force sideways scrolling"
        screenshot(page, f"splits-{name}")


def test_an_empty_dataset_says_to_import_first(page, services) -> None:
    project = services.projects.create("Empty").id
    open_view(page, f"/p/{project}/splits")
    page.locator(".preview .empty").wait_for()
    assert "no images yet" in page.locator(".preview").inner_text()
    assert page.locator(".split-list .empty").is_visible()
    # creating anyway shows the API's refusal
    page.get_by_label("Name").fill("first")
    page.get_by_role("button", name="Create split").click()
    page.locator(".toast.error", has_text="no images").wait_for()
    assert page.get_by_role("link", name="Import images on the dataset page").is_visible()

"""The Export page in a real browser: the options form is generated from the format's schema, its errors show at
their field, an ONNX export runs to a passed verification and the download is the API's file."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers.browser import PHONE, open_view, screenshot

TIMEOUT_MS = 120_000


def test_onnx_export_through_the_form_verifies_and_downloads_the_api_file(new_page, ui_url, trained_run, tmp_path: Path) -> None:
    page = new_page().page
    project = trained_run.project_id
    open_view(page, f"/p/{project}/export?run={trained_run.run_id}")
    assert page.locator("main h1").first.inner_text() == "Export"
    assert page.get_by_label("Run", exact=True).input_value() == trained_run.run_id
    page.get_by_label("Format").select_option("onnx")

    # the form follows the format's schema: integer with its range, booleans as checkboxes, the shape as a list
    formats = httpx.get(f"{ui_url}/api/export/formats").json()["data"]
    schema = next(f for f in formats if f["id"] == "onnx")["options"]["properties"]
    opset = page.locator('[name="options.opset_version"]')
    assert opset.get_attribute("type") == "number"
    assert opset.get_attribute("min") == str(schema["opset_version"]["minimum"])
    assert opset.get_attribute("max") == str(schema["opset_version"]["maximum"])
    assert opset.input_value() == str(schema["opset_version"]["default"])
    assert page.locator('[name="options.simplify"]').get_attribute("type") == "checkbox"
    assert page.locator('[name="options.simplify"]').is_checked() == schema["simplify"]["default"]
    assert page.get_by_label("input shape").get_attribute("type") == "text"

    # a list that does not parse is refused in the page, next to its field
    page.get_by_label("input shape").fill("1, three, 16, 16")
    page.get_by_role("button", name="Export", exact=True).click()
    shape_error = page.locator('[data-field="options.input_shape"] .field-error')
    shape_error.wait_for()
    assert "whole numbers" in shape_error.inner_text()
    # the API's 422 (opset out of range) shows next to the opset field, with the API's message
    page.get_by_label("input shape").fill("")
    opset.fill("3")
    page.get_by_role("button", name="Export", exact=True).click()
    opset_error = page.locator('[data-field="options.opset_version"] .field-error')
    opset_error.wait_for()
    assert opset.get_attribute("aria-invalid") == "true"
    refused = httpx.post(f"{ui_url}/api/export/{project}", json={
        "experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "format": "onnx", "options": {"opset_version": 3}})
    assert refused.status_code == 422
    assert opset_error.inner_text()  # the message the API gave for options.opset_version
    screenshot(page, "export-form-error-light")
    assert httpx.get(f"{ui_url}/api/export/{project}").json()["data"] == []

    opset.fill(str(schema["opset_version"]["default"]))
    page.get_by_role("button", name="Export", exact=True).click()
    job = page.locator("section.export-job")
    job.locator('[data-verification="passed"]').wait_for(timeout=TIMEOUT_MS)
    exports = httpx.get(f"{ui_url}/api/export/{project}").json()["data"]
    assert len(exports) == 1 and exports[0]["status"] == "completed" and exports[0]["verification"]["passed"] is True
    record = exports[0]
    facts = job.locator(".verification-facts").inner_text()
    assert f"{record['verification']['top1_agreement'] * 100:.1f} %" in facts
    assert "default policy" in facts
    row = page.locator("tbody tr", has_text=record["id"])
    assert "verified" in row.locator(".verification").inner_text()
    screenshot(page, "export-completed-light")

    # the download is byte for byte the API's file, under its name
    with page.expect_download() as info:
        job.get_by_role("button", name=f"Download the file of {record['id']}").click()
    saved = tmp_path / "download.onnx"
    info.value.save_as(saved)
    assert info.value.suggested_filename == record["file"]["name"]
    api_bytes = httpx.get(f"{ui_url}/api/export/{project}/{record['id']}/download").content
    assert saved.read_bytes() == api_bytes and len(api_bytes) == record["file"]["size"]
    with page.expect_download() as bundle:
        row.get_by_role("button", name=f"Download the bundle of {record['id']}").click()
    bundle.value.save_as(tmp_path / "bundle.zip")
    assert (tmp_path / "bundle.zip").read_bytes()[:2] == b"PK"

    # dark and phone views of the list; delete asks first
    dark = new_page(color_scheme="dark").page
    open_view(dark, f"/p/{project}/export")
    dark.get_by_role("button", name=f"Details of {record['id']}").click()
    dark.locator("dialog[open] .verification-facts").wait_for()
    screenshot(dark, "export-details-dark")
    dark.locator("dialog[open]").get_by_role("button", name="Close").click()

    phone = new_page(viewport=PHONE).page
    open_view(phone, f"/p/{project}/export")
    phone.locator("tbody tr").first.wait_for()
    assert phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    screenshot(phone, "export-phone")
    phone.get_by_role("button", name=f"Delete {record['id']}").click()
    phone.locator("#confirm-ok").click()
    phone.get_by_text("No export yet.").wait_for()
    assert httpx.get(f"{ui_url}/api/export/{project}").json()["data"] == []

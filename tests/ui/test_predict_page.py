"""The Predict page in a real browser: load a run's checkpoint, send images through the file input, see the same
classes as the API answers for those images, a Grad-CAM heat map over them, per-image errors in place, an export's
refusal of Grad-CAM with the API's message, and detection boxes drawn over the image."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers.browser import PHONE, open_view, screenshot


def _dataset_pngs(services, project_id: str, count: int) -> list[Path]:
    return sorted((services.workspace.project_dir(project_id) / "dataset").rglob("*.png"))[:count]


def _api_predict(ui_url: str, project: str, model: str, paths: list[Path], **fields: str) -> dict:
    files = [("files", (path.name, path.read_bytes(), "image/png")) for path in paths]
    response = httpx.post(f"{ui_url}/api/predict/{project}/models/{model}", files=files, data=fields, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _wait_for_cards(page, count: int) -> None:
    page.wait_for_function("(n) => document.querySelectorAll('.prediction-grid article.prediction').length === n", arg=count)


def test_checkpoint_predictions_match_the_api_with_a_grad_cam_overlay(new_page, ui_url, services, trained_run, tmp_path: Path) -> None:
    page = new_page().page
    project = trained_run.project_id
    open_view(page, f"/p/{project}/predict")
    assert page.locator("main h1").first.inner_text() == "Predict"
    assert page.get_by_label("Images").is_disabled()  # nothing to predict with yet
    page.get_by_role("button", name="Load checkpoint").click()
    page.get_by_role("button", name="Unload model-", exact=False).wait_for()
    models = httpx.get(f"{ui_url}/api/predict/{project}/models").json()["data"]
    assert len(models) == 1 and models[0]["source"]["run_id"] == trained_run.run_id and models[0]["is_default"]
    model = models[0]["id"]
    assert page.get_by_label("Model", exact=True).input_value() == model

    pngs = _dataset_pngs(services, project, 2)
    page.get_by_label("Top k classes").fill("2")
    page.get_by_label("Explain (Grad-CAM heat map)").check()
    page.get_by_label("Images").set_input_files([str(path) for path in pngs])
    _wait_for_cards(page, 2)
    expected = _api_predict(ui_url, project, model, pngs, top_k="2")
    cards = page.locator("article.prediction")
    for index, result in enumerate(expected["results"]):
        card = cards.nth(index)
        assert card.locator("h3").inner_text() == pngs[index].name
        assert card.locator(".bar .class-name").all_inner_texts() == [p["class_name"] for p in result["predictions"]]
        assert card.locator(".bar-value").all_inner_texts() == [f"{p['confidence'] * 100:.1f} %" for p in result["predictions"]]
    # the previews and the heat maps are loaded images
    page.wait_for_function("() => [...document.querySelectorAll('article.prediction img')].length === 4 && "
                           "[...document.querySelectorAll('article.prediction img')].every(i => i.complete && i.naturalWidth > 0)")
    assert cards.locator("img.heatmap").count() == 2
    screenshot(page, "predict-classification-light")

    # an image that is not one is answered in place, next to the others
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    page.get_by_label("Explain (Grad-CAM heat map)").uncheck()
    page.get_by_label("Images").set_input_files([str(pngs[0]), str(bad)])
    page.locator('article.prediction[data-filename="notes.png"] .error').wait_for()
    assert "INVALID_IMAGE" in page.locator('article.prediction[data-filename="notes.png"] .error').inner_text()
    assert page.locator(f'article.prediction[data-filename="{pngs[0].name}"] .bar').count() == 2

    # an export as a second model: made default from the list; Grad-CAM is refused with the API's message
    created = httpx.post(f"{ui_url}/api/export/{project}", json={"experiment_id": trained_run.experiment_id, "run_id": trained_run.run_id, "format": "onnx"})
    export_id = created.json()["data"]["id"]
    assert httpx.get(f"{ui_url}/api/export/{project}/{export_id}", params={"wait": 120}, timeout=130).json()["data"]["status"] == "completed"
    phone = new_page(viewport=PHONE, color_scheme="dark").page
    open_view(phone, f"/p/{project}/predict")
    phone.get_by_label("Export", exact=True).select_option(export_id)
    phone.get_by_role("button", name="Load export").click()
    phone.locator("tbody tr", has_text="export").wait_for()
    exported = next(m for m in httpx.get(f"{ui_url}/api/predict/{project}/models").json()["data"] if m["source"]["kind"] == "export")
    phone.get_by_role("button", name=f"Make {exported['id']} the default").click()
    phone.locator("tbody tr", has_text=exported["id"]).get_by_text("default", exact=True).wait_for()
    assert next(m for m in httpx.get(f"{ui_url}/api/predict/{project}/models").json()["data"] if m["id"] == exported["id"])["is_default"]
    phone.get_by_label("Model", exact=True).select_option(exported["id"])
    phone.get_by_label("Explain (Grad-CAM heat map)").check()
    phone.get_by_label("Images").set_input_files([str(pngs[0])])
    refusal = phone.locator(".predict-status .error-box")
    refusal.wait_for()
    assert "gradcam" in refusal.inner_text() and "VALIDATION_ERROR" in refusal.inner_text()
    phone.get_by_label("Explain (Grad-CAM heat map)").uncheck()
    phone.get_by_label("Images").set_input_files([str(pngs[0])])
    _wait_for_cards(phone, 1)
    assert phone.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 0
    screenshot(phone, "predict-export-phone-dark")
    phone.get_by_role("button", name=f"Unload {exported['id']}").click()
    phone.locator("tbody tr", has_text=exported["id"]).wait_for(state="detached")
    assert [m["id"] for m in httpx.get(f"{ui_url}/api/predict/{project}/models").json()["data"]] == [model]


def test_detection_predictions_draw_boxes_over_the_image(new_page, ui_url, services, detection_run) -> None:
    page = new_page().page
    project = detection_run.project_id
    open_view(page, f"/p/{project}/predict")
    page.get_by_role("button", name="Load checkpoint").click()
    page.get_by_role("button", name="Unload model-", exact=False).wait_for()
    model = httpx.get(f"{ui_url}/api/predict/{project}/models").json()["data"][0]["id"]
    assert page.get_by_label("Top k classes").is_hidden() and page.get_by_label("Score threshold").is_visible()
    pngs = _dataset_pngs(services, project, 12)
    expected = _api_predict(ui_url, project, model, pngs, score_threshold="0.1")
    chosen = [path for path, result in zip(pngs, expected["results"]) if result["predictions"]][:2]
    assert chosen, "the tiny detector finds boxes at a 0.1 threshold"
    page.get_by_label("Score threshold").fill("0.1")
    page.get_by_label("Images").set_input_files([str(path) for path in chosen])
    _wait_for_cards(page, len(chosen))
    answers = {r["filename"]: r for r in _api_predict(ui_url, project, model, chosen, score_threshold="0.1")["results"]}
    page.wait_for_function("() => [...document.querySelectorAll('article.prediction .boxed-image img')].every(i => i.naturalWidth > 0)")
    for path in chosen:
        card = page.locator(f'article.prediction[data-filename="{path.name}"]')
        assert card.locator(".box-predicted rect").count() == len(answers[path.name]["predictions"]) > 0
        assert card.locator("td.class-name").all_inner_texts() == [b["class_name"] for b in answers[path.name]["predictions"]]
    screenshot(page, "predict-detection-light")

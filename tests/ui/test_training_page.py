"""The Training page: experiments and their runs, and the experiment form built from the config schema.

The form's controls come from the OpenAPI document (enums, bounds, defaults) and are named after the API field
paths, so a 422 from the server is shown next to the control it names. The runs list (queue position of a
pending run, live progress) is exercised with real training in test_run_page.py.
"""

from __future__ import annotations

from typing import Any

import httpx

from modelyard.core import AUGMENTATIONS

from tests.helpers.browser import PHONE, open_view, screenshot
from tests.helpers.datasets import create_project_with_dataset


def field_error(form: Any, name: str) -> Any:
    """The error slot of the control named ``name`` (``field()`` tags its wrapper with ``data-field``)."""
    return form.locator(f"[data-field='{name}'] .field-error")


def test_the_form_lists_the_task_architectures_and_shows_api_errors_next_to_their_fields(services, new_page, ui_url) -> None:
    project = create_project_with_dataset(services, per_class=4, size=16)
    with httpx.Client(base_url=ui_url) as http:
        for_task = {m["name"]: m for m in http.get("/api/training/models", params={"task": "classification"}).json()["data"]}
        everything = {m["name"] for m in http.get("/api/training/models").json()["data"]}
    assert "simple_detector" in everything - set(for_task)  # a detection architecture the picker must leave out

    page = new_page().page
    open_view(page, f"/p/{project}/training")
    assert page.locator("main h1").first.inner_text() == "Training"
    page.get_by_text("No experiments yet").wait_for()
    form = page.locator("form.experiment-form")
    form.wait_for()

    # the architecture picker: exactly the task's architectures, each with its parameter count
    picker = form.locator("select[name='model.architecture']")
    options = picker.locator("option")
    names = options.evaluate_all("(nodes) => nodes.map((n) => n.value)")
    assert set(names) == set(for_task)
    counts = dict(options.evaluate_all("(nodes) => nodes.map((n) => [n.value, n.dataset.parameters])"))
    assert counts["simple_cnn"] == str(for_task["simple_cnn"]["num_parameters"])
    simple = options.filter(has_text="simple_cnn").inner_text()
    assert "parameters" in simple and "k" in simple  # e.g. "simple_cnn — 23.5 k parameters"
    assert form.get_by_label("Architecture (").locator("option:checked").inner_text().startswith("resnet18")  # the default

    # enums and defaults come from the schema
    assert form.locator("select[name='training.optimizer.name'] option").all_inner_texts() == ["sgd", "adam", "adamw"]
    assert form.locator("select[name='training.optimizer.name']").input_value() == "adamw"
    assert form.locator("input[name='training.max_epochs']").input_value() == "20"
    assert form.locator("input[name='training.max_epochs']").get_attribute("min") == "1"
    assert form.locator("input[name='hardware.devices'][value='cpu']").is_checked()  # default_selected
    assert form.locator("select[name='split_index'] option").first.inner_text().startswith("default")

    picker.select_option("simple_cnn")
    assert form.locator("input[name='data.image_size']").input_value() == str(for_task["simple_cnn"]["default_input_size"][0])
    form.locator("input[name='data.image_size']").fill("16")
    form.locator("input[name='data.image_size[1]']").fill("16")
    form.get_by_label("Experiment name").fill("form experiment")

    # max_epochs 0 (fill() passes the browser's min): the API's message, next to that field
    form.locator("input[name='training.max_epochs']").fill("0")
    form.get_by_role("button", name="Create experiment").click()
    error = field_error(form, "training.max_epochs")
    error.wait_for()
    assert ">= 1" in error.inner_text()
    assert form.locator("input[name='training.max_epochs']").get_attribute("aria-invalid") == "true"
    screenshot(page, "training-form-error")

    # an invalid learning rate: the previous error goes, this one shows at the lr
    form.locator("input[name='training.max_epochs']").fill("3")
    form.locator("input[name='training.optimizer.lr']").fill("0")
    form.get_by_role("button", name="Create experiment").click()
    lr_error = field_error(form, "training.optimizer.lr")
    lr_error.wait_for()
    assert "> 0" in lr_error.inner_text()
    assert error.is_hidden()

    # augmentations: the schema's allow-list is offered as a select; bad parameters get the API's message there
    form.locator("input[name='training.optimizer.lr']").fill("0.01")
    form.get_by_role("button", name="Add a train augmentation").click()
    name = form.locator("select[name='data.augmentations.train[0].name']")
    offered = name.locator("option").evaluate_all("(options) => options.map((o) => o.value).filter(Boolean)")
    assert offered == list(AUGMENTATIONS)
    name.select_option("RandomHorizontalFlip")
    form.locator("input[name='data.augmentations.train[0].params']").fill('{"flip_chance": 0.5}')
    form.get_by_role("button", name="Create experiment").click()
    augmentation_error = field_error(form, "data.augmentations.train[0].params")
    augmentation_error.wait_for()
    assert "invalid parameters for RandomHorizontalFlip" in augmentation_error.inner_text()

    form.locator("input[name='data.augmentations.train[0].params']").fill('{"p": 0.5}')
    form.locator("details.advanced summary").click()
    form.locator("input[name='data.num_workers']").fill("0")
    form.locator("select[name='training.scheduler.name']").select_option("none")
    form.get_by_role("button", name="Create experiment").click()
    card = page.locator("article.experiment", has_text="form experiment")
    card.wait_for()
    assert "0 runs" in card.inner_text()
    assert form.locator(".field-error:visible").count() == 0

    # what the form sent is what the API stored
    with httpx.Client(base_url=ui_url) as http:
        [experiment] = http.get(f"/api/training/{project}/experiments").json()["data"]
        config = http.get(f"/api/training/{project}/experiments/{experiment['id']}").json()["data"]["config"]
    assert config["model"]["architecture"] == "simple_cnn"
    assert config["data"]["image_size"] == [16, 16] and config["data"]["num_workers"] == 0
    assert config["data"]["augmentations"]["train"] == [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}}]
    assert config["training"]["max_epochs"] == 3 and config["training"]["optimizer"]["lr"] == 0.01
    assert config["training"]["scheduler"]["name"] == "none"
    assert config["hardware"]["devices"] == ["cpu"]
    screenshot(page, "training-light")

    # deleting is confirmed; cancelling keeps it
    card.get_by_role("button", name="Delete experiment form experiment").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Cancel").click()
    assert card.is_visible()
    card.get_by_role("button", name="Delete experiment form experiment").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
    page.get_by_text("No experiments yet").wait_for()


def test_the_training_page_in_dark_and_on_a_phone(trained_run, new_page) -> None:
    for viewport, scheme, name in (({"width": 1280, "height": 800}, "dark", "training-dark"), (PHONE, "light", "training-phone")):
        page = new_page(viewport=viewport, color_scheme=scheme).page
        open_view(page, f"/p/{trained_run.project_id}/training")
        row = page.locator(f"tr[data-run-id='{trained_run.run_id}']")
        row.wait_for()
        assert "completed" in row.inner_text()
        assert "val/loss" in row.inner_text()  # the best value of the monitored metric
        row.get_by_role("link", name=trained_run.run_id).wait_for()
        page.locator("form.experiment-form").wait_for()
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, "nothing may force sideways scrolling"
        screenshot(page, name)
    row.get_by_role("link", name=trained_run.run_id).click()
    page.wait_for_function("(run) => location.hash.endsWith(`/runs/${run}`)", arg=trained_run.run_id)

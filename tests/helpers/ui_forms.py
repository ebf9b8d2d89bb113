"""Filling the UI's forms the way a user does (shared by the page tests and the whole-flow test)."""

from __future__ import annotations

from typing import Any


def fill_tiny_experiment(form: Any, name: str, max_epochs: int) -> None:
    """The Training page's experiment form: a 16 px ``simple_cnn`` that trains in about a second an epoch."""
    form.get_by_label("Experiment name").fill(name)
    form.locator("select[name='model.architecture']").select_option("simple_cnn")
    form.locator("input[name='data.image_size']").fill("16")
    form.locator("input[name='data.image_size[1]']").fill("16")
    form.locator("input[name='data.batch_size']").fill("8")
    form.locator("input[name='training.max_epochs']").fill(str(max_epochs))
    form.locator("select[name='training.scheduler.name']").select_option("none")
    form.locator("details.advanced summary").click()
    form.locator("input[name='data.num_workers']").fill("0")


def press(page: Any, label: str, key: str, times: int = 1) -> None:
    """Move a labelled control (a slider) with the keyboard."""
    slider = page.get_by_label(label)
    slider.focus()
    for _ in range(times):
        page.keyboard.press(key)

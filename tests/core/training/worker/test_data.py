"""Training data (core/training/worker/data.py): split subsets, decoding, the memory cache and batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image, JpegImagePlugin

from modelyard.core.errors import CorruptDataError, ValidationError
from modelyard.core.training.config import parse_config
from modelyard.core.training.worker.data import ImageDataModule, load_image, split_items
from modelyard.plugins.classification import CLASSIFICATION
from modelyard.plugins.classification.runtime import ClassificationRuntime
from tests.core.datasets.documents import view_of
from tests.helpers.datasets import write_shapes_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    project = tmp_path_factory.mktemp("data") / "proj"
    dataset = write_shapes_dataset(project, per_class=5, size=24, num_classes=3)
    return project / "dataset" / "images", dataset


RUNTIME = ClassificationRuntime(CLASSIFICATION)


def config(**data: object) -> object:
    base = {"image_size": [16, 16], "batch_size": 4, "num_workers": 0}
    return parse_config({"model": {"architecture": "simple_cnn"}, "data": {**base, **data}})


def test_split_items_take_the_subset_of_the_chosen_split_and_skip_unlabelled() -> None:
    dataset = view_of({
        "classes": ["a", "b"],
        "split_names": ["s0", "s1"],
        "images": [
            {"filename": "1.png", "split": ["train", "val"], "annotations": [{"type": "label", "class_id": 0}]},
            {"filename": "2.png", "split": ["val", "train"], "annotations": [{"type": "label", "class_id": 1}]},
            {"filename": "3.png", "split": ["train", "train"], "annotations": []},
        ],
    })
    assert split_items(dataset, 0, "train") == [("1.png", 0)]
    assert split_items(dataset, 1, "train") == [("2.png", 1)]
    assert split_items(dataset, 1, "val") == [("1.png", 0)]


def test_a_class_id_outside_the_class_list_is_a_clear_error() -> None:
    dataset = view_of({"classes": ["a"], "images": [{"filename": "x.png", "split": ["train"],
                                                      "annotations": [{"type": "label", "class_id": 5}]}]})
    with pytest.raises(CorruptDataError, match="x.png"):
        split_items(dataset, 0, "train")


def test_load_image_resizes_to_height_width_and_converts_channels(tmp_path: Path) -> None:
    Image.new("P", (40, 30), 3).save(tmp_path / "p.png")
    rgb = load_image(tmp_path / "p.png", (12, 20), 3)
    gray = load_image(tmp_path / "p.png", (12, 20), 1)
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 12, 20)
    assert gray.shape == (1, 12, 20)


def test_large_jpegs_are_decoded_at_reduced_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (512, 512), (200, 10, 10)).save(tmp_path / "big.jpg", quality=90)
    Image.new("RGB", (24, 24), (200, 10, 10)).save(tmp_path / "small.jpg", quality=90)
    drafts: list[tuple] = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):  # records, then does the real work
        drafts.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    big = load_image(tmp_path / "big.jpg", (32, 32), 3)
    load_image(tmp_path / "small.jpg", (32, 32), 3)
    assert drafts == [(32, 32)]  # only the image much larger than the target
    assert big.shape == (3, 32, 32) and abs(int(big[0].float().mean()) - 200) < 8


def test_unreadable_image_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(CorruptDataError, match="broken.png"):
        load_image(tmp_path / "broken.png", (8, 8), 3)


def test_datamodule_caches_decoded_images_when_they_fit_the_budget(shapes) -> None:
    images_dir, dataset = shapes
    module = ImageDataModule(images_dir, dataset, config(cache="auto"), RUNTIME)
    module.setup("fit")
    assert module.cache_used and module.resolved_num_workers() == 0
    images, labels = next(iter(module.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 16, 16)
    assert labels.dtype == torch.int64 and labels.shape == (4,)
    assert len(module.train_set) == 9 and len(module.val_set) == 3


def test_cached_and_uncached_batches_hold_the_same_pixels(shapes) -> None:
    images_dir, dataset = shapes
    cached = ImageDataModule(images_dir, dataset, config(cache="memory"), RUNTIME)
    plain = ImageDataModule(images_dir, dataset, config(cache="none"), RUNTIME)
    cached.setup()
    plain.setup()
    assert not plain.cache_used
    a = cached.val_set.__getitems__([0, 2])
    b = plain.val_set.__getitems__([0, 2])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_auto_cache_stays_off_when_images_exceed_the_budget(shapes) -> None:
    images_dir, dataset = shapes
    module = ImageDataModule(images_dir, dataset, config(cache="auto", cache_max_mb=0), RUNTIME)
    module.setup()
    assert not module.cache_used


def test_train_augmentations_are_applied_per_image(shapes) -> None:
    images_dir, dataset = shapes
    aug = {"train": [{"name": "RandomHorizontalFlip", "params": {"p": 1.0}}], "val": []}
    flipped = ImageDataModule(images_dir, dataset, config(augmentations=aug, cache="memory"), RUNTIME)
    flipped.setup()
    images, _ = flipped.train_set.__getitems__([0, 1])
    assert torch.equal(images, flipped.train_set.cached[[0, 1]].flip(-1))


def test_balanced_class_weights_favour_rare_classes() -> None:
    dataset = view_of({"classes": ["a", "b"], "split_names": ["s"], "images": [
        *({"filename": f"a{i}.png", "split": ["train"], "annotations": [{"type": "label", "class_id": 0}]} for i in range(3)),
        {"filename": "b.png", "split": ["train"], "annotations": [{"type": "label", "class_id": 1}]},
        {"filename": "v.png", "split": ["val"], "annotations": [{"type": "label", "class_id": 1}]},
    ]})
    module = ImageDataModule(Path("/nonexistent"), dataset, config(), RUNTIME)
    assert module.train_targets() == [0, 0, 0, 1]
    balanced = parse_config({"training": {"loss": {"class_weights": "balanced"}}})
    options = RUNTIME.module_options(balanced, module.class_names, module.train_targets())
    assert options["class_weights"] == pytest.approx([4 / 6, 2.0])
    assert RUNTIME.module_options(config(), module.class_names, module.train_targets()) == {"class_weights": None}


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([{"filename": "v.png", "split": ["val"], "annotations": [{"type": "label", "class_id": 0}]}], "no labelled training"),
        ([{"filename": "t.png", "split": ["train"], "annotations": [{"type": "label", "class_id": 0}]}], "no labelled validation"),
    ],
)
def test_a_split_without_train_or_val_images_cannot_train(images, message) -> None:
    dataset = view_of({"classes": ["a", "b"], "split_names": ["s"], "images": images})
    with pytest.raises(ValidationError, match=message):
        ImageDataModule(Path("/nonexistent"), dataset, config(), RUNTIME)


def test_a_flip_only_pipeline_flips_a_batch_at_once_exactly_as_image_by_image(shapes) -> None:
    images_dir, dataset = shapes
    aug = {"train": [{"name": "RandomHorizontalFlip", "params": {"p": 0.5}},
                     {"name": "RandomVerticalFlip", "params": {"p": 0.5}}], "val": []}
    batched = ImageDataModule(images_dir, dataset, config(augmentations=aug, cache="memory"), RUNTIME)
    reference = ImageDataModule(images_dir, dataset, config(augmentations=aug, cache="none"), RUNTIME)
    batched.setup()
    reference.setup()
    assert batched.train_set.flips == [(-1, 0.5), (-2, 0.5)]
    reference.train_set.flips = None  # torchvision's transforms, one image at a time
    keys = [(epoch, i) for epoch in range(4) for i in range(len(batched.train_set))]
    images, labels = batched.train_set.__getitems__(keys)
    expected_images, expected_labels = reference.train_set.__getitems__(keys)
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert not torch.equal(images, batched.train_set.cached.repeat(4, 1, 1, 1))  # some were flipped

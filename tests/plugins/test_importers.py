"""Built-in importers: registration and the record-reading contract (``modelyard.testing.check_importer``)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from modelyard.core.plugin_manager import PluginHost
from modelyard.plugins import csv_importer, imagefolder
from modelyard.testing import check_importer


def _png(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (shade, 255 - shade, 40)).save(path)


def _host() -> PluginHost:
    host = PluginHost(disabled=set())
    host.add_plugin(imagefolder, name="imagefolder")
    host.add_plugin(csv_importer, name="csv_importer")
    return host


def test_builtin_importers_register_under_their_ids() -> None:
    host = _host()
    assert host.importers.names() == ["csv", "imagefolder"]
    assert host.importers.owner("csv") == "csv_importer"


def test_imagefolder_reads_class_folders_and_unlabelled_root_files(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "1.png", 10)
    _png(tmp_path / "cat" / "nested" / "2.png", 20)
    _png(tmp_path / "dog" / "3.png", 30)
    _png(tmp_path / "loose.png", 40)
    _png(tmp_path / ".hidden" / "4.png", 50)
    importer = _host().importers.get("imagefolder")
    check_importer(importer, tmp_path, {"cat/1.png": "cat", "cat/nested/2.png": "cat", "dog/3.png": "dog", "loose.png": None})


def test_imagefolder_takes_subsets_from_train_val_test_folders(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "cat" / "1.png", 10)
    _png(tmp_path / "valid" / "dog" / "2.png", 20)
    _png(tmp_path / "test" / "dog" / "3.png", 30)
    records = check_importer(_host().importers.get("imagefolder"), tmp_path)
    assert {(r.source_path, r.label, r.subset) for r in records} == {
        ("train/cat/1.png", "cat", "train"),
        ("valid/dog/2.png", "dog", "val"),
        ("test/dog/3.png", "dog", "test"),
    }


def test_csv_importer_reads_labels_and_splits_and_is_detected_before_imagefolder(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "a.png", 10)
    _png(tmp_path / "img" / "b.png", 20)
    _png(tmp_path / "c.png", 30)
    (tmp_path / "labels.csv").write_text("filename,label,split\nimg/a.png,cat,train\nimg/b.png,dog,validation\nc.png,,\n")
    host = _host()
    assert host.importers.detect(tmp_path).id == "csv"
    records = check_importer(host.importers.get("csv"), tmp_path, {"img/a.png": "cat", "img/b.png": "dog", "c.png": None})
    assert [r.subset for r in records] == ["train", "val", None]


def test_csv_importer_does_not_claim_a_folder_without_a_labels_file(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "1.png", 10)
    (tmp_path / "notes.csv").write_text("name,value\nx,1\n")
    host = _host()
    assert host.importers.get("csv").detect(tmp_path) is False
    assert host.importers.detect(tmp_path).id == "imagefolder"

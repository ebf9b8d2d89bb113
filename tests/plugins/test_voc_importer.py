"""The ``voc`` importer through the real API: folder and ZIP, and hostile XML (DOCTYPE, entities) never a 500."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelyard.core.plugin_manager import PluginHost
from modelyard.plugins import voc_importer
from modelyard.testing import check_importer
from tests.api.test_datasets import upload
from tests.core.datasets.detection_factories import (
    imported,
    skipped_reasons,
    SCENES,
    detection_project,  # noqa: F401  (fixture)
    expected_boxes,
    stored_boxes,
    voc_folder,
)
from tests.core.datasets.factories import write, zip_of_folder

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<annotation><filename>b.png</filename><object><name>&lol9;</name>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE annotation [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>b.png</filename><object><name>&xxe;</name>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"""


def test_the_importer_reads_one_based_corners_as_pixel_boxes(tmp_path: Path) -> None:
    host = PluginHost(disabled=set())
    host.add_plugin(voc_importer, name="voc_importer")
    records = check_importer(host.importers.get("voc"), voc_folder(tmp_path / "voc"))
    by_path = {r.source_path: r for r in records}
    assert set(by_path) == {f"JPEGImages/{name}" for name in SCENES}
    assert [(b.class_name, list(b.bbox)) for b in by_path["JPEGImages/a.png"].boxes] == expected_boxes("a.png")
    assert by_path["JPEGImages/d.png"].boxes == ()


def test_folder_and_zip_import(client, detection_project: str, import_root: Path, tmp_path: Path) -> None:
    folder = voc_folder(import_root / "voc")
    write(folder / "ImageSets" / "Main" / "train.txt", b"a\nb\nd\n")
    write(folder / "ImageSets" / "Main" / "val.txt", b"c\n")
    data = imported(client, detection_project, folder)
    assert (data["format"], data["imported"], data["classes"], data["skipped"]) == ("voc", 4, ["car", "dog"], [])
    for name in SCENES:
        assert stored_boxes(client, detection_project, f"JPEGImages_{name}") == expected_boxes(name)
    items = client.get(f"/api/datasets/{detection_project}/images").json()["data"]["items"]
    assert {i["filename"]: i["split"] for i in items}["JPEGImages_c.png"] == ["val"]
    response = upload(client, detection_project, zip_of_folder(folder, prefix="VOC2012/"), replace="true")
    assert response.status_code == 200, response.text
    assert (response.json()["data"]["format"], response.json()["data"]["num_images"]) == ("voc", 4)


@pytest.mark.parametrize(("content", "reason"), [
    (BILLION_LAUGHS, "DOCTYPE"),
    (EXTERNAL_ENTITY, "DOCTYPE"),
    (b'<?xml version="1.0"?><!DOCTYPE annotation SYSTEM "http://example.invalid/x.dtd"><annotation/>', "DOCTYPE"),
    ("<?xml version='1.0' encoding='utf-16'?><!DOCTYPE a [<!ENTITY x 'y'>]><annotation/>".encode("utf-16"), "DOCTYPE"),
    (b"<annotation><filename>b.png</filename><object>", "malformed XML"),
    (b"not xml at all", "malformed XML"),
    (b"<html><body/></html>", "not a VOC annotation"),
    (b"<annotation>" + b"<a>" * 100 + b"</a>" * 100 + b"</annotation>", "nested deeper"),
    (b"<annotation><filename>b.png</filename><object><name>car</name><bndbox><xmin>1</xmin></bndbox></object>"
     b"</annotation>", "lacks <ymin>, <xmax>, <ymax>"),
    (b"<annotation><filename>b.png</filename><object><name>car</name><bndbox><xmin>one</xmin><ymin>1</ymin>"
     b"<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>", "not a number"),
    (b"<annotation><filename>b.png</filename><object><name>car</name><bndbox><xmin>nan</xmin><ymin>1</ymin>"
     b"<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>", "non-finite"),
    (b"<annotation><filename>b.png</filename><object><bndbox><xmin>1</xmin><ymin>1</ymin>"
     b"<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>", "has no <name>"),
    (b"<annotation><filename>../../secret.png</filename></annotation>", "must be a file name inside JPEGImages/"),
])
def test_hostile_or_malformed_xml_refuses_only_its_image(client, detection_project: str, import_root: Path,
                                                        content: bytes, reason: str) -> None:
    folder = voc_folder(import_root / "voc")
    (folder / "Annotations" / "b.xml").write_bytes(content)
    data = imported(client, detection_project, folder)
    assert reason in skipped_reasons(data)["Annotations/b.xml"]
    assert data["imported"] == 3


def test_clipped_degenerate_and_missing_images(client, detection_project: str, import_root: Path, tmp_path: Path) -> None:
    folder = voc_folder(import_root / "voc")
    (folder / "Annotations" / "a.xml").write_bytes(
        b"<annotation><filename>a.png</filename><object><name>car</name><bndbox><xmin>-10</xmin><ymin>1</ymin>"
        b"<xmax>500</xmax><ymax>10</ymax></bndbox></object></annotation>")
    (folder / "Annotations" / "b.xml").write_bytes(
        b"<annotation><filename>b.png</filename><object><name>car</name><bndbox><xmin>20</xmin><ymin>1</ymin>"
        b"<xmax>10</xmax><ymax>10</ymax></bndbox></object></annotation>")
    (folder / "JPEGImages" / "c.png").unlink()
    secret = write(tmp_path / "secret.png", (folder / "JPEGImages" / "d.png").read_bytes())
    (folder / "JPEGImages" / "d.png").unlink()
    os.symlink(secret, folder / "JPEGImages" / "d.png")
    (folder / "Annotations" / "e.xml").mkdir()
    data = imported(client, detection_project, folder)
    skipped = skipped_reasons(data)
    assert "degenerate" in skipped["JPEGImages/b.png"]
    assert skipped["JPEGImages/c.png"] == "file not found"
    assert skipped["JPEGImages/d.png"] == "symbolic link (links are not followed)"
    assert skipped["Annotations/e.xml"] == "annotation file not a regular file (directory)"
    assert data["warnings"] == [{"path": "JPEGImages/a.png", "reason": "1 box clipped to the image"}]
    assert stored_boxes(client, detection_project, "JPEGImages_a.png") == [("car", [0.0, 0.0, 64.0, 10.0])]

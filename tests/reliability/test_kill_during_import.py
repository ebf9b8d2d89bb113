"""SIGKILL a real server while it extracts an uploaded ZIP: the next start cleans up, the old dataset stays."""

from __future__ import annotations

import os
import signal
import threading
import time
import zipfile
from pathlib import Path

import httpx

from modelyard.core.sample_data import generate_shapes
from tests.e2e.test_serve import _clean_env, start_server, stop_server
from tests.reliability.faults import files_under

BLOB_ENTRIES = 160  # x 1 MiB of zeros: tiny to upload, long enough to extract that the kill lands mid-way
MIB = 1024 * 1024


def _slow_zip(path: Path, images: Path) -> None:
    """Valid images plus many large, highly compressible entries (well under every limit)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for image in sorted(images.rglob("*.png")):
            archive.write(image, image.relative_to(images).as_posix())
        zeros = bytes(MIB)
        for index in range(BLOB_ENTRIES):
            archive.writestr(f"circle/blob_{index:04d}.bin", zeros)


def _extracting(staging: Path) -> bool:
    return any(folder.is_dir() and any(folder.iterdir()) for folder in staging.glob("import-*/extracted"))


def test_sigkill_while_extracting_an_upload_keeps_the_old_dataset(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    imports = tmp_path / "imports"
    generate_shapes(imports / "old", per_class=3, size=16, seed=1, shapes=("circle", "square"))
    generate_shapes(tmp_path / "new", per_class=3, size=16, seed=2, shapes=("circle", "square"))
    archive = tmp_path / "slow.zip"
    _slow_zip(archive, tmp_path / "new")
    args = ["--workspace", str(workspace), "--import-root", str(imports)]

    server = start_server(tmp_path, args, _clean_env())
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            project_id = http.post("/api/projects", json={"name": "Kill me"}).json()["data"]["id"]
            first = http.post(f"/api/datasets/{project_id}/import/local", json={"path": str(imports / "old")})
            assert first.status_code == 200, first.text
            old_dataset = (workspace / "projects" / project_id / "dataset" / "dataset.json").read_bytes()
            old_images = files_under(workspace / "projects" / project_id / "dataset" / "images")

        outcome: dict[str, object] = {}

        def upload() -> None:
            try:
                with open(archive, "rb") as handle:
                    outcome["response"] = httpx.post(
                        f"{server.url}/api/datasets/{project_id}/import/upload",
                        files={"file": ("slow.zip", handle, "application/zip")}, data={"replace": "true"}, timeout=120,
                    )
            except httpx.TransportError as exc:  # expected: the server dies mid-request
                outcome["error"] = exc

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        staging = workspace / ".staging"
        deadline = time.monotonic() + 60
        while not _extracting(staging):
            assert time.monotonic() < deadline, "the extraction never started"
            assert "response" not in outcome, f"the import finished before the kill: {outcome['response']}"
            time.sleep(0.005)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=20)
        uploader.join(timeout=60)
        assert "error" in outcome, outcome  # the client saw the connection drop, not an answer
        assert files_under(staging), "the kill should have left a half-extracted staging folder"
    finally:
        if server.process.poll() is None:
            stop_server(server)

    restarted = start_server(tmp_path, args, _clean_env())
    try:
        assert files_under(workspace / ".staging") == []  # cleaned at start
        dataset_dir = workspace / "projects" / project_id / "dataset"
        assert (dataset_dir / "dataset.json").read_bytes() == old_dataset
        assert files_under(dataset_dir / "images") == old_images
        info = httpx.get(f"{restarted.url}/api/datasets/{project_id}").json()["data"]
        assert info["num_images"] == 6
        # And the interrupted import can simply be sent again.
        with open(archive, "rb") as handle:
            again = httpx.post(
                f"{restarted.url}/api/datasets/{project_id}/import/upload",
                files={"file": ("slow.zip", handle, "application/zip")}, data={"replace": "true"}, timeout=120,
            )
        assert again.status_code == 200, again.text
        assert again.json()["data"]["imported"] == 6
        assert files_under(workspace / ".staging") == []
    finally:
        stop_server(restarted)

"""A run directory's files are read only inside it, through no link, and only if regular.

A crafted run (a FIFO or a link to /dev/zero in a file's place, a manifest row climbing out
with ``..``, a linked ``versions/`` folder) is refused with a RunDirError, never hashed forever
nor written through.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from miniunlearn.errors import RunDirError
from miniunlearn.fileio import NotARegularFileError, run_file, run_subdir, sha256_file
from miniunlearn.training import TrainConfig, open_run, train_run
from miniunlearn.training.rundir import load_params

CONFIG = TrainConfig(
    dataset="digits", model="logreg", epochs=3, lr=0.5, history="mini", checkpoints=2, seed=0
)
MODEL = "model.safetensors"

pytestmark = pytest.mark.timeout(30)  # every refusal here used to hang reading a FIFO or /dev/zero


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_run(CONFIG, tmp_path_factory.mktemp("pristine") / "run", progress=False).path


@pytest.fixture
def run_dir(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "run"))


def edit_manifest_row(run_dir: Path, rel: str, **changes: object) -> None:
    """Rewrite the manifest row of file ``rel`` as a hostile probe would (bytes 0 passes the size
    check against a FIFO or /dev/zero, so the old code went on to hash it forever)."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (row,) = [f for f in manifest["files"] if f["path"] == rel]
    row.update(changes)
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("verify_hashes", [True, False])
def test_a_fifo_in_place_of_a_manifest_file_is_refused(run_dir: Path, verify_hashes: bool) -> None:
    (run_dir / MODEL).unlink()
    os.mkfifo(run_dir / MODEL)
    edit_manifest_row(run_dir, MODEL, bytes=0)
    with pytest.raises(RunDirError, match="FIFO") as info:
        open_run(run_dir, verify_hashes=verify_hashes)
    assert "restore the run directory from a backup" in str(info.value)


def test_a_fifo_in_place_of_the_manifest_is_refused(run_dir: Path) -> None:
    (run_dir / "manifest.json").unlink()
    os.mkfifo(run_dir / "manifest.json")
    with pytest.raises(RunDirError, match="FIFO"):
        open_run(run_dir)


def test_a_link_to_dev_zero_in_place_of_a_manifest_file_is_refused(run_dir: Path) -> None:
    (run_dir / MODEL).unlink()
    (run_dir / MODEL).symlink_to("/dev/zero")
    edit_manifest_row(run_dir, MODEL, bytes=0)
    with pytest.raises(RunDirError, match="symbolic link, pointing to /dev/zero") as info:
        open_run(run_dir)
    assert "replace it with the real file" in str(info.value)


def test_a_link_to_a_good_copy_is_refused_too(run_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.safetensors"
    (run_dir / MODEL).rename(outside)
    (run_dir / MODEL).symlink_to(outside)
    with pytest.raises(RunDirError, match="symbolic link"):
        open_run(run_dir)


def test_a_linked_folder_on_the_way_to_a_manifest_file_is_refused(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "history").rename(tmp_path / "history")
    (run_dir / "history").symlink_to(tmp_path / "history")
    with pytest.raises(RunDirError, match="history.*symbolic link"):
        open_run(run_dir)


@pytest.mark.parametrize("row", ["../../../../dev/zero", "/dev/zero", "history/../../run/model.safetensors"])
def test_a_manifest_row_pointing_outside_the_run_is_refused(run_dir: Path, row: str) -> None:
    edit_manifest_row(run_dir, MODEL, path=row, bytes=0)
    with pytest.raises(RunDirError, match="outside the run"):
        open_run(run_dir, verify_hashes=False)


def test_reading_a_model_file_outside_the_run_is_refused(run_dir: Path) -> None:
    run = open_run(run_dir)
    with pytest.raises(RunDirError, match="outside the run"):
        run.load_model_params("../../../../dev/zero")


def test_a_model_file_that_is_a_fifo_is_refused_before_loading(run_dir: Path) -> None:
    run = open_run(run_dir)
    os.mkfifo(run_dir / "versions-v1.safetensors")
    with pytest.raises(RunDirError, match="FIFO"):
        run.load_model_params("versions-v1.safetensors")
    with pytest.raises(RunDirError, match="not a regular file"):
        load_params(run_dir / "versions-v1.safetensors", run.objective)


def test_a_run_reached_through_a_linked_run_folder_still_opens(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(run_dir)
    run = open_run(tmp_path / "alias")
    assert run.load_model_params().numel() == run.manifest["n_params"]


def test_sha256_file_refuses_a_fifo_instead_of_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(NotARegularFileError, match="FIFO"):
        sha256_file(tmp_path / "pipe")


def test_sha256_file_refuses_a_device_and_a_link_to_it(tmp_path: Path) -> None:
    (tmp_path / "zero").symlink_to("/dev/zero")
    for path in ("/dev/zero", tmp_path / "zero"):
        with pytest.raises(OSError, match="character device"):
            sha256_file(path)


def test_sha256_file_follows_a_link_to_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_bytes(b"1,2\n")
    (tmp_path / "link.csv").symlink_to(tmp_path / "data.csv")
    assert sha256_file(tmp_path / "link.csv") == sha256_file(tmp_path / "data.csv")


def test_run_subdir_refuses_a_linked_versions_folder(run_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "victim").mkdir()
    (run_dir / "versions").symlink_to(tmp_path / "victim")
    for create in (False, True):
        with pytest.raises(RunDirError, match="versions.*symbolic link"):
            run_subdir(run_dir, "versions", create=create)
    with pytest.raises(RunDirError, match="symbolic link"):
        run_file(run_dir, "versions/v1.safetensors", "model version 1")
    assert list((tmp_path / "victim").iterdir()) == []


def test_run_subdir_refuses_a_file_and_makes_a_missing_folder(run_dir: Path) -> None:
    (run_dir / "retrain").write_text("not a folder")
    with pytest.raises(RunDirError, match="regular file, not a folder"):
        run_subdir(run_dir, "retrain")
    assert run_subdir(run_dir, "versions") == run_dir / "versions"  # missing passes
    assert not (run_dir / "versions").exists()
    assert run_subdir(run_dir, "versions", create=True).is_dir()


def test_run_file_passes_a_regular_or_missing_file(run_dir: Path) -> None:
    assert run_file(run_dir, MODEL, "model") == run_dir / MODEL
    version = "versions/v1.safetensors"
    assert run_file(run_dir, version, "model version 1") == run_dir / version
    with pytest.raises(RunDirError, match="directory, not a file"):
        run_file(run_dir, "history", "history")

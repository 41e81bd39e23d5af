"""Runs trained on user data files (libsvm, csv): absolute paths and a data hash in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.cli import main
from miniunlearn.deletion import forget
from miniunlearn.errors import RunDirError
from miniunlearn.training import TrainConfig, open_run, train_run

TINY = {"epochs": 5, "lr": 0.5, "lam": 0.01, "history": "mini", "checkpoints": 2}


def write_csv(path: Path, rows: int = 40) -> Path:
    """A small two-class CSV with a header and the label last."""
    rng = np.random.default_rng(0)
    lines = ["a,b,c,label"]
    for i in range(rows):
        x = rng.normal(size=3)
        lines.append(f"{x[0]:.4f},{x[1]:.4f},{x[2]:.4f},{i % 2}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_libsvm(path: Path, rows: int = 40) -> Path:
    """A small two-class LIBSVM file (1-based, sparse)."""
    rng = np.random.default_rng(1)
    lines = [f"{i % 2} 1:{rng.normal():.4f} 3:{rng.normal():.4f} 4:{rng.normal():.4f}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def train_in(directory: Path, dataset: str, data_name: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Train a tiny run from ``directory`` with a *relative* data path; return the run dir."""
    monkeypatch.chdir(directory)
    run = train_run(
        TrainConfig(dataset=dataset, data_path=data_name, **TINY), directory / "run", progress=False
    )
    return run.path


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    i = data.index(b"1", len(data) // 2)  # a digit in a feature value: still a valid file
    data[i] = ord("2")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("dataset", "name", "write"), [("csv", "d.csv", write_csv), ("libsvm", "d.svm", write_libsvm)]
)
def test_relative_data_path_opens_from_another_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, name: str, write
) -> None:
    data = write(tmp_path / name)
    run_dir = train_in(tmp_path, dataset, name, monkeypatch)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data_path"] == str(data) and Path(config["data_path"]).is_absolute()
    (record,) = json.loads((run_dir / "manifest.json").read_text())["data_files"]
    assert record["path"] == str(data) and record["bytes"] == data.stat().st_size
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = open_run(run_dir)
    assert run.dataset.n_train == run.n_train == 32


@pytest.mark.parametrize(
    ("dataset", "name", "write"), [("csv", "d.csv", write_csv), ("libsvm", "d.svm", write_libsvm)]
)
def test_changed_data_file_refuses_forget_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, name: str, write
) -> None:
    data = write(tmp_path / name)
    run_dir = train_in(tmp_path, dataset, name, monkeypatch)
    size = data.stat().st_size
    flip_one_byte(data)
    assert data.stat().st_size == size  # same size, same row count: only the hash tells
    with pytest.raises(RunDirError, match="changed since training"):
        forget(run_dir, [1])
    assert not (run_dir / "current.json").exists()
    assert not (run_dir / "versions").exists()


def test_missing_data_file_names_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_csv(tmp_path / "d.csv")
    run_dir = train_in(tmp_path, "csv", "d.csv", monkeypatch)
    data.unlink()
    with pytest.raises(RunDirError, match="missing") as info:
        _ = open_run(run_dir).dataset
    assert str(data) in str(info.value) and "put the original file back" in str(info.value)


def test_cli_changed_data_file_exits_2_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_csv(tmp_path / "d.csv")
    monkeypatch.chdir(tmp_path)
    train = ["-q", "train", "--dataset", "csv", "--data-path", "d.csv", "--out", "run"]
    assert main([*train, "--epochs", "5", "--lr", "0.5", "--history", "mini", "--checkpoints", "2"]) == 0
    flip_one_byte(data)
    (tmp_path / "ids.txt").write_text("1\n")
    capsys.readouterr()
    assert main(["-q", "forget", "run", "--ids", "ids.txt"]) == 2
    err = capsys.readouterr().err
    assert "changed since training" in err and str(data) in err
    assert "Traceback" not in err
    assert not (tmp_path / "run" / "versions").exists()


def test_a_test_file_is_hashed_too_and_a_cached_retrain_survives_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from miniunlearn.training import cached_retrain

    train_file, test_file = write_csv(tmp_path / "train.csv"), write_csv(tmp_path / "test.csv", rows=20)
    monkeypatch.chdir(tmp_path)
    config = TrainConfig(dataset="csv", data_path="train.csv", data_options={"test_path": "test.csv"}, **TINY)
    run_dir = train_run(config, tmp_path / "run", progress=False).path
    paths = [r["path"] for r in json.loads((run_dir / "manifest.json").read_text())["data_files"]]
    assert paths == [str(train_file), str(test_file)]
    cached = cached_retrain(open_run(run_dir), np.array([1, 2]))
    entries = sorted((run_dir / "retrain").iterdir())
    original = test_file.read_bytes()
    flip_one_byte(test_file)
    with pytest.raises(RunDirError, match="changed since training"):
        cached_retrain(open_run(run_dir), np.array([1, 2]))
    assert sorted((run_dir / "retrain").iterdir()) == entries  # refused, not treated as a damaged entry
    test_file.write_bytes(original)
    assert np.array_equal(cached_retrain(open_run(run_dir), np.array([1, 2])).numpy(), cached.numpy())

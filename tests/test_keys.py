"""The users' own keys: a CSV key column (or row numbers, or a LIBSVM key file) recorded at
training, exported by ``miniunlearn ids`` and used by ``forget --keys``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.cli import main
from miniunlearn.data import load_dataset
from miniunlearn.errors import DataCorruptError, RunDirError
from miniunlearn.ledger import Ledger
from miniunlearn.training import TrainConfig, open_run, train_run

ROWS = 300
TINY = {"epochs": 5, "lr": 0.5, "lam": 0.01, "history": "mini", "checkpoints": 2}


def customer_rows(rows: int = ROWS) -> list[list[str]]:
    """``rows`` data rows: a customer key, three features and a two-class label."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(rows):
        x = rng.normal(size=3)
        out.append([f"cust-{1000 + 7 * i}", *(f"{v:.4f}" for v in x), str(int(x[0] + x[1] > 0))])
    return out


def write_customers(path: Path, rows: list[list[str]]) -> Path:
    """A CSV with a header and the key column first."""
    path.write_text("\n".join(",".join(r) for r in [["customer", "a", "b", "c", "label"], *rows]) + "\n")
    return path


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[str]]]:
    """A run trained by the command line on a 300-row CSV keyed by its ``customer`` column."""
    root = tmp_path_factory.mktemp("keyed")
    rows = customer_rows()
    data = write_customers(root / "customers.csv", rows)
    argv = [
        "-q",
        "train",
        "--dataset",
        "csv",
        "--data-path",
        str(data),
        "--data-option",
        "id_column=customer",
    ]
    assert main([*argv, "--out", str(root / "run"), "--epochs", "5", "--lam", "0.01", "--lr", "0.5"]) == 0
    return root / "run", rows


@pytest.fixture
def run_dir(keyed: tuple[Path, list[list[str]]], tmp_path: Path) -> Path:
    """A fresh copy of the keyed run (its ledger empty), for a test that changes it."""
    return Path(shutil.copytree(keyed[0], tmp_path / "run"))


def mapping(run_dir: Path, out: Path) -> list[dict[str, str]]:
    """The rows of ``miniunlearn ids RUN --out FILE``."""
    assert main(["ids", str(run_dir), "--out", str(out)]) == 0
    with out.open(newline="") as handle:
        return list(csv.DictReader(handle))


def keys_file(path: Path, keys: list[str]) -> str:
    path.write_text("\n".join(keys) + "\n")
    return str(path)


def test_every_training_key_maps_to_its_own_sample_and_test_keys_are_marked(
    keyed: tuple[Path, list[list[str]]], tmp_path: Path
) -> None:
    run_dir, rows = keyed
    table = mapping(run_dir, tmp_path / "map.csv")
    assert [r["key"] for r in table] != [] and set(table[0]) == {"key", "sample_id", "split"}
    train = [r for r in table if r["split"] == "train"]
    test = [r for r in table if r["split"] == "test"]
    run = open_run(run_dir)
    assert len(train) == run.n_train == 240 and len(test) == 60 and len(table) == ROWS
    assert sorted(int(r["sample_id"]) for r in train) == list(range(run.n_train))  # distinct, all of them
    assert all(r["sample_id"] == "" for r in test)
    assert {r["key"] for r in table} == {row[0] for row in rows}
    by_key = {row[0]: row for row in rows}
    x = run.dataset.x_train
    for r in train[::17]:  # the sample id really is that customer's row: same features
        want = np.asarray(by_key[r["key"]][1:4], dtype=np.float32)
        assert np.array_equal(x[int(r["sample_id"])], want)
    assert run.dataset.n_features == 3  # the key column is not a feature
    split = {r["key"]: r["split"] for r in table}
    assert (split["cust-1035"], split["cust-1126"]) == ("train", "test")  # the README's example


def test_ids_prints_csv_and_json(
    keyed: tuple[Path, list[list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, _ = keyed
    assert main(["ids", str(run_dir)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "key,sample_id,split" and len(lines) == ROWS + 1
    assert "240 training keys" in captured.err and "60 test-split keys" in captured.err
    assert main(["ids", str(run_dir), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_train"] == 240 and report["n_test"] == 60 and "customer" in report["keys"]
    assert sum(1 for m in report["mapping"] if m["split"] == "test" and m["sample_id"] is None) == 60


def test_forget_keys_forgets_exactly_their_ids_and_skips_a_test_split_key(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = mapping(run_dir, tmp_path / "map.csv")
    train = [r for r in table if r["split"] == "train"]
    chosen = [train[3], train[100], train[-1]]
    test_key = next(r["key"] for r in table if r["split"] == "test")
    request = keys_file(
        tmp_path / "keys.txt", [chosen[0]["key"], test_key, chosen[1]["key"], chosen[2]["key"]]
    )
    capsys.readouterr()
    argv = ["-q", "forget", str(run_dir), "--keys", request, "--method", "retrain", "--request-id", "t-1"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "1 key(s) are in the test split: those rows were never trained on" in err and test_key in err
    with Ledger.open(run_dir) as ledger:
        assert np.array_equal(ledger.forgotten_ids(), np.sort([int(r["sample_id"]) for r in chosen]))
        assert [e.state for e in ledger.entries()] == ["done"]


def test_a_request_of_test_split_keys_only_records_nothing(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    test_keys = [r["key"] for r in mapping(run_dir, tmp_path / "map.csv") if r["split"] == "test"][:2]
    assert main(["-q", "forget", str(run_dir), "--keys", keys_file(tmp_path / "k", test_keys)]) == 0
    err = capsys.readouterr().err
    assert "2 key(s) are in the test split" in err and "no request was recorded" in err
    assert main(["-q", "forget", str(run_dir), "--keys", keys_file(tmp_path / "k", test_keys), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "status": "not-trained",
        "test_keys": test_keys,
        "unused_keys": [],
    }
    with Ledger.open(run_dir) as ledger:
        assert ledger.entries() == []
    assert not (run_dir / "versions").exists() or not list((run_dir / "versions").iterdir())


def test_an_unknown_key_is_refused_with_exit_2_and_recorded(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    known = mapping(run_dir, tmp_path / "map.csv")[0]["key"]
    request = keys_file(tmp_path / "k", [known, "cust-nobody"])
    assert main(["-q", "forget", str(run_dir), "--keys", request, "--request-id", "bad-1"]) == 2
    err = capsys.readouterr().err
    assert "1 key(s) are not keys of this run's data" in err and "'cust-nobody'" in err
    with Ledger.open(run_dir) as ledger:
        entry = ledger.get("bad-1")
        assert entry is not None and entry.state == "refused" and ledger.forgotten_ids().size == 0
    many = keys_file(tmp_path / "k", [f"nobody-{i}" for i in range(7)])
    assert main(["-q", "forget", str(run_dir), "--keys", many]) == 2
    err = capsys.readouterr().err
    assert "7 key(s) are not keys" in err and "'nobody-4' ... (2 more)" in err and "nobody-5" not in err


def test_keys_cannot_be_combined_with_ids_or_ratio(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "forget", str(run_dir), "--keys", "k", "--ratio", "0.1"]) == 2
    assert "not both --keys and --ratio" in capsys.readouterr().err


def test_a_duplicate_key_is_refused_at_training_with_its_line_numbers(tmp_path: Path) -> None:
    rows = customer_rows(40)
    rows[30][0] = rows[5][0]  # data rows 5 and 30: file lines 7 and 32 (the header is line 1)
    data = write_customers(tmp_path / "dup.csv", rows)
    config = TrainConfig(dataset="csv", data_path=str(data), data_options={"id_column": "customer"}, **TINY)
    with pytest.raises(DataCorruptError, match=r"'cust-1035' on line 7, line 32"):
        train_run(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_without_an_id_column_the_last_row_is_addressable_by_its_row_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [r[1:] for r in customer_rows()]  # no key column
    data = tmp_path / "plain.csv"
    data.write_text("\n".join(",".join(r) for r in [["a", "b", "c", "label"], *rows]) + "\n")
    run = train_run(TrainConfig(dataset="csv", data_path=str(data), **TINY), tmp_path / "run", progress=False)
    table = {r["key"]: r for r in mapping(run.path, tmp_path / "map.csv")}
    assert set(table) == {str(i) for i in range(ROWS)}
    last = table["299"]
    assert last["split"] == "train"  # the fixed split of this file keeps it for training
    assert np.array_equal(run.dataset.x_train[int(last["sample_id"])], np.asarray(rows[299][:3], np.float32))
    request = keys_file(tmp_path / "k", ["299", "0299", "row 299"])
    assert main(["-q", "forget", str(run.path), "--keys", request, "--method", "retrain"]) == 2
    assert "2 key(s) are not keys of this run's data" in capsys.readouterr().err  # row keys are plain numbers
    assert (
        main(
            [
                "-q",
                "forget",
                str(run.path),
                "--keys",
                keys_file(tmp_path / "k", ["299"]),
                "--method",
                "retrain",
            ]
        )
        == 0
    )
    with Ledger.open(run.path) as ledger:
        assert ledger.forgotten_ids().tolist() == [int(last["sample_id"])]
    assert sum(r["split"] == "test" and r["sample_id"] == "" for r in table.values()) == 60


def test_libsvm_key_file_must_have_one_line_per_data_row(tmp_path: Path) -> None:
    data = tmp_path / "d.svm"
    data.write_text("".join(f"{i % 2} 1:{i / 10:.2f} 2:{(i % 7) / 3:.3f}\n" for i in range(50)))
    short = tmp_path / "short.keys"
    short.write_text("".join(f"k{i}\n" for i in range(49)))
    with pytest.raises(DataCorruptError, match="has 49 lines but .* has 50 data rows"):
        load_dataset("libsvm", path=data, key_file=short)
    good = tmp_path / "good.keys"
    good.write_text("".join(f"k{i}\n" for i in range(50)))
    d = load_dataset("libsvm", path=data, key_file=good)
    assert d.keys is not None
    assert sorted(d.keys.train.tolist() + d.keys.test.tolist(), key=lambda k: int(k[1:])) == [
        f"k{i}" for i in range(50)
    ]


def test_a_libsvm_key_file_is_recorded_and_hashed_like_the_data(tmp_path: Path) -> None:
    data = tmp_path / "d.svm"
    data.write_text("".join(f"{i % 2} 1:{i / 10:.2f} 2:{(i % 7) / 3:.3f}\n" for i in range(50)))
    keys = tmp_path / "d.keys"
    keys.write_text("".join(f"k{i}\n" for i in range(50)))
    config = TrainConfig(dataset="libsvm", data_path=str(data), data_options={"key_file": str(keys)}, **TINY)
    run = train_run(config, tmp_path / "run", progress=False)
    assert str(keys) in [f["path"] for f in run.manifest["data_files"]]
    assert run.sample_keys().lookup(["k0", "k49"]).unknown == []
    keys.write_text("".join(f"x{i}\n" for i in range(50)))
    with pytest.raises(RunDirError, match="changed since training"):
        _ = open_run(run.path).dataset


def test_streamed_csv_gives_the_same_keys_as_the_in_memory_parse(tmp_path: Path, monkeypatch) -> None:
    from miniunlearn.data import blocks, streamed

    data = write_customers(tmp_path / "c.csv", customer_rows())
    want = load_dataset("csv", path=data, id_column="customer")
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(streamed, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2_000)  # many blocks
    got = load_dataset("csv", path=data, id_column="customer")
    assert [
        p.name.startswith("csv-") for p in (tmp_path / "cache" / "userfiles").iterdir() if p.is_dir()
    ] == [True]
    assert got.keys is not None and want.keys is not None
    for group in ("train", "test", "unused"):
        assert np.array_equal(getattr(got.keys, group), getattr(want.keys, group))
    assert np.array_equal(got.x_train, want.x_train)
    plain = load_dataset("csv", path=write_customers(tmp_path / "d.csv", customer_rows()), id_column=0)
    assert np.array_equal(plain.keys.train, want.keys.train)  # by index, streamed too


def test_a_run_trained_before_keys_were_recorded_says_so(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["files"] = [f for f in manifest["files"] if f["role"] != "keys"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    (run_dir / "keys.npz").unlink()
    assert main(["ids", str(run_dir)]) == 2
    assert "trained before keys were recorded; use sample ids" in capsys.readouterr().err
    assert main(["-q", "forget", str(run_dir), "--keys", keys_file(tmp_path / "k", ["cust-1000"])]) == 2
    assert "trained before keys were recorded; use sample ids" in capsys.readouterr().err


def test_keys_of_rows_a_subset_left_out_are_reported_as_never_trained_on(tmp_path: Path) -> None:
    from miniunlearn.deletion.workflow import forget_keys

    config = TrainConfig(dataset="digits", n_train=100, **TINY)
    run = train_run(config, tmp_path / "run", progress=False)
    keys = run.sample_keys()
    assert keys.train.shape[0] == 100 and keys.unused.shape[0] == 1437 - 100 and keys.test.shape[0] == 0
    left_out = str(int(keys.unused[0]))
    outcome = forget_keys(run.path, [left_out])
    assert outcome.outcome is None and outcome.unused_keys == [left_out]
    assert "this run's training subset left out" in outcome.messages[0]
    kept = forget_keys(run.path, [str(int(keys.train[7]))], method="retrain")
    assert kept.outcome is not None and kept.outcome.status == "done" and kept.ids.tolist() == [7]

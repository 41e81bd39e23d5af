"""Large-data loading: synthetic HIGGS/Covtype sets and streamed CSV/LIBSVM parsing into the cache."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.data import blocks, chunked, csvstream, load_dataset, store, streamed, svmstream
from miniunlearn.data.npyfile import NpyWriter, read_rows
from miniunlearn.data.splits import standardize
from miniunlearn.data.synthetic import RECIPES, UNIT_ROWS, build_synthetic, generate_rows
from miniunlearn.errors import ConfigError, DataCorruptError

ROWS = 50_000


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(root))
    store.forget_verified()
    return root


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit-for-bit equality (also tells -0.0 from 0.0)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def same_dataset(a, b) -> bool:
    return a.n_classes == b.n_classes and all(
        same(getattr(a, f), getattr(b, f)) for f in ("x_train", "y_train", "x_test", "y_test")
    )


# ----------------------------------------------------------------------------- synthetic sets


def test_full_size_shapes_follow_the_real_sets():
    higgs, cov = RECIPES["synthetic-higgs"], RECIPES["synthetic-covtype"]
    assert higgs.split(11_000_000) == (10_500_000, 500_000)
    assert (higgs.n_features, higgs.n_classes) == (28, 2)
    assert 10_500_000 * 28 * 4 == 1_176_000_000  # float32 train features: 1.18 GB
    assert cov.split(581_012) == (464_809, 116_203)
    assert (cov.n_features, cov.n_classes) == (54, 7)
    assert higgs.split(ROWS) == (47_727, 2_273) and cov.split(ROWS) == (40_000, 10_000)
    assert higgs.split(2) == (1, 1)


@pytest.mark.parametrize("name", ["synthetic-higgs", "synthetic-covtype"])
def test_small_synthetic_set_has_the_documented_layout(name):
    d = load_dataset(name, rows=ROWS)
    recipe = RECIPES[name]
    n_train, n_test = recipe.split(ROWS)
    assert d.name == name and d.n_classes == recipe.n_classes
    assert d.x_train.shape == (n_train, recipe.n_features) and d.x_test.shape == (n_test, recipe.n_features)
    assert isinstance(d.x_train, np.memmap) and not d.x_train.flags.writeable
    assert np.isfinite(d.x_train).all()
    priors = np.bincount(d.y_train, minlength=d.n_classes) / d.n_train
    if name == "synthetic-higgs":
        assert 0.51 < priors[1] < 0.55
    else:
        assert priors[0] + priors[1] > 0.8 and priors[1] > priors[0] > 0.3  # two dominant classes
        assert np.all(priors > 0.002)
        x = np.asarray(d.x_train)
        assert np.all(x[:, 10:14].sum(axis=1) == 1) and np.all(x[:, 14:54].sum(axis=1) == 1)
        assert set(np.unique(x[:, 10:])) == {0.0, 1.0}


def test_same_seed_same_arrays_other_seed_other_arrays(tmp_path, monkeypatch):
    a = load_dataset("synthetic-higgs", rows=20_000, seed=3)
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(tmp_path / "other"))
    b = load_dataset("synthetic-higgs", rows=20_000, seed=3)  # generated afresh
    assert same_dataset(a, b)
    c = load_dataset("synthetic-higgs", rows=20_000, seed=4)
    assert not np.array_equal(a.x_train, c.x_train) and not np.array_equal(a.y_train, c.y_train)


def test_generation_does_not_depend_on_the_chunk_size(tmp_path):
    rows = UNIT_ROWS + 1234
    digests = []
    for chunk in (UNIT_ROWS, 50_001, rows):
        out = tmp_path / f"chunk{chunk}"
        out.mkdir()
        build_synthetic(out, "synthetic-covtype", 5, rows, chunk_rows=chunk)
        digests.append({f: (out / f).read_bytes() for f in ("x_train.npy", "y_train.npy", "x_test.npy")})
    assert all(d == digests[0] for d in digests[1:])
    x, y = generate_rows("synthetic-covtype", 5, 0, rows)
    part_x, part_y = generate_rows("synthetic-covtype", 5, 60_000, 66_001)  # straddles a unit boundary
    assert same(part_x, x[60_000:66_001]) and same(part_y, y[60_000:66_001])
    small = load_dataset("synthetic-covtype", rows=30_000, seed=5)  # a prefix of the same stream
    assert same(np.concatenate([small.x_train, small.x_test]), x[:30_000])


def test_logistic_regression_accuracy_is_realistic():
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    bands = {"synthetic-higgs": (0.60, 0.70), "synthetic-covtype": (0.65, 0.75)}
    for name, (low, high) in bands.items():
        d = load_dataset(name, rows=ROWS)
        mean, std = d.x_train.mean(axis=0), d.x_train.std(axis=0) + 1e-6
        with threadpool_limits(1):  # BLAS threads fight over 2 busy cores: 20x slower
            model = LogisticRegression(max_iter=500).fit((d.x_train - mean) / std, d.y_train)
        accuracy = model.score((d.x_test - mean) / std, d.y_test)
        assert low < accuracy < high, (name, accuracy)


def test_flipped_byte_is_detected_and_the_entry_rebuilt(cache):
    d = load_dataset("synthetic-higgs", rows=5_000)
    good = np.array(d.x_train)
    entry = cache / "synthetic" / "synthetic-higgs-seed0-rows5000"
    target = entry / "x_train.npy"
    with open(target, "r+b") as handle:
        handle.seek(4_000)
        byte = handle.read(1)
        handle.seek(4_000)
        handle.write(bytes([byte[0] ^ 0x01]))
    store.forget_verified()  # as in a new process: every file is hashed once
    with pytest.warns(UserWarning, match="does not match its recorded sha256"):
        again = load_dataset("synthetic-higgs", rows=5_000)
    assert same(np.asarray(again.x_train), good)
    meta = json.loads((entry / "meta.json").read_text())
    from miniunlearn.fileio import sha256_file

    assert sha256_file(target) == meta["files"]["x_train.npy"]["sha256"]
    with open(entry / "y_test.npy", "ab") as handle:  # a size change is caught even without hashing
        handle.write(b"\0")
    with pytest.warns(UserWarning, match="y_test.npy has"):
        load_dataset("synthetic-higgs", rows=5_000)
    (entry / "meta.json").write_text("{}")
    with pytest.warns(UserWarning, match="unknown format"):
        load_dataset("synthetic-higgs", rows=5_000)


BAD_OPTIONS = [{"rows": 1}, {"rows": 11_000_001}, {"rows": 2.5}, {"seed": -1}, {"seed": "a"}, {"seed": True}]


def test_synthetic_options_are_checked():
    for bad in BAD_OPTIONS:
        with pytest.raises(ConfigError):
            load_dataset("synthetic-higgs", **bad)
    with pytest.raises(ConfigError, match="accepted: seed, rows, standardize"):
        load_dataset("synthetic-covtype", label_column=0)
    with pytest.raises(ConfigError, match="standardize must be true or false"):
        load_dataset("synthetic-covtype", rows=1000, standardize="yes")
    with pytest.raises(ConfigError, match="--data-path"):
        load_dataset("synthetic-covtype", path="x.csv")


# ----------------------------------------------------------------------------- chunked steps


@pytest.mark.parametrize("d", [1, 2, 5])
def test_chunked_standardisation_is_bit_identical(tmp_path, monkeypatch, d):
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 8 * 2 * d * 37)  # blocks of 37 rows
    rng = np.random.default_rng(d)
    x_train = (rng.standard_normal((1_001, d)) * 5 + 3).astype(np.float32)
    x_test = (rng.standard_normal((203, d)) * 5 + 3).astype(np.float32)
    x_train[:, 0] = 2.0  # a constant column: std 0 is treated as 1
    for name, x in (("a.npy", x_train), ("b.npy", x_test)):
        with NpyWriter(tmp_path / name, np.float32, (d,)) as writer:
            for start in range(0, len(x), 100):
                writer.append(x[start : start + 100])
    assert same(np.load(tmp_path / "a.npy"), x_train)
    chunked.standardize_files(tmp_path / "a.npy", tmp_path / "b.npy")
    want_train, want_test = standardize(x_train, x_test)
    assert same(read_rows(tmp_path / "a.npy", 0, 10**9), want_train)
    assert same(np.load(tmp_path / "b.npy"), want_test)


# ----------------------------------------------------------------------------- streamed CSV


def _csv_text(rng: np.random.Generator, n: int, text_labels: bool = False) -> str:
    x = rng.standard_normal((n, 4)) * 10.0 ** rng.integers(-3, 4, (n, 4))
    y = rng.integers(0, 3, n)
    labels = np.array(["cat", "dog", "eel"])[y] if text_labels else np.array(["1", "1.0", "7"])[y]
    lines = []
    for i in range(n):
        fields = [f"{x[i, 0]:.9g}", repr(float(x[i, 1])), f"{x[i, 2]:.3e}", labels[i], f"{x[i, 3]:.17g}"]
        lines.append(",".join(fields) + ("\n\n" if i % 97 == 5 else "\n"))  # some blank lines
    return "".join(lines)


def _in_memory(monkeypatch, name, path, **opts):
    monkeypatch.setattr(streamed, "STREAM_MIN_BYTES", 1 << 60)
    return load_dataset(name, path=path, **opts)


def _streamed(monkeypatch, name, path, **opts):
    monkeypatch.setattr(streamed, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2_000)  # many blocks
    return load_dataset(name, path=path, **opts)


@pytest.mark.parametrize("standardize_", [False, True])
def test_streamed_csv_equals_the_in_memory_parse(tmp_path, monkeypatch, standardize_):
    rng = np.random.default_rng(0)
    plain = tmp_path / "data.csv"
    plain.write_text("a,b,c,label,d\n" + _csv_text(rng, 3_000))
    opts = {"label_column": 3, "standardize": standardize_}
    want = _in_memory(monkeypatch, "csv", plain, **opts)
    assert not isinstance(want.x_train, np.memmap) and want.n_classes == 2  # "1" and "1.0" are one class
    for path in (plain, tmp_path / "data.csv.gz", tmp_path / "data.csv.bz2", tmp_path / "data.csv.xz"):
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix)
        if opener is not None:
            with opener(path, "wb") as handle:
                handle.write(plain.read_bytes())
        got = _streamed(monkeypatch, "csv", path, **opts)
        assert isinstance(got.x_train, np.memmap)
        assert same_dataset(got, want), path.name


def test_streamed_csv_with_text_labels_late_and_a_test_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    numeric_start = _csv_text(rng, 500).replace(",7,", ",1,")  # numbers first ...
    train.write_text(numeric_start + _csv_text(rng, 500, text_labels=True))  # ... then words
    test.write_text(_csv_text(rng, 300, text_labels=True))
    opts = {"label_column": -2, "test_path": str(test), "standardize": True}
    want = _in_memory(monkeypatch, "csv", train, **opts)
    got = _streamed(monkeypatch, "csv", train, **opts)
    assert want.n_classes == 5 and same_dataset(got, want)


def test_second_load_reads_the_cache_and_a_changed_file_makes_a_new_entry(tmp_path, monkeypatch, cache):
    path = tmp_path / "data.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(_csv_text(np.random.default_rng(2), 1_000))
    first = _streamed(monkeypatch, "csv", path, label_column=3)

    def no_parsing(*args, **kwargs):
        raise AssertionError("parsed again")

    monkeypatch.setattr(csvstream, "parse_csv_file", no_parsing)
    store.forget_verified()
    assert same_dataset(load_dataset("csv", path=path, label_column=3), first)
    assert len(list((cache / "userfiles").glob("csv-*"))) == 1
    replacement = tmp_path / "new.csv.gz"
    with gzip.open(replacement, "wt") as handle:
        handle.write(_csv_text(np.random.default_rng(3), 1_000))
    replacement.replace(path)
    with pytest.raises(AssertionError, match="parsed again"):
        load_dataset("csv", path=path, label_column=3)
    monkeypatch.undo()
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(cache))
    second = _streamed(monkeypatch, "csv", path, label_column=3)
    assert not np.array_equal(second.x_train, first.x_train)
    assert len(list((cache / "userfiles").glob("csv-*"))) == 2


def test_malformed_csv_line_deep_in_a_compressed_file_is_named(tmp_path, monkeypatch):
    lines = _csv_text(np.random.default_rng(4), 5_000).replace("\n\n", "\n").splitlines(keepends=True)
    lines[4_321] = "1.0,2.0,oops,1,3.0\n"
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.writelines(lines)
    with pytest.raises(DataCorruptError, match=r"bad\.csv\.gz: line 4322: cannot parse"):
        _streamed(monkeypatch, "csv", path, label_column=3)
    lines[4_321] = "1.0,2.0,inf,1,3.0\n"
    with gzip.open(path, "wt") as handle:
        handle.writelines(lines)
    with pytest.raises(DataCorruptError, match="non-finite feature value in data row 4322"):
        _streamed(monkeypatch, "csv", path, label_column=3)


# ----------------------------------------------------------------------------- streamed LIBSVM


def _svm_text(rng: np.random.Generator, n: int, width: int = 12, zero_based: bool = False) -> str:
    lines = ["# made by the tests\n"]
    for i in range(n):
        keep = np.flatnonzero(rng.random(width) < 0.4) + (0 if zero_based else 1)
        values = rng.standard_normal(keep.size) * 10.0 ** rng.integers(-4, 4, keep.size)
        label = ("+1", "-1", "3")[i % 3]
        qid = " qid:7" if i % 11 == 0 else ""
        feats = " ".join(f"{k}:{v:.8g}" for k, v in zip(keep, values, strict=True))
        comment = "  # a comment 1:2" if i % 13 == 0 else ""
        lines.append(f"{label}{qid} {feats}{comment}\n" + ("\n" if i % 17 == 0 else ""))
    return "".join(lines)


@pytest.mark.parametrize(
    "opts", [{}, {"standardize": True}, {"n_features": 20}, {"zero_based": True}, {"test": True}]
)
def test_streamed_libsvm_equals_the_in_memory_parse(tmp_path, monkeypatch, opts):
    opts = dict(opts)
    rng = np.random.default_rng(5)
    zero_based, with_test = opts.pop("zero_based", False), opts.pop("test", False)
    plain = tmp_path / "data.svm"
    plain.write_text(_svm_text(rng, 2_000, zero_based=zero_based))
    if with_test:
        test = tmp_path / "test.svm"
        test.write_text(_svm_text(rng, 400, width=15))  # reaches further than the train file
        opts["test_path"] = str(test)
    want = _in_memory(monkeypatch, "libsvm", plain, **opts)
    assert want.n_classes == 3
    for path in (plain, tmp_path / "data.svm.bz2", tmp_path / "data.svm.xz"):
        opener = {".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix)
        if opener is not None:
            with opener(path, "wb") as handle:
                handle.write(plain.read_bytes())
        got = _streamed(monkeypatch, "libsvm", path, **opts)
        assert isinstance(got.x_train, np.memmap) and same_dataset(got, want), path.name


def test_libsvm_fast_and_line_by_line_parsers_agree():
    from miniunlearn.data.svmparse import _fast, parse_lines

    text = _svm_text(np.random.default_rng(6), 500).encode() + b"2 qid:1 1:1_0 2:nan\n-0 -0:5 +3:.5e1\n"
    fast = _fast(text[: text.index(b"2 qid:1 1:1_0")])
    slow = parse_lines(text[: text.index(b"2 qid:1 1:1_0")], 1, "x")
    assert fast is not None
    for field in ("labels", "counts", "indices", "values"):
        assert same(getattr(fast, field), getattr(slow, field))
    assert _fast(text) is None  # 1_0 is Python's business: parsed line by line
    rows = parse_lines(text, 1, "x")
    assert rows.values[-4] == 10.0 and np.isnan(rows.values[-3]) and rows.indices[-2:].tolist() == [0, 3]


def test_libsvm_second_load_reads_the_cache(tmp_path, monkeypatch):
    path = tmp_path / "data.svm.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(_svm_text(np.random.default_rng(7), 800))
    first = load_dataset("libsvm", path=path)
    monkeypatch.setattr(svmstream, "spill_file", lambda *a, **k: pytest.fail("parsed again"))
    store.forget_verified()
    assert same_dataset(load_dataset("libsvm", path=path), first)


@pytest.mark.parametrize(
    ("bad_line", "why"),
    [("1 3:abc\n", "is not <index>:<value>"), ("1 4:1 2:1\n", "sorted and unique"), ("x 1:1\n", "label")],
)
def test_malformed_libsvm_line_deep_in_a_compressed_file_is_named(tmp_path, monkeypatch, bad_line, why):
    lines = _svm_text(np.random.default_rng(8), 6_000).splitlines(keepends=True)
    lines[5_000] = bad_line
    path = tmp_path / "bad.svm.bz2"
    with bz2.open(path, "wt") as handle:
        handle.writelines(lines)
    with pytest.raises(DataCorruptError, match=rf"bad\.svm\.bz2: line 5001: .*{why}"):
        _streamed(monkeypatch, "libsvm", path)


def test_standardised_synthetic_data_has_train_statistics_zero_and_one(cache):
    raw = load_dataset("synthetic-higgs", rows=20_000)
    std = load_dataset("synthetic-higgs", rows=20_000, standardize=True)
    assert abs(raw.x_train.mean(0)).max() > 0.5  # momenta are positive: the raw set is not centred
    assert np.allclose(std.x_train.mean(0), 0.0, atol=1e-4) and np.allclose(
        std.x_train.std(0), 1.0, atol=1e-3
    )
    mean, scale = raw.x_train.mean(0, dtype=np.float64), raw.x_train.std(0, dtype=np.float64)
    assert np.allclose(std.x_test, (raw.x_test - mean) / scale, atol=1e-4)  # the test split uses train stats
    assert np.array_equal(std.y_train, raw.y_train)

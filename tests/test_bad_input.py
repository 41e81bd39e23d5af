"""Hostile input on the command line: refused with exit 2 and a message, never a crash or a hang."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import miniunlearn.methods as methods
from miniunlearn.cli import main
from miniunlearn.methods import base
from miniunlearn.methods.base import MethodError, UnlearningMethod, UnlearnRequest

TRAIN = ["-q", "train", "--dataset", "digits", "--epochs", "20", "--lr", "1.0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained digits run."""
    out = tmp_path_factory.mktemp("bad-input") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command line in-process; assert it exits 2 without a traceback; return stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "internal error" not in err and "Traceback" not in err
    return err


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--model", "mlp", "--hidden", "-4"], "--hidden) must be positive integers"),
        (["--seed", "100000000000000000000"], "--seed must be an integer in 0..4294967295"),
        (["--seed", "-1"], "--seed must be an integer in 0..4294967295"),
        (["--checkpoints", "1000000"], "--checkpoints, k) must be in 1..64"),
        (["--epochs", "100000000000"], "--epochs) must be in 1..1,000,000"),
        (["--data-option", "path=customers.csv"], "give it with --data-path FILE"),
        (["--model", "mlp", "--momentum", "1.5"], "momentum (--momentum) must be in [0, 1)"),
        (["--momentum", "0.9"], "momentum is for networks"),
        (["--exact-curvature-dim", "-1"], "--exact-curvature-dim must be >= 0"),
    ],
)
def test_train_refuses_out_of_range_settings_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    out = tmp_path / "run"
    err = refused([*TRAIN, *flags, "--out", str(out)], capsys)
    assert expected in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["forget", "evaluate", "audit"])
def test_a_negative_seed_is_refused_by_every_command(
    run_dir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    extra = {"forget": ["--ratio", "0.01"], "evaluate": [], "audit": ["--request", "r1"]}[command]
    err = refused(["-q", command, str(run_dir), *extra, "--seed", "-1"], capsys)
    assert "--seed must be an integer in 0..4294967295 (2**32 - 1), got -1" in err


def test_evaluate_refuses_a_ulira_pool_larger_than_the_training_set(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from miniunlearn.training import open_run

    n_train = open_run(run_dir, verify_hashes=False).n_train
    err = refused(["-q", "evaluate", str(run_dir), "--attacks", "ulira", "--ulira-pool", "100000"], capsys)
    assert f"--ulira-pool 100000 is larger than the training set ({n_train} samples)" in err
    assert f"20..{n_train}" in err
    assert not (run_dir / "shadows").exists()


BENCH = ["-q", "bench", "--dataset", "digits", "--ratios", "0.1", "--methods", "retrain,mini", "--seeds", "1"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--json", "{tmp}"], "is a folder; give the path of a file"),
        (["--plots", "{tmp}/a-file"], "is a file; give the path of a folder"),
        (["--json", "{tmp}/a-file/records.json"], "is not a writable folder"),
        (["--ratios", ""], "give at least one unlearning ratio"),
        (["--methods", ""], "give at least one method"),
        (["-o", "zzz:x=1"], "options given for method(s) ['zzz'] that are not in the sweep"),
        (["-o", "mini:no_such_option=1"], "has no option(s) ['no_such_option']"),
        (["--jobs", "100000"], "--jobs must be in 1..256"),
        (["--threads", "100000"], "--threads must be in 1..256"),
        (["--attacks", "ulira", "--ulira-shadows", "100000000"], "--ulira-shadows must be in 2..1000"),
        (["--seeds", "100000000"], "--seeds must be in 1..1000"),
        (["--data-option", "path=customers.csv"], "give it with --data-path FILE"),
        (["--attacks", "ulira", "--ulira-pool", "100000"], "is larger than the training set"),
    ],
)
def test_bench_refuses_bad_settings_before_the_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], expected: str
) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    runs = tmp_path / "runs"
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    err = refused([*BENCH, "--runs-dir", str(runs), *flags], capsys)
    assert expected in err
    assert not runs.exists()  # nothing was trained


def write_csv(path: Path, rows: int = 200) -> Path:
    """A two-class CSV file with a header, four features and the label last."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    rows_text = [",".join(f"{v:.4f}" for v in row) + f",{label}" for row, label in zip(x, y, strict=True)]
    lines = ["a,b,c,d,label", *rows_text]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bench_runs_on_a_user_csv_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "customers.csv")
    out = tmp_path / "records.json"
    argv = ["-q", "bench", "--dataset", "csv", "--data-path", str(data), "--data-option", "standardize=true"]
    argv += ["--ratios", "0.1", "--methods", "retrain,mini", "--seeds", "1", "--epochs", "50"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--json", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    records = json.loads(out.read_text())
    assert sorted(r["method"] for r in records) == ["mini", "retrain"]
    assert all(r["dataset"] == "csv" and r["n_forget"] == round(0.1 * r["n_train"]) for r in records)
    assert all(0.5 < r["test_acc"] <= 1 for r in records)
    assert "| mini |" in capsys.readouterr().out


def test_bench_without_a_data_file_names_the_flag_it_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = refused([*BENCH[:3], "csv", *BENCH[4:], "--runs-dir", str(tmp_path / "runs")], capsys)
    assert "--data-path" in err
    assert "--data-path" in _help(["bench"]) and "--data-option" in _help(["bench"])


def _help(command: list[str]) -> str:
    """The --help text of a subcommand."""
    from miniunlearn.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command[0]].format_help()


# -- Ctrl-C while the command line is being built and parsed ---------------------------------------
@pytest.mark.parametrize("target", ["argparse.ArgumentParser.parse_args", "miniunlearn.cli.build_parser"])
def test_ctrl_c_while_parsing_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], target: str
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    try:
        code = main(["methods"])
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C escaped main(): the console script would print a traceback")
    assert code == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted") and "Traceback" not in err


def test_the_entry_point_module_imports_only_the_standard_library() -> None:
    code = "import sys, miniunlearn.cli; print(sorted({'numpy', 'torch'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- method plugins that misbehave --------------------------------------------------------------------
class Echo(UnlearningMethod):
    """A well-formed plugin method: returns the current model."""

    name = "echo-plugin"
    summary = "returns the current model"

    @dataclasses.dataclass(frozen=True)
    class Options:
        """No options."""

    def _unlearn(self, request: UnlearnRequest) -> tuple[Any, int, dict[str, Any]]:
        return request.start_params(), 0, {}


class NotADataclass(Echo):
    """Options is a plain class."""

    name = "plain-options"

    class Options:  # type: ignore[no-redef]
        """Not a dataclass."""


class NumberName(Echo):
    """Its name is not a string."""

    name = 5  # type: ignore[assignment]


class Exits(Echo):
    """Ends the program from inside the method."""

    name = "exits-plugin"

    def _unlearn(self, request: UnlearnRequest) -> tuple[Any, int, dict[str, Any]]:
        raise SystemExit(0)


@dataclasses.dataclass
class FakeEntry:
    """What importlib.metadata's entry point offers the loader: a name, a value and load()."""

    name: str
    load: Callable[[], Any]
    value: str = "fake_plugin:Thing"


def _raises(exc: BaseException) -> Callable[[], Any]:
    def load() -> Any:
        raise exc

    return load


def _ctrl_c() -> Any:
    signal.raise_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
    return Echo


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[FakeEntry]], None]:
    """Load the given fake plugins into a private copy of the method registry."""
    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    def load(entries: list[FakeEntry]) -> None:
        monkeypatch.setattr(methods, "entry_points", lambda group: entries)
        methods._load_plugins()

    return load


def test_misbehaving_plugins_are_skipped_with_a_warning(
    plugins: Callable[[list[FakeEntry]], None], capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [
        FakeEntry("plain", lambda: NotADataclass),
        FakeEntry("number", lambda: NumberName),
        FakeEntry("exits-at-import", _raises(SystemExit(3))),
        FakeEntry("interrupts-at-import", _raises(KeyboardInterrupt())),
        FakeEntry("good", lambda: Echo),
    ]
    with pytest.warns(UserWarning) as caught:
        plugins(entries)
    warned = "\n".join(str(w.message) for w in caught)
    assert "plugin 'plain'" in warned and "NotADataclass.Options must be a dataclass" in warned
    assert "plugin 'number'" in warned and "NumberName.name must be a non-empty string, got 5" in warned
    assert "plugin 'exits-at-import'" in warned and "SystemExit: 3" in warned
    assert "plugin 'interrupts-at-import'" in warned and "KeyboardInterrupt" in warned
    assert "plugin 'good'" not in warned
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "echo-plugin: returns the current model" in out and "mini:" in out
    assert "plain-options" not in out and "5:" not in out


def test_a_real_ctrl_c_while_plugins_load_still_interrupts(
    plugins: Callable[[list[FakeEntry]], None],
) -> None:
    # Python's own Ctrl-C handler, as in a terminal: a process started in the background by a
    # non-interactive shell inherits SIGINT ignored, where no Ctrl-C could interrupt anything
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            plugins([FakeEntry("slow", _ctrl_c)])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back
    finally:
        signal.signal(signal.SIGINT, inherited)


PLUGIN_MODULE = """
import sys
from dataclasses import dataclass
from miniunlearn.methods.base import UnlearningMethod

class Plain(UnlearningMethod):
    name = "plain-options"
    class Options:
        pass
    def _unlearn(self, request):
        return request.start_params(), 0, {}

if __name__ == "exiting_plugin":
    sys.exit(3)
"""


def test_an_installed_plugin_that_exits_at_import_does_not_stop_the_command(tmp_path: Path) -> None:
    (tmp_path / "plain_plugin.py").write_text(PLUGIN_MODULE)
    (tmp_path / "exiting_plugin.py").write_text(PLUGIN_MODULE)
    info = tmp_path / "bad_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[miniunlearn.methods]\nexiting = exiting_plugin\nplain = plain_plugin:Plain\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from miniunlearn.cli import main; sys.exit(main(['methods']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert "mini:" in done.stdout and "plain-options" not in done.stdout
    assert "plugin 'exiting'" in done.stderr and "SystemExit: 3" in done.stderr
    assert "plugin 'plain'" in done.stderr and "Plain.Options must be a dataclass" in done.stderr


def test_a_method_that_raises_system_exit_fails_the_request(
    plugins: Callable[[list[FakeEntry]], None],
    run_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plugins([FakeEntry("exits", lambda: Exits)])
    from miniunlearn.training import open_run

    with pytest.raises(MethodError, match=r"SystemExit\(0\)"):
        Exits().unlearn(UnlearnRequest(open_run(run_dir), np.array([1, 2])))
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    err = refused(["-q", "forget", str(run), "--ratio", "0.05", "--method", "exits-plugin"], capsys)
    assert "method 'exits-plugin' tried to end the program (SystemExit(0))" in err
    assert main(["ledger", str(run), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["state"] == "failed" and "SystemExit(0)" in entry["reason"]

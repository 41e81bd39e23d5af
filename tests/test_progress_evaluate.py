"""``evaluate`` shows a progress line for each long phase, and none with -q."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from miniunlearn.cli import main
from miniunlearn.deletion import forget
from miniunlearn.training import TrainConfig, train_run

CONFIG = TrainConfig(dataset="digits", epochs=30, lr=1.0, lam=0.02, history="mini", seed=0)
ATTACKS = ["--attacks", "population,ulira", "--ulira-pool", "40", "--ulira-shadows", "2"]
# the label of each phase's bar: retraining, the population attack, the per-example attack's
# shadow models, then its scoring of the method that made the model and of retraining
PHASES = (
    "retrain",
    "population attack",
    "ulira: shadow models",
    "ulira: scoring finetune",
    "ulira: scoring retrain",
)


@pytest.fixture(scope="module")
def served_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run with one request served (its retraining not cached yet)."""
    run = train_run(CONFIG, tmp_path_factory.mktemp("progress") / "run", progress=False)
    forget(run.path, list(range(0, 300, 3)), request_id="r0", method="finetune", options={"steps": 2})
    return run.path


def bar_labels(err: str) -> set[str]:
    """The labels of the progress bars written to ``err`` (a bar line reads 'LABEL:  n%|')."""
    return {m.group(1) for m in re.finditer(r"(?:^|[\r\n])([^\r\n]*?): +\d+%\|", err)}


@pytest.mark.parametrize("quiet", [False, True], ids=["bars", "quiet"])
def test_evaluate_shows_a_bar_per_phase_and_none_with_q(
    served_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], quiet: bool
) -> None:
    run = shutil.copytree(served_run, tmp_path / "run")  # each evaluates from nothing cached
    assert main([*(["-q"] if quiet else []), "evaluate", str(run), *ATTACKS, "--json"]) == 0
    err = capsys.readouterr().err
    if quiet:
        assert bar_labels(err) == set() and "%|" not in err
        assert not any(phase in err for phase in PHASES)
    else:
        assert set(PHASES) <= bar_labels(err), err
        assert err.count("\n") < 40  # a line or two per phase, never one per step

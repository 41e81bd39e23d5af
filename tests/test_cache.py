"""Cache entries (retrained models, optima, method caches) are verified before use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from miniunlearn.fileio import cached
from miniunlearn.ids import ids_digest, random_forget_ids
from miniunlearn.training import cached_retrain, retrain
from miniunlearn.training.retrain import RETRAIN_DIR
from miniunlearn.training.rundir import save_params


def _cache(path: Path, calls: list[int]) -> tuple[str, bool]:
    def compute() -> str:
        calls.append(1)
        return "value"

    return cached(
        path,
        load=lambda p: p.read_text(),
        compute=compute,
        save=lambda v, tmp: tmp.write_text(v),
        damaged=(UnicodeDecodeError,),
    )


def test_an_entry_is_written_with_its_hash_and_reused(tmp_path: Path) -> None:
    calls: list[int] = []
    assert _cache(tmp_path / "entry", calls) == ("value", False)
    assert (tmp_path / "entry.sha256").exists()
    assert _cache(tmp_path / "entry", calls) == ("value", True)
    assert len(calls) == 1


def test_a_changed_or_unverifiable_entry_is_recomputed(tmp_path: Path) -> None:
    calls: list[int] = []
    _cache(tmp_path / "entry", calls)
    (tmp_path / "entry").write_text("valuf")  # one flipped byte that still loads
    assert _cache(tmp_path / "entry", calls) == ("value", False)
    (tmp_path / "entry.sha256").unlink()  # e.g. a crash between the two writes
    assert _cache(tmp_path / "entry", calls) == ("value", False)
    assert len(calls) == 3
    assert (tmp_path / "entry").read_text() == "value"


def test_an_unwritable_cache_only_loses_the_cache(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    calls: list[int] = []
    assert _cache(blocker / "entry", calls) == ("value", False)


def test_a_scaled_retrain_file_is_not_trusted(convex_run) -> None:
    forget = random_forget_ids(convex_run.n_train, 0.1, seed=31)
    good = cached_retrain(convex_run, forget)
    path = convex_run.path / RETRAIN_DIR / f"{ids_digest(forget)}.safetensors"
    save_params(path, convex_run.objective, 2 * good, {"format": "miniunlearn-model"})  # valid, but wrong
    again = cached_retrain(convex_run, forget)
    assert torch.equal(again, good)
    assert torch.equal(again, retrain(convex_run, np.asarray(forget)))

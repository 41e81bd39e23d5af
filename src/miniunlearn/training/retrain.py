"""The retrain oracle: the same training with the forget set removed, cached per forget set.

Cache entries are bound to their run and request. Each entry
``RUN_DIR/retrain/<sha256 of the sorted ids>.safetensors`` carries in its safetensors
metadata the binding of :func:`retrain_binding`: the sha256 of the run's ``config.json``
and original ``model.safetensors`` and of its user data files, all as the run's manifest
records them, the run's ``n_train``, and the sha256 and count of the sorted forget ids.
An entry is reused only when its sidecar hash matches (see :func:`miniunlearn.fileio.cached`),
its recorded binding equals this run's and request's, and, for a non-empty forget set, its
weights are not bit-identical to the original model's. An entry that fails the binding
(copied from another run, renamed from another forget set, the original model planted as
a "retraining", or written by an older version without a binding) is never returned: the
model is retrained and the entry replaced atomically, with a warning naming it.

What the binding does not defend against: it is a public record, not a secret (no HMAC,
no key), so an entry written with a correct binding but wrong weights cannot be told from
a genuine one without retraining. It guards against foreign and misplaced entries; a run
directory writable by someone untrusted is not protected by it (whoever can write
``retrain/`` can as well replace the run's model). When the retrained model must be
trusted whatever the state of the run directory, retrain without the cache
(``Retrain(use_cache=False)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open

from ..errors import MiniUnlearnError, RunDirError
from ..fileio import cached
from ..ids import ids_digest, validate_forget_ids
from ..objective import Objective
from .certified import polish, removal_budget
from .history import read_metadata
from .rundir import MANIFEST, Run, load_params, save_params
from .schedule import make_plan, refilled_plan
from .trainer import train_loop

RETRAIN_DIR = "retrain"
BINDING_FORMAT = "miniunlearn-retrain/1"


class ForeignCacheEntry(MiniUnlearnError):
    """An intact retrain cache entry that was not written for this run and forget set.

    Never escapes :func:`cached_retrain`: the entry is retrained and replaced.
    """


def retrain(
    run: Run, forget_ids: np.ndarray, *, progress: bool = False, batch_order_seed: int | None = None
) -> torch.Tensor:
    """Retrain ``run`` without ``forget_ids``: same init, seed, batch order, schedule and momentum.

    Each original batch loses its forgotten ids and keeps its order; a batch left empty
    is skipped. A run whose config says ``retrain_batches="refill"`` instead runs its recipe
    afresh on the retain set, in batches of the recipe's size (:func:`.schedule.refilled_plan`).
    A certified-removal run then polishes to the perturbed retain optimum
    (:mod:`.certified`). With ``batch_order_seed`` the batches are those the same recipe
    draws with that seed instead (everything else unchanged): another draw of SGD's noise.
    Returns the final flat parameters.
    """
    ids = validate_forget_ids(forget_ids, run.n_train, allow_empty=True)
    mask = np.zeros(run.n_train, dtype=bool)
    mask[ids] = True
    budget = removal_budget(run.config)
    retained = np.flatnonzero(~mask)
    config = run.config
    if batch_order_seed is not None:
        config = dataclasses.replace(config, seed=int(batch_order_seed))
    if config.retrain_batches == "refill":
        plan = refilled_plan(config, retained)
    else:
        plan = run.plan if batch_order_seed is None else make_plan(config, run.n_train)
    return train_loop(
        run.objective,
        run.initial_params(),
        plan,
        forget_mask=mask,
        progress=progress,
        desc="retrain",
        momentum=run.config.momentum,
        finish=None
        if budget is None
        else lambda w: polish(run.objective, w, retained, budget, progress=progress),
    )


def _manifest_sha256(run: Run, role: str) -> str:
    """The sha256 the run's manifest records for its one file of ``role``."""
    rows = run.files(role)
    if len(rows) != 1:
        raise RunDirError(
            f"{run.path / MANIFEST} lists {len(rows)} files of role {role!r}, not one; the run was "
            "altered or not written by this library: train it again with `miniunlearn train`"
        )
    return str(rows[0]["sha256"])


def _data_sha256(run: Run) -> str:
    """The sha256 of the sorted sha256s of the user data files the manifest records (bundled
    datasets record none: the config names them and the data cache checks their hashes)."""
    records = run.manifest.get("data_files", [])
    digests = sorted(str(r.get("sha256")) for r in records if isinstance(r, dict))
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest()


def retrain_binding(run: Run, forget_ids: np.ndarray) -> dict[str, str]:
    """Return the record that binds a retrain cache entry to ``run`` and ``forget_ids``.

    Takes an opened run and a forget set (any order, duplicates ignored). Returns string
    fields: the binding format, the manifest's sha256 of the run's config and original
    model, a sha256 of its user data files' sha256s, ``n_train``, and the sha256 and count
    of the sorted unique ids. Raises RunDirError when the manifest lacks the config or
    model record.
    """
    ids = np.unique(np.asarray(forget_ids, dtype=np.int64))
    return {
        "binding": BINDING_FORMAT,
        "run_config_sha256": _manifest_sha256(run, "config"),
        "run_model_sha256": _manifest_sha256(run, "model"),
        "run_data_sha256": _data_sha256(run),
        "run_n_train": str(run.n_train),
        "ids_sha256": ids_digest(ids),
        "n_ids": str(ids.size),
    }


def recorded_binding(path: Path) -> dict[str, str]:
    """The metadata stored in the safetensors file ``path`` ({} when absent or unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            found = read_metadata(handle.metadata())
    except (SafetensorError, OSError, ValueError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def check_retrain_entry(run: Run, ids: np.ndarray | list[int], path: Path, params: torch.Tensor) -> None:
    """Check that the retrain cache entry at ``path``, holding ``params``, was written for
    ``run`` and the forget set ``ids``.

    Raises ForeignCacheEntry when its recorded binding differs from :func:`retrain_binding`
    (or is missing), or when ``ids`` is non-empty and ``params`` equal the run's original
    model bit for bit: the original model is never a retraining.
    """
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    expected, found = retrain_binding(run, ids), recorded_binding(path)
    wrong = sorted(k for k, v in expected.items() if found.get(k) != v)
    if "binding" in wrong:
        raise ForeignCacheEntry(
            "it records no retrain binding (written by hand, by another program or by a version "
            "before entries were bound)"
            if "binding" not in found
            else f"it records binding format {found['binding']!r}, not {BINDING_FORMAT!r}"
        )
    if wrong:
        raise ForeignCacheEntry(f"it was written for another run or forget set ({', '.join(wrong)} differ)")
    if ids.size and torch.equal(params, run.load_model_params()):
        raise ForeignCacheEntry("it holds the original model, which is never a retraining")


def _load_entry(run: Run, objective: Objective, ids: np.ndarray, path: Path) -> torch.Tensor:
    """Load a retrain cache entry and check its binding (RunDirError when damaged,
    ForeignCacheEntry, with a warning, when written for something else)."""
    params = load_params(path, objective)
    try:
        check_retrain_entry(run, ids, path, params)
    except ForeignCacheEntry as why:
        warnings.warn(
            f"retrain cache entry {path} is not used: {why}; retraining and replacing it", stacklevel=2
        )
        raise
    return params


def _save_entry(run: Run, ids: np.ndarray, w: torch.Tensor, tmp: Path) -> None:
    """Write the retrained parameters ``w`` with their binding to ``tmp``."""
    metadata = {"format": "miniunlearn-model", "version": "retrain", **retrain_binding(run, ids)}
    save_params(tmp, run.objective, w, metadata)


def load_or_retrain(run: Run, forget_ids: np.ndarray, *, progress: bool = False) -> tuple[torch.Tensor, bool]:
    """Return (retrained parameters for ``forget_ids``, whether they came from the cache).

    Reuses RUN_DIR/retrain/<sha256 of the sorted ids>.safetensors only when it is intact and
    bound to this run and forget set (see the module docstring); otherwise retrains and
    writes the entry atomically. Raises RunDirError when the run itself (its data, its
    schedule) no longer matches its manifest.
    """
    ids = validate_forget_ids(forget_ids, run.n_train, allow_empty=True)
    # built first: a run whose data changed is refused here, not mistaken for a damaged entry
    objective = run.objective
    retrain_binding(run, ids)  # a manifest without config/model records is refused before any cache I/O
    return cached(
        run.subdir(RETRAIN_DIR, create=True) / f"{ids_digest(ids)}.safetensors",
        load=lambda path: _load_entry(run, objective, ids, path),
        compute=lambda: retrain(run, ids, progress=progress),
        save=lambda w, tmp: _save_entry(run, ids, w, tmp),
        damaged=(RunDirError,),
        foreign=(ForeignCacheEntry,),
    )


def cached_retrain(run: Run, forget_ids: np.ndarray, *, progress: bool = False) -> torch.Tensor:
    """Return the retrained parameters for ``forget_ids``, computing and caching them once.

    The cache file is RUN_DIR/retrain/<sha256 of the sorted ids>.safetensors, so every
    method compared on the same run and forget set meets the same retrained model. An
    entry is used only when bound to this run and forget set (see the module docstring).
    """
    return load_or_retrain(run, forget_ids, progress=progress)[0]

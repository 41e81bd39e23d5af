"""Training that records history: a new run directory, written whole or not at all.

:func:`train_run` trains a config deterministically, records the history its unlearning
methods need (checkpoints, gradients, a curvature sketch, the schedule), and moves the
complete directory into place with one rename; a training killed midway leaves only a
partial directory, which the next training into the same place removes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.keys import save_keys
from ..device import device_scope, resolve_device
from ..errors import ConfigError, RunDirError
from ..fileio import atomic_write_json, fsync_dir
from ..ledger import Ledger
from ..models import check_replayable
from ..objective import Objective, flatten_params
from .certified import polish, removal_budget
from .config import CONVEX_MODELS, TrainConfig
from .curvature import (
    CURVATURE_FILE,
    EXACT,
    INPUT_SUBSPACE,
    SKETCH,
    Curvature,
    curvature_budget,
    curvature_kind,
    default_rank,
    exact_curvature,
    records_exact,
    save_sketch,
    sketch_hessian,
)
from .history import make_recorder, recording_cost_for
from .input_subspace import input_subspace_curvature, largest_basis, require_linear_logits
from .rundir import (
    CONFIG,
    KEYS,
    MANIFEST,
    MODEL,
    SCHEDULE,
    Run,
    absolute_data_paths,
    data_file_entry,
    load_training_data,
    manifest_entry,
    model_for,
    objective_for,
    open_run,
    save_params,
    user_data_files,
)
from .schedule import RESPONSE_FRACTIONS, REWIND_FRACTIONS, StepPlan, checkpoint_steps, make_plan
from .trainer import train_loop


def train_run(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Run:
    """Train ``config`` on ``device`` and write a complete run directory at ``out_dir``; return
    it opened on that device.

    Raises RunDirError if ``out_dir`` exists already; nothing is written in that case
    (:func:`miniunlearn.experiment.parallel.open_or_train` opens a run trained there before).
    """
    device = resolve_device(device)
    with device_scope(device):
        return _train_run(config, Path(out_dir), progress, device)


def _train_run(config: TrainConfig, out: Path, progress: bool, device: torch.device) -> Run:
    if out.exists():
        raise RunDirError(exists_message(out))
    # absolute paths, so the run opens from any working directory; hashes, so a run is
    # never unlearned or retrained against data other than it was trained on
    config = absolute_data_paths(config)
    data_files = [data_file_entry(p) for p in user_data_files(config) if os.path.isfile(p)]
    dataset = load_training_data(config, keys=True)
    model = model_for(config, dataset, device)
    check_replayable(model)
    objective = objective_for(config, dataset, model)
    plan = make_plan(config, dataset.n_train)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_partials(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    (tmp / PARTIAL_OWNER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    try:
        recorder = make_recorder(
            config.history,
            tmp,
            total_steps=plan.total_steps,
            k=config.checkpoints,
            n=dataset.n_train,
            lam=config.lam,
            dim=objective.dim,
            dtype=config.torch_dtype,
            early=early_fractions(config),
        )
        cost = recording_cost_for(config.history)
        started, evals = time.perf_counter(), objective.grad_evals
        budget = removal_budget(config)
        w = train_loop(
            objective,
            flatten_params(model),
            plan,
            recorder=recorder,
            progress=progress,
            cost=cost,
            momentum=config.momentum,
            finish=None
            if budget is None
            else lambda w: polish(objective, w, None, budget, progress=progress),
        )
        train_seconds = time.perf_counter() - started
        train_evals = objective.grad_evals - evals - cost.total_evals()
        if not torch.isfinite(w).all():
            raise ConfigError(
                f"training diverged (non-finite parameters) with lr={config.lr}, lam={config.lam}; "
                "lower --lr and train again. Nothing was written"
            )
        (tmp / PARTIAL_OWNER).unlink()
        files = {CONFIG: "config", MODEL: "model", SCHEDULE: "schedule", KEYS: "keys", **recorder.close()}
        curvature = record_curvature(config, objective, w, tmp, plan.total_steps, train_seconds)
        if curvature:
            files[CURVATURE_FILE] = "history-curvature"
            cost.add("history-curvature", curvature["grad_evals"], curvature["seconds"])
        (tmp / CONFIG).write_text(config.to_json() + "\n")
        save_params(tmp / MODEL, objective, w, {"format": "miniunlearn-model", "version": "original"})
        save_schedule(tmp / SCHEDULE, plan)
        assert dataset.keys is not None  # load_training_data(keys=True) gives every dataset keys
        save_keys(tmp / KEYS, dataset.keys)
        manifest = {
            "format": "miniunlearn-run/1",
            "n_train": dataset.n_train,
            "n_params": objective.dim,
            "total_steps": plan.total_steps,
            # results are bit-identical for the same seed *and* thread count
            "torch_threads": torch.get_num_threads(),
            "train_seconds": round(train_seconds, 3),
            # training's own per-sample gradient evaluations, and what each history added
            "train_grad_evals": int(train_evals),
            "train_passes": round(train_evals / dataset.n_train, 4),
            "recording": cost.manifest(dataset.n_train),
            **({"curvature": curvature} if curvature else {}),
            **({"data_files": data_files} if data_files else {}),
            "files": [manifest_entry(tmp, rel, role) for rel, role in sorted(files.items())],
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        Ledger.open(tmp).close()  # every run has its ledger from the start, so a lost one shows
        try:
            os.rename(tmp, out)
        except OSError as exc:  # another process created it meanwhile
            raise RunDirError(exists_message(out)) from exc
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_run(out, device=device)


def exists_message(out: Path) -> str:
    """Why training into ``out`` is refused, in words that fit the Python call and the command."""
    return (
        f"{out} already exists; nothing was written. To use the run there, open it (open_run in Python; "
        f"miniunlearn forget/evaluate/audit {out} on the command line); to train anew, choose another "
        "directory (--out on the command line) or delete it first"
    )


PARTIAL_OWNER = ".owner.json"  # pid and host of the process training into a partial directory


def remove_abandoned_partials(out: Path) -> list[Path]:
    """Delete the partial directories of earlier trainings into ``out`` whose process is gone
    (killed before it could clean up); return the paths removed. A partial directory of a
    live process, of another host, or without a readable owner record is left alone."""
    removed = []
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        try:
            owner = json.loads((partial / PARTIAL_OWNER).read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host != socket.gethostname() or _process_alive(pid):
            continue
        shutil.rmtree(partial, ignore_errors=True)
        removed.append(partial)
    return removed


def _process_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def early_fractions(config: TrainConfig) -> tuple[float, ...]:
    """The early checkpoints a run keeps: for non-convex models the points a rewinding
    unlearner can return to (``REWIND_FRACTIONS``); for convex models trained by mini-batch
    SGD the knots of the linear-response unlearner (``RESPONSE_FRACTIONS``); none for convex
    models trained by full-batch gradient descent, whose unlearning needs only the end."""
    if config.model not in CONVEX_MODELS:
        return REWIND_FRACTIONS
    return () if config.full_batch else RESPONSE_FRACTIONS


def recording_budget(config: TrainConfig, total_steps: int, n_train: int) -> float:
    """Passes over the training set the curvature's recording may take: ``history_budget`` of
    training's own passes, less the one that measures the final full-data gradient."""
    batch = n_train if config.full_batch else min(config.batch_size, n_train)
    return config.history_budget * total_steps * batch / n_train - 1


def record_curvature(
    config: TrainConfig,
    objective: Objective,
    w: torch.Tensor,
    run_dir: Path,
    total_steps: int,
    train_seconds: float,
) -> dict[str, Any]:
    """Record the data Hessian at the trained ``w`` into ``run_dir`` when ``config`` asks for
    it. With the rank unset, a logistic regression records it exactly over every row when it
    has at most ``config.exact_curvature_dim`` parameters, else on ``config.curvature_basis``
    principal input directions per class (as many as fit ``config.history_budget`` of the full
    history's bytes and of training's passes, :func:`recording_budget`); a set rank, a
    zero basis or a budget too small for a basis gives a Nyström sketch. Return its manifest
    summary (kind, rank, basis, blocks, rows, whether exact, seconds, per-sample evaluations
    and its cost relative to training), or {} when nothing is recorded."""
    rank = config.curvature_rank
    kind, basis = SKETCH, 0
    sampled = curvature_rows(config, objective.n)  # what every kind but the exact Hessian reads
    if rank is None:
        checkpoints = len(checkpoint_steps(total_steps, config.checkpoints, early_fractions(config)))
        itemsize = torch.finfo(config.torch_dtype).bits // 8
        rank = default_rank(
            config.model,
            config.history,
            total_steps,
            checkpoints,
            itemsize,
            objective.dim,
            config.exact_curvature_dim,
            config.history_budget,
        )
        if records_exact(config.model, config.history, objective.dim, config.exact_curvature_dim):
            kind = EXACT
        elif rank and config.curvature_basis:
            classes, features = require_linear_logits(objective)
            budget = curvature_budget(
                total_steps, checkpoints, itemsize, objective.dim, config.history_budget
            )
            basis = largest_basis(
                config.curvature_basis,
                budget,
                classes,
                features,
                max_passes=recording_budget(config, total_steps, objective.n),
                rows_share=1.0 if sampled is None else sampled.size / objective.n,
            )
            kind = INPUT_SUBSPACE if basis else kind
    if rank == 0:
        return {}
    started, evals = time.perf_counter(), objective.grad_evals
    rows = None if kind == EXACT else sampled
    sketch: Curvature
    if kind == EXACT:
        sketch = exact_curvature(objective, w)
    elif kind == INPUT_SUBSPACE:
        sketch = input_subspace_curvature(objective, w, basis, rows, seed=config.seed)
    else:
        sketch = sketch_hessian(objective, w, rank, config.curvature_iters, seed=config.seed, ids=rows)
    seconds = time.perf_counter() - started
    n_rows = objective.n if rows is None else int(rows.size)
    save_sketch(run_dir / CURVATURE_FILE, sketch, {"iters": str(config.curvature_iters), "rows": str(n_rows)})
    return {
        "kind": curvature_kind(sketch),
        "rank": sketch.rank,
        "basis": basis,
        "exact": sketch.exact,
        "iters": config.curvature_iters if kind == SKETCH else 0,
        "rows": n_rows,
        "seconds": round(seconds, 3),
        "grad_evals": int(objective.grad_evals - evals),
        "cost_vs_training": round(seconds / max(train_seconds, 1e-9), 4),
    }


def curvature_rows(config: TrainConfig, n_train: int) -> np.ndarray | None:
    """The sorted training rows the curvature sketch averages over: a seeded random
    ``config.curvature_rows`` of the ``n_train`` (None: every row, also when that many or
    more are asked)."""
    if config.curvature_rows is None or config.curvature_rows >= n_train:
        return None
    rng = np.random.default_rng([config.seed, 0x5E7C])  # its own stream: no other draw shifts it
    return np.sort(rng.choice(n_train, config.curvature_rows, replace=False))


def save_schedule(path: Path, plan: StepPlan) -> None:
    """Write the plan's learning rates, batch order and RNG states to ``path`` (npz)."""
    np.savez(
        path,
        lrs=plan.lrs,
        order=plan.order if plan.order is not None else np.zeros((0, 0), np.int64),
        rng_states=plan.rng_states if plan.rng_states is not None else np.zeros((0, 0), np.uint8),
        steps_per_epoch=np.array(plan.steps_per_epoch),
        batch_size=np.array(plan.batch_size),
    )

"""Run directories: a trained model with its config, schedule, history and manifest.

Layout::

    RUN_DIR/
      config.json               the TrainConfig (role ``config``)
      model.safetensors         the trained model's state dict (role ``model``)
      schedule.npz              learning rates, batch order, RNG states (role ``schedule``)
      history/mini.safetensors  minimal history (role ``history-mini``)
      history/curvature.safetensors  Hessian sketch, part of the minimal history
                                (role ``history-curvature``)
      history/full_*.npy        full history (role ``history-full``)
      manifest.json             every file above with path, sha256, bytes, role

A run is trained into a hidden sibling directory and renamed into place only when
every file is written, so an interrupted ``train`` never leaves a half-written run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ..data import Dataset, load_dataset
from ..device import device_scope, resolve_device
from ..errors import ConfigError, RunDirError
from ..fileio import atomic_write_json, fsync_dir, run_file, run_subdir, save_tensors, sha256_file
from ..ledger import Ledger
from ..models import build_model, check_replayable
from ..objective import Objective, flatten_params
from .config import CONVEX_MODELS, TrainConfig
from .curvature import CURVATURE_FILE, CurvatureSketch, default_rank, load_sketch, save_sketch, sketch_hessian
from .history import (
    FullHistory,
    MiniHistory,
    load_full_history,
    load_mini_history,
    make_recorder,
    stable_metadata,
)
from .schedule import RESPONSE_FRACTIONS, REWIND_FRACTIONS, StepPlan, checkpoint_steps, make_plan
from .trainer import train_loop

MANIFEST = "manifest.json"
CONFIG = "config.json"
MODEL = "model.safetensors"
SCHEDULE = "schedule.npz"
CPU = torch.device("cpu")


def load_training_data(config: TrainConfig) -> Dataset:
    """Load the dataset named by ``config`` (restricted to ``subset_ids`` or ``n_train`` when set)."""
    dataset = load_dataset(config.dataset, path=config.data_path, **config.data_options)
    if config.subset_ids is not None:
        dataset = dataset.select_train(np.asarray(config.subset_ids))
    elif config.n_train is not None and config.n_train < dataset.n_train:
        dataset = dataset.subset_train(config.n_train, config.seed)
    return dataset


def model_for(config: TrainConfig, dataset: Dataset, device: torch.device = CPU) -> nn.Module:
    """Build the config's model for ``dataset``, initialised from the config's seed (on the CPU,
    so every device starts from the same weights), then moved to ``device``."""
    return build_model(
        config.model,
        dataset.n_features,
        dataset.n_classes,
        hidden=config.hidden,
        activation=config.activation,
        channels=config.channels,
        head=config.head,
        image_shape=dataset.image_shape,
        seed=config.seed,
        dtype=config.torch_dtype,
    ).to(device)


def pass_block_rows(n: int, n_features: int) -> int:
    """Rows per vectorised block of a full pass: 8,192 up to a million rows (every result on
    smaller data stays as it was); above, blocks of about 8 MB of features (at most 262,144
    rows), since on narrow data a block's fixed cost otherwise dominates (3.8 s against 1.2 s
    a pass over 10.5 million rows of 28 features on one core)."""
    if n <= 1_000_000:
        return 8192
    return int(min(262_144, max(8192, 2**21 // max(n_features, 1))))


def objective_for(config: TrainConfig, dataset: Dataset, model: nn.Module) -> Objective:
    """Return the training objective of ``config`` on the dataset's training split, on the
    model's device."""
    with warnings.catch_warnings():  # memory-mapped data is read-only; nothing here writes to it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    return Objective(model, x, y, config.lam, chunk_size=pass_block_rows(dataset.n_train, dataset.n_features))


def save_params(path: Path, objective: Objective, w: torch.Tensor, metadata: dict[str, str]) -> None:
    """Write flat parameters ``w`` as a named state dict (safetensors) to ``path``."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in objective.unflatten(w).items()}
    save_tensors(tensors, path, stable_metadata(metadata))


def load_params(path: Path, objective: Objective) -> torch.Tensor:
    """Read a model file and return its parameters as one flat vector in the model's order.

    Raises RunDirError when the file is missing, not a regular file (a FIFO would hang the
    reader), corrupt, or shaped for another model.
    """
    if not path.exists():
        raise RunDirError(f"model file {path} is missing")
    if not path.is_file():
        raise RunDirError(
            f"model file {path} is not a regular file (a FIFO, a device or a folder); "
            "replace it with the real file, or restore the run directory from a backup"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunDirError(f"model file {path} is corrupt ({exc})") from exc
    pieces = []
    for name, shape in zip(objective.names, objective.shapes, strict=True):
        if name not in tensors or tuple(tensors[name].shape) != tuple(shape):
            raise RunDirError(f"model file {path} does not fit this model (parameter {name!r})")
        pieces.append(tensors[name].to(objective.device, objective.dtype).reshape(-1))
    return torch.cat(pieces)


def manifest_entry(run_dir: Path, rel: str, role: str) -> dict[str, Any]:
    """Return the manifest row {path, sha256, bytes, role} for file ``rel`` of ``run_dir``."""
    path = run_file(run_dir, rel, f"{role} file")
    return {"path": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size, "role": role}


def train_run(
    config: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> Run:
    """Train ``config`` on ``device`` and write a complete run directory at ``out_dir``; return
    it opened on that device.

    Raises RunDirError if ``out_dir`` exists already; nothing is written in that case.
    """
    device = resolve_device(device)
    with device_scope(device):
        return _train_run(config, Path(out_dir), progress, device)


def _train_run(config: TrainConfig, out: Path, progress: bool, device: torch.device) -> Run:
    if out.exists():
        raise RunDirError(f"{out} already exists; choose another --out or delete it first")
    # absolute paths, so the run opens from any working directory; hashes, so a run is
    # never unlearned or retrained against data other than it was trained on
    config = _absolute_data_paths(config)
    data_files = [data_file_entry(p) for p in _user_files(config) if os.path.isfile(p)]
    dataset = load_training_data(config)
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
        started = time.perf_counter()
        w = train_loop(objective, flatten_params(model), plan, recorder=recorder, progress=progress)
        train_seconds = time.perf_counter() - started
        if not torch.isfinite(w).all():
            raise ConfigError(
                f"training diverged (non-finite parameters) with lr={config.lr}, lam={config.lam}; "
                "lower --lr and train again. Nothing was written"
            )
        (tmp / PARTIAL_OWNER).unlink()
        files = {CONFIG: "config", MODEL: "model", SCHEDULE: "schedule", **recorder.close()}
        curvature = record_curvature(config, objective, w, tmp, plan.total_steps, train_seconds)
        if curvature:
            files[CURVATURE_FILE] = "history-curvature"
        (tmp / CONFIG).write_text(config.to_json() + "\n")
        save_params(tmp / MODEL, objective, w, {"format": "miniunlearn-model", "version": "original"})
        save_schedule(tmp / SCHEDULE, plan)
        manifest = {
            "format": "miniunlearn-run/1",
            "n_train": dataset.n_train,
            "n_params": objective.dim,
            "total_steps": plan.total_steps,
            # results are bit-identical for the same seed *and* thread count
            "torch_threads": torch.get_num_threads(),
            "train_seconds": round(train_seconds, 3),
            **({"curvature": curvature} if curvature else {}),
            **({"data_files": data_files} if data_files else {}),
            "files": [manifest_entry(tmp, rel, role) for rel, role in sorted(files.items())],
        }
        atomic_write_json(tmp / MANIFEST, manifest)
        Ledger.open(tmp).close()  # every run has its ledger from the start, so a lost one shows
        try:
            os.rename(tmp, out)
        except OSError as exc:  # another process created it meanwhile
            raise RunDirError(f"{out} already exists; choose another --out or delete it first") from exc
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return open_run(out, device=device)


def _user_files(config: TrainConfig) -> list[str]:
    """The user data files a config reads: ``data_path`` and a ``test_path`` data option."""
    return [p for p in (config.data_path, config.data_options.get("test_path")) if p is not None]


def _absolute_data_paths(config: TrainConfig) -> TrainConfig:
    def absolute(path: Any) -> str:
        return os.path.abspath(os.path.expanduser(str(path)))

    options = dict(config.data_options)
    if options.get("test_path") is not None:
        options["test_path"] = absolute(options["test_path"])
    data_path = absolute(config.data_path) if config.data_path is not None else None
    return replace(config, data_path=data_path, data_options=options)


def data_file_entry(path: str) -> dict[str, Any]:
    """Return the manifest record {path, sha256, bytes} of the user data file at ``path``."""
    return {"path": path, "sha256": sha256_file(path), "bytes": os.path.getsize(path)}


def check_data_file(run_path: Path, config: TrainConfig, record: Any) -> None:
    """Check that a user data file recorded at training (an entry of manifest key ``data_files``)
    is still there, unchanged; raise RunDirError saying what is wrong and how to fix it."""
    if not (
        isinstance(record, dict)
        and isinstance(record.get("path"), str)
        and isinstance(record.get("sha256"), str)
        and type(record.get("bytes")) is int
    ):
        raise RunDirError(f"{run_path / MANIFEST} is corrupt (its data_files record is malformed)")
    path = record["path"]
    if path not in _user_files(config):
        raise RunDirError(
            f"{run_path}: the manifest records data file {path} but config.json does not name it; "
            "the run was altered"
        )
    if not os.path.isfile(path):
        state = "not a regular file" if os.path.exists(path) else "missing"
        raise RunDirError(
            f"{run_path}: the data file recorded at training, {path}, is {state}; "
            "put the original file back at that path"
        )
    size = os.path.getsize(path)
    digest = sha256_file(path) if size == record["bytes"] else None  # a new size needs no hashing
    if digest != record["sha256"]:
        now = f"now {digest}" if digest else f"now {size} bytes, was {record['bytes']}"
        raise RunDirError(
            f"{run_path}: data file {path} changed since training (sha256 {record['sha256']} recorded, "
            f"{now}); restore the original file; a run cannot be unlearned against different data"
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


def record_curvature(
    config: TrainConfig,
    objective: Objective,
    w: torch.Tensor,
    run_dir: Path,
    total_steps: int,
    train_seconds: float,
) -> dict[str, Any]:
    """Sketch the data Hessian at the trained ``w`` into ``run_dir`` when ``config`` asks for
    one; return its manifest summary (rank, blocks, seconds, per-sample evaluations and its
    cost relative to training), or {} when no sketch is recorded."""
    rank = config.curvature_rank
    if rank is None:
        checkpoints = len(checkpoint_steps(total_steps, config.checkpoints, early_fractions(config)))
        itemsize = torch.finfo(config.torch_dtype).bits // 8
        rank = default_rank(config.model, config.history, total_steps, checkpoints, itemsize)
    if rank == 0:
        return {}
    started, evals = time.perf_counter(), objective.grad_evals
    sketch = sketch_hessian(objective, w, rank, config.curvature_iters, seed=config.seed)
    seconds = time.perf_counter() - started
    save_sketch(run_dir / CURVATURE_FILE, sketch, {"iters": str(config.curvature_iters)})
    return {
        "rank": sketch.rank,
        "iters": config.curvature_iters,
        "seconds": round(seconds, 3),
        "grad_evals": int(objective.grad_evals - evals),
        "cost_vs_training": round(seconds / max(train_seconds, 1e-9), 4),
    }


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


@dataclass
class Run:
    """An opened, verified run directory. Data and model are loaded lazily on first use, on
    ``device`` (the CPU unless :func:`open_run` is told otherwise)."""

    path: Path
    config: TrainConfig
    manifest: dict[str, Any]
    device: torch.device = CPU

    @property
    def n_train(self) -> int:
        """Number of training samples (ids are 0..n_train-1)."""
        return int(self.manifest["n_train"])

    @property
    def total_steps(self) -> int:
        """Number of gradient steps of the original training."""
        return int(self.manifest["total_steps"])

    def files(self, role: str) -> list[dict[str, Any]]:
        """Return the manifest rows with the given role."""
        return [f for f in self.manifest["files"] if f["role"] == role]

    def file_path(self, rel: str | os.PathLike[str], what: str = "run file") -> Path:
        """Return the path of file ``rel`` inside the run; raise RunDirError when it points outside
        the run, passes through a symbolic link, or is not a regular file (see
        :func:`miniunlearn.fileio.run_file`). A missing file passes."""
        return run_file(self.path, rel, what)

    def subdir(self, rel: str | os.PathLike[str], *, create: bool = False) -> Path:
        """Return the path of folder ``rel`` inside the run (made first with ``create``); raise
        RunDirError when it is a symbolic link or not a directory (see
        :func:`miniunlearn.fileio.run_subdir`)."""
        return run_subdir(self.path, rel, create=create)

    def history_bytes(self, role: str) -> int:
        """Return the bytes on disk of the files of ``role`` (e.g. ``history-mini``)."""
        return int(sum(f["bytes"] for f in self.files(role)))

    @cached_property
    def dataset(self) -> Dataset:
        """The training data of the run. Raises RunDirError when the user data file recorded at
        training (runs trained on ``libsvm``/``csv`` files) is missing or changed."""
        records = self.manifest.get("data_files", [])
        if not isinstance(records, list):
            raise RunDirError(f"{self.path / MANIFEST} is corrupt (data_files is not a list)")
        for record in records:
            check_data_file(self.path, self.config, record)
        dataset = load_training_data(self.config)
        if dataset.n_train != self.n_train:
            raise RunDirError(
                f"{self.path}: the dataset now has {dataset.n_train} training samples but the run was "
                f"trained on {self.n_train}; the data changed since training"
            )
        return dataset

    @cached_property
    def objective(self) -> Objective:
        """The run's training objective (model structure, data, lam)."""
        return objective_for(self.config, self.dataset, model_for(self.config, self.dataset, self.device))

    @cached_property
    def plan(self) -> StepPlan:
        """The step plan, re-derived from the config and checked against the stored schedule."""
        plan = make_plan(self.config, self.n_train)
        try:
            stored = np.load(self.file_path(SCHEDULE, "schedule"))
            same = np.array_equal(stored["lrs"], plan.lrs) and (
                plan.order is None
                or (
                    np.array_equal(stored["order"], plan.order)
                    and np.array_equal(stored["rng_states"], plan.rng_states)
                )
            )
        except (OSError, ValueError, KeyError) as exc:
            raise RunDirError(f"{self.path / SCHEDULE} is corrupt ({exc})") from exc
        if not same:
            raise RunDirError(f"{self.path / SCHEDULE} does not match the run's config; the run was altered")
        return plan

    def initial_params(self) -> torch.Tensor:
        """The parameters before training (same seed gives the same init)."""
        return flatten_params(model_for(self.config, self.dataset, self.device))

    def load_model_params(self, rel: str = MODEL) -> torch.Tensor:
        """The flat parameters stored in model file ``rel`` (default: the original model)."""
        return load_params(self.file_path(rel, "model file"), self.objective)

    def mini_history(self) -> MiniHistory:
        """The minimal history (raises HistoryError when absent or mismatched)."""
        return load_mini_history(
            self.path,
            dim=self.objective.dim,
            n=self.n_train,
            lam=self.config.lam,
            total_steps=self.total_steps,
        ).to(self.device)

    def curvature_sketch(self) -> CurvatureSketch | None:
        """The curvature sketch recorded with the minimal history (None when there is none)."""
        sketch = load_sketch(self.path, dim=self.objective.dim, lam=self.config.lam)
        return sketch.to(self.device) if sketch is not None else None

    def full_history(self) -> FullHistory:
        """The full history, memory-mapped (raises HistoryError when absent or mismatched)."""
        return load_full_history(self.path, dim=self.objective.dim, total_steps=self.total_steps)


MANIFEST_COUNTS = ("n_train", "n_params", "total_steps")  # integers every manifest holds


def open_run(
    path: str | os.PathLike[str], *, verify_hashes: bool = True, device: str | torch.device = "cpu"
) -> Run:
    """Open the run directory at ``path`` and check it against its manifest; its data and
    model will be loaded on ``device`` (see :mod:`miniunlearn.device`).

    Checks that every listed file lies inside the run, reached through no symbolic link, and
    is a regular file (so a manifest row such as ``../../dev/zero``, or a FIFO put in a file's
    place, is refused before anything is read), and that it exists with the recorded size (and
    sha256 when ``verify_hashes``). Raises RunDirError naming the first problem.
    """
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise RunDirError(
            f"{run_dir} is not a run directory; create one with `miniunlearn train --out {run_dir}`"
        )
    manifest_path = run_file(run_dir, MANIFEST, "manifest")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except FileNotFoundError as exc:
        raise RunDirError(f"{run_dir} has no {MANIFEST}: it is not a complete run directory") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise RunDirError(f"{manifest_path} is corrupt ({exc})") from exc
    if not isinstance(files, list) or not all(
        isinstance(f, dict)
        and isinstance(f.get("path"), str)
        and isinstance(f.get("sha256"), str)
        and isinstance(f.get("role"), str)
        and type(f.get("bytes")) is int
        for f in files
    ):
        raise RunDirError(f"{manifest_path} is corrupt (its file list is malformed)")
    wrong = [key for key in MANIFEST_COUNTS if type(manifest.get(key)) is not int or manifest[key] < 1]
    if wrong:
        raise RunDirError(
            f"{manifest_path} is corrupt: {', '.join(wrong)} missing or not a positive integer; "
            "it was not written by this library, or was edited"
        )
    for entry in files:
        file_path = run_file(run_dir, entry["path"], f"manifest file ({entry['role']:.40})")
        if not file_path.exists():
            raise RunDirError(f"{file_path} listed in the manifest is missing")
        if file_path.stat().st_size != entry["bytes"]:
            raise RunDirError(
                f"{file_path} has {file_path.stat().st_size} bytes, manifest says {entry['bytes']}"
            )
        if verify_hashes and sha256_file(file_path) != entry["sha256"]:
            raise RunDirError(f"{file_path} fails its sha256 check: the file was changed or is corrupt")
    try:
        config = TrainConfig.from_dict(json.loads(run_file(run_dir, CONFIG, "config").read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ConfigError) as exc:
        raise RunDirError(f"{run_dir / CONFIG} is invalid ({exc})") from exc
    return Run(run_dir, config, manifest, resolve_device(device))

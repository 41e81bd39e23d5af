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
      keys.npz                  the users' key of every sample id and the test split's keys
                                (role ``keys``; runs trained before keys were recorded lack it)
      manifest.json             every file above with path, sha256, bytes, role

A run is trained into a hidden sibling directory and renamed into place only when
every file is written, so an interrupted ``train`` never leaves a half-written run.
"""

from __future__ import annotations

import json
import os
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
from ..data.keys import SampleKeys, load_keys, sample_id_keys
from ..device import resolve_device
from ..errors import ConfigError, RunDirError
from ..fileio import run_file, run_subdir, save_tensors, sha256_file
from ..models import build_model
from ..objective import Objective, flatten_params
from .certified import perturbation
from .config import TrainConfig
from .curvature import Curvature, load_sketch
from .history import (
    FullHistory,
    MiniHistory,
    load_full_history,
    load_mini_history,
    stable_metadata,
)
from .schedule import StepPlan, make_plan

MANIFEST = "manifest.json"
CONFIG = "config.json"
MODEL = "model.safetensors"
SCHEDULE = "schedule.npz"
KEYS = "keys.npz"
NO_KEYS = (
    "this run was trained before keys were recorded; use sample ids (--ids FILE), or train the run "
    "again to record keys"
)
CPU = torch.device("cpu")


def load_training_data(config: TrainConfig, *, keys: bool = False) -> Dataset:
    """Load the dataset named by ``config`` (restricted to ``subset_ids`` or ``n_train`` when set).

    Its keys (:mod:`miniunlearn.data.keys`) are the loader's; with ``keys`` (as at training),
    a dataset without keys of its own (built-in and synthetic sets) gets each sample's id in
    its full training split as its key.
    """
    dataset = load_dataset(config.dataset, path=config.data_path, **config.data_options)
    if keys and dataset.keys is None:
        dataset = replace(dataset, keys=sample_id_keys(dataset.n_train, dataset.name))
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
    model's device (with the loss perturbation of a certified-removal run)."""
    with warnings.catch_warnings():  # memory-mapped data is read-only; nothing here writes to it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train)
    return Objective(
        model,
        x,
        y,
        config.lam,
        chunk_size=pass_block_rows(dataset.n_train, dataset.n_features),
        perturbation=perturbation(config, sum(p.numel() for p in model.parameters())),
    )


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


FILE_OPTIONS = ("test_path", "key_file")  # data options that name a file the run reads


def user_data_files(config: TrainConfig) -> list[str]:
    """The user data files a config reads: ``data_path`` and the ``test_path`` and ``key_file``
    data options."""
    options = [config.data_options.get(name) for name in FILE_OPTIONS]
    return [p for p in (config.data_path, *options) if p is not None]


def absolute_data_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with its user data paths (``data_path``, ``test_path`` and ``key_file``
    options) absolute."""

    def absolute(path: Any) -> str:
        return os.path.abspath(os.path.expanduser(str(path)))

    options = dict(config.data_options)
    for name in FILE_OPTIONS:
        if options.get(name) is not None:
            options[name] = absolute(options[name])
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
    if path not in user_data_files(config):
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

    def sample_keys(self) -> SampleKeys:
        """The users' keys recorded at training (``keys.npz``), its sha256 checked against the
        manifest. Raises RunDirError for a run trained before keys were recorded (saying to use
        sample ids), or a keys file that is changed, unreadable or names another training set."""
        rows = self.files("keys")
        if not rows:
            raise RunDirError(f"{self.path}: {NO_KEYS}")
        path = self.file_path(rows[0]["path"], "keys file")
        if not path.is_file() or sha256_file(path) != rows[0]["sha256"]:
            raise RunDirError(
                f"{path} is missing or fails its sha256 check: the file was changed or is corrupt"
            )
        try:
            keys = load_keys(path)
        except (OSError, ValueError, KeyError) as exc:
            raise RunDirError(f"{path} is corrupt ({exc})") from exc
        if keys.train.shape[0] != self.n_train:
            raise RunDirError(
                f"{path} names {keys.train.shape[0]} training samples but the run has {self.n_train}; "
                "the run was altered"
            )
        return keys

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

    def curvature_sketch(self) -> Curvature | None:
        """The curvature recorded with the minimal history: a sketch, the exact Hessian or the
        Hessian on an input subspace (None when there is none)."""
        sketch = load_sketch(self.path, dim=self.objective.dim, lam=self.config.lam)
        return sketch.to(self.device) if sketch is not None else None

    def full_history(self) -> FullHistory:
        """The full history, memory-mapped (raises HistoryError when absent or mismatched)."""
        return load_full_history(self.path, dim=self.objective.dim, total_steps=self.total_steps)

    def recording_cost(self, roles: tuple[str, ...]) -> dict[str, float | int] | None:
        """What recording the histories of ``roles`` that this run holds cost its training:
        ``{"grad_evals", "passes" (over the training data), "seconds"}``, summed over roles
        (zeros for none); None for a run trained before the manifest recorded it."""
        recording = self.manifest.get("recording")
        if recording is None:
            return None
        held = [role for role in roles if role in recording]
        evals = sum(int(recording[role]["grad_evals"]) for role in held)
        return {
            "grad_evals": evals,
            "passes": evals / self.n_train,
            "seconds": sum(float(recording[role]["seconds"]) for role in held),
        }


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

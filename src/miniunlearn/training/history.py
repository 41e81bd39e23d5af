"""Training history: what is recorded while training, and how it is read back.

Two kinds, behind one recorder interface:

* **minimal** (``history-mini``): k+1 checkpoints at steps T, T-1, T-2, T-4, ...;
  for each the parameters w_t, the full-data gradient of the regularised objective
  at w_t, and the full-data objective value. One small safetensors file.
* **full** (``history-full``): the parameters w_t and the (regularised) batch
  gradient g_t used at every step t = 0..T-1, as two ``.npy`` files written through
  memory maps row by row, so memory stays bounded however long training runs.

Batch ids, learning rates and RNG states of every step are in the schedule file
(see ``schedule.py``); they are needed to retrain, not by the minimal history.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import HistoryError
from ..fileio import save_tensors
from .config import MINI_HISTORY_MODES
from .schedule import checkpoint_steps

MINI_FILE = "history/mini.safetensors"
FULL_PARAMS_FILE = "history/full_params.npy"
FULL_GRADS_FILE = "history/full_grads.npy"


def stable_metadata(meta: dict[str, str]) -> dict[str, str]:
    """Pack safetensors metadata into one key holding sorted JSON.

    safetensors writes its metadata map in hash order, which differs between
    processes; one key keeps files byte-identical across identical runs.
    """
    return {"miniunlearn": json.dumps(meta, sort_keys=True)}


def read_metadata(raw: dict[str, str] | None) -> dict[str, str]:
    """Inverse of :func:`stable_metadata` (an empty dict when absent)."""
    return json.loads((raw or {}).get("miniunlearn", "{}"))


@dataclass
class RecordingCost:
    """What recording a history cost training, per manifest role: per-sample gradient
    evaluations beyond training's own (the minimal history's full-data gradients at
    checkpoints of a mini-batch run; none for full-batch runs, whose step gradient is the
    full one) and seconds spent computing and keeping them. ``step_role`` is charged for
    what the recorder does at every step, ``gradient_role`` for the full-data gradients at
    checkpoints during training, ``final_role`` for the one at the end (what a method that
    reads only the final gradient or objective value needs)."""

    step_role: str | None = None
    gradient_role: str | None = None
    final_role: str | None = None
    evals: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, role: str | None, evals: int, seconds: float) -> None:
        """Charge ``evals`` evaluations and ``seconds`` to ``role`` (nothing when None)."""
        if role is not None:
            self.evals[role] = self.evals.get(role, 0) + int(evals)
            self.seconds[role] = self.seconds.get(role, 0.0) + float(seconds)

    def total_evals(self) -> int:
        """Evaluations charged to every role together."""
        return sum(self.evals.values())

    def manifest(self, n_train: int) -> dict[str, dict[str, float]]:
        """The manifest's ``recording`` entries: per role, evaluations, passes over the
        training data and seconds."""
        return {
            role: {
                "grad_evals": self.evals[role],
                "passes": round(self.evals[role] / max(n_train, 1), 4),
                "seconds": round(self.seconds[role], 6),
            }
            for role in sorted(self.evals)
        }


class HistoryRecorder(Protocol):
    """What the trainer calls while it trains. Step t's parameters are those before update t."""

    def needs_full_gradient(self, step: int) -> bool:
        """Return True when the full-data gradient at ``step`` must be computed and passed in."""
        ...

    def record_step(self, step: int, w: torch.Tensor, batch_grad: torch.Tensor, lr: float) -> None:
        """Record the parameters and the batch gradient used at ``step``."""
        ...

    def record_full_gradient(self, step: int, w: torch.Tensor, grad: torch.Tensor, value: float) -> None:
        """Record the full-data gradient and objective value at ``step``."""
        ...

    def close(self) -> dict[str, str]:
        """Finish writing; return {relative path: manifest role} of the files written."""
        ...


class NullRecorder:
    """Records nothing (``--history none``)."""

    def needs_full_gradient(self, step: int) -> bool:
        """Never asks for a full gradient."""
        return False

    def record_step(self, step: int, w: torch.Tensor, batch_grad: torch.Tensor, lr: float) -> None:
        """Ignore the step."""

    def record_full_gradient(self, step: int, w: torch.Tensor, grad: torch.Tensor, value: float) -> None:
        """Ignore the gradient."""

    def close(self) -> dict[str, str]:
        """Return no files."""
        return {}


class MiniRecorder:
    """Keeps the k+1 geometrically spaced checkpoints of the minimal history."""

    def __init__(
        self, run_dir: Path, total_steps: int, k: int, n: int, lam: float, early: tuple[float, ...] = ()
    ) -> None:
        self.path = run_dir / MINI_FILE
        self.steps = checkpoint_steps(total_steps, k, early)
        self.wanted = {int(s) for s in self.steps}
        self.meta = {"n": str(n), "lam": repr(lam), "total_steps": str(total_steps), "k": str(k)}
        self.params: dict[int, torch.Tensor] = {}
        self.grads: dict[int, torch.Tensor] = {}
        self.values: dict[int, float] = {}

    def needs_full_gradient(self, step: int) -> bool:
        """True at the checkpoint steps."""
        return step in self.wanted

    def record_step(self, step: int, w: torch.Tensor, batch_grad: torch.Tensor, lr: float) -> None:
        """Keep the norm of the first step's gradient: the scale that tells how far training converged."""
        if step == 0:
            self.meta["grad_norm_start"] = repr(float(batch_grad.norm()))

    def record_full_gradient(self, step: int, w: torch.Tensor, grad: torch.Tensor, value: float) -> None:
        """Keep (w_t, full gradient, objective value) at a checkpoint step."""
        self.params[step] = w.detach().clone()
        self.grads[step] = grad.detach().clone()
        self.values[step] = float(value)

    def close(self) -> dict[str, str]:
        """Write the checkpoints to one safetensors file and return its manifest entry."""
        missing = self.wanted - set(self.params)
        if missing:
            raise HistoryError(f"training ended without checkpoints at steps {sorted(missing)}")
        order = [int(s) for s in self.steps]
        tensors = {
            "steps": torch.tensor(order, dtype=torch.int64),
            "params": torch.stack([self.params[s] for s in order]),
            "grads": torch.stack([self.grads[s] for s in order]),
            "values": torch.tensor([self.values[s] for s in order], dtype=torch.float64),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        save_tensors(tensors, self.path, stable_metadata(self.meta))
        return {MINI_FILE: "history-mini"}


class FullRecorder:
    """Streams every step's parameters and batch gradient to two memory-mapped .npy files."""

    def __init__(self, run_dir: Path, total_steps: int, dim: int, dtype: torch.dtype) -> None:
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        (run_dir / "history").mkdir(parents=True, exist_ok=True)
        self.params = np.lib.format.open_memmap(
            run_dir / FULL_PARAMS_FILE, mode="w+", dtype=np_dtype, shape=(total_steps, dim)
        )
        self.grads = np.lib.format.open_memmap(
            run_dir / FULL_GRADS_FILE, mode="w+", dtype=np_dtype, shape=(total_steps, dim)
        )
        self.seen = 0

    def needs_full_gradient(self, step: int) -> bool:
        """The full history needs batch gradients only."""
        return False

    def record_step(self, step: int, w: torch.Tensor, batch_grad: torch.Tensor, lr: float) -> None:
        """Write row ``step`` of both files."""
        self.params[step] = w.cpu().numpy()
        self.grads[step] = batch_grad.cpu().numpy()
        self.seen += 1

    def record_full_gradient(self, step: int, w: torch.Tensor, grad: torch.Tensor, value: float) -> None:
        """Not needed by the full history."""

    def close(self) -> dict[str, str]:
        """Flush both files and return their manifest entries."""
        if self.seen != self.params.shape[0]:
            raise HistoryError(f"full history saw {self.seen} of {self.params.shape[0]} steps")
        self.params.flush()
        self.grads.flush()
        del self.params, self.grads
        return {FULL_PARAMS_FILE: "history-full", FULL_GRADS_FILE: "history-full"}


class CompositeRecorder:
    """Forwards every call to several recorders (``--history both``)."""

    def __init__(self, recorders: list[HistoryRecorder]) -> None:
        self.recorders = recorders

    def needs_full_gradient(self, step: int) -> bool:
        """True when any recorder needs it."""
        return any(r.needs_full_gradient(step) for r in self.recorders)

    def record_step(self, step: int, w: torch.Tensor, batch_grad: torch.Tensor, lr: float) -> None:
        """Forward the step."""
        for r in self.recorders:
            r.record_step(step, w, batch_grad, lr)

    def record_full_gradient(self, step: int, w: torch.Tensor, grad: torch.Tensor, value: float) -> None:
        """Forward the gradient."""
        for r in self.recorders:
            r.record_full_gradient(step, w, grad, value)

    def close(self) -> dict[str, str]:
        """Close all; return the union of their files."""
        files: dict[str, str] = {}
        for r in self.recorders:
            files.update(r.close())
        return files


FINAL_ROLE = "history-final"
"""The recording role of the minimal history's last checkpoint (the full-data gradient and
objective value at the end of training): a recording cost, not a file of its own."""


def recording_cost_for(mode: str) -> RecordingCost:
    """An empty :class:`RecordingCost` charging per-step work to the full history and full-data
    gradients to the minimal one, for the history ``mode`` a run records."""
    mini = mode in MINI_HISTORY_MODES
    return RecordingCost(
        step_role="history-full" if mode in ("full", "both") else None,
        gradient_role="history-mini" if mini else None,
        final_role=FINAL_ROLE if mini else None,
    )


def make_recorder(
    mode: str,
    run_dir: Path,
    *,
    total_steps: int,
    k: int,
    n: int,
    lam: float,
    dim: int,
    dtype: torch.dtype,
    early: tuple[float, ...] = (),
) -> HistoryRecorder:
    """Return the recorder for history ``mode`` (none, mini, full, both) writing into ``run_dir``;
    the minimal history also keeps checkpoints at the ``early`` fractions of training."""
    mini = MiniRecorder(run_dir, total_steps, k, n, lam, early) if mode in MINI_HISTORY_MODES else None
    full = FullRecorder(run_dir, total_steps, dim, dtype) if mode in ("full", "both") else None
    parts: list[HistoryRecorder] = [r for r in (mini, full) if r is not None]
    if not parts:
        return NullRecorder()
    return parts[0] if len(parts) == 1 else CompositeRecorder(parts)


@dataclass(frozen=True)
class MiniHistory:
    """The minimal history: checkpoint steps (descending, steps[0] = T), parameters,
    full-data gradients of the regularised objective and objective values, and the norm
    of the gradient at the first training step (full batch: exact; SGD: of its batch)."""

    steps: np.ndarray
    params: torch.Tensor
    grads: torch.Tensor
    values: torch.Tensor
    n: int
    lam: float
    grad_norm_start: float

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (what a method reads)."""
        return int(self.params.nbytes + self.grads.nbytes + self.values.nbytes + self.steps.nbytes)

    def to(self, device: torch.device) -> MiniHistory:
        """Return this history with its tensors on ``device`` (itself when they already are)."""
        if self.params.device == device:
            return self
        return replace(
            self, params=self.params.to(device), grads=self.grads.to(device), values=self.values.to(device)
        )


def load_mini_history(run_dir: Path, *, dim: int, n: int, lam: float, total_steps: int) -> MiniHistory:
    """Read and check the minimal history of a run.

    Takes the run directory and the facts it must agree with (parameter dimension,
    number of training samples, lam, number of steps). Raises HistoryError when the
    file is missing, unreadable, or recorded for a different run.
    """
    path = run_dir / MINI_FILE
    if not path.exists():
        raise HistoryError(
            f"{path} is missing: this run was trained without the minimal history. "
            "Retrain it with `miniunlearn train ... --history mini` (or `both`)"
        )
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            meta = read_metadata(handle.metadata())
    except (SafetensorError, OSError, ValueError) as exc:
        raise HistoryError(f"{path} is corrupt ({exc}); retrain the run to recreate its history") from exc
    try:
        steps = tensors["steps"].numpy()
        params, grads, values = tensors["params"], tensors["grads"], tensors["values"]
    except KeyError as exc:
        raise HistoryError(f"{path} lacks the tensor {exc}; it was not written by this library") from exc
    problems = []
    if params.ndim != 2 or params.shape[1] != dim:
        problems.append(f"parameters of shape {tuple(params.shape)}, model has {dim}")
    if grads.shape != params.shape or values.shape[0] != params.shape[0] or steps.shape[0] != params.shape[0]:
        problems.append("arrays of inconsistent lengths")
    if int(meta.get("n", -1)) != n:
        problems.append(f"recorded for {meta.get('n')} training samples, run has {n}")
    if int(meta.get("total_steps", -1)) != total_steps or int(steps[0]) != total_steps:
        problems.append(f"recorded for {meta.get('total_steps')} steps, run has {total_steps}")
    if float(meta.get("lam", "nan")) != lam:
        problems.append(f"recorded with lam={meta.get('lam')}, run has lam={lam}")
    if problems:
        raise HistoryError(f"{path} does not match this run: " + "; ".join(problems))
    return MiniHistory(steps, params, grads, values, n, lam, float(meta.get("grad_norm_start", "nan")))


@dataclass(frozen=True)
class FullHistory:
    """The full history as read-only memory maps: params[t] = w_t, grads[t] = batch gradient at t."""

    params: np.ndarray
    grads: np.ndarray

    @property
    def nbytes(self) -> int:
        """Bytes of both arrays."""
        return int(self.params.nbytes + self.grads.nbytes)


def load_full_history(run_dir: Path, *, dim: int, total_steps: int) -> FullHistory:
    """Open the full history of a run read-only (memory-mapped).

    Raises HistoryError when the files are missing, unreadable, or of the wrong shape.
    """
    arrays = []
    for name in (FULL_PARAMS_FILE, FULL_GRADS_FILE):
        path = run_dir / name
        if not path.exists():
            raise HistoryError(
                f"{path} is missing: this run was trained without the full history that replay methods "
                "need. Retrain it with `miniunlearn train ... --history full` (or `both`)"
            )
        try:
            arr = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as exc:
            raise HistoryError(f"{path} is corrupt ({exc}); retrain the run to recreate its history") from exc
        if arr.shape != (total_steps, dim):
            raise HistoryError(f"{path} has shape {arr.shape}, expected {(total_steps, dim)} for this run")
        arrays.append(arr)
    return FullHistory(arrays[0], arrays[1])

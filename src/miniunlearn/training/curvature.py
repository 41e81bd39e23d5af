"""Curvature sketch: the top eigenpairs of the training data's Hessian at the trained model.

Recorded once at the end of training (``history/curvature.safetensors``, part of the
minimal history) and read by Mini-Unlearning to precondition its contraction. The
late gradient-descent checkpoints only carry curvature along the flattest direction
(the regulariser's), while an unlearning move has large components along the steep
ones; the sketch supplies exactly those.

The sketch is a randomised Nyström approximation with subspace iteration (Halko,
Martinsson and Tropp 2011; Frangella, Tropp and Udell 2023): Q = orth(H^(q-1) Omega),
Y = H Q, then the eigen-decomposition of Y (Q^T Y)^(-1) Y^T through a Cholesky factor.
Every block of Hessian-vector products is one vectorised pass over the rows sketched: a
seeded random subsample of the training data (``curvature_rows``, default 2048), which
measured as good a preconditioner as every row at a few per cent of the passes
(docs/results/request-passes.md). Only the
*data* part of the Hessian (1/n) sum_i Hess l_i is sketched; lam is added back when
the preconditioner is applied. Defined for convex models (positive semi-definite
Hessian); recorded by default for logistic regression only.

A logistic regression of at most ``exact_curvature_dim`` parameters records instead its
exact data Hessian over every row (:func:`exact_curvature`, from the loss's structure:
:func:`softmax_regression_hessian`), stored the same way as all d eigenpairs (float32
vectors), so the preconditioner is the Newton step. A larger one records by default its
Hessian exactly on the principal directions of its inputs (``input_subspace.py``), which
preconditions better than a sketch of the same bytes; the sketch remains for an explicit
``curvature_rank`` or ``curvature_basis=0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from ..errors import ConfigError, HistoryError
from ..fileio import save_tensors
from ..objective import Objective
from .config import CONVEX_MODELS, DEFAULT_HISTORY_BUDGET, MINI_HISTORY_MODES
from .history import read_metadata, stable_metadata
from .input_subspace import InputSubspaceCurvature, class_pair_grams, unpack_core

CURVATURE_FILE = "history/curvature.safetensors"
DEFAULT_RANK = 128
MIN_RANK = 8
EXACT, INPUT_SUBSPACE, SKETCH = "exact", "input-subspace", "sketch"
"""The kinds of recorded curvature, as the manifest and the records name them."""


def records_exact(model: str, history: str, dim: int, exact_dim: int) -> bool:
    """Whether a run of ``model`` with ``history``, ``dim`` parameters and ``exact_curvature_dim``
    ``exact_dim`` records its exact Hessian (when its config leaves the rank unset)."""
    return model in CONVEX_MODELS and history in MINI_HISTORY_MODES and 0 < dim <= exact_dim


def default_rank(
    model: str,
    history: str,
    total_steps: int,
    checkpoints: int,
    itemsize: int,
    dim: int = 0,
    exact_dim: int = 0,
    budget: float = DEFAULT_HISTORY_BUDGET,
) -> int:
    """The sketch rank used when a config leaves it unset.

    0 (no sketch) for non-convex models and runs without the minimal history; ``dim`` (the
    exact Hessian, exempt from the budget) when the model's ``dim`` parameters are at most
    ``exact_dim``; else the largest rank up to ``DEFAULT_RANK`` that keeps checkpoints plus
    sketch within ``budget`` (a share) of the full history (2 T d numbers of ``itemsize``
    bytes; the sketch costs 2 bytes a number), and 0 when fewer than ``MIN_RANK`` would fit.
    """
    if model not in CONVEX_MODELS or history not in MINI_HISTORY_MODES:
        return 0
    if records_exact(model, history, dim, exact_dim):
        return dim
    fits = curvature_budget(total_steps, checkpoints, itemsize, dim, budget) // (2 * dim)
    rank = min(DEFAULT_RANK, fits)
    return rank if rank >= MIN_RANK else 0


def curvature_budget(
    total_steps: int, checkpoints: int, itemsize: int, dim: int, budget: float = DEFAULT_HISTORY_BUDGET
) -> int:
    """Bytes the curvature may take beside ``checkpoints`` checkpoints so that the minimal
    history stays within ``budget`` (a share) of the full one (2 T d numbers of ``itemsize``
    bytes), one sketch row (2 d bytes) kept spare for file headers."""
    return 2 * dim * (int(itemsize * (budget * total_steps - checkpoints)) - 1)


@dataclass(frozen=True)
class CurvatureSketch:
    """Top eigenpairs of the data Hessian: ``vectors`` (m, d) with orthonormal rows and
    ``values`` (m,) in descending order, plus the run's ``lam``; ``exact`` when they are all
    d eigenpairs of the Hessian over every training row (:func:`exact_curvature`), not a sketch."""

    vectors: torch.Tensor
    values: torch.Tensor
    lam: float
    exact: bool = False

    @property
    def rank(self) -> int:
        """Number of eigenpairs kept."""
        return int(self.values.numel())

    @property
    def nbytes(self) -> int:
        """Bytes of the sketch as stored (float16 vectors, float32 for an exact Hessian; float32
        values): what a method reads."""
        return int((4 if self.exact else 2) * self.vectors.numel() + 4 * self.values.numel())

    def to(self, device: torch.device) -> CurvatureSketch:
        """Return this sketch with its tensors on ``device``."""
        return CurvatureSketch(self.vectors.to(device), self.values.to(device), self.lam, self.exact)

    def inverse_hessian_product(self, g: torch.Tensor) -> torch.Tensor:
        """Return P^(-1) g for the Nyström preconditioner P of the regularised Hessian (for an
        exact Hessian, its inverse: the Newton step).

        Inside the sketched subspace P is exact (eigenvalue + lam); on its complement P
        is (smallest kept eigenvalue + lam) times the identity, which never overshoots
        an unsketched direction, since its curvature lies between lam and that value.
        """
        vectors = self.vectors.to(g.dtype)
        values = self.values.to(g.dtype)
        coords = vectors @ g
        inside = vectors.T @ (coords / (values + self.lam))
        if self.exact:  # every eigenpair: no complement (only its rounding) to fill
            return inside
        tail = 1.0 / (float(values[-1]) + self.lam) if self.rank else 1.0 / max(self.lam, 1e-12)
        return inside + tail * (g - vectors.T @ coords)


Curvature = CurvatureSketch | InputSubspaceCurvature
"""What a run's curvature file holds: a sketch (or the exact Hessian's eigenpairs), or the
Hessian on an input subspace. Each gives ``inverse_hessian_product``, ``rank``, ``nbytes``,
``exact`` and ``to``."""


def curvature_kind(curvature: Curvature | None) -> str:
    """What ``curvature`` is: ``EXACT``, ``INPUT_SUBSPACE``, ``SKETCH``, or "none" for None."""
    if curvature is None:
        return "none"
    if isinstance(curvature, InputSubspaceCurvature):
        return INPUT_SUBSPACE
    return EXACT if curvature.exact else SKETCH


def sketch_hessian(
    objective: Objective,
    w: torch.Tensor,
    rank: int,
    iters: int,
    seed: int,
    ids: np.ndarray | None = None,
) -> CurvatureSketch:
    """Sketch the data Hessian of ``objective`` at ``w``: rank-``rank`` randomised Nyström
    with ``iters`` blocks of Hessian-vector products (``iters - 1`` subspace iterations).

    ``ids`` (None: every sample) restricts the Hessian to those rows, averaged over them:
    (1/len(ids)) sum_{i in ids} Hess l_i. Returns a :class:`CurvatureSketch` (rank capped at
    the parameter dimension). Deterministic for a given ``seed`` (and ``ids``).
    """
    if rank < 1 or iters < 1:
        raise ConfigError(f"a curvature sketch needs rank >= 1 and iters >= 1, got {rank} and {iters}")
    count = objective.n if ids is None else len(ids)
    if count < 1:
        raise ConfigError("a curvature sketch needs at least one sample; ids is empty")
    rank = min(rank, objective.dim)
    gen = torch.Generator().manual_seed(int(seed))  # drawn on the CPU: the same sketch on every device
    omega = torch.randn(objective.dim, rank, generator=gen, dtype=torch.float64, device="cpu")
    omega = omega.to(objective.device, objective.dtype)
    basis = torch.linalg.qr(omega)[0]
    product = objective.hvp_sum_many(w, basis.T.contiguous(), ids).T / count
    for _ in range(iters - 1):  # subspace iterations
        basis = torch.linalg.qr(product)[0]
        product = objective.hvp_sum_many(w, basis.T.contiguous(), ids).T / count
    basis64, product64 = basis.to(torch.float64), product.to(torch.float64)
    # Nyström: eig of Y (Q^T Y)^-1 Y^T, stabilised by a tiny shift nu (Tropp et al. 2017)
    nu = torch.finfo(objective.dtype).eps * float(product64.norm())
    shifted = product64 + nu * basis64
    core = basis64.T @ shifted
    chol = torch.linalg.cholesky(0.5 * (core + core.T))
    factor = torch.linalg.solve_triangular(chol, shifted.T, upper=False).T
    u, s, _ = torch.linalg.svd(factor, full_matrices=False)
    values = torch.clamp(s * s - nu, min=0.0)
    return CurvatureSketch(u.T.contiguous().to(objective.dtype), values.to(objective.dtype), objective.lam)


def softmax_regression_hessian(
    objective: Objective, w: torch.Tensor, ids: np.ndarray | None, *, regularised: bool = True
) -> torch.Tensor:
    """The Hessian of a logistic regression's F over ``ids`` (None: every row) at ``w``
    (float64, (d, d)) from its structure: (1/|ids|) sum_i (diag p_i - p_i p_i^T) kron x_i x_i^T,
    plus lam I when ``regularised``, with x_i = (x, 1) and the blocks placed in the flat layout
    [weight (K x F) row-major, bias (K)].

    One weighted Gram matrix per class pair (:func:`class_pair_grams`; two classes need one).
    Counted, per row, as the Gram matrices' multiply-adds over a gradient's 2 d: about d / 8
    per-sample evaluations, d / 16 with two classes (each Gram matrix formed on and above its
    diagonal only).
    """
    blocks, gram_work = class_pair_grams(objective, w, ids)
    classes, features = blocks.shape[0], blocks.shape[1] - 1
    count = objective.n if ids is None else len(ids)
    flat = torch.empty(classes, features + 1, dtype=torch.long, device=blocks.device)
    flat[:, :features] = torch.arange(classes * features, device=blocks.device).reshape(classes, features)
    flat[:, features] = classes * features + torch.arange(classes, device=blocks.device)
    order = flat.reshape(-1)
    size = classes * (features + 1)
    hessian = torch.empty(size, size, dtype=torch.float64, device=blocks.device)
    hessian[order[:, None], order[None, :]] = blocks.reshape(size, size) / count
    objective.count(count * max(1, math.ceil(gram_work / (2 * size))))
    hessian = 0.5 * (hessian + hessian.T)  # the Gram blocks are symmetric up to rounding
    if regularised:
        hessian = hessian + objective.lam * torch.eye(size, dtype=torch.float64, device=hessian.device)
    return hessian


def exact_curvature(objective: Objective, w: torch.Tensor) -> CurvatureSketch:
    """The whole data Hessian of a logistic regression at ``w`` over every training row, as a
    full-rank :class:`CurvatureSketch` (``exact=True``): its eigenpairs in descending order,
    so the preconditioner it gives is the Newton step itself."""
    values, vectors = torch.linalg.eigh(softmax_regression_hessian(objective, w, None, regularised=False))
    values, vectors = values.flip(0).clamp(min=0.0), vectors.flip(1)  # rounding can leave -1e-17
    return CurvatureSketch(
        vectors.T.contiguous().to(objective.dtype), values.to(objective.dtype), objective.lam, True
    )


def save_sketch(path: Path, sketch: Curvature, meta: dict[str, str]) -> None:
    """Write ``sketch`` (and string metadata) to ``path`` as safetensors: a sketch's
    eigenvectors in float16 (float32 for an exact Hessian), an input-subspace curvature's
    basis in float32 and its projected Hessian's triangle in scaled float16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(sketch, InputSubspaceCurvature):
        packed, scale = sketch.packed_core()
        tensors = {
            "basis": sketch.basis.to(torch.float32).contiguous(),
            "core": packed,
            "core_scale": torch.tensor([scale], dtype=torch.float64),
            "tail": torch.tensor([sketch.tail], dtype=torch.float64),
        }
        kind = {"kind": INPUT_SUBSPACE, "lam": repr(sketch.lam)}
        save_tensors(tensors, path, stable_metadata({**meta, **kind}))
        return
    # Half precision halves the bytes; a sketched preconditioner needs no more (rows
    # re-orthonormalised on load). An exact Hessian keeps float32: its Newton step is meant to land.
    tensors = {
        "vectors": sketch.vectors.to(torch.float32 if sketch.exact else torch.float16).contiguous(),
        "values": sketch.values.to(torch.float32).contiguous(),
    }
    exact = {"exact": "1"} if sketch.exact else {}
    save_tensors(tensors, path, stable_metadata({**meta, **exact, "lam": repr(sketch.lam)}))


def load_sketch(run_dir: Path, *, dim: int, lam: float) -> Curvature | None:
    """Read a run's curvature (float32; a sketch's rows orthonormal); None when the run was
    trained without one.

    Raises HistoryError when the file is unreadable or does not fit the run.
    """
    path = run_dir / CURVATURE_FILE
    if not path.exists():
        return None
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            meta = read_metadata(handle.metadata())
    except (SafetensorError, OSError, ValueError) as exc:
        raise HistoryError(f"{path} is corrupt ({exc}); retrain the run to recreate its history") from exc
    if float(meta.get("lam", "nan")) != lam:
        raise HistoryError(f"{path} was recorded with lam={meta.get('lam')}, the run has lam={lam}")
    if meta.get("kind") == INPUT_SUBSPACE:
        return load_input_subspace(path, tensors, dim=dim, lam=lam)
    try:
        vectors, values = tensors["vectors"], tensors["values"]
    except KeyError as exc:
        raise HistoryError(f"{path} is corrupt (no {exc}); retrain the run to recreate its history") from exc
    if vectors.ndim != 2 or vectors.shape[1] != dim or values.shape != (vectors.shape[0],):
        raise HistoryError(
            f"{path} holds a sketch of shape {tuple(vectors.shape)}; this model has {dim} parameters"
        )
    if not (torch.isfinite(vectors).all() and torch.isfinite(values).all()) or (values < 0).any():
        raise HistoryError(f"{path} holds non-finite or negative curvature; retrain the run")
    exact = meta.get("exact") == "1"
    if not exact:  # float16 rows drift from orthonormal; an exact Hessian's float32 ones do not
        vectors = torch.linalg.qr(vectors.to(torch.float32).T)[0].T.contiguous()
    return CurvatureSketch(vectors.to(torch.float32), values, lam, exact)


def load_input_subspace(
    path: Path, tensors: dict[str, torch.Tensor], *, dim: int, lam: float
) -> InputSubspaceCurvature:
    """The :class:`InputSubspaceCurvature` held by ``tensors`` (read from ``path``), checked
    against a model of ``dim`` parameters; HistoryError when it does not fit or is damaged."""
    try:
        basis, packed, tail = tensors["basis"], tensors["core"], tensors["tail"]
    except KeyError as exc:
        raise HistoryError(f"{path} is corrupt (no {exc}); retrain the run to recreate its history") from exc
    # runs recorded before the core was stored in half precision hold float32 and no scale
    scale_tensor = tensors.get("core_scale", torch.ones(1, dtype=torch.float64))
    scale = float(scale_tensor.reshape(-1)[0]) if scale_tensor.numel() == 1 else float("nan")
    if not math.isfinite(scale) or scale <= 0:
        raise HistoryError(f"{path} holds a damaged core scale; retrain the run to recreate its history")
    k = basis.shape[1] if basis.ndim == 2 else 0
    core = unpack_core(packed, scale)
    fits = (
        k > 0
        and core is not None
        and core.shape[0] % k == 0
        and (core.shape[0] // k) * basis.shape[0] == dim
        and tail.shape == (1,)
    )
    if not fits:
        raise HistoryError(
            f"{path} holds an input-subspace curvature of basis {tuple(basis.shape)} and a core of "
            f"{packed.numel()} numbers; it does not fit this model's {dim} parameters"
        )
    assert core is not None
    finite = torch.isfinite(basis).all() and torch.isfinite(core).all() and torch.isfinite(tail).all()
    if not finite or float(tail[0]) < 0:
        raise HistoryError(f"{path} holds non-finite or negative curvature; retrain the run")
    return InputSubspaceCurvature(basis.to(torch.float32), core.to(torch.float32), float(tail[0]), lam)

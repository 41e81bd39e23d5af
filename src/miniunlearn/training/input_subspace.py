"""Input-subspace curvature: a logistic regression's data Hessian, exact where its inputs vary.

The data Hessian of softmax regression is (1/n) sum_i A_i kron x_i x_i^T, with
A_i = diag p_i - p_i p_i^T (K x K, the softmax's curvature) and x_i = (x, 1) the input with
its bias coordinate. Its steep directions lie where the inputs vary. With U the top k
principal directions of the inputs (their second moment, on a seeded row subsample), the
Hessian projected onto V = I_K kron U is the (Kk) x (Kk) matrix (1/n) sum_i A_i kron z_i z_i^T,
z_i = U^T x_i: one weighted Gram matrix of the z_i per pair of classes, formed over every
training row on and above its diagonal (about half a square's arithmetic) and stored as a
half-precision triangle scaled by its largest entry (half the bytes; as a preconditioner
it steps as the float32 core does). k is the largest the history budget allows in bytes
and in recording passes (:func:`largest_basis`). On the complement of V the data curvature
lies between 0 and its largest value there (``tail``, estimated by power iteration on a row
subsample), and the preconditioner takes ``tail + lam`` there, so it overshoots a direction
it does not resolve at most by how far that estimate falls short.

Against a Nyström sketch of the same bytes this resolves about K times more directions, and
exactly, because it uses the loss's structure rather than random probes of it
(docs/results/input-subspace.md compares them against the exact MNIST Hessian). The core
over every row is what a stored history buys: formed on a retain subsample when a request
arrives (the ``nystrom`` peer's ``basis`` option) it preconditions less well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ConfigError
from ..models import LogisticRegression
from ..objective import Objective

MIN_BASIS = 4
TAIL_ITERS = 8
"""Power iterations estimating the complement's largest curvature."""
TAIL_BLOCK = 4


def basis_bytes(k: int, classes: int, features: int) -> int:
    """Bytes an input-subspace curvature of ``k`` directions stores for a logistic regression
    of ``classes`` outputs and ``features`` inputs: the float32 basis, the projected Hessian's
    upper triangle in float16 (scaled by its largest entry) and the tail and that scale
    (float64 each)."""
    m = classes * k
    return 4 * k * (features + 1) + 2 * (m * (m + 1) // 2) + 16


def largest_basis(
    limit: int,
    budget: int,
    classes: int,
    features: int,
    max_passes: float = math.inf,
    rows_share: float = 1.0,
) -> int:
    """The largest k <= ``limit`` (and <= features + 1) whose curvature fits ``budget`` bytes
    and whose recording (:func:`recording_passes`, the basis and tail formed on ``rows_share``
    of the rows) takes at most ``max_passes`` passes over the training set. Where the basis
    and tail alone take more (a short run on a small dataset), only the core, the part k
    sets, is held to ``max_passes``. 0 when fewer than ``MIN_BASIS`` directions would fit."""
    fixed = recording_passes(0, classes, features, rows_share)
    core_passes = max_passes - fixed
    if core_passes < core_evals_per_row(MIN_BASIS, classes, features):
        core_passes = max_passes
    k = min(limit, features + 1)
    while k >= MIN_BASIS and (
        basis_bytes(k, classes, features) > budget or core_evals_per_row(k, classes, features) > core_passes
    ):
        k -= 1
    return k if k >= MIN_BASIS else 0


def pair_grams(classes: int) -> int:
    """Weighted Gram matrices the curvature forms per row: one per pair of classes (one for two)."""
    return 1 if classes == 2 else classes * (classes + 1) // 2


def core_evals_per_row(k: int, classes: int, features: int) -> int:
    """Per-sample evaluations :func:`projected_hessian` counts per row for ``k`` directions: the
    Gram matrices' and the projection's multiply-adds over a gradient's 2 d."""
    dim = classes * (features + 1)
    work = pair_grams(classes) * gram_multiply_adds(k) + (features + 1) * k
    return math.ceil(work / (2 * dim))


def basis_evals_per_row(features: int, dim: int) -> int:
    """Per-sample evaluations :func:`input_basis` counts per row: the second moment's multiply-adds."""
    return math.ceil((features + 1) ** 2 / (2 * dim))


def recording_passes(k: int, classes: int, features: int, rows_share: float = 1.0) -> float:
    """Passes over the training set that :func:`input_subspace_curvature` counts for ``k``
    directions: the core over every row, the basis and the tail's power iterations over
    ``rows_share`` of them."""
    dim = classes * (features + 1)
    tail = 2 * TAIL_ITERS * TAIL_BLOCK  # Hessian-vector products count two evaluations
    return core_evals_per_row(k, classes, features) + rows_share * (basis_evals_per_row(features, dim) + tail)


@dataclass
class InputSubspaceCurvature:
    """The data Hessian of a logistic regression on the span of ``basis`` (per class) and a
    scalar on the rest: ``basis`` (F + 1, k) with orthonormal columns, ``core`` (K k, K k) the
    projected data Hessian (without lam), ``tail`` the complement's largest data curvature,
    and the run's ``lam``. Parameters are laid out as the model flattens them: the weight
    (K x F, row-major), then the bias (K)."""

    basis: torch.Tensor
    core: torch.Tensor
    tail: float
    lam: float
    exact: bool = False  # a preconditioner, never the Newton step itself
    _factor: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def classes(self) -> int:
        """K, the number of outputs."""
        return self.core.shape[0] // self.basis.shape[1]

    @property
    def rank(self) -> int:
        """Directions resolved exactly: K k."""
        return int(self.core.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes as stored (float32 basis, the core's half-precision upper triangle and its scale,
        the tail): what a method reads."""
        return basis_bytes(self.basis.shape[1], self.classes, self.basis.shape[0] - 1)

    def packed_core(self) -> tuple[torch.Tensor, float]:
        """The core's upper triangle, row by row, as stored: float16 numbers scaled by the
        largest magnitude among them, and that scale. Half precision halves the largest part of
        the bytes; as a preconditioner it steps as the float32 core does (docs/results/input-subspace.md)."""
        rows, cols = torch.triu_indices(self.rank, self.rank)
        triangle = self.core[rows, cols].to(torch.float64)
        scale = float(triangle.abs().max()) if triangle.numel() else 0.0
        scale = scale or 1.0  # an all-zero core stores zeros
        return (triangle / scale).to(torch.float16).contiguous(), scale

    def to(self, device: torch.device) -> InputSubspaceCurvature:
        """Return this curvature with its tensors on ``device``."""
        return InputSubspaceCurvature(self.basis.to(device), self.core.to(device), self.tail, self.lam)

    def factor(self) -> torch.Tensor:
        """The Cholesky factor of core + lam I in float64, computed once (with lam = 0 a
        singular core gets the smallest jitter, a power of ten of its mean diagonal, that
        factors)."""
        if self._factor is None:
            core = self.core.to(torch.float64)
            core = 0.5 * (core + core.T)
            eye = torch.eye(core.shape[0], dtype=torch.float64, device=core.device)
            scale = float(core.diagonal().mean()) or 1.0  # an all-zero core: jitter from 1e-12
            shift, jitter = self.lam, 0.0
            while True:
                factor, info = torch.linalg.cholesky_ex(core + (shift + jitter) * eye)
                if int(info) == 0 or jitter > scale:
                    break
                jitter = scale * 1e-12 if jitter == 0.0 else jitter * 10
            self._factor = factor
        return self._factor

    @property
    def complement_curvature(self) -> float:
        """What the preconditioner takes on the complement: tail + lam (kept above zero)."""
        return max(self.tail + self.lam, 1e-12)

    def inverse_hessian_product(self, g: torch.Tensor) -> torch.Tensor:
        """Return P^(-1) g: the projected Hessian's inverse on the span of the basis (per
        class), 1 / (tail + lam) on its complement; in ``g``'s dtype."""
        basis = self.basis.to(torch.float64)
        block = to_blocks(g.to(torch.float64), self.classes)
        coords = block @ basis  # (K, k)
        solved = torch.cholesky_solve(coords.reshape(-1, 1), self.factor()).reshape(coords.shape)
        out = solved @ basis.T + (block - coords @ basis.T) / self.complement_curvature
        return from_blocks(out).to(g.dtype)


def unpack_core(packed: torch.Tensor, scale: float = 1.0) -> torch.Tensor | None:
    """The symmetric float32 matrix whose upper triangle :meth:`InputSubspaceCurvature.packed_core`
    stored (``packed`` times ``scale``; runs recorded before half precision stored float32 and
    no scale), or None when ``packed`` is no triangle's length."""
    m = int(round((math.sqrt(8 * packed.numel() + 1) - 1) / 2))
    if packed.ndim != 1 or m * (m + 1) // 2 != packed.numel():
        return None
    values = (packed.to(torch.float64) * scale).to(torch.float32)
    core = torch.zeros(m, m, dtype=torch.float32)
    rows, cols = torch.triu_indices(m, m)
    core[rows, cols] = values
    core[cols, rows] = values
    return core


def to_blocks(vs: torch.Tensor, classes: int) -> torch.Tensor:
    """Flat parameter vectors (..., d), laid out as weight (K x F, row-major) then bias (K), as
    per-class blocks (..., K, F + 1) with the bias last, the layout of the augmented inputs."""
    features = vs.shape[-1] // classes - 1
    weight = vs[..., : classes * features].reshape(*vs.shape[:-1], classes, features)
    return torch.cat([weight, vs[..., classes * features :, None]], -1)


def from_blocks(blocks: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_blocks`: blocks (..., K, F + 1) back to flat vectors (..., d)."""
    lead = blocks.shape[:-2]
    return torch.cat([blocks[..., :-1].reshape(*lead, -1), blocks[..., -1]], -1)


def require_linear_logits(objective: Objective) -> tuple[int, int]:
    """Return (K classes, F features) of a logistic regression's objective; ConfigError for
    any other model (the structure this curvature uses is the softmax's on linear logits)."""
    if not isinstance(objective.model, LogisticRegression):
        raise ConfigError(
            "input-subspace curvature needs logits linear in the parameters (logistic regression); "
            f"got a {type(objective.model).__name__}; use a Nyström sketch (--curvature-rank)"
        )
    weight = objective.unflatten(torch.zeros(objective.dim, dtype=objective.dtype))["linear.weight"]
    return int(weight.shape[0]), int(weight.shape[1])


def augmented(x: torch.Tensor) -> torch.Tensor:
    """Inputs (m, F) with the bias coordinate appended, in float64: (m, F + 1)."""
    x64 = x.to(torch.float64)
    return torch.cat([x64, torch.ones(x64.shape[0], 1, dtype=torch.float64, device=x64.device)], 1)


def input_basis(objective: Objective, k: int, rows: np.ndarray | None) -> torch.Tensor:
    """The top ``k`` principal directions (uncentred: the second moment, bias coordinate
    included) of the inputs of ``rows`` (None: every row): (F + 1, k) orthonormal, float64.
    Counted as its multiply-adds over a gradient's."""
    width = objective.x.shape[1] + 1
    moment = torch.zeros(width, width, dtype=torch.float64, device=objective.x.device)
    for block in objective.input_blocks(rows):
        xt = augmented(block)
        moment += xt.T @ xt
    _, vectors = torch.linalg.eigh(moment)
    count = objective.n if rows is None else len(rows)
    objective.count(count * basis_evals_per_row(width - 1, objective.dim))
    return vectors[:, -k:].flip(1).contiguous()


GRAM_TILE = 16
"""Columns per band of :func:`symmetric_gram`: narrow enough to skip most of the lower
triangle, wide enough for efficient matrix products."""


def gram_multiply_adds(width: int, tile: int = GRAM_TILE) -> int:
    """Multiply-adds per row that :func:`symmetric_gram` spends on a ``width``-wide Gram matrix:
    each band of ``tile`` columns against the columns from its own onwards (about width^2 / 2)."""
    return sum(min(tile, width - start) * (width - start) for start in range(0, width, tile))


def symmetric_gram(z: torch.Tensor, weights: torch.Tensor, tile: int = GRAM_TILE) -> torch.Tensor:
    """Return sum_i weights_i z_i z_i^T for rows ``z`` (m, width): formed band by band on and
    above the diagonal only, the lower triangle mirrored (:func:`gram_multiply_adds` counts it)."""
    width = z.shape[1]
    weighted = z * weights[:, None]
    upper = torch.zeros(width, width, dtype=z.dtype, device=z.device)
    for start in range(0, width, tile):
        stop = min(start + tile, width)
        upper[start:stop, start:] = weighted[:, start:stop].T @ z[:, start:]
    return torch.triu(upper) + torch.triu(upper, 1).T  # each band's diagonal tile is square


def class_pair_grams(
    objective: Objective, w: torch.Tensor, ids: np.ndarray | None, basis: torch.Tensor | None = None
) -> tuple[torch.Tensor, int]:
    """The sum over ``ids`` (None: every row) of A_i kron z_i z_i^T for a logistic regression at
    ``w``, with z_i = ``basis``^T x_i (x_i = (x, 1) itself when ``basis`` is None), as float64
    blocks (K, m, K, m) indexed by class pair; and the multiply-adds spent per row. One weighted
    Gram matrix (:func:`symmetric_gram`) per pair of classes, a block of rows at a time; two
    classes need one, every block being +-p_0 p_1 z z^T. Counts nothing: the callers count
    what it spent."""
    params = objective.unflatten(w.to(objective.dtype))
    weight = params["linear.weight"].to(torch.float64)
    bias = params["linear.bias"].to(torch.float64)
    classes = weight.shape[0]
    width = weight.shape[1] + 1 if basis is None else basis.shape[1]
    blocks = torch.zeros(classes, width, classes, width, dtype=torch.float64, device=w.device)
    pairs = [(a, b) for a in range(classes) for b in range(a, classes)]
    for x in objective.input_blocks(ids):
        x64 = x.to(torch.float64)
        xt = augmented(x64)
        z = xt if basis is None else xt @ basis
        p = torch.softmax(x64 @ weight.T + bias, dim=1)
        if classes == 2:
            gram = symmetric_gram(z, p[:, 0] * p[:, 1])
            for a, b in pairs:
                blocks[a, :, b, :] += gram if a == b else -gram
            continue
        for a, b in pairs:
            blocks[a, :, b, :] += symmetric_gram(z, p[:, a] * (float(a == b) - p[:, b]))
    for a, b in pairs:
        if a != b:
            blocks[b, :, a, :] = blocks[a, :, b, :].T
    return blocks, pair_grams(classes) * gram_multiply_adds(width)


def projected_hessian(
    objective: Objective, w: torch.Tensor, basis: torch.Tensor, ids: np.ndarray | None = None
) -> torch.Tensor:
    """The data Hessian of a logistic regression at ``w`` over ``ids`` (None: every row),
    projected onto I_K kron ``basis``: (1/|ids|) sum_i A_i kron z_i z_i^T, (K k, K k) float64,
    without lam (:func:`class_pair_grams`); counted as the Gram matrices' multiply-adds and the
    projection's over a gradient's."""
    blocks, _ = class_pair_grams(objective, w, ids, basis)
    classes, k = blocks.shape[0], basis.shape[1]
    count = objective.n if ids is None else len(ids)
    objective.count(count * core_evals_per_row(k, classes, basis.shape[0] - 1))
    core = blocks.reshape(classes * k, classes * k) / count
    return 0.5 * (core + core.T)


def complement_tail(
    objective: Objective,
    w: torch.Tensor,
    basis: torch.Tensor,
    rows: np.ndarray | None,
    seed: int,
    iters: int = TAIL_ITERS,
) -> float:
    """The largest data curvature on the complement of I_K kron ``basis``, by block power
    iteration with Hessian-vector products over ``rows`` (None: every row), seeded; the
    largest Rayleigh quotient seen. Counted by the products."""
    classes, _ = require_linear_logits(objective)
    basis = basis.to(torch.float64)

    def project_out(vs: torch.Tensor) -> torch.Tensor:
        blocks = to_blocks(vs, classes)
        return from_blocks(blocks - (blocks @ basis) @ basis.T)

    count = objective.n if rows is None else len(rows)
    gen = torch.Generator().manual_seed(int(seed))
    vs = project_out(torch.randn(TAIL_BLOCK, objective.dim, generator=gen, dtype=torch.float64))
    top = 0.0
    for _ in range(iters):
        vs = torch.linalg.qr(vs.T)[0].T
        hv = objective.hvp_sum_many(w, vs.to(objective.dtype).contiguous(), rows).to(torch.float64) / count
        hv = project_out(hv)
        top = max(top, float((vs * hv).sum(1).max()))
        vs = hv
    return top


def input_subspace_curvature(
    objective: Objective,
    w: torch.Tensor,
    k: int,
    rows: np.ndarray | None,
    seed: int,
    core_rows: np.ndarray | None = None,
    tail_iters: int = TAIL_ITERS,
) -> InputSubspaceCurvature:
    """The input-subspace curvature of a logistic regression at ``w``: the top ``k`` principal
    input directions from ``rows`` (None: every row), the Hessian projected on them over
    ``core_rows`` (None: every row; the recorded curvature's), and the complement's largest
    curvature by ``tail_iters`` power iterations over ``rows``."""
    _, features = require_linear_logits(objective)
    if not 1 <= k <= features + 1:
        raise ConfigError(f"an input subspace needs 1..{features + 1} directions, got {k}")
    basis = input_basis(objective, k, rows)
    core = projected_hessian(objective, w, basis, core_rows)
    tail = complement_tail(objective, w, basis, rows, seed, tail_iters)
    return InputSubspaceCurvature(basis.to(torch.float32), core.to(torch.float32), tail, objective.lam)

"""The regularised training objective over flat parameter vectors.

F_S(w) = (1/|S|) sum_{i in S} CE(f(x_i; w), y_i) + (lam/2) |w|^2 [+ b.w / |S|]

The bracketed term is the loss perturbation of a run trained for certified removal
(:mod:`miniunlearn.training.certified`): on every subset S it adds b.w once to the sum of
losses, as Guo et al. perturb L(w; S) = sum_S l_i + lam |S| |w|^2 / 2 + b.w. The data terms
(``loss_grad_sum`` and the like) never include it, so the gradient identity
|S| (grad F_S - lam w) = sum_S grad l_i + b keeps b on whichever side holds the full set.

Every part of the library (trainer, retrain oracle, unlearning methods) evaluates
losses, gradients and Hessian-vector products through this one class, so that the
same ids in the same order always give bit-identical results. Work is chunked over
samples to bound memory and vectorised with ``torch.func``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, jvp, vmap

IdArray = np.ndarray | torch.Tensor | None


def flatten_params(model: nn.Module) -> torch.Tensor:
    """Return all parameters of ``model`` concatenated into one detached 1-D tensor."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _take(tensor: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` of ``tensor``: a view for a slice, else ``index_select`` (about three
    times faster than advanced indexing on CPU, where gathering a block of ids took a third of
    a logistic regression's pass)."""
    return tensor[rows] if isinstance(rows, slice) else tensor.index_select(0, rows)


class Objective:
    """Cross-entropy plus L2 over the training samples of one dataset.

    Takes a model (used only for its structure; its device is where the data is moved
    and every sum is computed), training inputs ``x`` (n, features), labels ``y`` (n,),
    the L2 strength ``lam`` and a chunk size (rows per vectorised block); with ``share_data``
    the inputs keep their own precision and are cast a block at a time; ``perturbation``: the
    vector b of a certified-removal run (see the module docstring). Counts per-sample
    gradient evaluations in ``grad_evals`` (a Hessian-vector product counts two).
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        lam: float,
        chunk_size: int = 8192,
        *,
        share_data: bool = False,
        perturbation: torch.Tensor | None = None,
    ) -> None:
        self.model = model
        params = dict(model.named_parameters())
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.dim = int(sum(self.sizes))
        self.dtype = next(iter(params.values())).dtype
        device = next(iter(params.values())).device  # the data joins the model's device
        # shared: kept in its own precision (no copy) and cast a block at a time
        self.x = x.to(device) if share_data else x.to(device, self.dtype)
        self.y = y.to(device, torch.long)
        self.n = int(x.shape[0])
        self.lam = float(lam)
        self.chunk_size = int(chunk_size)
        self.grad_evals = 0
        self.counts_on: Objective | None = None  # the objective a cast copy also counts on
        # b of a certified-removal run (None: an ordinary objective)
        self.perturbation = None if perturbation is None else perturbation.to(device, self.dtype)

    @property
    def device(self) -> torch.device:
        """The device the data (and so every computation) lives on."""
        return self.x.device

    def cast(self, dtype: torch.dtype) -> Objective:
        """Return this objective computed in ``dtype`` (a copy of the model cast to it, sharing
        the data, which is cast a block at a time); ``self`` when it already is. Gradient
        evaluations are counted on the copy and on this objective."""
        if dtype == self.dtype:
            return self
        model = copy.deepcopy(self.model).to(dtype)
        cast = Objective(
            model, self.x, self.y, self.lam, self.chunk_size, share_data=True, perturbation=self.perturbation
        )
        cast.counts_on = self
        return cast

    def count(self, evals: int) -> None:
        """Add ``evals`` per-sample gradient evaluations to ``grad_evals`` (and to the objective
        this one was cast from)."""
        self.grad_evals += int(evals)
        if self.counts_on is not None:
            self.counts_on.count(evals)

    # -- parameter plumbing -------------------------------------------------
    def unflatten(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a flat vector into a name -> tensor dict shaped like the model's parameters."""
        pieces = torch.split(w, self.sizes)
        return {n: p.reshape(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def logits(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Return the model's logits at flat parameters ``w`` for inputs ``x`` (chunked)."""
        with torch.no_grad():
            outs = [
                functional_call(
                    self.model, self.unflatten(w), (x[i : i + self.chunk_size].to(self.device, self.dtype),)
                )
                for i in range(0, x.shape[0], self.chunk_size)
            ]
        if not outs:
            return torch.empty(0, 0, dtype=self.dtype, device=self.device)
        return torch.cat(outs)

    def _blocks(self, ids: IdArray) -> Iterator[slice | torch.Tensor]:
        """Yield the rows of ``ids`` (all samples if None) ``chunk_size`` at a time: slices, or
        index tensors on this objective's device."""
        if ids is None:
            for i in range(0, self.n, self.chunk_size):
                yield slice(i, i + self.chunk_size)
            return
        idx = torch.as_tensor(np.asarray(ids), dtype=torch.long).to(self.device)
        for i in range(0, idx.numel(), self.chunk_size):
            yield idx[i : i + self.chunk_size]

    def _chunks(self, ids: IdArray) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (inputs, labels) of ``ids`` (all samples if None) a block at a time, the
        inputs in this objective's precision (one block cast at a time)."""
        for rows in self._blocks(ids):
            yield _take(self.x, rows).to(self.dtype), _take(self.y, rows)

    def input_blocks(self, ids: IdArray = None) -> Iterator[torch.Tensor]:
        """Yield the inputs of ``ids`` (all samples if None) as stored, ``chunk_size`` rows at a
        time, for code that uses the model's structure and picks its own precision (Gram
        matrices of the inputs, logits in float64). Counts nothing."""
        for rows in self._blocks(ids):
            yield _take(self.x, rows)

    def _count(self, ids: IdArray) -> int:
        return self.n if ids is None else int(len(ids))

    def _chunk_loss_sum(self, x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def loss_sum(w: torch.Tensor) -> torch.Tensor:
            out = functional_call(self.model, self.unflatten(w), (x,))
            return nn.functional.cross_entropy(out, y, reduction="sum")

        return loss_sum

    # -- data terms (sums over samples, no regulariser) ---------------------
    def loss_grad_sum(self, w: torch.Tensor, ids: IdArray = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (sum of losses, sum of loss gradients) over the samples ``ids`` (all if None)."""
        total_loss = torch.zeros((), dtype=self.dtype, device=self.device)
        total_grad = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for xc, yc in self._chunks(ids):
            g, v = grad_and_value(self._chunk_loss_sum(xc, yc))(w)
            total_loss += v.detach()
            total_grad += g.detach()
        self.count(self._count(ids))
        return total_loss, total_grad

    def loss_grad_sum_many(self, ws: torch.Tensor, ids: IdArray = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like ``loss_grad_sum`` at each row of ``ws`` (m, d), vectorised over rows.

        Returns (losses (m,), gradients (m, d)). Used for the forget set's gradients
        at all stored checkpoints at once.
        """
        m = ws.shape[0]
        total_loss = torch.zeros(m, dtype=self.dtype, device=self.device)
        total_grad = torch.zeros(m, self.dim, dtype=self.dtype, device=self.device)
        for xc, yc in self._chunks(ids):
            g, v = vmap(grad_and_value(self._chunk_loss_sum(xc, yc)))(ws)
            total_loss += v.detach()
            total_grad += g.detach()
        self.count(m * self._count(ids))
        return total_loss, total_grad

    def loss_sum(self, w: torch.Tensor, ids: IdArray = None) -> torch.Tensor:
        """Return the sum of per-sample losses over ``ids`` (all if None); no gradient."""
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        with torch.no_grad():
            for xc, yc in self._chunks(ids):
                total += self._chunk_loss_sum(xc, yc)(w)
        return total

    def hvp_sum(self, w: torch.Tensor, v: torch.Tensor, ids: IdArray = None) -> torch.Tensor:
        """Return sum_{i in ids} Hess l_i(w) @ v (forward-over-reverse), no regulariser."""
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        for xc, yc in self._chunks(ids):
            f = self._chunk_loss_sum(xc, yc)

            def grad_f(w_: torch.Tensor, f=f) -> torch.Tensor:
                return grad_and_value(f)(w_)[0]

            total += jvp(grad_f, (w,), (v,))[1].detach()
        self.count(2 * self._count(ids))
        return total

    def hvp_sum_many(self, w: torch.Tensor, vs: torch.Tensor, ids: IdArray = None) -> torch.Tensor:
        """Like ``hvp_sum`` for every row of ``vs`` (m, d) at once (vmap over directions).

        Returns (m, d): row j is sum_{i in ids} Hess l_i(w) @ vs[j]. Counts 2 m per-sample
        evaluations per sample, like m separate products, though it runs several times
        faster than m calls to ``hvp_sum`` because each chunk of data is read once.
        """
        total = torch.zeros_like(vs)
        for xc, yc in self._chunks(ids):
            grad_f = grad(self._chunk_loss_sum(xc, yc))

            def directional(v: torch.Tensor, grad_f=grad_f) -> torch.Tensor:
                return jvp(grad_f, (w,), (v,))[1]

            total += vmap(directional)(vs).detach()
        self.count(2 * vs.shape[0] * self._count(ids))
        return total

    # -- the regularised objective -----------------------------------------
    def value_and_grad(self, w: torch.Tensor, ids: IdArray = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (F_S(w), grad F_S(w)) for S = ``ids`` (all samples if None).

        An empty ``ids`` gives the regulariser alone.
        """
        count = self._count(ids)
        reg_value = 0.5 * self.lam * torch.dot(w, w)
        if count == 0:
            return reg_value, self.lam * w
        loss, grad = self.loss_grad_sum(w, ids)
        value, grad = loss / count + reg_value, grad / count + self.lam * w
        if self.perturbation is not None:
            value, grad = value + torch.dot(self.perturbation, w) / count, grad + self.perturbation / count
        return value, grad

    def hvp(self, w: torch.Tensor, v: torch.Tensor, ids: IdArray = None) -> torch.Tensor:
        """Return Hess F_S(w) @ v for S = ``ids`` (all samples if None)."""
        count = self._count(ids)
        if count == 0:
            return self.lam * v
        return self.hvp_sum(w, v, ids) / count + self.lam * v

    def value(self, w: torch.Tensor, ids: IdArray = None) -> torch.Tensor:
        """Return F_S(w) for S = ``ids`` (all samples if None)."""
        count = self._count(ids)
        reg_value = 0.5 * self.lam * torch.dot(w, w)
        if count == 0:
            return reg_value
        value = self.loss_sum(w, ids) / count + reg_value
        if self.perturbation is not None:
            value = value + torch.dot(self.perturbation, w) / count
        return value

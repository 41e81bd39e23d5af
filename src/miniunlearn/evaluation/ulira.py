"""Per-example membership inference against unlearning, in the U-LiRA style.

After Hayes et al. (2024), "Inexact unlearning needs more careful evaluations to
avoid a false sense of privacy". The question asked of each sample i is: does the
unlearned model's confidence on i look like that of a model where i was
*unlearned*, or like that of a model that *never saw* i? If an unlearning method
is exact, the two distributions coincide and the attack's AUC is 0.5.

No model code lives here: the caller passes three callables.

* ``train_fn(member_ids, seed) -> state``: train a model on pool samples
  ``member_ids`` and return an opaque state.
* ``unlearn_fn(state, forget_ids, member_ids, seed) -> state``: remove
  ``forget_ids`` (a subset of ``member_ids``) and return the unlearned state.
  For exact unlearning this retrains on ``member_ids`` minus ``forget_ids``.
  It must not modify ``state`` in place when a ``cache`` is used.
* ``confidence_fn(state, ids) -> phi``: the logit-scaled confidence
  ``log p_y - log(1 - p_y)`` of the true class of pool samples ``ids``
  (see :func:`miniunlearn.evaluation.metrics.logit_scaled_confidence`).

Protocol (shadow models s, then target models t, with the same recipe):

1. Membership: every pool sample is a member of (about) half of the models
   (offline-LiRA "keep" matrix), so each model trains on about half the pool.
2. Forget set: ``forget_fraction`` of each model's members, chosen so that every
   sample is forgotten in about the same number of models.
3. Train (cached), unlearn, and read phi from the *unlearned* model.
4. Shadows give, per sample, an "unlearned" sample of phi (models where it was
   forgotten) and an "out" sample (models where it was never a member). Each is
   summarised by a Gaussian. Guards for few observations: no observation ->
   the distribution's global mean; fewer than ``min_obs_for_std`` observations
   (or ``fix_variance=True``) -> the pooled within-sample std; every per-sample
   std is floored at ``std_floor_frac`` times the pooled std.
5. Targets: the score of sample i on target t, for i forgotten by t (positive)
   or never a member of t (negative), is the log-likelihood ratio
   ``log N(phi; mu_unl, sd_unl) - log N(phi; mu_out, sd_out)``.

Expected number of "unlearned" observations per sample is
``n_shadows * forget_fraction / 2``; with fewer than about 2, the unlearned
Gaussians fall back to population statistics and the attack is weaker (less
per-example). Increase ``n_shadows`` or ``forget_fraction`` for a stronger test.

Cache: pass any dict-like ``cache`` to reuse trained shadow/target states across
calls (e.g. across unlearning methods, with the same ``seed``, ``n_pool``,
``n_shadows`` and ``n_targets``, the memberships and training seeds are
identical). Keys are ``(member_set_hash, train_seed)`` where ``member_set_hash``
is the sha256 hex digest of the sorted member ids as little-endian int64; values
are whatever ``train_fn`` returned. Memberships do not depend on
``forget_fraction``, so the cache also serves different forget fractions.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from .attacks import AttackResult, best_balanced_threshold, score_attack

__all__ = ["ULiRAResult", "member_set_hash", "planned_trainings", "ulira_attack"]

TrainFn = Callable[[np.ndarray, int], Any]
UnlearnFn = Callable[[Any, np.ndarray, np.ndarray, int], Any]
ConfidenceFn = Callable[[Any, np.ndarray], Any]


@dataclass(frozen=True)
class ULiRAResult:
    """Result of :func:`ulira_attack` on the target models (all targets pooled).

    ``auc``: ROC AUC of forgotten (positive) vs never-seen (negative) samples.
    ``balanced_accuracy``: at ``threshold``, chosen on the shadows' own
    leave-one-out scores (honest). ``balanced_accuracy_oracle``: at the best
    threshold for the target scores themselves (optimistic upper bound).
    ``tpr_at_1pct_fpr``, ``fpr``/``tpr``: ROC summary and curve.
    ``per_target_auc``: AUC of each target model alone (NaN if it had no
    positives). ``shadow_auc``: leave-one-out AUC on the shadows.
    """

    name: str
    auc: float
    balanced_accuracy: float
    balanced_accuracy_oracle: float
    tpr_at_1pct_fpr: float
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    threshold: float
    per_target_auc: np.ndarray
    shadow_auc: float
    n_shadows: int
    n_targets: int
    n_pos: int
    n_neg: int

    def as_attack_result(self) -> AttackResult:
        """Return the target-model scores as an :class:`AttackResult` (for plots/tables)."""
        return AttackResult(
            name=self.name,
            auc=self.auc,
            balanced_accuracy=self.balanced_accuracy,
            tpr_at_1pct_fpr=self.tpr_at_1pct_fpr,
            fpr=self.fpr,
            tpr=self.tpr,
            threshold=self.threshold,
            n_pos=self.n_pos,
            n_neg=self.n_neg,
        )


def member_set_hash(member_ids: np.ndarray) -> str:
    """Sha256 hex digest of the sorted ids as little-endian int64 (the cache key part)."""
    ids = np.sort(np.asarray(member_ids, dtype=np.int64)).astype("<i8")
    return hashlib.sha256(ids.tobytes()).hexdigest()


def _plan_models(
    n_pool: int, n_models: int, forget_fraction: float, ss: np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Memberships, forget sets and (train, unlearn) seeds of ``n_models`` models.

    Returns ``keep`` and ``forget`` as bool ``(n_models, n_pool)`` and
    ``seeds`` int64 ``(n_models, 2)``. ``keep`` depends only on ``ss``,
    ``n_pool`` and ``n_models``, not on ``forget_fraction``.
    """
    ss_keep, ss_odd, ss_forget, ss_seeds = ss.spawn(4)
    # Each column is a random ranking of the models; sample i is a member of the
    # models ranked below n_in[i] = n_models / 2 (randomly rounded if odd).
    ranks = np.random.default_rng(ss_keep).permuted(
        np.tile(np.arange(n_models)[:, None], (1, n_pool)), axis=0
    )
    n_in = np.full(n_pool, n_models // 2)
    if n_models % 2:
        n_in += np.random.default_rng(ss_odd).integers(0, 2, size=n_pool)
    keep = ranks < n_in[None, :]

    rng = np.random.default_rng(ss_forget)
    forget = np.zeros_like(keep)
    counts = np.zeros(n_pool, dtype=np.int64)
    for m in range(n_models):
        members = np.flatnonzero(keep[m])
        if members.size < 2:
            raise ValueError(f"model {m} got {members.size} members; use a larger n_pool (got {n_pool})")
        k = min(max(1, round(forget_fraction * members.size)), members.size - 1)
        # Prefer the members forgotten least often so far (random tie-break).
        order = np.lexsort((rng.random(members.size), counts[members]))
        chosen = members[order[:k]]
        forget[m, chosen] = True
        counts[chosen] += 1
    seeds = np.random.default_rng(ss_seeds).integers(0, 2**31 - 1, size=(n_models, 2))
    return keep, forget, seeds


def planned_trainings(
    n_pool: int, *, n_shadows: int, n_targets: int, seed: int
) -> list[tuple[np.ndarray, int]]:
    """The ``(member_ids, train_seed)`` of every model :func:`ulira_attack` with these
    arguments will ask ``train_fn`` for (shadows, then targets), whatever its
    ``forget_fraction``. Train them ahead (e.g. as parallel tasks into a disk cache that
    ``train_fn`` reads) and the attack finds them trained; the attack's results do not change.
    """
    ss_shadow, ss_target = np.random.SeedSequence(seed).spawn(2)
    out = []
    for n_models, ss in ((n_shadows, ss_shadow), (n_targets, ss_target)):
        # memberships and seeds do not depend on the forget fraction
        keep, _, seeds = _plan_models(n_pool, n_models, 0.5, ss)
        out += [(np.flatnonzero(keep[m]), int(seeds[m, 0])) for m in range(n_models)]
    return out


def _run_models(
    keep: np.ndarray,
    forget: np.ndarray,
    seeds: np.ndarray,
    train_fn: TrainFn,
    unlearn_fn: UnlearnFn,
    confidence_fn: ConfidenceFn,
    cache: MutableMapping[Any, Any] | None,
    bar: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Train, unlearn and query each model; return phi of forgotten / out samples.

    Returns two float64 ``(n_models, n_pool)`` matrices, NaN where the sample is
    not forgotten (first) or not "out" (second) for that model.
    """
    n_models, n_pool = keep.shape
    phi_unl = np.full((n_models, n_pool), np.nan)
    phi_out = np.full((n_models, n_pool), np.nan)
    for m in range(n_models):
        members = np.flatnonzero(keep[m])
        forget_ids = np.flatnonzero(forget[m])
        train_seed, unlearn_seed = int(seeds[m, 0]), int(seeds[m, 1])
        key = (member_set_hash(members), train_seed)
        if cache is not None and key in cache:
            state = cache[key]
        else:
            state = train_fn(members, train_seed)
            if cache is not None:
                cache[key] = state
        state = unlearn_fn(state, forget_ids, members, unlearn_seed)
        query = np.flatnonzero(forget[m] | ~keep[m])
        phi = np.asarray(confidence_fn(state, query), dtype=np.float64).reshape(-1)
        if phi.shape != query.shape:
            raise ValueError(f"confidence_fn returned {phi.size} values for {query.size} ids")
        if not np.all(np.isfinite(phi)):
            raise ValueError("confidence_fn returned NaN or infinite values")
        row = np.full(n_pool, np.nan)
        row[query] = phi
        phi_unl[m, forget[m]] = row[forget[m]]
        phi_out[m, ~keep[m]] = row[~keep[m]]
        if bar is not None:
            bar.update(1)
    return phi_unl, phi_out


@dataclass(frozen=True)
class _Moments:
    """Per-sample sums over models: count, sum, sum of squares (float64 ``(n_pool,)``)."""

    n: np.ndarray
    s1: np.ndarray
    s2: np.ndarray

    @classmethod
    def of(cls, obs: np.ndarray) -> _Moments:
        """Moments of a ``(n_models, n_pool)`` matrix with NaN = not observed."""
        seen = ~np.isnan(obs)
        x = np.where(seen, obs, 0.0)
        return cls(seen.sum(axis=0).astype(np.float64), x.sum(axis=0), (x * x).sum(axis=0))

    def without(self, row: np.ndarray) -> _Moments:
        """Moments with one model's row (NaN = not observed) removed."""
        seen = ~np.isnan(row)
        x = np.where(seen, row, 0.0)
        return _Moments(self.n - seen, self.s1 - x, self.s2 - x * x)

    def global_stats(self) -> tuple[float, float]:
        """Global mean and pooled within-sample std of all observations."""
        total = self.n.sum()
        if total < 2:
            raise ValueError(
                "too few shadow observations to fit the attack; increase n_shadows, forget_fraction or n_pool"
            )
        mu = float(self.s1.sum() / total)
        multi = self.n >= 2
        if multi.any():
            ss = self.s2[multi] - self.s1[multi] ** 2 / self.n[multi]
            var = float(np.maximum(ss, 0.0).sum() / (self.n[multi] - 1).sum())
        else:  # No repeated sample: the spread of all observations (conservative).
            var = float(max(self.s2.sum() - total * mu * mu, 0.0) / (total - 1))
        return mu, max(math.sqrt(var), 1e-6)

    def gaussians(
        self,
        global_mu: float,
        global_sd: float,
        min_obs_for_std: int,
        std_floor_frac: float,
        fix_variance: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample (mean, std) with the documented guards for few observations."""
        n = self.n
        safe_n = np.maximum(n, 1.0)
        mu = np.where(n > 0, self.s1 / safe_n, global_mu)
        var = np.maximum(self.s2 - self.s1**2 / safe_n, 0.0) / np.maximum(n - 1, 1.0)
        use_own = (n >= max(min_obs_for_std, 2)) & (not fix_variance)
        sd = np.where(use_own, np.sqrt(var), global_sd)
        return mu, np.maximum(sd, std_floor_frac * global_sd)


def _llr(
    phi: np.ndarray, unl: tuple[np.ndarray, np.ndarray], out: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Log-likelihood ratio log N(phi; unl) - log N(phi; out), elementwise."""
    (mu_u, sd_u), (mu_o, sd_o) = unl, out
    return np.log(sd_o) - np.log(sd_u) - 0.5 * ((phi - mu_u) / sd_u) ** 2 + 0.5 * ((phi - mu_o) / sd_o) ** 2


def _model_scores(
    phi_unl: np.ndarray,
    phi_out: np.ndarray,
    unl: tuple[np.ndarray, np.ndarray],
    out: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of one model's forgotten (positive) and out (negative) samples."""
    pos_mask, neg_mask = ~np.isnan(phi_unl), ~np.isnan(phi_out)
    phi = np.where(pos_mask, phi_unl, phi_out)
    score = _llr(phi, unl, out)
    return score[pos_mask], score[neg_mask]


def _check_sizes(
    n_pool: int, n_shadows: int, n_targets: int, forget_fraction: float, min_obs: int, floor: float
) -> None:
    """Raise ValueError for attack sizes it cannot run with."""
    if n_pool < 4:
        raise ValueError(f"n_pool must be at least 4, got {n_pool}")
    if n_shadows < 2:
        raise ValueError(f"n_shadows must be at least 2, got {n_shadows}")
    if n_targets < 1:
        raise ValueError(f"n_targets must be at least 1, got {n_targets}")
    if not 0.0 < forget_fraction < 1.0:
        raise ValueError(f"forget_fraction must be in (0, 1), got {forget_fraction}")
    if floor < 0 or min_obs < 0:
        raise ValueError("std_floor_frac and min_obs_for_std must be non-negative")


def _shadow_threshold(
    s_unl: list[Any], s_out: list[Any], m_unl: _Moments, m_out: _Moments, fit: Callable[..., Any]
) -> tuple[float, float]:
    """The attack's threshold and the shadows' AUC, from leave-one-out scores of each shadow
    against the Gaussians fitted on the other shadows."""
    sh_pos, sh_neg = [], []
    for s in range(len(s_unl)):
        unl, out = fit(m_unl.without(s_unl[s]), m_out.without(s_out[s]))
        pos, neg = _model_scores(s_unl[s], s_out[s], unl, out)
        sh_pos.append(pos)
        sh_neg.append(neg)
    sh_scores = np.concatenate(sh_pos + sh_neg)
    sh_labels = np.concatenate([np.ones(sum(p.size for p in sh_pos)), np.zeros(sum(n.size for n in sh_neg))])
    threshold, _ = best_balanced_threshold(sh_scores, sh_labels)
    return threshold, float(roc_auc_score(sh_labels, sh_scores))


def ulira_attack(
    n_pool: int,
    train_fn: TrainFn,
    unlearn_fn: UnlearnFn,
    confidence_fn: ConfidenceFn,
    *,
    n_shadows: int = 8,
    n_targets: int = 4,
    forget_fraction: float = 0.1,
    seed: int = 0,
    cache: MutableMapping[Any, Any] | None = None,
    progress: bool = False,
    min_obs_for_std: int = 3,
    std_floor_frac: float = 0.25,
    fix_variance: bool = False,
    name: str = "ulira",
    desc: str | None = None,
) -> ULiRAResult:
    """Run the U-LiRA per-example attack against an unlearning method.

    Takes the pool size (samples are ids ``0..n_pool-1``), the three callables
    described in the module docstring, the numbers of shadow and target models,
    the fraction of each model's members to forget, a seed, an optional
    dict-like ``cache`` of trained states, ``progress`` (show a progress bar of
    the models, labelled ``desc``, default ``"{name}: models"``), and
    the Gaussian-fit guards (``min_obs_for_std``, ``std_floor_frac``,
    ``fix_variance``). Trains ``n_shadows + n_targets`` models and unlearns each
    once. Returns a :class:`ULiRAResult`; AUC 0.5 means forgotten samples are
    indistinguishable from never-seen ones.
    """
    _check_sizes(n_pool, n_shadows, n_targets, forget_fraction, min_obs_for_std, std_floor_frac)

    ss_shadow, ss_target = np.random.SeedSequence(seed).spawn(2)
    shadow_plan = _plan_models(n_pool, n_shadows, forget_fraction, ss_shadow)
    target_plan = _plan_models(n_pool, n_targets, forget_fraction, ss_target)

    from miniunlearn.progress import progress_bar

    bar = progress_bar(
        total=n_shadows + n_targets, desc=desc or f"{name}: models", enabled=progress, unit="model"
    )
    try:
        s_unl, s_out = _run_models(*shadow_plan, train_fn, unlearn_fn, confidence_fn, cache, bar)
        t_unl, t_out = _run_models(*target_plan, train_fn, unlearn_fn, confidence_fn, cache, bar)
    finally:
        bar.close()

    m_unl, m_out = _Moments.of(s_unl), _Moments.of(s_out)
    g_unl, g_out = m_unl.global_stats(), m_out.global_stats()
    guards = (min_obs_for_std, std_floor_frac, fix_variance)

    def fit(m_u: _Moments, m_o: _Moments) -> tuple[tuple, tuple]:
        return m_u.gaussians(*g_unl, *guards), m_o.gaussians(*g_out, *guards)

    threshold, shadow_auc = _shadow_threshold(s_unl, s_out, m_unl, m_out, fit)

    unl, out = fit(m_unl, m_out)
    t_pos, t_neg, per_target = [], [], []
    for t in range(n_targets):
        pos, neg = _model_scores(t_unl[t], t_out[t], unl, out)
        t_pos.append(pos)
        t_neg.append(neg)
        per_target.append(score_attack(name, pos, neg, threshold).auc if pos.size and neg.size else math.nan)
    pos_all, neg_all = np.concatenate(t_pos), np.concatenate(t_neg)
    honest = score_attack(name, pos_all, neg_all, threshold=threshold)
    oracle = score_attack(name, pos_all, neg_all, threshold=None)
    return ULiRAResult(
        name=name,
        auc=honest.auc,
        balanced_accuracy=honest.balanced_accuracy,
        balanced_accuracy_oracle=oracle.balanced_accuracy,
        tpr_at_1pct_fpr=honest.tpr_at_1pct_fpr,
        fpr=honest.fpr,
        tpr=honest.tpr,
        threshold=threshold,
        per_target_auc=np.asarray(per_target, dtype=np.float64),
        shadow_auc=shadow_auc,
        n_shadows=n_shadows,
        n_targets=n_targets,
        n_pos=honest.n_pos,
        n_neg=honest.n_neg,
    )

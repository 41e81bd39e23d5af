"""Streams of deletion requests through the real workflow: latency, passes and certificates.

Deletion requests arrive as a stream of small sets, not one cut. A stream takes a copy of a
trained run and serves N requests one after another with :func:`miniunlearn.deletion.forget`
(ledger, model versions, lock, certificate: everything a deployment runs), timing each
call from the outside. It reports per-request latency (median, 95th percentile), passes
over the retain set (the method's and the certificate's), the certificates, the total time
against one retraining at the end and N retrainings, and the final model's distance to the
model retrained without every id, next to what the method gives serving their union at once.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..certificate import Certificate, certify_state, no_certificate_reason
from ..deletion import current_version, forget, load_version_params
from ..errors import ConfigError
from ..evaluation.metrics import param_distance
from ..ids import retained_ids
from ..methods import UnlearnRequest, get_method
from ..progress import progress_bar
from ..training import Run, open_run, retrain
from ..training.config import check_seed
from .optimum import retain_optimum

MAX_STREAM = 100_000
"""The most requests one stream serves (--stream)."""


@dataclass(frozen=True)
class StreamSpec:
    """A stream: ``n_requests`` requests of ``request_size`` ids each, or with ``mixed`` sizes
    drawn uniformly from 1 to 1 % of the training set; served by ``method`` with ``options``;
    ids drawn with ``seed``; ``max_approx_ratio`` is the run's error budget."""

    n_requests: int
    request_size: int = 1
    mixed: bool = False
    method: str = "mini"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_approx_ratio: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.n_requests <= MAX_STREAM:
            raise ConfigError(f"--stream must be in 1..{MAX_STREAM} requests, got {self.n_requests}")
        if self.request_size < 1:
            raise ConfigError(f"--request-size must be at least 1, got {self.request_size}")
        check_seed(self.seed, "--stream-seed")


def stream_ids(n_train: int, spec: StreamSpec) -> list[np.ndarray]:
    """The ids of each request of the stream: disjoint, sorted, drawn from a seeded permutation
    of the training set. ConfigError when the stream would remove the whole training set."""
    rng = np.random.default_rng([spec.seed, 0x57EA])
    if spec.mixed:
        largest = max(1, n_train // 100)
        sizes = rng.integers(1, largest + 1, size=spec.n_requests)
    else:
        sizes = np.full(spec.n_requests, spec.request_size)
    if int(sizes.sum()) >= n_train:
        raise ConfigError(
            f"a stream of {spec.n_requests} requests removes {int(sizes.sum())} ids, the whole training set "
            f"of {n_train}; ask fewer or smaller requests"
        )
    order = rng.permutation(n_train)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def run_stream(
    run: Run, spec: StreamSpec, *, workdir: Path | None = None, progress: bool = True
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Serve the stream ``spec`` on a copy of ``run`` (made under ``workdir``, a temporary
    folder when None, and removed afterwards); return (one record per request, summary).

    A request's record: its index, ids, the method that served it (``retrain`` when the
    error budget or the method chose retraining), latency in seconds, passes over the retain
    set (the method's, and with the certificate's), and the certificate's distance bound
    (None for networks). The summary holds the medians and 95th percentiles, total time, the
    time of one retraining without every id (measured) and N times it, the final model's
    distance to that retraining and the distance of the method serving the union at once.
    """
    requests = stream_ids(run.n_train, spec)
    get_method(spec.method, **spec.options)  # unknown methods and options refused before any work
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="miniunlearn-stream-")) if owned else Path(workdir)
    copy = Path(shutil.copytree(run.path, root / "run"))
    try:
        records = _serve(copy, run.n_train, requests, spec, progress)
        summary = _summarise(open_run(copy, device=run.device), run, requests, records, spec)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        if owned:
            shutil.rmtree(root, ignore_errors=True)
    return records, summary


def _serve(
    copy: Path, n_train: int, requests: list[np.ndarray], spec: StreamSpec, progress: bool
) -> list[dict[str, Any]]:
    """Serve every request on the run copy at ``copy`` (``n_train`` training samples), one
    after another; return their records."""
    records = []
    forgotten = 0
    bar = progress_bar(total=len(requests), desc=f"stream of {len(requests)}", enabled=progress, unit="req")
    for index, ids in enumerate(requests):
        started = time.perf_counter()
        outcome = forget(
            copy,
            ids,
            method=spec.method,
            options=spec.options,
            request_id=f"stream-{index}",
            max_approx_ratio=spec.max_approx_ratio,
        )
        latency = time.perf_counter() - started
        forgotten += ids.size
        n_retain = n_train - forgotten
        record = outcome.record or {}
        diagnostics = record.get("diagnostics") or {}
        certificate = outcome.certificate
        method_passes = record.get("grad_evals", 0) / n_retain
        certificate_passes = certificate["passes"] if certificate else 0.0
        records.append(
            {
                "index": index,
                "n_ids": int(ids.size),
                "method": outcome.entry.method,
                "latency_s": latency,
                "method_s": record.get("time_s"),
                "passes": method_passes,
                "passes_with_certificate": method_passes + certificate_passes,
                "certified_distance": certificate["distance_bound"] if certificate else None,
                # a certified-removal run's gradient residual against its (epsilon, delta) budget
                "removal_residual": (certificate.get("removal") or {}).get("residual")
                if certificate
                else None,
                "removal_budget": (certificate.get("removal") or {}).get("budget") if certificate else None,
                # where the passes went: a small request's |g_R - c| at its start and after each
                # measured step, and the tolerance it stopped at (None on other paths)
                "steps": diagnostics.get("steps"),
                "step_grad_norms": diagnostics.get("newton_grad_norms", diagnostics.get("grad_norms")),
                "step_tol": diagnostics.get("newton_tol"),
            }
        )
        bar.update()
    bar.close()
    return records


def union_options(spec: StreamSpec) -> dict[str, Any]:
    """The options serving the stream's union at once, the yardstick of its final distance: the
    stream's own, except that ``mini`` solves in full (its one-step path for small requests
    would make the yardstick easier than the method's full solve)."""
    if spec.method == "mini" and "small_request_below" not in spec.options:
        return {**spec.options, "small_request_below": 0.0}
    return dict(spec.options)


def _summarise(
    served: Run, original: Run, requests: list[np.ndarray], records: list[dict[str, Any]], spec: StreamSpec
) -> dict[str, Any]:
    """The stream's summary (see :func:`run_stream`)."""
    every = np.sort(np.concatenate(requests))
    final = load_version_params(served, current_version(served))
    started = time.perf_counter()
    retrained = retrain(original, every)
    retrain_s = time.perf_counter() - started
    union = get_method(spec.method, **union_options(spec)).unlearn(UnlearnRequest(original, every)).params
    latencies = np.array([r["latency_s"] for r in records])
    passes = np.array([r["passes_with_certificate"] for r in records])
    bounds = [r["certified_distance"] for r in records if r["certified_distance"] is not None]
    summary: dict[str, Any] = {
        "n_requests": len(records),
        "n_ids": int(every.size),
        "method": spec.method,
        "stream_seed": spec.seed,
        "served_by_retraining": sum(r["method"] == "retrain" for r in records),
        "latency_median_s": float(np.median(latencies)),
        "latency_p95_s": float(np.percentile(latencies, 95)),
        "passes_median": float(np.median(passes)),
        "passes_p95": float(np.percentile(passes, 95)),
        # requests by passes, each rounded to the nearest whole pass (a request also reads its
        # removed rows: a few hundred-thousandths of a pass)
        "passes_counts": {
            str(k): int(v)
            for k, v in zip(*np.unique(np.rint(passes).astype(int), return_counts=True), strict=True)
        },
        "total_s": float(latencies.sum()),
        "retrain_once_s": retrain_s,
        "retrain_each_s_estimate": retrain_s * len(records),
        "final_dist_to_retrain": param_distance(final, retrained),
        "union_dist_to_retrain": param_distance(union, retrained),
        # how far the stream's end is from the union's: where both sit a few rounding steps from
        # retraining, which of them is nearer it is noise, and this says whether they coincide
        "final_dist_to_union": param_distance(final, union),
        "float32_resolution": float32_resolution(final),
        "certified_requests": len(bounds),
        "certified_distance_median": float(np.median(bounds)) if bounds else None,
        "certified_distance_max": max(bounds) if bounds else None,
    }
    residuals = [r["removal_residual"] for r in records if r["removal_residual"] is not None]
    if residuals:  # a certified-removal run: how close each served model came to its budget
        summary["removal_budget"] = records[0]["removal_budget"]
        summary["removal_residual_max"] = max(residuals)
        summary["removal_residual_median"] = float(np.median(residuals))
    measured: tuple[Certificate, torch.Tensor] | None = None
    if no_certificate_reason(original) is None:
        retain = retained_ids(original.n_train, every)
        certificate, _, grad = certify_state(original, final, retain)
        measured = certificate, grad
        summary["final_certified_distance"] = certificate.distance_bound
        # the check every certificate promises, made where the float64 retain optimum is computed
        optimum = retain_optimum(original, every)
        assert optimum is not None  # a certificate implies a convex run
        summary["final_dist_to_optimum"] = param_distance(final, optimum)
        summary["final_certificate_holds"] = (
            summary["final_dist_to_optimum"] <= summary["final_certified_distance"]
        )
    summary.update(
        fixed_point_distances(original, every, {"final": final, "union": union, "retrain": retrained})
    )
    if measured is not None and "final_dist_to_fixed_point" in summary:
        summary.update(fixed_point_bound(original, *measured, summary["final_dist_to_fixed_point"]))
    return summary


def fixed_point_distances(
    original: Run, every: np.ndarray, models: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Each model's distance to the float64 point the unlearning aims at, the residual-matched
    fixed point of the retain set (the retain optimum when training converged; convex runs that
    kept the minimal history only, else no entries): ``<name>_dist_to_fixed_point``. Distances to
    retraining mix in how far retraining itself stopped from that point; these do not, so they
    say which of two models a few float32 spacings from retraining is the nearer to the exact
    answer."""
    if not original.files("history-mini"):  # the fixed point needs the stored g_D(w_T)
        return {}
    target = retain_optimum(original, every, match_residual=True)
    if target is None:
        return {}
    return {f"{name}_dist_to_fixed_point": param_distance(w, target) for name, w in models.items()}


def fixed_point_bound(
    original: Run, certificate: Certificate, grad: torch.Tensor, distance: float
) -> dict[str, Any]:
    """The bound on a model's distance to the fixed point that its own residual gives, from
    the float64 retain gradient ``grad`` its ``certificate`` measured (no further pass), and
    whether the measured ``distance`` kept to it: F_R(w) - c.w (c = the stored g_D(w_T)) is
    lam-strongly convex and the fixed point its minimiser, so |w - w_fp| <= |grad F_R(w) - c| /
    lam, with the certificate's allowance for float64 rounding in the gradient added, as the
    certificate adds it. A request's tolerance on |g_R - c| therefore bounds how far the model
    it serves can be from the exact answer: ``final_fixed_point_bound``, and ``..._holds``."""
    c = original.mini_history().grads[0].to(grad)
    bound = (float((grad - c).norm()) + certificate.rounding_allowance) / certificate.lam
    return {"final_fixed_point_bound": bound, "final_fixed_point_bound_holds": distance <= bound}


def float32_resolution(w: torch.Tensor) -> float:
    """The norm of half a float32 spacing at every parameter of ``w``: how far rounding to
    float32 alone can move the model, the scale below which two float32 models' distances to a
    third cannot be told apart."""
    values = np.abs(w.detach().cpu().to(torch.float32).numpy())
    return float(np.linalg.norm(np.spacing(values).astype(np.float64) / 2))


def stream_table(summary: dict[str, Any]) -> str:
    """The stream's summary as a two-column markdown table."""
    rows = [
        ("requests (ids)", f"{summary['n_requests']} ({summary['n_ids']})"),
        ("served by retraining", str(summary["served_by_retraining"])),
        ("latency median / p95 (s)", f"{summary['latency_median_s']:.3g} / {summary['latency_p95_s']:.3g}"),
        (
            "passes median / p95 (certificate included)",
            f"{summary['passes_median']:.3g} / {summary['passes_p95']:.3g}",
        ),
        (
            "requests by passes (rounded)",
            ", ".join(f"{count} x {k}" for k, count in summary["passes_counts"].items()),
        ),
        ("total time (s)", f"{summary['total_s']:.3g}"),
        ("one retraining at the end (s)", f"{summary['retrain_once_s']:.3g}"),
        ("a retraining per request (s, N x the one measured)", f"{summary['retrain_each_s_estimate']:.3g}"),
        ("final model: distance to retraining without every id", f"{summary['final_dist_to_retrain']:.3g}"),
        (
            f"{summary['method']} serving the union at once: distance",
            f"{summary['union_dist_to_retrain']:.3g}",
        ),
        ("final model: distance to the union served at once", f"{summary['final_dist_to_union']:.3g}"),
        ("float32 resolution of the parameters", f"{summary['float32_resolution']:.3g}"),
    ]
    if "final_dist_to_fixed_point" in summary:
        rows.append(
            (
                "distance to the float64 fixed point: final / union / retraining",
                " / ".join(
                    f"{summary[f'{name}_dist_to_fixed_point']:.3g}" for name in ("final", "union", "retrain")
                ),
            )
        )
    if "final_fixed_point_bound" in summary:
        label = "the fixed point / its bound ‖g_R − c‖ / lam"
        keys = ("final_dist_to_fixed_point", "final_fixed_point_bound", "final_fixed_point_bound_holds")
        rows.append(_checked_row(summary, label, *keys))
    if "final_dist_to_optimum" in summary:
        label = "the float64 retain optimum / its certificate"
        keys = ("final_dist_to_optimum", "final_certified_distance", "final_certificate_holds")
        rows.append(_checked_row(summary, label, *keys))
    if summary.get("certified_distance_max") is not None:
        rows.append(
            (
                f"certified distance median / max ({summary['certified_requests']} requests certified)",
                f"{summary['certified_distance_median']:.3g} / {summary['certified_distance_max']:.3g}",
            )
        )
    lines = ["| stream | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def _checked_row(
    summary: dict[str, Any], label: str, distance: str, bound: str, holds: str
) -> tuple[str, str]:
    """A table row: the final model's measured distance to ``label``'s point against its bound
    and whether it held (``distance``, ``bound``, ``holds``: summary keys)."""
    held = "held" if summary[holds] else "VIOLATED"
    return (f"final model: distance to {label}", f"{summary[distance]:.3g} / {summary[bound]:.3g} ({held})")


def plot_stream(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Latency and certificate of each request over the stream, two panels; returns ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    index = [r["index"] for r in records]
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(index, [r["latency_s"] for r in records], ".-", lw=0.8)
    ax.set_xlabel("request")
    ax.set_ylabel("latency (s)")
    ax.set_title("latency per request")
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(1, 2, 2)
    bounds = [
        (i, r["certified_distance"]) for i, r in zip(index, records, strict=True) if r["certified_distance"]
    ]
    if bounds:
        ax.semilogy(*zip(*bounds, strict=True), ".-", lw=0.8, color="C2")
        ax.set_ylabel("certified distance to the retain optimum")
    else:
        ax.text(0.5, 0.5, "no certificate (network)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("request")
    ax.set_title("certificate per request")
    ax.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


__all__ = ["StreamSpec", "plot_stream", "run_stream", "stream_ids", "stream_table"]

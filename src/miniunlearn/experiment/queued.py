"""A queue of deletion requests served by one ``serve``: its time against one request's.

The stream's requests (:func:`.stream.stream_ids`) are submitted to the queue of a copy of a
trained run, then served by one :func:`miniunlearn.deletion.queue.serve` (one batch: one
solve, one model version). Measured beside it, each on its own copy and after an untimed
warm-up request (imports, caches): the first request
served alone through :func:`miniunlearn.deletion.forget`, and the union of every request's
ids served as one request. The summary says whether the queue's model equals the union's
(bit for bit) and whether every ledger entry is done with exactly its own ids.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..deletion import current_version, forget, load_version_params
from ..deletion.queue import serve, submit
from ..ids import ids_digest
from ..ledger import Ledger
from ..methods import get_method
from ..progress import progress_bar
from ..training import Run, open_run
from .stream import StreamSpec, stream_ids


def _current_model(run_dir: Path) -> torch.Tensor:
    run = open_run(run_dir)
    return load_version_params(run, current_version(run))


def run_queue(
    run: Run, spec: StreamSpec, *, workdir: Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Submit the stream ``spec``'s requests to a copy of ``run`` and serve them with one
    ``serve``; return the summary: submit and serve times, the time of one request served
    alone, their ratio, the batch's passes and certificate, whether the model equals serving
    the union at once, and how many ledger entries are done with exactly their own ids.
    Copies are made under ``workdir`` (a temporary folder when None) and removed afterwards."""
    requests = stream_ids(run.n_train, spec)
    get_method(spec.method, **spec.options)  # unknown methods and options refused before any work
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="miniunlearn-queue-")) if owned else Path(workdir)
    copies = {
        name: Path(shutil.copytree(run.path, root / name)) for name in ("warm", "queue", "one", "union")
    }
    serving = {"method": spec.method, "options": spec.options, "max_approx_ratio": spec.max_approx_ratio}
    try:
        forget(copies["warm"], requests[-1], request_id="warm-up", **serving)  # imports, caches: untimed
        submit_s = []
        bar = progress_bar(total=len(requests), desc="submitting", enabled=progress, unit="req")
        for index, ids in enumerate(requests):
            started = time.perf_counter()
            submit(
                copies["queue"], ids, request_id=f"queued-{index}", method=spec.method, options=spec.options
            )
            submit_s.append(time.perf_counter() - started)
            bar.update()
        bar.close()
        started = time.perf_counter()
        served = serve(copies["queue"], max_approx_ratio=spec.max_approx_ratio)
        serve_s = time.perf_counter() - started

        started = time.perf_counter()
        forget(copies["one"], requests[0], request_id="one", **serving)
        one_s = time.perf_counter() - started
        every = np.sort(np.concatenate(requests))
        union = forget(copies["union"], every, request_id="union", **serving)
        with Ledger.open(copies["queue"], create=False) as ledger:
            entries = [ledger.get(f"queued-{index}") for index in range(len(requests))]
        own_ids = sum(
            e is not None and e.state == "done" and e.ids_sha256 == ids_digest(ids)
            for e, ids in zip(entries, requests, strict=True)
        )
        record = served[0].outcome.record if served and served[0].outcome is not None else {}
        certificate = (record or {}).get("certificate") or {}
        n_retain = run.n_train - every.size
        passes = (record or {}).get("grad_evals", 0) / n_retain + certificate.get("passes", 0.0)
        versions = {e.model_version for e in entries if e is not None}
        return {
            "n_requests": len(requests),
            "n_ids": int(every.size),
            "method": spec.method,
            "one_request_s": one_s,
            "submit_median_s": float(np.median(submit_s)),
            "submit_total_s": float(np.sum(submit_s)),
            "serve_s": serve_s,
            "serve_over_one_request": serve_s / one_s,
            "model_versions_written": len(versions),
            "batch_passes_with_certificate": passes,
            "certified_distance": certificate.get("distance_bound"),
            "equals_union": bool(
                torch.equal(_current_model(copies["queue"]), _current_model(copies["union"]))
            ),
            "union_certified_distance": (union.certificate or {}).get("distance_bound"),
            "done_with_own_ids": int(own_ids),
        }
    finally:
        for copy in copies.values():
            shutil.rmtree(copy, ignore_errors=True)
        if owned:
            shutil.rmtree(root, ignore_errors=True)


def queue_table(summary: dict[str, Any]) -> str:
    """The queue summary as a two-column markdown table."""
    bound = summary["certified_distance"]
    rows = [
        ("queued requests (ids)", f"{summary['n_requests']} ({summary['n_ids']})"),
        ("one request served alone (s)", f"{summary['one_request_s']:.3g}"),
        (
            "submit: median per request / total (s)",
            f"{summary['submit_median_s']:.3g} / {summary['submit_total_s']:.3g}",
        ),
        ("one serve of the whole queue (s)", f"{summary['serve_s']:.3g}"),
        ("serve / one request", f"{summary['serve_over_one_request']:.3g}x"),
        ("model versions written", str(summary["model_versions_written"])),
        ("passes of the batch (certificate included)", f"{summary['batch_passes_with_certificate']:.3g}"),
        ("certified distance to the retain optimum", "none" if bound is None else f"{bound:.3g}"),
        ("model equals serving the union at once", "yes" if summary["equals_union"] else "no"),
        (
            "ledger entries done with exactly their own ids",
            f"{summary['done_with_own_ids']} of {summary['n_requests']}",
        ),
    ]
    lines = ["| queue | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)

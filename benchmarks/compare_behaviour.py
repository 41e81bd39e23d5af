"""Show that a refactoring left behaviour unchanged: run the same commands with two revisions
of the code and compare what they wrote.

For each revision (a git commit, exported with ``git archive``), on the same seeds:
train a run, serve a sequence of deletion requests (mini, finetune, a retraining, mini
again), and run a one-cell bench. Compared: every model file (sha256), the ledger entries
(all fields but times and durations) and the bench records (all fields but timings and
paths). Prints one line per compared item and exits 1 on any difference.

    python benchmarks/compare_behaviour.py OLD_COMMIT [NEW_COMMIT] [--dataset digits|mnist]

NEW_COMMIT defaults to the working tree. MNIST must be fetched (``miniunlearn fetch mnist``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("time", "_s", "_at", "duration", "path", "peak_", "rss", "speedup", "memory", "runs_dir", "seconds")
REQUESTS = (  # (request id, ids slice start, stop, extra forget arguments)
    ("m1", 0, 40, ["--method", "mini"]),
    ("f1", 40, 60, ["--method", "finetune", "-o", "steps=2"]),
    ("rt", None, None, ["--retrain-now"]),
    ("m2", 60, 100, ["--method", "mini"]),
)


def _source(revision: str | None, where: Path) -> Path:
    """The ``src`` folder of ``revision`` exported under ``where`` (None: the working tree)."""
    if revision is None:
        return ROOT / "src"
    where.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", revision, "src"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where / "src"


def _cli(src: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "miniunlearn.cli", "-q", *args], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"`miniunlearn {' '.join(args)}` failed with {src}:\n{done.stderr}")
    return done.stdout


def _strip(obj: object) -> object:
    """``obj`` without timing, time-stamp and path fields, recursively."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not any(t in k for t in TIMING)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _tensors_digest(file: Path) -> str:
    """sha256 over a safetensors file's tensors (names, dtypes, shapes, bytes), not its
    metadata (which records completion times)."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(file), framework="pt") as handle:
        for name in sorted(handle.keys()):
            tensor = handle.get_tensor(name).contiguous()
            digest.update(f"{name}{tensor.dtype}{tuple(tensor.shape)}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _differences(old: object, new: object) -> str:
    """The keys whose values differ (dicts), or both values shortened."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)[:600]
    return f"{json.dumps(old, sort_keys=True)[:300]} -> {json.dumps(new, sort_keys=True)[:300]}"


def _outputs(src: Path, work: Path, dataset: str) -> dict[str, object]:
    """Run the command sequence with the code at ``src``; return what it wrote, comparable."""
    run = work / "run"
    _cli(
        src,
        "train",
        "--dataset",
        dataset,
        "--model",
        "logreg",
        "--out",
        str(run),
        "--history",
        "both",
        "--seed",
        "0",
        *(["--epochs", "20"] if dataset == "mnist" else []),
    )
    for request_id, start, stop, extra in REQUESTS:
        args = ["forget", str(run), "--request-id", request_id, *extra]
        if start is not None:
            ids = work / f"{request_id}.txt"
            ids.write_text("\n".join(str(i) for i in range(start * 7, stop * 7, 7)) + "\n")
            args += ["--ids", str(ids)]
        _cli(src, *args)
    out: dict[str, object] = {}
    for file in sorted([run / "model.safetensors", *(run / "versions").glob("v*.safetensors")]):
        out[f"model {file.name}"] = _tensors_digest(file)
    for entry in json.loads(_cli(src, "ledger", str(run), "--json")):
        out[f"ledger {entry['request_id']}"] = _strip(entry)
    records = work / "bench.json"
    _cli(
        src,
        "bench",
        "--dataset",
        dataset,
        "--model",
        "logreg",
        "--ratios",
        "0.1",
        "--seeds",
        "1",
        "--methods",
        "retrain,mini,finetune",
        "--runs-dir",
        str(work / "runs"),
        "--json",
        str(records),
        "--threads",
        "1",
        *(["--epochs", "20"] if dataset == "mnist" else []),
    )
    for record in json.loads(records.read_text()):
        out[f"bench {record.get('method')} {record.get('ratio')}"] = _strip(record)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="git revision before the change")
    parser.add_argument("new", nargs="?", help="git revision after it (default: the working tree)")
    parser.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        old = _outputs(_source(args.old, base / "old-src"), _mkdir(base / "old"), args.dataset)
        new = _outputs(_source(args.new, base / "new-src"), _mkdir(base / "new"), args.dataset)
    differ = 0
    for key in sorted(set(old) | set(new)):
        same = old.get(key) == new.get(key)
        differ += not same
        print(f"{'same' if same else 'DIFFERS'}  {key}")
        if not same:
            print(f"    {_differences(old.get(key), new.get(key))}")
    print(f"{args.dataset}: {len(set(old) | set(new)) - differ} same, {differ} differ")
    return 1 if differ else 0


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    sys.exit(main())

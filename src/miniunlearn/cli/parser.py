"""The argument parser of the ``miniunlearn`` command: one function per subcommand, one helper
per flag group that several subcommands share.

Every flag has a one-line help, and ``--help`` shows each default that is not None or off.
Only the standard library is imported at import time; the dataset, model and preset names are
imported when the parser is built (inside ``main``'s error handling).
"""

from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from .commands import (
    cmd_audit,
    cmd_bench,
    cmd_evaluate,
    cmd_fetch,
    cmd_forget,
    cmd_ids,
    cmd_ledger,
    cmd_methods,
    cmd_serve,
    cmd_submit,
    cmd_train,
)
from .training_flags import add_training_flags

PRESET_HELP = (
    "training recipe family: default; leaky (models that memorise their training data); "
    "leaky-momentum (the models of leaky trained by heavy-ball momentum 0.9 and a cosine rate from "
    "0.1: the MNIST MLP in 20 epochs, the Fashion-MNIST CNN in 15); "
    "deltagrad-paper (DeltaGrad's own regime: logistic regression, SGD with batches of 16,384, "
    "128 steps, lr 0.1, lam 0.005, float64)"
)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: ...)`` to an option's help, unless it has none (None, or a switch that
    is off by default)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


# -- argument types: their names show in argparse's "invalid <type> value" errors --------------
def _floats(text: str) -> list[float]:
    """A comma list of numbers, e.g. ``0.01,0.1``."""
    return [float(x) for x in text.split(",") if x.strip()]


def _seconds(text: str) -> float:
    """A waiting time: a number of seconds >= 0 (``inf`` waits for ever; NaN is refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _interval(text: str) -> float:
    """A polling interval: a number of seconds > 0."""
    value = _seconds(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive, finite number of seconds, got {text!r}")
    return value


def _names(text: str) -> list[str]:
    """A comma list of names, e.g. ``retrain,mini``."""
    return [x.strip() for x in text.split(",") if x.strip()]


# -- flag groups shared by several subcommands ----------------------------------------------------
def _device_argument(p: argparse.ArgumentParser, what: str = "where to compute") -> None:
    """--device: cpu, cuda, cuda:N or auto."""
    p.add_argument(
        "--device",
        default="cpu",
        help=f"{what}: cpu (the reference, bit-reproducible), cuda, cuda:N or auto",
    )


def _seed_argument(p: argparse.ArgumentParser, help: str) -> None:
    """--seed; its range (0 .. 2**32 - 1) is checked after parsing by :func:`check_seed`."""
    p.add_argument("--seed", type=int, default=0, help=f"{help}, 0..4294967295")


def check_seed(args: argparse.Namespace) -> None:
    """Refuse a --seed outside the range the random generators take, before any work."""
    if getattr(args, "seed", None) is not None:
        from ..training.config import check_seed as check_seed_range

        check_seed_range(args.seed)


def _wait_argument(p: argparse.ArgumentParser, help: str = "seconds to wait for a running forget") -> None:
    """--wait: how long to wait for the run's lock."""
    p.add_argument("--wait", type=_seconds, default=0.0, help=help)


def _json_argument(p: argparse.ArgumentParser, help: str) -> None:
    """--json: print the result as JSON instead of text."""
    p.add_argument("--json", action="store_true", help=help)


def _run_dir_argument(p: argparse.ArgumentParser) -> None:
    """The run directory a command works on."""
    p.add_argument("run_dir", help="run directory made by `miniunlearn train`")


def _recipe_arguments(p: argparse.ArgumentParser) -> None:
    """--dataset, --model and --preset, shared by train and bench."""
    from ..data import DATASET_NAMES
    from ..models import MODEL_NAMES
    from ..presets import PRESET_NAMES

    p.add_argument("--dataset", required=True, choices=DATASET_NAMES, help="dataset to train on")
    p.add_argument("--model", default="logreg", choices=MODEL_NAMES, help="model architecture")
    p.add_argument("--preset", default="default", choices=PRESET_NAMES, help=PRESET_HELP)


def _attack_arguments(p: argparse.ArgumentParser) -> None:
    """--attacks and the per-example attack's settings, shared by evaluate, audit and bench."""
    p.add_argument(
        "--attacks",
        type=_names,
        default=["population"],
        help="comma list of population (confidence/loss attacks on the model) and ulira (per-example "
        "attack on the method, with shadow models of the run's recipe; slow)",
    )
    p.add_argument(
        "--ulira-pool",
        type=int,
        help="pool size of the per-example attack: 20 up to the training set size "
        "(default 1000, or the whole training set when smaller)",
    )
    p.add_argument(
        "--ulira-shadows", type=int, default=16, help="shadow models of the per-example attack, 2..1000"
    )


def _data_arguments(p: argparse.ArgumentParser) -> None:
    """--data-path and --data-option, shared by train and bench."""
    p.add_argument("--data-path", help="data file for the libsvm and csv datasets")
    p.add_argument(
        "--data-option",
        action="append",
        help="dataset option key=value (repeatable): label_column=0, header=false, standardize=true, "
        "test_path=FILE (csv, libsvm); id_column=NAME (csv: a column of your own keys, not a feature); "
        "key_file=FILE (libsvm: one key per data row); seed=N, rows=N, standardize=true (synthetic-*); "
        "the data file itself is --data-path",
    )


# -- one function per subcommand --------------------------------------------------------------------
def _subcommand(sub: Any, name: str, help: str, func: Any) -> argparse.ArgumentParser:
    """Add subcommand ``name`` running ``func``, with its own -q/--quiet and defaults in --help."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help, description=help, formatter_class=HelpFormatter
    )
    # SUPPRESS: a -q before the subcommand is not undone by its absence after it
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    p.set_defaults(func=func)
    return p


def _add_fetch(sub: Any) -> None:
    """``fetch NAME...``: fetch real datasets into the cache."""
    p = _subcommand(
        sub, "fetch", "fetch real datasets into the local cache ($MINIUNLEARN_CACHE or ./.cache)", cmd_fetch
    )
    p.add_argument("names", nargs="+", help="mnist, fashion-mnist, adult, or all")


def _add_train(sub: Any) -> None:
    """``train``: train a model into a new run directory."""
    p = _subcommand(sub, "train", "train a model, recording the history unlearning needs", cmd_train)
    _recipe_arguments(p)
    p.add_argument("--out", required=True, help="new run directory to create")
    add_training_flags(p, train_only=True)
    _data_arguments(p)
    _seed_argument(p, "training seed: initialisation, batch order and any --n-train subset")
    _device_argument(p)


def _add_forget(sub: Any) -> None:
    """``forget RUN_DIR``: serve a deletion request."""
    p = _subcommand(
        sub, "forget", "serve a deletion request: unlearn ids and write a new model version", cmd_forget
    )
    _run_dir_argument(p)
    p.add_argument("--ids", help="file with one integer sample id per line (- reads standard input)")
    p.add_argument(
        "--keys",
        help="file with one of your own keys per line (id_column, key_file or row number; see "
        "`miniunlearn ids`); - reads standard input",
    )
    p.add_argument("--ratio", type=float, help="forget a random fraction of the training set instead")
    _seed_argument(p, "seed of the random forget set (--ratio)")
    p.add_argument("--method", default="mini", help="unlearning method (see `miniunlearn methods`)")
    p.add_argument("--option", "-o", action="append", help="method option key=value (repeatable)")
    p.add_argument("--request-id", help="idempotency key; re-sending a done request changes nothing")
    p.add_argument("--retrain-now", action="store_true", help="serve by retraining from scratch")
    _budget_arguments(p)
    _wait_argument(p, "seconds to wait for another forget on the run")
    _json_argument(p, "print the outcome as JSON")
    _device_argument(p)


def _budget_arguments(p: argparse.ArgumentParser) -> None:
    """--max-approx-ratio and --max-certified-distance: the run's error budget."""
    p.add_argument(
        "--max-approx-ratio",
        type=float,
        default=0.5,
        help="error budget: fraction of the data approximate methods may remove before the "
        "next request is served by retraining",
    )
    p.add_argument(
        "--max-certified-distance",
        type=float,
        default=None,
        help="error budget in certificate units (convex runs): an approximate result certified farther "
        "than this from the retain optimum is discarded and the request served by retraining "
        "(default: no such limit)",
    )


def _add_submit(sub: Any) -> None:
    """``submit RUN_DIR``: queue a deletion request."""
    p = _subcommand(
        sub,
        "submit",
        "queue a deletion request and return at once, even while another request is served",
        cmd_submit,
    )
    _run_dir_argument(p)
    p.add_argument(
        "--ids", required=True, help="file with one integer sample id per line (- reads standard input)"
    )
    p.add_argument("--request-id", help="idempotency key (default: a fresh one, printed)")
    p.add_argument("--method", default="mini", help="unlearning method that will serve it")
    p.add_argument("--option", "-o", action="append", help="method option key=value (repeatable)")
    _json_argument(p, "print the outcome as JSON")


def _add_serve(sub: Any) -> None:
    """``serve RUN_DIR``: serve the queued requests."""
    p = _subcommand(
        sub,
        "serve",
        "serve every queued deletion request: new requests with the same method and options in one "
        "solve and one model version (a batch), each recorded in the ledger with its own ids",
        cmd_serve,
    )
    _run_dir_argument(p)
    p.add_argument(
        "--watch",
        type=_interval,
        help="keep serving: look for new requests every this many seconds until interrupted",
    )
    p.add_argument(
        "--one-by-one",
        action="store_true",
        help="serve each queued request as its own model version, oldest first, instead of in batches",
    )
    _budget_arguments(p)
    _wait_argument(p, "seconds to wait for another command on the run, for each request")
    _json_argument(p, "print one JSON line per request served")
    _device_argument(p)


def _add_ids(sub: Any) -> None:
    """``ids RUN_DIR``: the users' keys of a run and the sample ids they map to."""
    p = _subcommand(
        sub,
        "ids",
        "list your keys and the sample ids they map to (CSV key,sample_id,split; test-split keys "
        "have no sample id)",
        cmd_ids,
    )
    _run_dir_argument(p)
    p.add_argument("--out", help="write the mapping as CSV to this file instead of printing it")
    _json_argument(p, "print the mapping (with --out: the summary) as JSON")


def _add_evaluate(sub: Any) -> None:
    """``evaluate RUN_DIR``: compare the current model with retraining."""
    p = _subcommand(
        sub, "evaluate", "compare the current model with retraining on all forgotten ids", cmd_evaluate
    )
    _run_dir_argument(p)
    _attack_arguments(p)
    _seed_argument(p, "seed of the attacks")
    _wait_argument(p)
    _json_argument(p, "print the metrics as JSON")
    _device_argument(p)


def _add_bench(sub: Any) -> None:
    """``bench``: sweep methods over unlearning ratios against retraining."""
    p = _subcommand(sub, "bench", "sweep methods over unlearning ratios against retraining", cmd_bench)
    _recipe_arguments(p)
    p.add_argument(
        "--ratios", type=_floats, default=[0.01, 0.1, 0.3, 0.5], help="comma list of forget ratios"
    )
    p.add_argument(
        "--methods",
        type=_names,
        default=["retrain", "deltagrad", "warmstart", "nystrom", "mini"],
        help="comma list of methods to compare (see `miniunlearn methods`)",
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1), 1..1000")
    _attack_arguments(p)
    p.add_argument("--json", help="write the records to this JSON file")
    p.add_argument("--plots", help="write PNG plots into this directory")
    p.add_argument("--runs-dir", default="runs/bench", help="where trained runs are kept and reused")
    p.add_argument("--option", "-o", action="append", help="METHOD:key=value method option (repeatable)")
    p.add_argument(
        "--tune-baselines",
        action="store_true",
        help="choose each gradient-step baseline's rate and step budget per cell from a small grid, "
        "scored on the forget set against rows the run never trained on and on a validation split "
        "of the retain set, never on the retrained model (runs trained on a subset only; "
        "docs/method.md, 'Tuning the baselines')",
    )
    _data_arguments(p)
    _device_argument(p, "where each cell computes")
    _parallel_arguments(p)
    _stream_arguments(p)
    add_training_flags(p, train_only=False)


def _stream_arguments(p: argparse.ArgumentParser) -> None:
    """bench's --stream, --request-size, --mixed-sizes, --stream-method and --queue."""
    p.add_argument(
        "--stream",
        type=int,
        metavar="N",
        help="instead of the ratio sweep: serve N deletion requests one after another through the "
        "real workflow (ledger, versions, certificate) on a copy of seed 0's run, and report latency, "
        "passes and certificates",
    )
    p.add_argument("--request-size", type=int, default=1, help="ids per request of --stream")
    p.add_argument(
        "--mixed-sizes",
        action="store_true",
        help="with --stream: request sizes drawn uniformly from 1 to 1 %% of the training set",
    )
    p.add_argument("--stream-method", default="mini", help="the method serving --stream")
    p.add_argument(
        "--stream-seed",
        type=int,
        default=0,
        metavar="S",
        help="with --stream: the seed the requests' ids are drawn with (default 0; another seed, "
        "another draw of the same stream on the same run)",
    )
    p.add_argument(
        "--queue",
        action="store_true",
        help="with --stream: submit the N requests to the run's queue and serve them with one "
        "`serve` (one batch), against one request served alone and the union served at once",
    )


def _parallel_arguments(p: argparse.ArgumentParser) -> None:
    """bench's --threads, --jobs, --backend and --address."""
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads of each task, 1..256 (default: 1 with --jobs > 1, else torch's choice); "
        "results are reproducible for a given thread count",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=1,
        help="(seed, ratio) cells and shadow models run as this many parallel tasks, 1..256; "
        "the records do not change, apart from timings",
    )
    p.add_argument(
        "--backend",
        choices=("joblib", "ray"),
        default="joblib",
        help="run the tasks on local joblib workers, or on Ray (pip install 'miniunlearn[cluster]')",
    )
    p.add_argument(
        "--address",
        help="with --backend ray: join this Ray cluster (e.g. ray://head:10001 or auto) instead of "
        "starting a local runtime with --jobs CPUs; its nodes need miniunlearn and the data",
    )


def _add_ledger(sub: Any) -> None:
    """``ledger RUN_DIR``: list, check or repair a run's deletion records."""
    p = _subcommand(sub, "ledger", "list the deletion requests of a run (or repair its records)", cmd_ledger)
    _run_dir_argument(p)
    _json_argument(p, "print the records as JSON")
    p.add_argument(
        "--restore-current",
        action="store_true",
        help="point current.json at the model version the ledger records as current "
        "(after current.json was lost or restored from an old backup)",
    )
    p.add_argument(
        "--rebuild-from-versions",
        action="store_true",
        help="rebuild a lost ledger.sqlite from the request records inside the model versions "
        "(exact for every request that produced a model version)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="check the whole run: the ledger's integrity and chain of done requests, every model "
        "version's file and the request record inside it, and current.json (exit 2 on any problem)",
    )
    _wait_argument(p)


def _tolerance(text: str) -> float:
    """A verdict tolerance: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _add_audit(sub: Any) -> None:
    """``audit RUN_DIR --request ID``: write one request's report."""
    what = "write a report (self-contained HTML + JSON) for one deletion request"
    p = _subcommand(sub, "audit", what, cmd_audit)
    _run_dir_argument(p)
    p.add_argument("--request", required=True, help="request id")
    p.add_argument("--out", help="output directory (default RUN_DIR/audit)")
    p.add_argument(
        "--with-metrics",
        action="store_true",
        help="also compare the request's model with retraining (retrains once, cached)",
    )
    p.add_argument(
        "--tolerance",
        type=_tolerance,
        default=0.05,
        help="largest gap to retraining (accuracies, MIA efficacy) the verdict still calls a match",
    )
    _attack_arguments(p)
    _seed_argument(p, "seed of the attacks")
    _device_argument(p)


def _add_methods(sub: Any) -> None:
    """``methods``: list the unlearning methods."""
    _subcommand(sub, "methods", "list unlearning methods and their options", cmd_methods)


SUBCOMMANDS = (
    _add_fetch,
    _add_train,
    _add_forget,
    _add_submit,
    _add_serve,
    _add_ids,
    _add_evaluate,
    _add_bench,
    _add_ledger,
    _add_audit,
    _add_methods,
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``miniunlearn`` command."""
    parser = argparse.ArgumentParser(
        prog="miniunlearn",
        description="Remove chosen training samples from a trained PyTorch model "
        "and measure it against retraining.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--version", action="version", version=f"miniunlearn {__version__}", help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, help="the subcommand to run")
    for add in SUBCOMMANDS:
        add(sub)
    return parser

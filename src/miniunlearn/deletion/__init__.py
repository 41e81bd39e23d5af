"""Deletion requests on a run: the session that owns the run's deletion state, the
forget workflow, the error budget and the ids files requests come in.

* :mod:`.session` -- :func:`open_session`, the one way to read or change what a run has
  forgotten (ledger, ``current.json``, model versions), and the rules that keep them agreeing;
* :mod:`.workflow` -- :func:`forget`, :func:`forget_batch` (several requests, one solve)
  and :func:`retrain_all`: admit, plan, execute, commit;
* :mod:`.queue` -- ``submit`` and ``serve``: a queue of requests, served in batches;
* :mod:`.budget` -- :class:`ErrorBudget`, how much approximate unlearning a run may take;
* :mod:`.idsfile` -- :func:`read_ids_file`.
"""

from __future__ import annotations

from ..ledger import BatchMember, Ledger
from ..training.rundir import Run
from ..versions import CRASH_ENV, CURRENT_FILE, ModelVersion, load_version_params, open_ledger
from .budget import DEFAULT_MAX_APPROX_RATIO, ErrorBudget
from .idsfile import read_ids_file
from .session import (
    RunSession,
    ledger_records,
    open_session,
    rebuild_ledger_locked,
    restore_current,
)
from .state import check_state
from .workflow import ForgetOutcome, failure_reason, forget, forget_batch, retrain_all

__all__ = [
    "BatchMember",
    "CRASH_ENV",
    "CURRENT_FILE",
    "DEFAULT_MAX_APPROX_RATIO",
    "ErrorBudget",
    "ForgetOutcome",
    "ModelVersion",
    "RunSession",
    "current_version",
    "failure_reason",
    "forget",
    "forget_batch",
    "ledger_records",
    "load_version_params",
    "open_ledger",
    "open_session",
    "read_ids_file",
    "rebuild_ledger_locked",
    "restore_current",
    "retrain_all",
]


def current_version(run: Run, ledger: Ledger | None = None) -> ModelVersion:
    """Return the run's current model version after checking the run's deletion state
    against ``ledger`` (default: the run's own, opened read-only; no lock is taken and
    nothing is changed)."""
    if ledger is not None:
        return check_state(run, ledger)
    with open_session(run, write=False) as session:
        return session.current

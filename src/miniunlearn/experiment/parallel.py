"""Independent tasks of a sweep run side by side: in this process, through joblib, or on Ray.

A task is a module-level function and a tuple of picklable arguments. :class:`TaskRunner`
runs a list of them and yields their results in the order they were given, whatever the
backend and number of workers. Each task runs with torch pinned to a fixed number of
threads, so its floating-point results do not depend on the worker it lands on.

:func:`open_or_train` opens a run directory, training it first when it is missing; any
number of processes may call it for the same directory at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.cache import CACHE_ENV, cache_dir
from ..errors import ConfigError, RunDirError
from ..training import Run, TrainConfig, open_run, train_run
from ..training.rundir import absolute_data_paths

BACKENDS = ("joblib", "ray")
CLUSTER_INSTALL = "pip install 'miniunlearn[cluster]' (or pip install 'ray>=2.9')"


class BackendUnavailable(ConfigError):
    """The requested parallel backend is not installed or cannot be started."""


@dataclass(frozen=True)
class ParallelOptions:
    """How to run tasks: ``jobs`` workers on ``backend`` (joblib or ray), ``address`` of a Ray
    cluster to join (None: start a local Ray runtime with ``jobs`` CPUs), and ``threads``,
    the torch threads of each task (None: 1 when ``jobs > 1``, else torch's choice)."""

    jobs: int = 1
    backend: str = "joblib"
    address: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {self.jobs}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {self.threads}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if self.address is not None and self.backend != "ray":
            raise ConfigError("--address joins a Ray cluster; give it with --backend ray")

    @property
    def worker_threads(self) -> int | None:
        """Torch threads each task runs with (None: leave torch's setting alone)."""
        if self.threads is not None:
            return self.threads
        return 1 if self.jobs > 1 else None

    @property
    def in_process(self) -> bool:
        """True when tasks run one after another in this process (no workers)."""
        return self.backend == "joblib" and self.jobs == 1


def _call(fn: Callable[..., Any], args: tuple, threads: int | None, env: dict[str, str]) -> Any:
    """Run ``fn(*args)`` with torch on ``threads`` threads and ``env`` set; return its result."""
    os.environ.update(env)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(previous)


class TaskRunner:
    """Runs lists of tasks under one :class:`ParallelOptions`; use it as a context manager.

    Entering starts the backend (a local Ray runtime, or joins ``address``); leaving shuts
    down a Ray runtime it started. Raises BackendUnavailable when Ray is asked for and not
    installed.
    """

    def __init__(self, options: ParallelOptions) -> None:
        self.options = options
        self._ray: Any = None
        self._remote: Any = None
        self._started_ray = False

    def __enter__(self) -> TaskRunner:
        if self.options.backend == "ray":
            self._start_ray()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False

    def _start_ray(self) -> None:
        try:
            import ray
        except ImportError as exc:
            raise BackendUnavailable(
                f"--backend ray needs Ray, which is not installed: {CLUSTER_INSTALL}"
            ) from exc
        import logging

        if not ray.is_initialized():
            try:
                if self.options.address is None:
                    ray.init(
                        num_cpus=self.options.jobs,
                        include_dashboard=False,
                        log_to_driver=False,
                        logging_level=logging.WARNING,
                    )
                else:
                    ray.init(address=self.options.address, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.options.address}" if self.options.address else "Ray"
                raise BackendUnavailable(f"could not start {where}: {exc}") from exc
            self._started_ray = True
        self._ray = ray
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_call)

    def map(self, fn: Callable[..., Any], tasks: Sequence[tuple]) -> Iterator[Any]:
        """Run ``fn(*args)`` for each ``args`` in ``tasks``; yield the results in ``tasks`` order.

        An exception raised by a task is raised here, as its own type.
        """
        threads = self.options.worker_threads
        if self.options.in_process:
            for args in tasks:
                yield _call(fn, args, threads, {})
            return
        # workers may outlive a change of the data cache (tests) or start elsewhere (Ray)
        env = {CACHE_ENV: str(cache_dir().resolve())}
        if self.options.backend == "ray":
            yield from self._map_ray(fn, tasks, threads, env)
            return
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=self.options.jobs, backend="loky", return_as="generator")
        yield from parallel(delayed(_call)(fn, args, threads, env) for args in tasks)

    def _map_ray(
        self, fn: Callable[..., Any], tasks: Sequence[tuple], threads: int | None, env: dict[str, str]
    ) -> Iterator[Any]:
        """Ray remote calls, at most ``jobs`` in flight, results yielded in ``tasks`` order."""
        ray = self._ray
        pending: dict[Any, int] = {}
        done: dict[int, Any] = {}
        following = 0
        submitted = 0
        try:
            while following < len(tasks):
                while submitted < len(tasks) and len(pending) < self.options.jobs:
                    pending[self._remote.remote(fn, tasks[submitted], threads, env)] = submitted
                    submitted += 1
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    done[pending.pop(ref)] = _ray_result(ray, ref)
                while following in done:
                    yield done.pop(following)
                    following += 1
        finally:
            for ref in pending:
                ray.cancel(ref)


def _ray_result(ray: Any, ref: Any) -> Any:
    """``ray.get(ref)``, re-raising a task's exception as the exception the task raised."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise


def open_or_train(
    config: TrainConfig,
    path: str | os.PathLike[str],
    *,
    progress: bool = False,
    verify_hashes: bool = True,
    device: str = "cpu",
) -> Run:
    """Return the run at ``path``, training ``config`` into it first when it is missing.

    Safe when several processes build the same run at once: a run appears at ``path`` only
    complete (renamed into place), and a builder that loses the race opens the winner's run.
    ``verify_hashes`` is passed to :func:`open_run` when an existing run is opened; the run
    trains and opens on ``device``.
    """
    path = Path(path)
    if path.exists():
        return _same_recipe(open_run(path, verify_hashes=verify_hashes, device=device), config)
    try:
        return train_run(config, path, progress=progress, device=device)
    except RunDirError:
        if path.exists():  # another process trained the same recipe first
            return _same_recipe(open_run(path, verify_hashes=verify_hashes, device=device), config)
        raise


def _same_recipe(run: Run, config: TrainConfig) -> Run:
    """Return ``run`` when it was trained with ``config``; RunDirError naming what differs
    otherwise (a run copied or renamed into the place of another is never reused)."""
    wanted = asdict(absolute_data_paths(config))
    found = asdict(run.config)
    differ = sorted(k for k in wanted if wanted[k] != found.get(k))
    if differ:
        shown = ", ".join(f"{k} {found.get(k)!r} (wanted {wanted[k]!r})" for k in differ[:4])
        raise RunDirError(
            f"{run.path} holds a run trained with another recipe ({shown}); it is not reused. Delete "
            "it, or choose another runs folder"
        )
    return run

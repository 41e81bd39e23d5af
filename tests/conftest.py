"""Shared fixtures: small trained runs on bundled data, built once per test session."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from miniunlearn.training import Run, TrainConfig, train_run
from miniunlearn.training.config import DEFAULT_CURVATURE_BASIS, EXACT_CURVATURE_DIM

# The test problems are tiny: one thread avoids thread hand-off costs that dominate them
# (measured 30x slower with two threads on a busy two-core machine).
torch.set_num_threads(1)

# Converged, strongly convex setting: float64 logistic regression on 8x8 digits,
# full-batch GD; lam = 0.05 and lr 1.5 reach a gradient norm ~1e-11 in 300 steps. It records a
# Nyström curvature sketch (``curvature_basis=0``); the input-subspace Hessian a logistic
# regression above exact_curvature_dim parameters (MNIST's) records by default has its own
# fixture (``subspace_run``), and so has the exact Hessian a small model records (``exact_run``).
CONVEX = TrainConfig(
    dataset="digits",
    model="logreg",
    epochs=300,
    lr=1.5,
    lam=0.05,
    dtype="float64",
    history="both",
    checkpoints=8,
    seed=0,
    exact_curvature_dim=0,
    curvature_basis=0,
)
# Mini-batch SGD on the same data (batch 256, 20 epochs).
SGD = TrainConfig(
    dataset="digits",
    model="logreg",
    epochs=20,
    batch_size=256,
    lr=0.3,
    lam=0.05,
    dtype="float64",
    history="both",
    checkpoints=8,
    seed=1,
    exact_curvature_dim=0,
    curvature_basis=0,
)
# A small non-convex model.
MLP = TrainConfig(
    dataset="digits",
    model="mlp",
    hidden=(32,),
    epochs=300,
    lr=0.3,
    lam=0.01,
    dtype="float64",
    history="both",
    checkpoints=8,
    seed=2,
)


# Stopped at 80 steps: converged by mode=auto's rule (residual ratio 2.7e-4, so fixed-point serves
# it) with a residual gradient left (|g_D(w_T)| 1.5e-4), as on Adult; recording the exact data
# Hessian, as every logistic regression of at most exact_curvature_dim parameters does.
EXACT = dataclasses.replace(CONVEX, epochs=80, history="mini", exact_curvature_dim=EXACT_CURVATURE_DIM)
# The convex run with the curvature a logistic regression above exact_curvature_dim parameters
# records by default: its Hessian on the inputs' principal directions (16 of 65 per class fit
# this run's history budget).
SUBSPACE = dataclasses.replace(CONVEX, history="mini", curvature_basis=DEFAULT_CURVATURE_BASIS)


def _session_run(tmp_path_factory: pytest.TempPathFactory, name: str, config: TrainConfig) -> Run:
    root: Path = tmp_path_factory.mktemp(name)
    return train_run(config, root / "run", progress=False)


@pytest.fixture(scope="session")
def convex_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A converged float64 logistic regression on digits with both histories."""
    return _session_run(tmp_path_factory, "convex", CONVEX)


@pytest.fixture(scope="session")
def exact_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A float64 digits logistic regression stopped with a residual, with its exact Hessian."""
    return _session_run(tmp_path_factory, "exact", EXACT)


@pytest.fixture(scope="session")
def subspace_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The converged digits logistic regression with its input-subspace curvature."""
    return _session_run(tmp_path_factory, "subspace", SUBSPACE)


@pytest.fixture(scope="session")
def sgd_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A mini-batch SGD float64 logistic regression on digits with both histories."""
    return _session_run(tmp_path_factory, "sgd", SGD)


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A one-hidden-layer MLP on digits with both histories (non-convex)."""
    return _session_run(tmp_path_factory, "mlp", MLP)

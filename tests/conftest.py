"""Shared fixtures: small trained runs on bundled data, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from miniunlearn.training import Run, TrainConfig, train_run

# The test problems are tiny: one thread avoids thread hand-off costs that dominate them
# (measured 30x slower with two threads on a busy two-core machine).
torch.set_num_threads(1)

# Converged, strongly convex setting: float64 logistic regression on 8x8 digits,
# full-batch GD; lam = 0.05 and lr 1.5 reach a gradient norm ~1e-11 in 300 steps.
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


def _session_run(tmp_path_factory: pytest.TempPathFactory, name: str, config: TrainConfig) -> Run:
    root: Path = tmp_path_factory.mktemp(name)
    return train_run(config, root / "run", progress=False)


@pytest.fixture(scope="session")
def convex_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A converged float64 logistic regression on digits with both histories."""
    return _session_run(tmp_path_factory, "convex", CONVEX)


@pytest.fixture(scope="session")
def sgd_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A mini-batch SGD float64 logistic regression on digits with both histories."""
    return _session_run(tmp_path_factory, "sgd", SGD)


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A one-hidden-layer MLP on digits with both histories (non-convex)."""
    return _session_run(tmp_path_factory, "mlp", MLP)

"""Deterministic training that records history, run directories, and the retrain oracle."""

from .config import TrainConfig
from .history import FullHistory, MiniHistory
from .recording import train_run
from .retrain import cached_retrain, retrain
from .rundir import Run, open_run
from .schedule import StepPlan, checkpoint_steps, make_plan

__all__ = [
    "FullHistory",
    "MiniHistory",
    "Run",
    "StepPlan",
    "TrainConfig",
    "cached_retrain",
    "checkpoint_steps",
    "make_plan",
    "open_run",
    "retrain",
    "train_run",
]

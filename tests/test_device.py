"""--device: choosing where to compute, and (on a machine with CUDA) the same answers there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miniunlearn.cli import main
from miniunlearn.deletion import current_version, forget, load_version_params
from miniunlearn.device import resolve_device
from miniunlearn.errors import ConfigError
from miniunlearn.training import TrainConfig, open_run, train_run

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device (run benchmarks/gpu_check.sh on one)")
CONFIG = TrainConfig(
    dataset="digits", epochs=80, lr=1.0, lam=0.02, history="both", checkpoints=4, dtype="float64"
)


def test_device_names_are_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if CUDA else "cpu")
    for bad in ("tpu", "gpu0"):
        with pytest.raises(ConfigError, match="unknown --device"):
            resolve_device(bad)
    if not CUDA:
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_cli_refuses_a_missing_gpu_before_writing(tmp_path: Path, capsys) -> None:
    if CUDA:
        pytest.skip("this machine has CUDA")
    assert main(["-q", "train", "--dataset", "digits", "--out", str(tmp_path / "r"), "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_run_opened_on_the_cpu_computes_there(tmp_path: Path) -> None:
    run = train_run(CONFIG, tmp_path / "r", progress=False, device="cpu")
    assert run.device == torch.device("cpu") and run.objective.x.device.type == "cpu"
    assert run.mini_history().params.device.type == "cpu"


@needs_cuda
@pytest.mark.parametrize("method", ["mini", "retrain", "deltagrad", "finetune"])
def test_cuda_training_and_unlearning_match_the_cpu(tmp_path: Path, method: str) -> None:
    cpu = train_run(CONFIG, tmp_path / "cpu", progress=False)
    gpu = train_run(CONFIG, tmp_path / "gpu", progress=False, device="cuda")
    assert gpu.objective.x.device.type == "cuda"
    w_cpu, w_gpu = cpu.load_model_params(), open_run(gpu.path).load_model_params()
    assert torch.allclose(w_cpu, w_gpu, atol=1e-8)  # float64: the same model up to rounding
    ids = np.arange(0, 300, 3)
    forget(cpu.path, ids, method=method)
    forget(gpu.path, ids, method=method, device="cuda")
    a = load_version_params(open_run(cpu.path), current_version(open_run(cpu.path)))
    b = load_version_params(open_run(gpu.path), current_version(open_run(gpu.path)))
    assert torch.allclose(a, b, atol=1e-6)
    assert main(["-q", "evaluate", str(gpu.path), "--device", "cuda", "--json"]) == 0

"""Which torch device the work runs on: ``--device auto|cpu|cuda`` (or ``cuda:N``).

The CPU is the default and the reference: the same seed and thread count give
byte-identical files there. On a GPU the run is deterministic only as far as its kernels
are (cuBLAS reductions may differ in the last bits between runs), so a GPU model is close
to, not bit-identical with, the CPU one; the stored files (models, history, ledger) are
the same format on every device and a run trained on one device can be unlearned on another.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import ConfigError


def resolve_device(name: str | torch.device | None = "cpu") -> torch.device:
    """Return the torch device ``name`` asks for: ``auto`` (CUDA when visible, else CPU),
    ``cpu``, ``cuda`` or ``cuda:N``. Raises ConfigError for an unknown name or a CUDA device
    this machine does not have."""
    if isinstance(name, torch.device):
        device = name
    else:
        text = (name or "cpu").strip().lower()
        if text == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(text)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            raise ConfigError(f"unknown --device {name!r}; choose auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was asked but no CUDA device is visible to torch (a CPU-only torch build "
                "or no GPU); use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


@contextlib.contextmanager
def device_scope(device: torch.device) -> Iterator[None]:
    """Make ``device`` the default for tensors created inside the block (nothing on the CPU)."""
    if device.type == "cpu":
        yield
        return
    with device:
        yield

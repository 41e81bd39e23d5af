"""Default training recipes per (dataset, model), chosen so that logistic regression
trains to a small gradient norm and the larger models finish in minutes on 2 cores.

``miniunlearn train`` and ``miniunlearn bench`` start from these; every field can be
overridden on the command line.
"""

from __future__ import annotations

from typing import Any

# (dataset, model) -> TrainConfig fields. "*" matches any dataset.
PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    ("digits", "logreg"): {"epochs": 1000, "lr": 1.0, "lam": 0.01},
    ("breast-cancer", "logreg"): {"epochs": 500, "lr": 0.5, "lam": 0.01},
    ("mnist", "logreg"): {"epochs": 1000, "lr": 0.5, "lam": 0.01},
    # brighter images: a larger top curvature than MNIST, so a smaller rate (0.2 oscillates)
    ("fashion-mnist", "logreg"): {"epochs": 1000, "lr": 0.15, "lam": 0.02},
    ("adult", "logreg"): {"epochs": 1000, "lr": 1.0, "lam": 0.005},
    ("*", "logreg"): {"epochs": 500, "lr": 0.5, "lam": 0.01},
    ("digits", "mlp"): {"epochs": 500, "lr": 0.3, "lam": 0.005, "hidden": (64,)},
    ("*", "mlp"): {
        "epochs": 8,
        "batch_size": 1024,
        "lr": 0.3,
        "lam": 1e-3,
        "hidden": (128,),
        "lr_schedule": "step",
    },
    ("*", "cnn"): {"epochs": 5, "batch_size": 256, "lr": 0.05, "lam": 1e-3, "lr_schedule": "step"},
}


def preset(dataset: str, model: str) -> dict[str, Any]:
    """Return the default TrainConfig fields for ``dataset`` and ``model`` (a fresh dict)."""
    return dict(PRESETS.get((dataset, model)) or PRESETS.get(("*", model)) or {})

"""Default training recipes per (dataset, model), chosen so that logistic regression
trains to a small gradient norm and the larger models finish in minutes on 2 cores.

``miniunlearn train`` and ``miniunlearn bench`` start from these; every field can be
overridden on the command line.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

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


# Settings where the original model memorises its training data, so membership attacks can
# tell it from a retrained one: a fixed 10,000-sample subset fitted to (almost) 100 %
# training accuracy by plain SGD, no weight decay (see docs/results.md).
LEAKY: dict[tuple[str, str], dict[str, Any]] = {
    ("mnist", "mlp"): {
        "n_train": 10_000,
        "hidden": (512,),
        "epochs": 60,
        "batch_size": 128,
        "lr": 0.2,
        "lam": 0.0,
        "lr_schedule": "constant",
    },
    # plain SGD at a constant rate left the CNN well short of fitting its training set; a
    # cosine decay from 0.2 fits it (retain accuracy in docs/results/fashion-cnn-leaky.md)
    ("fashion-mnist", "cnn"): {
        "n_train": 10_000,
        "channels": (16, 32),
        "head": (256,),
        "epochs": 30,
        "batch_size": 64,
        "lr": 0.2,
        "lam": 0.0,
        "lr_schedule": "cosine",
    },
}
PRESET_NAMES = ("default", "leaky")


def preset(dataset: str, model: str, name: str = "default") -> dict[str, Any]:
    """Return the TrainConfig fields of preset family ``name`` ("default" or "leaky") for
    ``dataset`` and ``model`` (a fresh dict). ConfigError when the family has no such pair."""
    if name == "default":
        return dict(PRESETS.get((dataset, model)) or PRESETS.get(("*", model)) or {})
    if name != "leaky":
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    if (dataset, model) not in LEAKY:
        pairs = ", ".join(f"--dataset {d} --model {m}" for d, m in LEAKY)
        raise ConfigError(f"the leaky preset exists for {pairs}; not for {dataset} with {model}")
    return dict(LEAKY[(dataset, model)])

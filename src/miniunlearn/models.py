"""Model families: multinomial logistic regression, MLP and a small CNN.

Every model takes *flat* feature vectors of shape (batch, n_features) and returns
logits of shape (batch, n_classes); the CNN reshapes internally using the
dataset's image shape. All are plain ``nn.Module``s with no BatchNorm or dropout,
so training is a deterministic function of the parameters and the batch order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .errors import ConfigError

MODEL_NAMES = ("logreg", "mlp", "cnn")


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer producing class logits."""

    def __init__(self, n_features: int, n_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (batch, n_classes) for flat inputs (batch, n_features)."""
        return self.linear(x)


class MLP(nn.Module):
    """Fully connected network with the given hidden sizes and a smooth-enough activation."""

    def __init__(
        self, n_features: int, n_classes: int, hidden: Sequence[int] = (128,), activation: str = "relu"
    ) -> None:
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "gelu": nn.GELU}
        if activation not in acts:
            raise ConfigError(f"unknown activation {activation!r}; choose one of {sorted(acts)}")
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), acts[activation]()]
            width = size
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (batch, n_classes) for flat inputs (batch, n_features)."""
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv layers (``channels`` wide, default 8 and 16; 3x3, ReLU, 2x2 max-pool) and a head:
    one linear layer, or with ``head`` sizes a ReLU MLP of those hidden widths."""

    def __init__(
        self,
        image_shape: Sequence[int],
        n_classes: int,
        channels: Sequence[int] = (8, 16),
        head: Sequence[int] = (),
    ):
        super().__init__()
        c, h, w = image_shape
        self.image_shape = (int(c), int(h), int(w))
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        width = c2 * (h // 4) * (w // 4)
        if not head:
            self.head: nn.Module = nn.Linear(width, n_classes)
        else:
            layers: list[nn.Module] = []
            for size in head:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            self.head = nn.Sequential(*layers, nn.Linear(width, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits (batch, n_classes) for flat inputs holding images in C*H*W order."""
        z = self.features(x.reshape(x.shape[0], *self.image_shape))
        return self.head(z.flatten(1))


def build_model(
    name: str,
    n_features: int,
    n_classes: int,
    *,
    hidden: Sequence[int] = (128,),
    activation: str = "relu",
    channels: Sequence[int] = (8, 16),
    head: Sequence[int] = (),
    image_shape: Sequence[int] | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build a freshly initialised model.

    Takes the family ``name`` (one of ``MODEL_NAMES``), input and output sizes,
    MLP options, the CNN's two conv widths and head widths, the image shape (required for
    ``cnn``), an init ``seed`` and a dtype. Returns the module; the same arguments always
    give identical weights.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if name == "logreg":
            model: nn.Module = LogisticRegression(n_features, n_classes)
        elif name == "mlp":
            model = MLP(n_features, n_classes, hidden, activation)
        elif name == "cnn":
            if image_shape is None:
                raise ConfigError("the cnn model needs an image dataset (mnist, fashion-mnist, digits)")
            model = SmallCNN(image_shape, n_classes, channels, head)
        else:
            raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    finally:
        torch.random.set_rng_state(generator_state)
    return model.to(dtype)


def check_replayable(model: nn.Module) -> None:
    """Raise ConfigError if ``model`` holds layers whose training-mode output is not a
    function of parameters and inputs alone (BatchNorm running stats, dropout), which
    would make exact replay of training impossible."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"layer {name!r} is BatchNorm: its running statistics make training history "
                "impossible to replay exactly; use a model without BatchNorm (or GroupNorm)"
            )
        if isinstance(module, nn.modules.dropout._DropoutNd | nn.Dropout) and module.p > 0:
            raise ConfigError(
                f"layer {name!r} is dropout with p={module.p}: its random masks are not recorded, "
                "so training cannot be replayed exactly; set p=0 or remove it"
            )

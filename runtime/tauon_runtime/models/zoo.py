"""The model zoo: every architecture sized by the data (channels, image size, classes).

torchvision models are built with `weights=None` (no download; the cluster may have no network)
and adapted to small inputs: for images under 64 pixels the ResNet/MobileNet stems stop
down-sampling (the CIFAR recipe) and VGG drops the pools an 8x8 image cannot afford.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tauon_runtime.contract import ARCHITECTURES
from tauon_runtime.models import text

SMALL_IMAGE = 64  # below this, stems keep full resolution


def _flat_size(features: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, in_channels, image_size, image_size)).numel()


class SmallCNN(nn.Module):
    """The seed's CNN: two conv+pool blocks, two linear layers."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        width: int = 32,
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),  # ceil: tiny images still keep one pixel
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_size(self.features, in_channels, image_size), hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNet(nn.Module):
    """LeNet-5 with ReLU and max-pooling; padded so 8x8 inputs fit."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(6, 16, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(_flat_size(self.features, in_channels, image_size), 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _mlp(
    in_channels: int,
    num_classes: int,
    image_size: int,
    hidden: list[int] | tuple[int, ...] = (256, 128),
    dropout: float = 0.1,
) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_channels * image_size * image_size
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = int(h)
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(
        in_channels: int, num_classes: int, image_size: int, small_stem: bool | None = None
    ) -> nn.Module:
        import torchvision

        model = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
        if small_stem if small_stem is not None else image_size < SMALL_IMAGE:
            model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        elif in_channels != 3:
            model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        return model

    return build


def _mobilenet_v3_small(
    in_channels: int,
    num_classes: int,
    image_size: int,
    dropout: float = 0.2,
    small_stem: bool | None = None,
) -> nn.Module:
    import torchvision

    model = torchvision.models.mobilenet_v3_small(
        weights=None, num_classes=num_classes, dropout=dropout
    )
    small = small_stem if small_stem is not None else image_size < SMALL_IMAGE
    model.features[0][0] = nn.Conv2d(
        in_channels, 16, 3, stride=1 if small else 2, padding=1, bias=False
    )
    return model


def _vgg11(
    in_channels: int,
    num_classes: int,
    image_size: int,
    hidden: int | None = None,
    dropout: float = 0.5,
) -> nn.Module:
    import torchvision

    model = torchvision.models.vgg11(weights=None, num_classes=num_classes, dropout=dropout)
    model.features[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    # Keep only the pools the image can afford (8x8 -> 3 of the 5).
    affordable = int(math.log2(max(image_size, 1)))
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    for i in pools[affordable:]:
        model.features[i] = nn.Identity()
    if image_size < SMALL_IMAGE:
        # The 7x7x512 -> 4096 head is 100M parameters; small images need a small head.
        hidden = hidden or 512
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Sequential(
            nn.Linear(512, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
    elif hidden:
        raise ValueError("vgg11 option hidden applies to images under 64 pixels only")
    return model


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "cnn": SmallCNN,
    "lenet": LeNet,
    "mlp": _mlp,
    "resnet18": _resnet(18),
    "resnet34": _resnet(34),
    "resnet50": _resnet(50),
    "mobilenet_v3_small": _mobilenet_v3_small,
    "vgg11": _vgg11,
    "lstm": text.lstm,
    "gru": text.gru,
    "transformer": text.transformer,
}
assert tuple(_BUILDERS) == ARCHITECTURES, "contract.ARCHITECTURES and the zoo disagree"

# Options arrive from YAML in camelCase; builders take snake_case keyword arguments.
_OPTION_NAMES = {
    "smallStem": "small_stem",
    "vocabSize": "vocab_size",
    "embedDim": "embed_dim",
    "hiddenSize": "hidden_size",
    "ffDim": "ff_dim",
}


def build_model(
    architecture: str,
    num_classes: int,
    in_channels: int,
    image_size: int,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """Build `architecture` for [in_channels, image_size, image_size] inputs and `num_classes`."""
    if architecture not in _BUILDERS:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    kwargs = {_OPTION_NAMES.get(k, k): v for k, v in (options or {}).items()}
    try:
        return _BUILDERS[architecture](in_channels, num_classes, image_size, **kwargs)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ValueError(f"model.options for {architecture}: {e}") from None
        raise

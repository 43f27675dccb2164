"""VGG-16 with batch norm for small images (the CIFAR variant of Liu et al. 2019)."""

from __future__ import annotations

import torch
from torch import nn

VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)


class VGG(nn.Module):
    """Conv-BN-ReLU stacks with max pools, global pool and one linear classifier."""

    def __init__(
        self,
        cfg: tuple[int | str, ...] = VGG16_CFG,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for v in cfg:
            if v == "M":
                if size >= 2:  # small inputs (8x8 digits) skip the pools they cannot afford
                    layers.append(nn.MaxPool2d(2, 2))
                    size //= 2
                continue
            layers += [nn.Conv2d(channels, int(v), 3, padding=1, bias=False),
                       nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
            channels = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify a batch of images."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

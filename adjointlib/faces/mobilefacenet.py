"""MobileFaceNet (Chen et al. 2018) as released in foamliu/MobileFaceNet, for strict loading.

Source: ``../shared/models/mobilefacenet/README.md`` (architecture table, input convention,
verification vector); paper: S. Chen et al., "MobileFaceNets", arXiv:1804.07573.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .paths import load_frozen_weights, model_file

__all__ = ["MobileFaceNet", "load_mobilefacenet", "MOBILEFACENET_MEAN", "MOBILEFACENET_STD"]

#: ImageNet per-channel mean and std (RGB) applied to pixels in [0, 1] (README "Input convention").
MOBILEFACENET_MEAN = (0.485, 0.456, 0.406)
MOBILEFACENET_STD = (0.229, 0.224, 0.225)

# (expansion t, output channels c, repeats n, stride s) of the inverted-residual groups.
_SETTING = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


def _cbr(c_in: int, c_out: int, k: int, s: int, groups: int) -> nn.Sequential:
    """Conv → BatchNorm → ReLU6 block ``CBR(in, out, k, s, g)``.

    Source: mobilefacenet README, "Building block CBR".
    Convention: padding (k - 1) // 2, no conv bias; keys ``.0`` (conv) and ``.1`` (BN).
    Shapes: (N, c_in, H, W) -> (N, c_out, H / s, W / s).
    """
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride=s, padding=(k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(),
    )


class _DepthwiseSeparable(nn.Module):
    """The ``dw_conv`` block: depthwise 3x3 → BN → ReLU → pointwise 1x1 → BN → ReLU.

    Source: mobilefacenet README, "dw_conv" (plain ReLU, not ReLU6).
    Shapes: (N, 64, 56, 56) -> (N, 64, 56, 56).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = ReLU(bn2(pw(ReLU(bn1(dw(x)))))); shapes (N, C, H, W) -> (N, C, H, W)."""
        x = torch.relu(self.bn1(self.depthwise(x)))
        return torch.relu(self.bn2(self.pointwise(x)))


class _InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise (stride s), 1x1 linear project.

    Source: mobilefacenet README, "Inverted-residual block features.i".
    Convention: output = x + conv(x) iff s = 1 and c_in = c_out, else conv(x).
    Shapes: (N, c_in, H, W) -> (N, c_out, H / s, W / s).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = c_in * expansion
        self.use_residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            _cbr(c_in, hidden, 1, 1, 1),
            _cbr(hidden, hidden, 3, stride, hidden),
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; shapes (N, c_in, H, W) -> (N, c_out, H / s, W / s)."""
        y = self.conv(x)
        return x + y if self.use_residual else y


class _GlobalDepthwise(nn.Module):
    """Global depthwise 7x7 convolution + BN, no activation (the ``gdconv`` layer).

    Source: mobilefacenet README, row 5 of the top-level table.
    Shapes: (N, 512, 7, 7) -> (N, 512, 1, 1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 7, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = bn(depthwise(x)); shapes (N, 512, 7, 7) -> (N, 512, 1, 1)."""
        return self.bn(self.depthwise(x))


class MobileFaceNet(nn.Module):
    """MobileFaceNet embedding network: aligned 112x112 RGB face → raw 128-d embedding.

    Source: ``../shared/models/mobilefacenet/README.md`` (foamliu/MobileFaceNet ``MobileFaceNet``).
    Convention: input is ImageNet-normalised RGB, x = (p / 255 - mean) / std; the output is NOT
    L2-normalised (norm ≈ 18 on FRLL); compare two faces by cosine similarity.
    Shapes: (N, 3, 112, 112) -> (N, 128).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _cbr(3, 64, 3, 2, 1)
        self.dw_conv = _DepthwiseSeparable(64)
        blocks = []
        c_in = 64
        for t, c, n, s in _SETTING:
            for i in range(n):
                blocks.append(_InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        self.features = nn.Sequential(*blocks)
        self.conv2 = _cbr(128, 512, 1, 1, 1)
        self.gdconv = _GlobalDepthwise(512)
        self.conv3 = nn.Conv2d(512, 128, 1)
        self.bn = nn.BatchNorm2d(128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed normalised 112x112 crops; shapes (N, 3, 112, 112) -> (N, 128).

        Raises:
            ValueError: ``x`` is not (N, 3, 112, 112).
        """
        if x.ndim != 4 or x.shape[1:] != (3, 112, 112):
            raise ValueError(f"MobileFaceNet expects (N, 3, 112, 112), got {tuple(x.shape)}")
        x = self.features(self.dw_conv(self.conv1(x)))
        x = self.bn(self.conv3(self.gdconv(self.conv2(x))))
        return x.flatten(1)


def load_mobilefacenet(path: str | Path | None = None) -> MobileFaceNet:
    """Build :class:`MobileFaceNet`, load the released weights strictly, return it in eval mode.

    Source: mobilefacenet README, "Loading" (legacy serialisation saved on CUDA, so
    ``map_location="cpu"`` is required).
    Convention: ``path`` > ``$ADJOINTLIB_SHARED/models/mobilefacenet/mobilefacenet.pt``
    > ``<repo>/../shared/...``; parameters are frozen (``requires_grad = False``), gradients
    still flow to the input.
    Shapes: the returned module maps (N, 3, 112, 112) -> (N, 128).
    """
    path = Path(path) if path is not None else model_file("mobilefacenet", "mobilefacenet.pt")
    return load_frozen_weights(MobileFaceNet(), path, "MobileFaceNet")

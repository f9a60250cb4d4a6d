"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in PyTorch.

Source: ``../shared/models/dlib_resnet/README.md`` (architecture with dlib semantics, chip
geometry, verification vector); weights by Davis King (CC0), converted from dlib's ``.dat``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .paths import load_frozen_weights, model_file

__all__ = ["DlibResNet", "load_dlib_resnet", "DLIB_MEAN_RGB", "DLIB_SAME_PERSON_DISTANCE"]

#: Per-channel input mean (RGB, 0-255 scale) of dlib's ``input_rgb_image_sized<150>``.
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
#: dlib's decision rule: Euclidean distance below 0.6 means the same person.
DLIB_SAME_PERSON_DISTANCE = 0.6

# (number of blocks, output channels, stride of the first block) from input to output.
_LEVELS = ((3, 32, 1), (4, 64, 2), (3, 128, 2), (3, 256, 2), (1, 256, 2))


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev``: zero-pad both tensors to the larger C, H, W, then add.

    Source: dlib_resnet README, rule 3 (extra channels appended, extra rows/columns at the
    bottom and right, index 0 aligned).
    Shapes: (N, C1, H1, W1), (N, C2, H2, W2) -> (N, max C, max H, max W).
    """
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))

    return pad(a) + pad(b)


class DlibResNet(nn.Module):
    """dlib ResNet-29 face descriptor: 150x150 RGB chip (0-255 floats) → 128-d descriptor.

    Source: dlib_resnet README, "Architecture and dlib-specific semantics".
    Convention: x ← (x − mean) / 256; stride-2 layers are unpadded; conv → per-channel affine
    y = g·x + b; residual sum by zero padding (``add_prev``); skip of a downsampling block is a
    2x2 average pool; head = global mean then ``x @ fc``; the descriptor is not normalised and
    two faces match when ||d1 − d2|| < 0.6.
    Shapes: (N, 3, 150, 150) -> (N, 128).
    """

    def __init__(self) -> None:
        super().__init__()
        convs = [nn.Conv2d(3, 32, 7, stride=2)]
        self._strides = [2]
        c_in = 32
        for n_blocks, c_out, first_stride in _LEVELS:
            for i in range(n_blocks):
                stride = first_stride if i == 0 else 1
                convs.append(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1 if stride == 1 else 0))
                convs.append(nn.Conv2d(c_out, c_out, 3, padding=1))
                self._strides += [stride, 1]
                c_in = c_out
        self.convs = nn.ModuleList(convs)
        for i, conv in enumerate(convs):
            self.register_buffer(f"g{i}", torch.ones(conv.out_channels))
            self.register_buffer(f"b{i}", torch.zeros(conv.out_channels))
        self.register_buffer("fc", torch.zeros(256, 128))
        self.register_buffer("mean", torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1))

    def _conv_affine(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Convolution i followed by its affine layer A_i(x) = g_i·x + b_i; (N,C,H,W) in/out."""
        y = self.convs[i](x)
        g, b = getattr(self, f"g{i}"), getattr(self, f"b{i}")
        return y * g.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Descriptor of 150x150 chips with 0-255 pixel values; (N, 3, 150, 150) -> (N, 128).

        Raises:
            ValueError: ``x`` is not (N, 3, 150, 150).
        """
        if x.ndim != 4 or x.shape[1:] != (3, 150, 150):
            raise ValueError(f"DlibResNet expects (N, 3, 150, 150), got {tuple(x.shape)}")
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(torch.relu(self._conv_affine(0, x)), 3, stride=2)
        for i in range(1, len(self.convs), 2):
            y = self._conv_affine(i + 1, torch.relu(self._conv_affine(i, x)))
            skip = F.avg_pool2d(x, 2, stride=2) if self._strides[i] == 2 else x
            x = torch.relu(_add_prev(y, skip))
        return x.mean(dim=(2, 3)) @ self.fc


def load_dlib_resnet(path: str | Path | None = None) -> DlibResNet:
    """Build :class:`DlibResNet`, load the converted weights strictly, return it in eval mode.

    Source: dlib_resnet README, "Loading" (zip state_dict of 118 float32 tensors).
    Convention: ``path`` > ``$ADJOINTLIB_SHARED/models/dlib_resnet/...pth`` > ``<repo>/../shared``;
    weights are frozen buffers/parameters, gradients still flow to the input.
    Shapes: the returned module maps (N, 3, 150, 150) -> (N, 128).
    """
    if path is None:
        path = model_file("dlib_resnet", "dlib_face_recognition_resnet_model_v1.pth")
    return load_frozen_weights(DlibResNet(), path, "dlib ResNet")

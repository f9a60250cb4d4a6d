"""Face-recognition systems behind one interface, and a registry to plug in more.

Source: ``../shared/models/mobilefacenet/README.md`` and ``../shared/models/dlib_resnet/README.md``
(input conventions, crops, comparison rules).

A :class:`FaceRecognizer` takes *canonical crops* (:mod:`.crops`; RGB in [-1, 1], NCHW, any
square size), cuts its own crop differentiably, normalises, and embeds. Scores are
similarities (higher = more alike): cosine for embedding networks compared by angle, minus
the Euclidean distance for dlib-style descriptors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .crops import ARCFACE_TEMPLATE_112, DLIB_YUNET_TEMPLATE_150, crop_from_canonical
from .dlib_resnet import load_dlib_resnet
from .mobilefacenet import MOBILEFACENET_MEAN, MOBILEFACENET_STD, load_mobilefacenet

__all__ = [
    "FaceRecognizer",
    "register_fr_system",
    "get_fr_system",
    "available_fr_systems",
]

_METRICS = ("cosine", "euclidean")


class FaceRecognizer(nn.Module):
    """An FR network with its crop geometry, input normalisation and comparison rule.

    Source: the model READMEs (crop template, normalisation, cosine / Euclidean comparison).
    Convention: ``forward(x)`` = embed(normalise(crop_from_canonical(x))); ``x`` is a batch of
    canonical crops in [-1, 1]; ``normalise`` maps an FR crop in [-1, 1] to the network's input
    scale; ``metric`` is "cosine" (similarity = cos) or "euclidean" (similarity = −‖e₁ − e₂‖).
    Differentiable with respect to ``x``; the network's weights are frozen.
    Shapes: x (N, 3, S, S) -> embeddings (N, D).
    Raises (constructor):
        ValueError: ``metric`` is neither "cosine" nor "euclidean", or ``template`` is not (5, 2).
    """

    def __init__(self, name: str, network: nn.Module, template: np.ndarray, crop_size: int,
                 normalise: Callable[[torch.Tensor], torch.Tensor], metric: str) -> None:
        super().__init__()
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
        template = np.asarray(template, dtype=np.float64)
        if template.shape != (5, 2):
            raise ValueError(f"template must be (5, 2) in YuNet order, got {template.shape}")
        self.name, self.network, self.metric = name, network, metric
        self.template, self.crop_size, self.normalise = template, int(crop_size), normalise

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """This system's aligned crop of canonical crops (differentiable).

        Source: :func:`~.crops.crop_from_canonical`. Convention: values stay in [-1, 1].
        Shapes: (N, 3, S, S) -> (N, 3, crop_size, crop_size).
        Raises:
            ValueError: ``x`` is not (N, 3, S, S) (the message names the system), or not floating
                (``crop_from_canonical``).
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected canonical crops (N, 3, S, S), got {tuple(x.shape)}")
        return crop_from_canonical(x, self.template, self.crop_size)

    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Embed crops that are already in this system's frame (e.g. verification PNGs).

        Source: model README "Input convention". Convention: crops RGB in [-1, 1]; run in the
        network's dtype with channels-last memory format (faster convolutions on CPU).
        Shapes: (N, 3, crop_size, crop_size) -> (N, D).
        """
        param = next(self.network.parameters())
        x = self.normalise(crops.to(param.dtype)).contiguous(memory_format=torch.channels_last)
        return self.network(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed canonical crops; shapes (N, 3, S, S) in [-1, 1] -> (N, D)."""
        return self.embed_crops(self.crop(x))

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise similarity of two batches of embeddings.

        Source: model READMEs (cosine for MobileFaceNet; Euclidean < 0.6 for dlib).
        Convention: cos(a, b) or −‖a − b‖₂, higher = more alike; broadcasts over rows.
        Shapes: a (N, D), b (N, D) -> (N,).
        """
        if self.metric == "cosine":
            return torch.nn.functional.cosine_similarity(a, b, dim=-1)
        return -torch.linalg.vector_norm(a - b, dim=-1)

    def similarity_matrix(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """All-pairs similarity of two sets of embeddings.

        Source: as :meth:`similarity`. Convention: entry (i, j) = similarity(a_i, b_j).
        Shapes: a (N, D), b (M, D) -> (N, M).
        """
        if self.metric == "cosine":
            an = torch.nn.functional.normalize(a, dim=-1)
            return an @ torch.nn.functional.normalize(b, dim=-1).T
        return -torch.cdist(a, b)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Row-wise distance for identity losses (paper eq. 5.1 uses a distance d).

        Source: paper-notes §8.2 (cosine distance between FR embeddings).
        Convention: 1 − cos(a, b) for "cosine", ‖a − b‖₂ for "euclidean".
        Shapes: a (N, D), b (N, D) -> (N,).
        """
        s = self.similarity(a, b)
        return 1.0 - s if self.metric == "cosine" else -s


def _mobilefacenet(weights: str | Path | None = None) -> FaceRecognizer:
    """MobileFaceNet on the ArcFace 112x112 crop, ImageNet normalisation, cosine.

    Source: mobilefacenet README ("Input convention", "Alignment").
    Convention: p/255 = (x + 1)/2, then (p/255 − mean)/std per RGB channel.
    Shapes: canonical (N, 3, S, S) -> (N, 128).
    """
    mean = torch.tensor(MOBILEFACENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(MOBILEFACENET_STD).view(1, 3, 1, 1)

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return ((x + 1.0) / 2.0 - mean.to(x)) / std.to(x)

    return FaceRecognizer("mobilefacenet", load_mobilefacenet(weights), ARCFACE_TEMPLATE_112, 112,
                          normalise, "cosine")


def _dlib_resnet(weights: str | Path | None = None) -> FaceRecognizer:
    """dlib ResNet on the 150x150 chip (YuNet template in dlib's chip frame), Euclidean.

    Source: dlib_resnet README ("Without dlib (YuNet landmarks)", "Architecture").
    Convention: pixels 0-255 = (x + 1) · 127.5; the network subtracts its mean and divides by 256.
    Shapes: canonical (N, 3, S, S) -> (N, 128).
    """

    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x + 1.0) * 127.5

    return FaceRecognizer("dlib_resnet", load_dlib_resnet(weights), DLIB_YUNET_TEMPLATE_150, 150,
                          normalise, "euclidean")


_REGISTRY: dict[str, Callable[..., FaceRecognizer]] = {
    "mobilefacenet": _mobilefacenet,
    "dlib_resnet": _dlib_resnet,
}


def register_fr_system(name: str, factory: Callable[..., FaceRecognizer], overwrite: bool = False) -> None:
    """Register a factory that builds a :class:`FaceRecognizer` under ``name``.

    Source: project convention (plug in another FR network, e.g. an ArcFace IResNet).
    Convention: ``factory(**kwargs)`` must return a FaceRecognizer; names are unique unless
    ``overwrite``.
    Shapes: none.
    Raises:
        TypeError: ``factory`` is not callable.
        ValueError: ``name`` is already registered and ``overwrite`` is False.
    """
    if not callable(factory):
        raise TypeError("factory must be callable")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"FR system {name!r} is already registered (pass overwrite=True)")
    _REGISTRY[name] = factory


def get_fr_system(name: str, **kwargs) -> FaceRecognizer:
    """Build the registered FR system ``name`` (in eval mode, weights frozen).

    Source: project convention. Convention: kwargs go to the factory (e.g. ``weights=path``).
    Shapes: the result maps canonical crops (N, 3, S, S) -> (N, D).
    Raises:
        KeyError: ``name`` is not registered (the message lists the available systems).
        TypeError: the factory returns something other than a ``FaceRecognizer``, or does not accept ``kwargs``.
        FileNotFoundError: the system's weights are missing (``weights=`` or the shared model folder).
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown FR system {name!r}; available: {available_fr_systems()}")
    system = _REGISTRY[name](**kwargs)
    if not isinstance(system, FaceRecognizer):
        raise TypeError(f"factory for {name!r} returned {type(system).__name__}, not FaceRecognizer")
    return system.eval()


def available_fr_systems() -> list[str]:
    """Names of the registered FR systems. Source: project convention. Shapes: -> list of str."""
    return sorted(_REGISTRY)

"""Saving and loading face models in diffusers format (plus the encoder), from a folder or a hub id.

Layout of a saved model folder:
    face_model.json        the FaceModelConfig and the training-data licence
    unet/                  UNet2DModel.save_pretrained (safetensors)
    scheduler/             DDPMScheduler.save_pretrained
    encoder.safetensors    the semantic encoder's weights
Anything else (a local folder or hub id of a public diffusers DDPM pipeline with unet/ and
scheduler/ sub-folders, e.g. an unconditional CelebA-HQ model) loads as an unconditional model
whose ``encode`` is unavailable (z = None).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..atomic import write_text_atomic
from .config import FaceModelConfig
from .networks import FaceDiffusionModel, SemanticEncoder

__all__ = ["save_face_model", "load_face_model", "load_default_face_model", "DEFAULT_MODEL_DIR", "CONFIG_FILE"]

CONFIG_FILE = "face_model.json"

#: The embedded default model: faces32 trained on UTKFace by ``adjointlib.facemodel.train`` (fp16 EMA
#: weights, model card in its face_model.json; training data licence: non-commercial research only).
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "weights" / "faces32"


def save_face_model(model: FaceDiffusionModel, folder, dtype=None, model_card: dict | None = None) -> Path:
    """Write ``model`` to ``folder`` (created); ``dtype=torch.float16`` stores half-precision weights."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    unet = model.unet if dtype is None else _copy_as(model.unet, dtype)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    model.scheduler.save_pretrained(folder / "scheduler")
    encoder_state = {k: (v if dtype is None else v.to(dtype)).contiguous() for k, v in model.encoder.state_dict().items()}
    save_file(encoder_state, str(folder / "encoder.safetensors"))
    meta = {"config": model.config.to_dict(), **(model_card or {})}
    write_text_atomic(folder / CONFIG_FILE, json.dumps(meta, indent=2))
    return folder


def _copy_as(module, dtype):
    import copy

    return copy.deepcopy(module).to(dtype)


def load_face_model(path_or_id, dtype=torch.float32, device="cpu") -> FaceDiffusionModel:
    """Load one of our face models from a folder, or a public diffusers DDPM (folder or hub id).

    Raises:
        FileNotFoundError: a face model folder ``path_or_id`` (with face_model.json) lacks unet/, scheduler/ or
            encoder.safetensors, or an existing folder is neither a face model nor a diffusers pipeline folder
            (no unet/); the message names the path.
        OSError: diffusers cannot load the hub id ``path_or_id`` (raised by ``from_pretrained``).
    """
    from diffusers import DDPMScheduler, UNet2DModel

    folder = Path(path_or_id)
    if (folder / CONFIG_FILE).is_file():
        from safetensors.torch import load_file

        meta = json.loads((folder / CONFIG_FILE).read_text())
        config = FaceModelConfig.from_dict(meta["config"])
        for part in ("unet", "scheduler", "encoder.safetensors"):
            if not (folder / part).exists():
                raise FileNotFoundError(f"face model folder {folder} lacks {part}")
        unet = UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False)
        encoder = SemanticEncoder(config.encoder_channels, config.z_dim)
        encoder.load_state_dict({k: v.float() for k, v in load_file(str(folder / "encoder.safetensors")).items()})
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        model = FaceDiffusionModel(config, unet=unet, encoder=encoder, scheduler=scheduler)
    else:
        if folder.exists() and not (folder / "unet").exists():
            raise FileNotFoundError(f"{folder} is neither a face model folder ({CONFIG_FILE}) nor a diffusers "
                                    "pipeline folder with unet/ and scheduler/")
        unet = UNet2DModel.from_pretrained(str(path_or_id), subfolder="unet", low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(str(path_or_id), subfolder="scheduler")
        config = FaceModelConfig(name=str(path_or_id), image_size=int(unet.config.sample_size))
        model = FaceDiffusionModel(config, unet=unet, encoder=None, scheduler=scheduler)
    return model.to(device=device, dtype=dtype).eval()


def load_default_face_model(dtype=torch.float32, device="cpu") -> FaceDiffusionModel:
    """The embedded ``faces32`` model that ships with the repository (see DEFAULT_MODEL_DIR).

    Raises:
        FileNotFoundError: the embedded model folder (``DEFAULT_MODEL_DIR``) is missing or incomplete.
    """
    if not (DEFAULT_MODEL_DIR / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"the embedded face model is missing from {DEFAULT_MODEL_DIR}; train one with "
                                "python -m adjointlib.facemodel.train --config faces32 --out runs/faces32")
    return load_face_model(DEFAULT_MODEL_DIR, dtype=dtype, device=device)

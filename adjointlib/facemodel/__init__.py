"""A DiffAE-style face diffusion model of our own: a diffusers UNet ε-model conditioned on a semantic
code z from a jointly trained CNN encoder (Preechakul et al., CVPR 2022), trained on UTKFace in the
project's canonical face crop.  Configurations: ``faces32`` (CPU) and ``faces64`` (GPU)."""
from .config import CONFIGS, FaceModelConfig
from .networks import FaceDiffusionModel, SemanticEncoder
from .pretrained import DEFAULT_MODEL_DIR, load_default_face_model, load_face_model, save_face_model

__all__ = ["CONFIGS", "FaceModelConfig", "FaceDiffusionModel", "SemanticEncoder", "DEFAULT_MODEL_DIR", "load_default_face_model",
           "load_face_model", "save_face_model"]

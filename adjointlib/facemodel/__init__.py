"""A DiffAE-style face diffusion model of our own: a diffusers UNet ε-model conditioned on a semantic
code z from a jointly trained CNN encoder (Preechakul et al., CVPR 2022), trained on UTKFace in the
project's canonical face crop.  Configurations: ``faces32`` (CPU) and ``faces64`` (GPU)."""
from .config import CONFIGS, FaceModelConfig
from .networks import FaceDiffusionModel, SemanticEncoder
from .pretrained import load_face_model

__all__ = ["CONFIGS", "FaceModelConfig", "FaceDiffusionModel", "SemanticEncoder", "load_face_model"]

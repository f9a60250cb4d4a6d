"""The small UNet of the gradient benchmarks: a diffusers ``UNet2DModel`` with random weights, used as a
data-prediction model x_θ(x, t, z) (so ε = (x − α x_θ)/σ ≈ x at high noise, as for a trained model) with a
continuous class embedding z (``class_embed_type="identity"``, z ∈ R^{4·channels[0]})."""
import torch

import adjointlib as al


def small_unet(schedule, channels=(16, 32), size=16, dtype=torch.float64, seed=0):
    """(ε-model, z_dim, image shape (3, size, size)) for ``schedule`` (continuous t ∈ [0, 1] → timestep 1000 t)."""
    from diffusers import UNet2DModel
    from diffusers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=size, in_channels=3, out_channels=3, block_out_channels=channels,
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8,
                       class_embed_type="identity").to(dtype)
    model = al.EpsilonFromX0(al.DiffusersUNet(unet, conditioning="class", time_scale=1000.0), schedule)
    return model, 4 * channels[0], (3, size, size)

"""Configurations of the face diffusion model (sizes, schedule, optimiser)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["FaceModelConfig", "CONFIGS"]


@dataclass(frozen=True)
class FaceModelConfig:
    """Everything that defines a face model and its training run.

    Schedule: DDPM, 1000 steps, linear β from 1e-4 to 0.02 (as DiffAE).  The semantic code z has
    the width of the UNet's time embedding (4 × the first block's channels) and enters through
    diffusers' identity class embedding, i.e. it is added to the time embedding.
    """

    name: str
    image_size: int
    block_out_channels: tuple = (32, 64, 64)
    down_block_types: tuple = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D")
    up_block_types: tuple = ("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    encoder_channels: tuple = (32, 64, 128)
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    batch_size: int = 64
    learning_rate: float = 2e-4
    ema_decay: float = 0.999
    train_steps: int = 20000
    checkpoint_every: int = 500
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def z_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "FaceModelConfig":
        data = dict(data)
        for key in ("block_out_channels", "down_block_types", "up_block_types", "encoder_channels"):
            data[key] = tuple(data[key])
        return cls(**data)


CONFIGS = {
    # faces32 is sized for a 2-core CPU: no attention at 16x16 (it was a third of the step time; the 8x8
    # mid-block keeps its attention), batch 32, 8000 steps: 0.43 s/step measured, about an hour.
    "faces32": FaceModelConfig(name="faces32", image_size=32,
                               down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
                               up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
                               batch_size=32, train_steps=8000, checkpoint_every=250),
    "faces64": FaceModelConfig(
        name="faces64", image_size=64, block_out_channels=(64, 128, 256, 256),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=2, encoder_channels=(64, 128, 256, 512), batch_size=128, learning_rate=2e-4,
        ema_decay=0.9995, train_steps=60000, checkpoint_every=2000),  # lr and EMA of the ../shared/models/faces64 run
    "tiny": FaceModelConfig(name="tiny", image_size=16, block_out_channels=(8, 16),
                            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                            encoder_channels=(8, 16), batch_size=8, learning_rate=2e-3, train_steps=50,
                            checkpoint_every=10),
}

"""Train a face diffusion model, resumably:  python -m adjointlib.facemodel.train --config faces32 --out runs/faces32

Data: UTKFace chips re-aligned to the canonical face crop (adjointlib.faces.utkface), or the same
crops from a JPEG pack (``--pack``, adjointlib.facemodel.pack) on a machine without the UTKFace zip;
random horizontal flips.  FRLL is the test set and is never trained on.  Every ``checkpoint_every`` steps
the full state (model, EMA, optimiser, step, RNG, loss log) is written atomically to
``<out>/checkpoint.pt``; re-running the same command resumes from it.  At the end (and with
``--export``) the EMA weights are saved in diffusers format to ``<out>/model`` (fp16 with
``--fp16``), with a model card naming the training-data licence.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .config import CONFIGS, FaceModelConfig
from .networks import FaceDiffusionModel
from .pack import read_pack
from .pretrained import save_face_model

__all__ = ["Trainer", "main", "MODEL_CARD"]

MODEL_CARD = {
    "training_data": "UTKFace (Zhang, Song & Qi 2017), canonical face crops; licence: non-commercial research only",
    "test_data_never_trained_on": "FRLL (DeBruine & Jones 2017)",
    "architecture": "diffusers UNet2DModel (epsilon prediction) + CNN semantic encoder, DiffAE-style",
}


class Trainer:
    """Holds the model, its EMA copy, the optimiser and the data; ``run`` trains with checkpoints.

    images: (N, S, S, 3) uint8 training faces.
    """

    def __init__(self, config: FaceModelConfig, images: np.ndarray, out: Path, device="cpu"):
        if images.ndim != 4 or images.shape[1:] != (config.image_size, config.image_size, 3):
            raise ValueError(f"images must be (N, {config.image_size}, {config.image_size}, 3), got {images.shape}")
        self.config, self.images, self.out, self.device = config, images, Path(out), device
        torch.manual_seed(config.seed)
        self.model = FaceDiffusionModel(config).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step, self.losses = 0, []
        self.out.mkdir(parents=True, exist_ok=True)
        if (self.out / "checkpoint.pt").is_file():
            self._load(self.out / "checkpoint.pt")

    def batch(self) -> torch.Tensor:
        """A random batch in [-1, 1] with random horizontal flips, (B, 3, S, S)."""
        idx = torch.randint(len(self.images), (self.config.batch_size,), generator=self.generator).numpy()
        x = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        flip = torch.rand(len(idx), generator=self.generator) < 0.5
        x[flip] = x[flip].flip(-1)
        return x.to(self.device)

    def train_step(self) -> float:
        x0 = self.batch()
        t = torch.randint(self.config.num_train_timesteps, (len(x0),), generator=self.generator).to(self.device)
        noise = torch.randn(x0.shape, generator=self.generator).to(self.device)
        loss = self.model.training_loss(x0, t, noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            for p_ema, p in zip(self.ema.parameters(), self.model.parameters()):
                p_ema.lerp_(p, 1.0 - self.config.ema_decay)
        self.step += 1
        return float(loss.detach())

    def run(self, steps: int | None = None, progress: bool | None = None) -> None:
        """Train until ``steps`` (default config.train_steps) total steps, checkpointing as it goes."""
        target = self.config.train_steps if steps is None else steps
        bar = tqdm(total=target, initial=self.step, desc=f"training {self.config.name}", disable=progress is False)
        while self.step < target:
            self.losses.append((self.step, self.train_step()))
            bar.update(1)
            bar.set_postfix(loss=f"{self.losses[-1][1]:.4f}")
            if self.step % self.config.checkpoint_every == 0 or self.step == target:
                self.save_checkpoint()
        bar.close()

    def save_checkpoint(self) -> None:
        """Full training state, written atomically (tmp file, then rename), plus the loss log CSV."""
        state = {"config": self.config.to_dict(), "step": self.step, "model": self.model.state_dict(),
                 "ema": self.ema.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "generator": self.generator.get_state(), "losses": self.losses}
        tmp = self.out / "checkpoint.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "checkpoint.pt")
        tmp = self.out / "loss_log.csv.tmp"
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", "loss"])
            writer.writerows(self.losses)
        tmp.replace(self.out / "loss_log.csv")

    def _load(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        if state["config"] != self.config.to_dict():
            raise ValueError(f"{path} was written with another configuration; use another --out folder")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.step, self.losses = state["step"], [tuple(x) for x in state["losses"]]

    def export(self, fp16: bool = True) -> Path:
        """The EMA model in diffusers format at ``<out>/model`` (fp16 weights by default)."""
        card = {**MODEL_CARD, "train_steps": self.step,
                "final_loss_mean_last_100": float(np.mean([v for _, v in self.losses[-100:]])) if self.losses else None}
        return save_face_model(self.ema, self.out / "model", dtype=torch.float16 if fp16 else None, model_card=card)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a DiffAE-style face diffusion model (resumable).")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="faces32")
    parser.add_argument("--out", required=True, help="run folder (checkpoint, loss log, exported model)")
    parser.add_argument("--steps", type=int, default=None, help="total steps (default: the configuration's)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data", default=None, help="UTKFace zip (default: ../shared/data/utkface/utkface_128.zip)")
    data.add_argument("--pack", default=None, help="training pack of aligned crops (python -m adjointlib.facemodel.pack)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N UTKFace images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--fp32-export", action="store_true", help="export fp32 instead of fp16 weights")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 keeps training steady on a machine shared with other jobs)")
    parser.add_argument("--export-only", action="store_true",
                        help="export the EMA weights of the run's last checkpoint (no data, no training)")
    args = parser.parse_args(argv)
    from ..faces.utkface import load_utkface_aligned

    config = CONFIGS[args.config]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.export_only:
        if not (Path(args.out) / "checkpoint.pt").is_file():
            raise SystemExit(f"--export-only: no checkpoint.pt in {args.out}")
        trainer = Trainer(config, np.empty((0, config.image_size, config.image_size, 3), np.uint8), Path(args.out))
        print(json.dumps({"step": trainer.step, "exported": str(trainer.export(fp16=not args.fp32_export))}))
        return
    if args.pack:
        images = read_pack(args.pack)[: args.limit]
        if images.shape[1] != config.image_size:
            raise SystemExit(f"--pack {args.pack} holds {images.shape[1]} px crops; {config.name} needs "
                             f"{config.image_size} px (python -m adjointlib.facemodel.pack --size {config.image_size})")
    else:
        images = load_utkface_aligned(config.image_size, zip_path=args.data, limit=args.limit).images
    trainer = Trainer(config, images, Path(args.out), device=args.device)
    trainer.run(args.steps)
    folder = trainer.export(fp16=not args.fp32_export)
    print(json.dumps({"step": trainer.step, "exported": str(folder), "images": len(images)}))


if __name__ == "__main__":
    main()

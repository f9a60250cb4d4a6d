"""Train a face diffusion model, resumably:  python -m adjointlib.facemodel.train --config faces32 --out runs/faces32

Data: UTKFace chips re-aligned to the canonical face crop (adjointlib.faces.utkface), or the same
crops from a JPEG pack (``--pack``, adjointlib.facemodel.pack) on a machine without the UTKFace zip;
random horizontal flips.  FRLL is the test set and is never trained on.  The loop is device-agnostic
and, on a GPU, runs like the one that trained ../shared/models/faces64: images held on the device as
one uint8 tensor, batches, flips, timesteps and noise drawn there from one seeded generator, bf16
autocast, no host sync per step.  ``--init-from <exported model folder>`` warm-starts a new run from a
model folder (e.g. the last run's export), so each run adds steps to the one before.  Every
``checkpoint_every`` steps the full state (model, EMA, optimiser, step, RNG, settings, loss log) is
written atomically to ``<out>/checkpoint.pt``; re-running the same command resumes from it.  At the end
(and with ``--export-only``) the EMA weights are saved in diffusers format to ``<out>/model`` (fp16
unless ``--fp32-export``), with a model card naming the training-data licence.
"""
from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_path
from ..schedules import DiscreteVP
from .config import CONFIGS, FaceModelConfig
from .networks import FaceDiffusionModel
from .pack import read_pack
from .pretrained import CONFIG_FILE, load_face_model, save_face_model

__all__ = ["Trainer", "main", "MODEL_CARD"]

MODEL_CARD = {
    "training_data": "UTKFace (Zhang, Song & Qi 2017), canonical face crops; licence: non-commercial research only",
    "test_data_never_trained_on": "FRLL (DeBruine & Jones 2017)",
    "architecture": "diffusers UNet2DModel (epsilon prediction) + CNN semantic encoder, DiffAE-style",
}

#: The configuration fields a warm start must share with ``--config`` (z_dim = 4 × block_out_channels[0]).
ARCHITECTURE = ("image_size", "block_out_channels", "down_block_types", "up_block_types", "layers_per_block",
                "encoder_channels", "z_dim", "num_train_timesteps", "beta_start", "beta_end")


class Trainer:
    """Holds the model, its EMA copy, the optimiser and the data; ``run`` trains with checkpoints.

    images: (N, S, S, 3) uint8 training faces, copied to ``device`` once as a (N, 3, S, S) uint8 tensor
        (0.29 GB for the 23,306 UTKFace crops at 64 px).
    precision: "bf16" (autocast of the forward pass and loss; fp32 weights and optimiser state) or "fp32";
        default bf16 on CUDA, fp32 elsewhere.
    warmup_steps: learning rate lr·min(1, (k + 1)/warmup_steps) at step k of this run (0: none); default
        500 from scratch, 100 for a warm start (Adam's moments start afresh).
    grad_clip: the gradients' global L2 norm is clipped to this (0: no clipping); default 1.0.
    log_every: the loss is summed on the device and read (the only host sync) every log_every steps and at
        each checkpoint; ``losses`` and ``<out>/loss_log.csv`` hold (step, mean loss, steps averaged).
        Default 50.
    init_from: an exported model folder (``save_face_model``, e.g. fp16 EMA weights) whose weights, cast to
        fp32, become both the trained weights and the EMA copy.  ``step`` still counts this run's steps
        from 0 (``run(steps)`` and ``--steps`` mean steps of this run, the learning-rate warm-up starts
        afresh); ``steps_before`` is the folder's ``train_steps`` (None if its card has none), and the
        exported card's ``train_steps`` is steps_before + step.
    EMA: decay min(ema_decay, (1 + n)/(10 + n)) at n = steps_before + step, so a chain of warm-started
        runs continues one schedule; the full ema_decay if steps_before is unknown.

    A run folder with a checkpoint is resumed: settings left as None take the checkpoint's values, given
    ones must equal them, and ``init_from`` is validated (the weights' SHA-256 must be those the run
    started from), not applied again.  A checkpoint written on another device type can be exported
    but not trained on (its random stream lives on that device).
    ``settings`` (saved in the checkpoint and the exported card): precision, warmup_steps, grad_clip,
    log_every, device (type) and init_from ({"folder", "weights_sha256": {file: hex}, "train_steps"}).

    Raises (constructor):
        ValueError: ``images`` of another shape or dtype than (N, S, S, 3) uint8 with S = config.image_size;
            ``precision`` other than None, "bf16" or "fp32"; an ``init_from`` that is no model folder or whose
            architecture differs from ``config`` (naming --init-from); a checkpoint in ``out`` written with
            another configuration or other settings.
    """

    def __init__(self, config: FaceModelConfig, images: np.ndarray, out: Path, device="cpu", *, precision=None,
                 warmup_steps=None, grad_clip=None, log_every=None, init_from=None):
        size = config.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"images must be uint8 (N, {size}, {size}, 3), got {images.dtype} {images.shape}")
        if precision not in (None, "bf16", "fp32"):
            raise ValueError(f"precision must be 'bf16' or 'fp32', got {precision!r}")
        self.config, self.out, self.device = config, Path(out), torch.device(device)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(self.device)
        torch.manual_seed(config.seed)
        self.model = FaceDiffusionModel(config).to(self.device)
        # the schedule's table on the device: no host-to-device copy (a sync) in every training_loss
        self.model.schedule = DiscreteVP(self.model.scheduler.alphas_cumprod.to(self.device))
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.learning_rate,
                                          fused=self.device.type == "cuda")
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.step, self.losses = 0, []
        start = None if init_from is None else _describe_start(Path(init_from), config)
        asked = {"precision": precision, "warmup_steps": warmup_steps, "grad_clip": grad_clip, "log_every": log_every}
        self.out.mkdir(parents=True, exist_ok=True)
        if (self.out / "checkpoint.pt").is_file():
            self._load(self.out / "checkpoint.pt", asked, start)
            return
        defaults = {"precision": "bf16" if self.device.type == "cuda" else "fp32",
                    "warmup_steps": 500 if start is None else 100, "grad_clip": 1.0, "log_every": 50}
        self.settings = {**defaults, **{k: v for k, v in asked.items() if v is not None},
                         "device": self.device.type, "init_from": start}
        if start is not None:
            weights = load_face_model(init_from).state_dict()
            self.model.load_state_dict(weights)
            self.ema.load_state_dict(weights)

    @property
    def steps_before(self) -> int | None:
        """Training steps of the model this run started from: 0 from scratch, None if its card does not say."""
        start = self.settings["init_from"]
        return 0 if start is None else start["train_steps"]

    def batch(self) -> torch.Tensor:
        """A random batch in [-1, 1] with random horizontal flips, (B, 3, S, S) float32 on the device."""
        b, g = self.config.batch_size, self.generator
        x = self.images[torch.randint(len(self.images), (b,), generator=g, device=self.device)].float() / 127.5 - 1.0
        flip = torch.rand(b, generator=g, device=self.device) < 0.5
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def train_step(self) -> torch.Tensor:
        """One optimiser step and EMA update; the loss as a 0-d tensor on the device (reading it syncs)."""
        settings, k = self.settings, self.step
        x0 = self.batch()
        t = torch.randint(self.config.num_train_timesteps, (len(x0),), generator=self.generator, device=self.device)
        noise = torch.randn(x0.shape, generator=self.generator, device=self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.learning_rate * min(1.0, (k + 1) / max(settings["warmup_steps"], 1))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=settings["precision"] == "bf16"):
            loss = self.model.training_loss(x0, t, noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), settings["grad_clip"])
        self.optimizer.step()
        n, decay = self.steps_before, self.config.ema_decay
        if n is not None:
            decay = min(decay, (1 + n + k) / (10 + n + k))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1.0 - decay)
        self.step += 1
        return loss.detach()

    def run(self, steps: int | None = None, progress: bool | None = None) -> None:
        """Train until ``steps`` (default config.train_steps) steps of this run, checkpointing as it goes.

        Raises:
            ValueError: the run's checkpoint was written on another device type (resume it there, --device).
        """
        if self.generator is None:
            raise ValueError(f"{self.out / 'checkpoint.pt'} was written on {self.settings['device']}; "
                             f"resume it there (--device)")
        target = self.config.train_steps if steps is None else steps
        bar = tqdm(total=target, initial=self.step, desc=f"training {self.config.name}", disable=progress is False)
        total, count = torch.zeros((), device=self.device), 0
        while self.step < target:
            total += self.train_step()
            count += 1
            bar.update(1)
            checkpoint = self.step % self.config.checkpoint_every == 0 or self.step == target
            if checkpoint or self.step % self.settings["log_every"] == 0:
                self.losses.append((self.step, float(total) / count, count))
                bar.set_postfix(loss=f"{self.losses[-1][1]:.4f}")
                total, count = total.zero_(), 0
            if checkpoint:
                self.save_checkpoint()
        bar.close()

    def save_checkpoint(self) -> None:
        """Full training state, written atomically (tmp file, then rename), plus the loss log CSV."""
        state = {"config": self.config.to_dict(), "settings": self.settings, "step": self.step,
                 "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                 "losses": self.losses}
        with atomic_path(self.out / "checkpoint.pt") as tmp:
            torch.save(state, tmp)
        with atomic_path(self.out / "loss_log.csv") as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["step", "loss", "steps"])  # loss: mean over the `steps` steps up to `step`
            writer.writerows(self.losses)

    def _load(self, path: Path, asked: dict, start: dict | None) -> None:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["config"] != self.config.to_dict():
            raise ValueError(f"{path} was written with another configuration; use another --out folder")
        self.settings = saved = state["settings"]
        wrong = [f"--{k.replace('_', '-')} {v} (it has {saved[k]})" for k, v in asked.items()
                 if v is not None and v != saved[k]]
        if start is not None and start["weights_sha256"] != (saved["init_from"] or {}).get("weights_sha256"):
            wrong.append(f"--init-from {start['folder']} (it started from "
                         f"{saved['init_from']['folder'] if saved['init_from'] else 'scratch'})")
        if wrong:
            raise ValueError(f"{path} was written with other settings: {', '.join(wrong)}; "
                             "omit them to resume, or use another --out folder")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if saved["device"] == self.device.type:
            self.generator.set_state(state["generator"])
        else:
            self.generator = None
        self.step, self.losses = state["step"], [tuple(x) for x in state["losses"]]

    def export(self, fp16: bool = True) -> Path:
        """The EMA model in diffusers format at ``<out>/model`` (fp16 weights by default)."""
        before = self.steps_before
        card = {**MODEL_CARD, "train_steps": None if before is None else before + self.step, "run_steps": self.step,
                "training": self.settings, "final_loss": self.losses[-1][1] if self.losses else None,
                "final_loss_steps": self.losses[-1][2] if self.losses else None}
        return save_face_model(self.ema, self.out / "model", dtype=torch.float16 if fp16 else None, model_card=card)


def _describe_start(folder: Path, config: FaceModelConfig) -> dict:
    """{"folder", "weights_sha256": {file: hex digest}, "train_steps"} of an exported model folder.

    Raises ValueError if ``folder`` has no face_model.json or its ARCHITECTURE fields differ from ``config``.
    """
    if not (folder / CONFIG_FILE).is_file():
        raise ValueError(f"--init-from {folder}: no {CONFIG_FILE}, so not an exported face model folder")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    theirs = FaceModelConfig.from_dict(meta["config"])
    diff = [f"{k} {getattr(theirs, k)} there, {getattr(config, k)} here" for k in ARCHITECTURE
            if getattr(theirs, k) != getattr(config, k)]
    if diff:
        raise ValueError(f"--init-from {folder} does not fit --config {config.name}: {'; '.join(diff)}")
    files = sorted(folder.glob("unet/*.safetensors")) + [folder / "encoder.safetensors"]
    digests = {}
    for path in files:
        with open(path, "rb") as handle:
            digests[path.relative_to(folder).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"folder": str(folder), "weights_sha256": digests, "train_steps": meta.get("train_steps")}


def main(argv=None):
    """Command line: train a face model in --out (resuming its checkpoint) and export its EMA weights.

    argv: the arguments (default ``sys.argv[1:]``); --export-only exports the last checkpoint without training.
    Raises:
        SystemExit: --export-only without a checkpoint.pt in --out, a --pack of another crop size than the
            configuration's image_size, or argparse's exit on invalid arguments or --help.
        ValueError: a malformed --pack (``read_pack``); as ``Trainer`` and ``Trainer.run`` (images, --precision,
            --init-from, a checkpoint written with another configuration, other settings or on another device type).
        FileNotFoundError: a missing --pack or UTKFace zip (--data).
    """
    parser = argparse.ArgumentParser(description="Train a DiffAE-style face diffusion model (resumable).")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="faces32")
    parser.add_argument("--out", required=True, help="run folder (checkpoint, loss log, exported model)")
    parser.add_argument("--steps", type=int, default=None, help="steps of this run (default: the configuration's)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--data", default=None, help="UTKFace zip (default: ../shared/data/utkface/utkface_128.zip)")
    data.add_argument("--pack", default=None, help="training pack of aligned crops (python -m adjointlib.facemodel.pack)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N UTKFace images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--init-from", default=None,
                        help="exported model folder to warm-start a new run from (checked, not reapplied, on resume)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                        help="forward-pass precision (default: bf16 on CUDA, fp32 elsewhere; a resumed run's own)")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="linear learning-rate warm-up (default: 500, or 100 with --init-from)")
    parser.add_argument("--grad-clip", type=float, default=None, help="gradient-norm clip, 0 for none (default 1.0)")
    parser.add_argument("--log-every", type=int, default=None, help="steps per loss-log row (default 50)")
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
    trainer = Trainer(config, images, Path(args.out), device=args.device, precision=args.precision,
                      warmup_steps=args.warmup_steps, grad_clip=args.grad_clip, log_every=args.log_every,
                      init_from=args.init_from)
    trainer.run(args.steps)
    folder = trainer.export(fp16=not args.fp32_export)
    print(json.dumps({"step": trainer.step, "exported": str(folder), "images": len(images)}))


if __name__ == "__main__":
    main()

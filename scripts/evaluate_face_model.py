"""Quality evidence for the project's face diffusion model (issue 6); writes ``results/facemodel/``.

What it measures, for a DiffAE-style model of ``adjointlib.facemodel`` (sampling: DDIM = ``adjointlib.sample``
with order 1, no SDE; images are canonical crops in [-1, 1] at the model's ``config.image_size``):

* random samples: z drawn from a Gaussian (mean + full covariance) fitted to the encoder's codes of the
  first UTKFace training chips (only codes are used; no UTKFace face is shown), x_T ~ N(0, I), each
  decoded twice from the same (x_T, z): by DDIM on ε_θ (the ODE that the adjoint methods differentiate)
  and by DDIM on ``al.ClipDenoised(ε_θ)`` (x̂₀ clipped to [-1, 1] at every step, as DDPM and DiffAE sample);
* YuNet detection rate on the samples, upsampled, and on the FRLL canonical crops at the same sizes;
* DDIM-inversion reconstructions of the 102 FRLL neutral crops with z = E(x_0): exact fixed-point
  inversion (``ddim_invert``), the usual one-pass inversion, and z only (random x_T; decoded without
  and with clipping): PSNR and the share that each FR system still accepts as the person (probe: the
  smiling photo at 128 px, threshold at FMR 0.1 %, ``adjointlib.faces.frll_bona_fide``);
* the training curve from the run's loss log.

Usage::

    python scripts/evaluate_face_model.py                       # embedded default model
    python scripts/evaluate_face_model.py --model runs/faces32/model --loss-log runs/faces32/loss_log.csv
    python scripts/evaluate_face_model.py --quick --out results/scratch/facemodel   # a few images, for testing
    python scripts/evaluate_face_model.py --model ../shared/models/faces64 \
        --loss-log ../shared/models/faces64/loss_log.csv --out results/facemodel64 --device cuda   # all on one machine

    # the network work on a GPU machine that holds only the model (no UTKFace, FRLL or FR weights):
    python scripts/evaluate_face_model.py --model ../shared/models/faces64 --stage prepare --inputs in64.npz  # here
    python scripts/evaluate_face_model.py --model faces64 --stage generate --inputs in64.npz --out gen64  # there
    python scripts/evaluate_face_model.py --stage score --generated gen64 \
        --loss-log ../shared/models/faces64/loss_log.csv --out results/facemodel64                      # here

Devices: ``--device`` (default cuda when available) runs the face model there, in float32 with TF32 off (so the
fixed-point inversion converges as on a CPU); every random draw is made on the CPU from a seeded
``torch.Generator`` and then moved, so a CPU and a GPU run start from the same x_T and z.  YuNet and the FR systems
always run on the CPU, on the uint8 images.  Stages: ``all`` (default) does everything; ``prepare`` writes
``--inputs`` (z's fitted Gaussian and the FRLL neutral crops at the model's size: 1.8 MB for faces64);
``generate`` does only the network work (samples, inversions, decodings, PSNR) and writes the uint8 images
(``generated_samples.npz``, ``generated_recon.npz``) and ``generated.json``; ``score`` adds YuNet, identity kept,
the figures and the training curve and writes the same ``quality.json`` as ``all`` (numbers identical: both
score the same uint8 images).  ``--save-z-codes`` / ``--z-codes`` store the encoder codes of the UTKFace chips
(2000 × 256 float32, 2 MB for faces64) for a run without the UTKFace zip.  Progress bars honour ``TQDM_DISABLE=1``;
stage times go to stderr and to ``quality.json`` (``timings_s``); a run that fails or gets SIGTERM writes what it
has to ``quality.partial.json`` (and ``generate`` its images so far, which ``score`` accepts).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import platform
import re
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import adjointlib as al  # noqa: E402
import adjointlib.faces as fc  # noqa: E402
from adjointlib.atomic import atomic_path  # noqa: E402
from adjointlib.facemodel import DEFAULT_MODEL_DIR, load_face_model  # noqa: E402
from adjointlib.facemodel.pretrained import CONFIG_FILE  # noqa: E402
from adjointlib.faces.paths import shared_dir  # noqa: E402
from adjointlib.gradients import CountingModel  # noqa: E402

SEEDS = {"samples": 0, "z_only": 1}
FR_SYSTEMS = ("dlib_resnet", "mobilefacenet")
SAMPLERS = {
    "ode": "DDIM on eps_theta: the probability-flow ODE that the adjoint methods differentiate",
    "clipped": "DDIM on ClipDenoised(eps_theta): x0 clipped to [-1, 1] at every step, as DDPM and DiffAE sample",
}
KINDS = {
    "exact": "exact fixed-point DDIM inversion (ddim_invert), then DDIM",
    "one_pass": "one-pass DDIM inversion (ddim_invert_one_pass: epsilon at the current state), then DDIM",
    "z_only": "random x_T with the encoded z, then DDIM",
    "z_only_clipped": "random x_T with the encoded z, then DDIM with x0 clipped to [-1, 1] (ClipDenoised)",
    "input": "the model-size canonical crop itself (the reconstructions' input)",
}
BATCH = {"cpu": 34, "cuda": 256}  # default images per network call (CPU: 102 FRLL faces = 3 x 34)
FULL = {"n_grid": 64, "n_detect": 256, "n_faces": 102, "n_codes": 2000, "n_show": 6}
QUICK = {"n_grid": 16, "n_detect": 16, "n_faces": 6, "n_codes": 200, "n_show": 3}
PSNR_NOTE = ("PSNR in dB per image on float images (x + 1) / 2 clipped to [0, 1] (no uint8 quantisation), "
             "peak 1, mean over pixels and channels")

README = """# Quality evidence for the face diffusion model

Written by `scripts/evaluate_face_model.py` (issue 6) for the model named in `quality.json`
(`model.path`); shown and explained in `notebooks/09_face_diffusion_model.ipynb`.
Re-run: `python scripts/evaluate_face_model.py [--model PATH] [--loss-log PATH]`.

| File | What |
|---|---|
| `quality.json` | every number below, with the settings and seeds that produced it |
| `samples.png` | the first `settings.n_grid` random samples (DDIM, `settings.sample_steps` steps), decoded by both samplers from the same x_T and z |
| `reconstructions.png` | FRLL faces: input crop, exact-inversion, one-pass and z-only (both samplers) reconstructions |
| `training_curve.png` | training loss per step (raw and moving average), or as logged (K-step means), log scale |
| `training_loss.csv` | a copy of the training run's loss log (`training.loss_log`), columns as the run wrote them |

`quality.json`:

- `model`: path, configuration name, image size, train steps (model card), parameter counts
  (`unet`, `encoder`, `total`).
- `settings`: numbers of samples and faces, sampling and reconstruction step counts, batch size,
  `seeds` (torch generators), how z is drawn for random samples (`z_prior`: Gaussian with mean and full
  covariance fitted to the encoder's codes of the first `n_codes` UTKFace chips of the zip, i.e. training
  images; no UTKFace image is shown anywhere) and the PSNR definition (`psnr`).
- `samplers`: how the random samples are decoded: `ode` (DDIM on ε_θ, the ODE that the adjoint methods
  differentiate) and `clipped` (DDIM on `adjointlib.ClipDenoised(ε_θ)`: x̂₀ clipped to [-1, 1] at every
  step, DDPM's and DiffAE's sampling convention), from the same x_T and z.
- `detection`: YuNet (score threshold 0.6) on canonical crops upsampled bilinearly to `size` px:
  `samples` (per sampler, the random samples) and `frll_reference` (the 204 FRLL canonical crops at the model's size, the
  same upsampling). Each has `n`, `detected`, `rate`, `median_landmark_error` (median over detected faces of
  the mean distance of the five landmarks from the canonical template, in crop widths; YuNet's landmarks on
  tight crops are biased by several hundredths of a crop width even for real faces, so compare the samples'
  value with the FRLL reference, not with 0).
- `reconstruction`: one row per reconstruction kind and step count N over the FRLL neutral crops:
  `kind` (`exact`, `one_pass`, `z_only`, `z_only_clipped`, `input`; described in `kinds`), `steps`, `psnr_mean`,
  `psnr_median`, `psnr_min` (dB), `max_abs_error` (largest |x̂ − x₀| in [-1, 1] units),
  `uint8_identical` (share whose uint8 image equals the input's), `inversion_nfe` (network evaluations per
  batch of the exact inversion) and `identity`: per FR system the share (`rate`) and number (`accepted`) of
  reconstructions that the system matches with the same person's smiling photo (128 px canonical crop)
  above its FRLL threshold at FMR 0.1 % (`threshold`). The `input` row is the resolution ceiling: the
  reconstructions' own input.
- `training`: `loss_log`, `steps_logged` (training steps the log covers), `loss_first_100`, `loss_last_100`
  (mean losses; null for a log of means over more than one step), `moving_average` (window of the curve; null for
  such a log), `column` (the loss column read: `loss` per step, or `loss_mean_of_K`: each row the mean of the K
  steps up to `step`), `steps_per_row`, `rows`, `last_step`, and `loss_first`, `loss_last`: the mean loss over the
  first and last `window_steps` steps (100 for a per-step log, K for a log of K-step means), comparable across runs.
- `device` (where the face model ran: `type`, `name`, float32 settings, CPU threads; `fr_and_yunet`: the CPU
  that scored the images), `timings_s` (wall time per stage and per reconstruction run, seconds), `runtime_s`
  (for a run in stages: generate + score, itemised in `runtime_note`), `versions` (of the machine that ran the
  face model).

Faces shown: FRLL, DeBruine, L. & Jones, B. (2017), Face Research Lab London Set,
doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0 (aligned, cropped, resized and reconstructed here), and
generated faces. The model was trained on UTKFace (non-commercial research only).
"""


# ---------------------------------------------------------------- small helpers


def batched(n: int, size: int, desc: str) -> list[slice]:
    """Slices covering range(n) in chunks of ``size``, wrapped in a tqdm bar."""
    return tqdm([slice(i, min(i + size, n)) for i in range(0, n, size)], desc=desc, leave=False)


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path`` (``adjointlib.atomic.atomic_path``)."""
    with atomic_path(path) as tmp:
        write(tmp)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it, ``../shared/...`` when it lies in the
    shared data folder (``$ADJOINTLIB_SHARED``), so the JSON is the same on every machine; else absolute."""
    path = Path(path).resolve()
    if path.is_relative_to(ROOT):
        return str(path.relative_to(ROOT))
    try:
        shared = shared_dir().resolve()
    except FileNotFoundError:
        shared = None
    if shared is not None and path.is_relative_to(shared):
        return str(Path("..") / "shared" / path.relative_to(shared))
    return str(path)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to [0, 1], clipped, float64."""
    return ((x.double() + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """Per-image PSNR (dB) of ``x`` against ``ref`` (see PSNR_NOTE); (b, 3, S, S) → (b,)."""
    mse = (to_unit(x) - to_unit(ref)).square().mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(1.0 / mse)).numpy()


# ---------------------------------------------------------------- device


def pick_device(name: str | None) -> torch.device:
    """``name`` (default: cuda when available, else cpu) as a device; a clear error for an absent GPU."""
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: torch {torch.__version__} sees no CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device {name}: only cpu and cuda are supported")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (for honest stage times)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_info(device: torch.device) -> dict:
    """Where the face model ran: device type and name, float32 settings and CPU threads."""
    info = {"type": device.type, "cpu": cpu_name(), "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=torch.cuda.get_device_name(device), memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", float32="IEEE (TF32 off for matmul and cuDNN)",
                    matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
                    cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32))
    else:
        info.update(name=cpu_name(), float32="IEEE")
    return info


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions(device: torch.device) -> dict:
    """Library versions (torch, numpy, diffusers, OpenCV; CUDA and cuDNN on a GPU)."""
    import diffusers

    try:
        import cv2
    except ImportError:  # --stage generate needs no OpenCV
        cv2 = None
    out = {"torch": torch.__version__, "numpy": np.__version__, "diffusers": diffusers.__version__,
           "opencv": None if cv2 is None else cv2.__version__, "python": platform.python_version()}
    if device.type == "cuda":
        out.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return out


class StageTimer:
    """Wall time per stage (device synchronised), printed to stderr as each stage ends."""

    def __init__(self, device: torch.device):
        self.device, self.times, self.start = device, {}, time.perf_counter()
        self.last = self.start

    def lap(self, name: str) -> float:
        synchronize(self.device)
        now = time.perf_counter()
        self.times[name] = round(now - self.last, 2)
        self.last = now
        print(f"[evaluate_face_model] {name}: {self.times[name]:.1f} s (total {now - self.start:.1f} s)",
              file=sys.stderr, flush=True)
        return self.times[name]


# ---------------------------------------------------------------- model, codes and sampling


def load_model(path: Path, device: torch.device = torch.device("cpu")):
    """Our face model from ``path``; a clear error if the folder is not one (this script needs an encoder)."""
    if not (path / CONFIG_FILE).is_file():
        raise SystemExit(f"no face model at {path} ({CONFIG_FILE} missing); train and export one with "
                         "python -m adjointlib.facemodel.train --config faces32 --out runs/faces32 and pass "
                         "--model runs/faces32/model")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # silence the optional-`accelerate` notice
    model = load_face_model(path, device=device)
    if model.encoder is None:
        raise SystemExit(f"{path} is an unconditional model; this evaluation needs the DiffAE encoder")
    return model.requires_grad_(False)


def model_device(model) -> torch.device:
    """The device of the model's weights."""
    return next(model.parameters()).device


@torch.no_grad()
def encode(model, x: torch.Tensor, batch: int) -> torch.Tensor:
    """z = E(x) in batches on the model's device; (n, 3, S, S) → (n, z_dim) on the CPU."""
    device = model_device(model)
    return torch.cat([model.encode(x[sl].to(device)).cpu() for sl in batched(len(x), batch, "encoding")])


def encoder_fingerprint(model) -> str:
    """SHA-256 of the encoder's float32 weights (state-dict order): ties a codes file to the encoder."""
    digest = hashlib.sha256()
    for name, value in model.encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def utkface_codes(model, n_codes: int, batch: int) -> tuple[torch.Tensor, str]:
    """Encoder codes (CPU, float32) of the canonical crops of the first ``n_codes`` UTKFace zip members (those with
    a YuNet face), and a description of the source."""
    chips = fc.load_utkface_aligned(model.config.image_size, limit=n_codes).images
    codes = encode(model, fc.images_to_tensor(chips), batch)
    return codes, (f"encoder codes of the first {n_codes} UTKFace zip members (training images; "
                   f"{len(chips)} with a YuNet face)")


def save_codes(path: Path, model, n_codes: int, batch: int) -> dict:
    """Write the UTKFace codes of ``utkface_codes`` to ``path`` (npz) for a later ``--z-codes`` run without UTKFace."""
    codes, source = utkface_codes(model, n_codes, batch)
    meta = {"model": model.config.name, "image_size": model.config.image_size, "n_codes": n_codes,
            "n": len(codes), "z_dim": codes.shape[1], "source": source, "encoder_sha256": encoder_fingerprint(model),
            "device": str(model_device(model)), "torch": torch.__version__}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez would append .npz to another name
        np.savez(tmp, codes=codes.numpy().astype(np.float32), meta=np.array(json.dumps(meta)))
    return {**meta, "path": str(path), "bytes": path.stat().st_size}


def load_codes(path: Path, model, n_codes: int) -> tuple[torch.Tensor, dict]:
    """Codes written by ``save_codes``; refuses a file made with another encoder or another ``n_codes``."""
    if not path.is_file():
        raise SystemExit(f"z codes file {path} not found (write it with --save-z-codes)")
    with np.load(path, allow_pickle=False) as data:
        codes, meta = torch.from_numpy(np.array(data["codes"], dtype=np.float32)), json.loads(str(data["meta"]))
    if meta["encoder_sha256"] != encoder_fingerprint(model):
        raise SystemExit(f"{path} holds codes of another encoder ({meta['model']}), not of this model's")
    if meta["n_codes"] != n_codes:
        raise SystemExit(f"{path} holds codes of the first {meta['n_codes']} UTKFace members; this run needs "
                         f"{n_codes} (--quick uses {QUICK['n_codes']}, a full run {FULL['n_codes']})")
    return codes, meta


def fit_gaussian(codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and a square root L of the covariance (L Lᵀ = Σ, via eigh, float64) of codes (n, d)."""
    codes = codes.double()
    mean = codes.mean(0)
    evals, evecs = torch.linalg.eigh(torch.cov(codes.T))
    return mean, evecs * evals.clamp_min(0.0).sqrt()


def draw_codes(mean: torch.Tensor, root: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n codes z = μ + L ξ, ξ ~ N(0, I); float32 (n, d)."""
    xi = torch.randn(n, len(mean), generator=generator, dtype=torch.float64)
    return (mean + xi @ root.T).float()


@torch.no_grad()
def ddim(model, x_T: torch.Tensor, z: torch.Tensor, steps: int, batch: int, desc: str,
         clipped: bool = False) -> torch.Tensor:
    """DDIM (adjointlib.sample, order 1, ODE) from x_T with codes z, in batches on the model's device; ``clipped``:
    on ClipDenoised(ε_θ), i.e. x̂₀ clipped to [-1, 1] at every step.  Returns the images on the CPU."""
    device = model_device(model)
    eps_model = al.ClipDenoised(model.eps_model, model.schedule) if clipped else model.eps_model
    return torch.cat([al.sample(eps_model, model.schedule, x_T[sl].to(device), z[sl].to(device), steps=steps).cpu()
                      for sl in batched(len(x_T), batch, desc)])


def invert(model, x0: torch.Tensor, z: torch.Tensor, kind: str, steps: int, batch: int) -> tuple[torch.Tensor, list]:
    """x_T (on the CPU) for each face by ``kind`` and the exact inversion's NFE per batch; both z-only kinds get
    the same random x_T (seed ``SEEDS["z_only"]``, drawn on the CPU)."""
    if kind.startswith("z_only"):
        return torch.randn(x0.shape, generator=torch.Generator().manual_seed(SEEDS["z_only"])), []
    device = model_device(model)
    out, nfe = [], []
    for sl in batched(len(x0), batch, f"{kind} inversion, N={steps}"):
        x0_b, z_b = x0[sl].to(device), z[sl].to(device)
        if kind == "one_pass":
            out.append(al.ddim_invert_one_pass(model.eps_model, model.schedule, x0_b, z_b, steps=steps).cpu())
        else:
            counter = CountingModel(model.eps_model)
            out.append(al.ddim_invert(counter, model.schedule, x0_b, z_b, steps=steps).cpu())
            nfe.append(counter.forwards)
    return torch.cat(out), nfe


# ---------------------------------------------------------------- detection and identity


def detection(detector, images: np.ndarray, size: int) -> dict:
    """YuNet on uint8 canonical crops upsampled (bilinear) to ``size``: rate and landmark error."""
    errors = []
    for image in tqdm(fc.resize_crops(images, size), desc=f"YuNet at {size} px", leave=False):
        found = detector.detect(image)
        if found is not None:
            landmarks = (found[0] + 0.5) / size  # pixel centres → unit crop coordinates
            errors.append(float(np.linalg.norm(landmarks - fc.CANONICAL_TEMPLATE, axis=1).mean()))
    return {"n": len(images), "detected": len(errors), "rate": len(errors) / len(images),
            "median_landmark_error": float(np.median(errors)) if errors else None}


def identity(systems: dict, bona: dict, images: np.ndarray, rows: np.ndarray) -> dict:
    """Per FR system: share of ``images`` (uint8 crops of FRLL people ``rows``) matching that person's
    smiling photo above the system's threshold at FMR 0.1 %."""
    out = {}
    for name, system in systems.items():
        scores = system.similarity(fc.embed_images(system, images), bona[name].smiling[rows]).numpy()
        accepted = int((scores > bona[name].threshold).sum())
        out[name] = {"rate": accepted / len(images), "accepted": accepted, "threshold": bona[name].threshold}
    return out


def summary(kind: str, steps: int | None, recon: torch.Tensor, x0: torch.Tensor, values: np.ndarray,
            nfe: list[int]) -> dict:
    """One row of the reconstruction table (``values``: per-image PSNR); ``identity`` is filled in by
    ``add_identity`` (on the CPU, from the uint8 images)."""
    return {"kind": kind, "steps": steps, "psnr_mean": float(values.mean()), "psnr_median": float(np.median(values)),
            "psnr_min": float(values.min()), "max_abs_error": float((recon - x0).abs().max()),
            "uint8_identical": float(np.mean([np.array_equal(a, b) for a, b in
                                              zip(fc.tensor_to_images(recon), fc.tensor_to_images(x0))])),
            "inversion_nfe": float(np.mean(nfe)) if nfe else None, "identity": None}


def add_identity(table: list[dict], recon: dict, x0_images: np.ndarray, systems: dict, bona: dict) -> None:
    """Fill each row's ``identity`` from the uint8 images: the input crops for the ``input`` row, ``recon[(kind,
    steps)][0]`` for the others (rows without images, e.g. a failed inversion, are left as they are)."""
    rows_frll = np.arange(len(x0_images))
    for row in table:
        if row["kind"] == "input":
            row["identity"] = identity(systems, bona, x0_images, rows_frll)
        elif (row["kind"], row["steps"]) in recon:
            row["identity"] = identity(systems, bona, recon[row["kind"], row["steps"]][0], rows_frll)


# ---------------------------------------------------------------- the experiments


def z_prior(model, settings: dict, batch: int, codes_file: Path | None) -> tuple[tuple, dict]:
    """The Gaussian (mean, root) fitted to the encoder's codes of the first ``n_codes`` UTKFace chips, from the zip
    or from ``codes_file`` (``--z-codes``), and a description of it.  Fitted on the CPU in float64."""
    if codes_file is None:
        codes, source = utkface_codes(model, settings["n_codes"], batch)
        extra = {}
    else:
        codes, meta = load_codes(codes_file, model, settings["n_codes"])
        source = meta["source"]
        extra = {"codes_file": display_path(codes_file), "codes_computed_on": meta["device"],
                 "encoder_sha256": meta["encoder_sha256"]}
    prior = {"source": source, "n": len(codes), "fit": "Gaussian, sample mean and full sample covariance", **extra}
    return fit_gaussian(codes), prior


def random_samples(model, settings: dict, batch: int, gaussian: tuple) -> dict:
    """``n_detect`` random samples (z from the fitted Gaussian, x_T ~ N(0, I), both drawn on the CPU) decoded by
    each of ``SAMPLERS`` from the same x_T and z: {sampler: uint8 images (n, S, S, 3)}."""
    size = model.config.image_size
    generator = torch.Generator().manual_seed(SEEDS["samples"])
    z = draw_codes(*gaussian, settings["n_detect"], generator)
    x_T = torch.randn((settings["n_detect"], 3, size, size), generator=generator)
    return {name: fc.tensor_to_images(ddim(model, x_T, z, settings["sample_steps"], batch, f"random samples ({name})",
                                           clipped=name == "clipped")) for name in SAMPLERS}


def recon_runs(settings: dict) -> list[tuple[str, int]]:
    """(kind, N) of every reconstruction run, in the order of the table."""
    runs = [(kind, n) for n in settings["recon_steps"] for kind in ("exact", "one_pass")]
    return runs + [("z_only", settings["recon_steps"][0]), ("z_only_clipped", settings["recon_steps"][0])]


def reconstructions(model, x0: torch.Tensor, settings: dict, batch: int, table: list, recon: dict,
                    timer: StageTimer | None = None) -> None:
    """The network part of the reconstruction table: appends a row per kind and N to ``table`` (``identity`` left
    for ``add_identity``) and stores ``recon[(kind, N)] = (uint8 images, per-image PSNR)``, each as soon as it is
    measured.  ``x0`` on the CPU; the network runs on the model's device.  An exact inversion that does not
    converge is recorded as a row with ``error`` (and no numbers) instead of ending the run."""
    z = encode(model, x0, batch)
    table.append({"kind": "input", "steps": None, "psnr_mean": None, "psnr_median": None, "psnr_min": None,
                  "max_abs_error": 0.0, "uint8_identical": 1.0, "inversion_nfe": None, "identity": None})
    for kind, steps in recon_runs(settings):
        try:
            x_T, nfe = invert(model, x0, z, kind, steps, batch)
        except RuntimeError as err:  # ddim_invert: "did not converge"; anything else ends the run
            if kind != "exact" or "did not converge" not in str(err):
                raise
            print(f"[evaluate_face_model] {kind} inversion, N={steps} failed: {err}", file=sys.stderr, flush=True)
            table.append({**{key: None for key in table[0]}, "kind": kind, "steps": steps, "identity": {},
                          "error": str(err)})
        else:
            x = ddim(model, x_T, z, steps, batch, f"{kind} decoding, N={steps}", clipped=kind == "z_only_clipped")
            values = psnr(x, x0)
            table.append(summary(kind, steps, x, x0, values, nfe))
            recon[kind, steps] = (fc.tensor_to_images(x), values)
        if timer is not None:
            timer.lap(f"reconstruction {kind} N={steps}")


LOSS_COLUMN = re.compile(r"loss_mean_of_(\d+)")


def read_loss_log(loss_log: Path) -> tuple[np.ndarray, np.ndarray, str, int]:
    """(steps, losses, loss column, training steps per row) of a loss log with a ``step`` column and either ``loss``
    (one row per step: ``adjointlib.facemodel.train``) or ``loss_mean_of_K`` (each row the mean loss of the K steps
    up to ``step``: the faces64 GPU run)."""
    if not loss_log.is_file():
        raise SystemExit(f"loss log {loss_log} not found; pass --loss-log (written by adjointlib.facemodel.train)")
    with loss_log.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        column = "loss" if "loss" in columns else next((c for c in columns if LOSS_COLUMN.fullmatch(c)), None)
        if "step" not in columns or column is None:
            raise SystemExit(f"loss log {loss_log} has columns {columns}; need 'step' and 'loss' or 'loss_mean_of_K'")
        rows = [(int(r["step"]), float(r[column])) for r in reader]
    if not rows:
        raise SystemExit(f"loss log {loss_log} has no rows")
    steps, losses = (np.array(v) for v in zip(*rows))
    per_row = 1 if column == "loss" else int(LOSS_COLUMN.fullmatch(column).group(1))
    return steps, losses, column, per_row


def training_summary(loss_log: Path, fig_path: Path, model_name: str = "Face diffusion model") -> dict:
    """Plot the loss log (raw + moving average, log y; a log of K-step means as it is) and summarise it."""
    import matplotlib.pyplot as plt

    steps, losses, column, per_row = read_loss_log(loss_log)
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if per_row == 1:
        window = max(1, min(100, len(losses) // 10))
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.6, label="loss per step (batch)")
        ax.plot(steps[window - 1:], smooth, color="tab:blue", lw=1.8, label=f"moving average, {window} steps")
        first = {"loss_first_100": float(losses[:100].mean()), "loss_last_100": float(losses[-100:].mean()),
                 "moving_average": window}
        ends = {"window_steps": 100, "loss_first": first["loss_first_100"], "loss_last": first["loss_last_100"]}
    else:
        ax.plot(steps, losses, color="tab:blue", lw=1.8, marker="o", ms=3,
                label=f"mean loss of the {per_row} steps up to each point (as logged)")
        first = {"loss_first_100": None, "loss_last_100": None, "moving_average": None}
        ends = {"window_steps": per_row, "loss_first": float(losses[0]), "loss_last": float(losses[-1])}
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("DDPM loss  E‖ε − ε_θ(x_t, E(x₀), t)‖²")
    ax.set_title(f"{model_name}: training loss")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, fig_path)
    return {"loss_log": display_path(loss_log), "steps_logged": len(losses) * per_row, **first,
            "column": column, "steps_per_row": per_row, "rows": len(losses), "last_step": int(steps[-1]), **ends}


# ---------------------------------------------------------------- figures


def image_grid(images: np.ndarray) -> np.ndarray:
    """A square-ish uint8 grid of uint8 images (b, S, S, 3), 1 px white gaps."""
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    size = images.shape[1]
    grid = np.full((rows * (size + 1) - 1, cols * (size + 1) - 1, 3), 255, np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * (size + 1):r * (size + 1) + size, c * (size + 1):c * (size + 1) + size] = image
    return grid


def samples_figure(panels: dict, title: str, path: Path) -> None:
    """One grid per panel ({panel title: uint8 images}) side by side, nearest-neighbour upscaled, with a title."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 6.4), squeeze=False, layout="constrained")
    for ax, (panel, samples) in zip(axes[0], panels.items()):
        ax.imshow(image_grid(samples), interpolation="nearest")
        ax.set_title(panel, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def reconstruction_figure(x0: np.ndarray, shown: dict, steps: int, path: Path,
                          model_name: str = "the face model") -> None:
    """Rows = FRLL faces (uint8 ``x0``); columns = input | exact | one-pass | z-only | z-only clipped, from
    ``shown[kind] = (uint8 images, per-image PSNR)``, titled with PSNR (a kind missing from ``shown``, i.e. a failed
    inversion, is left blank)."""
    import matplotlib.pyplot as plt

    columns = [("input", (x0, None), f"input {x0.shape[1]}×{x0.shape[1]}"),
               ("exact", shown.get("exact"), f"exact inversion, N={steps}"),
               ("one_pass", shown.get("one_pass"), f"one-pass inversion, N={steps}"),
               ("z_only", shown.get("z_only"), f"z only (random x_T), N={steps}"),
               ("z_only_clipped", shown.get("z_only_clipped"), f"z only, x̂₀ clipped, N={steps}")]
    fig, axes = plt.subplots(len(x0), len(columns), figsize=(2.3 * len(columns), 2.3 * len(x0) + 0.4),
                             squeeze=False)
    for c, (kind, shown_kind, title) in enumerate(columns):
        if shown_kind is None:
            for r in range(len(x0)):
                axes[r, c].set_title(f"{title}\n(failed)", fontsize=8)
                axes[r, c].axis("off")
            continue
        images, values = shown_kind
        for r, image in enumerate(images):
            axes[r, c].imshow(image, interpolation="nearest")
            axes[r, c].set_title(title if kind == "input" else f"{title}\nPSNR {values[r]:.1f} dB", fontsize=8)
            axes[r, c].axis("off")
    fig.text(0.01, 0.0, fc.FRLL_ATTRIBUTION + f" Reconstructed by {model_name}.", fontsize=6)
    fig.suptitle(f"FRLL reconstructions by {model_name} (z = E(x₀))", fontsize=10)
    fig.tight_layout(rect=(0, 0.02, 1, 1 - 0.35 / fig.get_figheight()))
    save_figure(fig, path)


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="face model folder (default: embedded)")
    parser.add_argument("--model-label", default=None,
                        help="how quality.json names the model folder (default: its path, repository-relative or "
                             "../shared/...); e.g. ../shared/models/faces64 for a copy unpacked elsewhere")
    parser.add_argument("--loss-log", type=Path, default=ROOT / "runs" / "faces32" / "loss_log.csv",
                        help="the training run's loss_log.csv (columns step and loss, or step and loss_mean_of_K)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "facemodel", help="output folder")
    parser.add_argument("--quick", action="store_true", help="a few images only (for testing)")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the random samples")
    parser.add_argument("--recon-steps", type=int, nargs="+", default=[20, 50],
                        help="DDIM steps of the reconstructions (z-only and the figure use the first)")
    parser.add_argument("--detect-size", type=int, default=128, help="YuNet input size (upsampled crops)")
    parser.add_argument("--device", default=None,
                        help="where the face model runs: cpu or cuda[:k] (default: cuda when available, else cpu)")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"images per network call (default: {BATCH['cpu']} on a CPU, {BATCH['cuda']} on a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--z-codes", type=Path, default=None,
                        help="encoder codes of the UTKFace chips for z's prior, written by --save-z-codes "
                             "(instead of reading the UTKFace zip)")
    parser.add_argument("--save-z-codes", type=Path, default=None,
                        help="only write the model's encoder codes of the first n_codes UTKFace chips to this .npz "
                             "(2000, or 200 with --quick) and exit")
    parser.add_argument("--stage", choices=STAGES, default="all",
                        help="all: everything here; prepare: write --inputs (z's prior and the FRLL crops, ~1.8 MB "
                             "for faces64); generate: the network work only (needs only the model and --inputs), "
                             "images to --out; score: YuNet, FR, figures and quality.json from --generated")
    parser.add_argument("--inputs", type=Path, default=None,
                        help="the file --stage prepare writes and --stage generate (or all) reads")
    parser.add_argument("--generated", type=Path, default=None, help="--stage score: the --out of --stage generate")
    return parser.parse_args(argv)


STAGES = ("all", "prepare", "generate", "score")
GENERATED = {"json": "generated.json", "samples": "generated_samples.npz", "recon": "generated_recon.npz"}


def assemble(parts: dict) -> dict:
    """quality.json's keys in their fixed order (those present)."""
    order = ("model", "settings", "samplers", "kinds", "detection", "reconstruction", "training", "runtime_s",
             "versions", "device", "timings_s")
    return {key: parts[key] for key in order if key in parts} | {k: v for k, v in parts.items() if k not in order}


def write_json(path: Path, data: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def main(argv=None) -> dict:
    """Run the measurements of ``--stage``, write results/facemodel (or --out) and return the quality dict."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.stage == "score":
        return score_main(args)
    start = time.time()
    device = pick_device(args.device)
    al.exact_float32(device)
    batch = args.batch or BATCH[device.type]
    settings = {**(QUICK if args.quick else FULL), "quick": args.quick, "sample_steps": args.sample_steps,
                "recon_steps": args.recon_steps, "batch": batch, "seeds": SEEDS, "psnr": PSNR_NOTE}
    timer = StageTimer(device)
    model = load_model(args.model, device)
    if args.save_z_codes is not None:
        written = save_codes(args.save_z_codes, model, settings["n_codes"], batch)
        timer.lap("z codes")
        return {"z_codes": written, "runtime_s": round(time.time() - start, 1)}
    if args.stage == "prepare":
        if args.inputs is None:
            raise SystemExit("--stage prepare needs --inputs FILE (where to write them)")
        written = prepare_inputs(args.inputs, model, settings, batch, args.z_codes)
        timer.lap("inputs")
        return {"inputs": written, "runtime_s": round(time.time() - start, 1)}
    card = json.loads((args.model / CONFIG_FILE).read_text())
    counts = model.parameter_count()
    parts = {"model": {"path": args.model_label or display_path(args.model), "name": model.config.name,
                       "image_size": model.config.image_size, "train_steps": card.get("train_steps"),
                       "parameters": {**counts, "total": sum(counts.values())}},
             "settings": settings, "samplers": SAMPLERS, "kinds": KINDS,
             "versions": versions(device), "device": device_info(device), "timings_s": timer.times}
    args.out.mkdir(parents=True, exist_ok=True)
    timer.lap("load model")
    data = {"samples": {}, "recon": {}}
    try:
        if args.stage == "generate":
            generate_stage(args, model, settings, batch, parts, data, timer)
        else:
            all_stages(args, model, settings, batch, parts, data, timer)
    except BaseException as err:  # a failed or interrupted run keeps what it measured
        parts["runtime_s"] = round(time.time() - start, 1)
        keep_partial(args.out, parts, err, data if args.stage == "generate" else None)
        raise
    parts["runtime_s"] = round(time.time() - start, 1)
    (args.out / "quality.partial.json").unlink(missing_ok=True)
    if args.stage == "generate":
        parts["stage"] = "generate"
        write_json(args.out / GENERATED["json"], assemble(parts))
        return assemble(parts)
    return finish(args.out, parts)


def keep_partial(out: Path, parts: dict, err: BaseException, data: dict | None) -> None:
    """After a failure or SIGTERM: what was measured to ``quality.partial.json`` (and, in --stage generate, the
    images made so far to the generated_*.npz files, so that --stage score can still use them)."""
    parts.update(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-4000:])
    if data is not None:
        save_generated(out, data, only="recon")
    write_json(out / "quality.partial.json", assemble(parts))
    print(f"[evaluate_face_model] stopped ({type(err).__name__}); partial results in {out / 'quality.partial.json'}",
          file=sys.stderr, flush=True)


def finish(out: Path, parts: dict) -> dict:
    """Write quality.json and the README; returns the quality dict."""
    quality = assemble(parts)
    write_json(out / "quality.json", quality)
    write_atomic(out / "README.md", lambda tmp: tmp.write_text(README))
    return quality


# ---------------------------------------------------------------- stages


def prepare_inputs(path: Path, model, settings: dict, batch: int, codes_file: Path | None) -> dict:
    """--stage prepare: z's prior (Gaussian mean and covariance root, float64) and the FRLL neutral crops at the
    model's size, for a --stage generate on a machine without UTKFace and FRLL."""
    gaussian, prior = z_prior(model, settings, batch, codes_file)
    frll = fc.load_frll_aligned(model.config.image_size)
    meta = {"model": model.config.name, "image_size": model.config.image_size, "quick": settings["quick"],
            "n_faces": settings["n_faces"], "n_codes": settings["n_codes"], "z_prior": prior,
            "encoder_sha256": encoder_fingerprint(model)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, frll_neutral=frll.neutral[:settings["n_faces"]], frll_ids=frll.ids[:settings["n_faces"]],
                 gauss_mean=gaussian[0].numpy(), gauss_root=gaussian[1].numpy(), meta=np.array(json.dumps(meta)))
    return {**meta, "path": str(path), "bytes": path.stat().st_size}


def read_inputs(path: Path, model, settings: dict) -> tuple[tuple, dict, np.ndarray]:
    """(Gaussian, prior description, FRLL neutral crops) from a --stage prepare file, checked against the model
    and the settings."""
    if not path.is_file():
        raise SystemExit(f"inputs file {path} not found (write it with --stage prepare --inputs {path})")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        gaussian = (torch.from_numpy(data["gauss_mean"].copy()), torch.from_numpy(data["gauss_root"].copy()))
        x0_images = data["frll_neutral"].copy()
    if meta["encoder_sha256"] != encoder_fingerprint(model):
        raise SystemExit(f"{path} was prepared for another model ({meta['model']}), not for this one")
    if (meta["quick"], meta["n_faces"], meta["n_codes"]) != (settings["quick"], settings["n_faces"],
                                                             settings["n_codes"]):
        raise SystemExit(f"{path} was prepared with quick={meta['quick']}; run with the same --quick")
    return gaussian, {**meta["z_prior"], "inputs_file": display_path(path)}, x0_images


def network_stages(args, model, settings: dict, batch: int, parts: dict, data: dict, timer: StageTimer,
                   on_samples=None) -> np.ndarray:
    """z's prior, the random samples and the reconstructions (the network work), into ``parts`` and ``data``;
    returns the FRLL input crops (uint8).  ``on_samples(samples)`` runs as soon as the samples exist."""
    if args.inputs is not None:
        gaussian, settings["z_prior"], x0_images = read_inputs(args.inputs, model, settings)
    else:
        gaussian, settings["z_prior"] = z_prior(model, settings, batch, args.z_codes)
        x0_images = fc.load_frll_aligned(model.config.image_size).neutral[:settings["n_faces"]]
    timer.lap("z prior")
    data["samples"] = random_samples(model, settings, batch, gaussian)
    timer.lap("samples")
    if on_samples is not None:
        on_samples(data["samples"])
    parts["reconstruction"] = []  # filled row by row
    reconstructions(model, fc.images_to_tensor(x0_images), settings, batch, parts["reconstruction"], data["recon"],
                    timer)
    return x0_images


def generate_stage(args, model, settings: dict, batch: int, parts: dict, data: dict, timer: StageTimer) -> None:
    """--stage generate: the network work; images to generated_samples.npz / generated_recon.npz."""
    data["x0"] = network_stages(args, model, settings, batch, parts, data, timer,
                                on_samples=lambda samples: save_generated(args.out, data, only="samples"))
    save_generated(args.out, data, only="recon")
    timer.lap("save images")


def save_generated(out: Path, data: dict, only: str) -> None:
    """The generated uint8 images (and per-image PSNRs) as compressed npz: ``only`` = "samples" or "recon"."""
    if only == "samples":
        arrays = {f"samples_{name}": images for name, images in data["samples"].items()}
    else:
        arrays = {} if "x0" not in data else {"x0": data["x0"]}
        for (kind, steps), (images, values) in data["recon"].items():
            arrays[f"recon_{kind}_{steps}"], arrays[f"psnr_{kind}_{steps}"] = images, values
    if arrays:
        path = out / GENERATED[only]
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **arrays)


def load_generated(folder: Path) -> tuple[dict, dict, np.ndarray | None]:
    """(parts, data, x0 images) from a --stage generate folder: generated.json, or quality.partial.json after an
    interrupted run, and the npz files that exist."""
    for name in (GENERATED["json"], "quality.partial.json"):
        if (folder / name).is_file():
            parts = json.loads((folder / name).read_text())
            break
    else:
        raise SystemExit(f"no {GENERATED['json']} (or quality.partial.json) in {folder}: run --stage generate first")
    data, x0 = {"samples": {}, "recon": {}}, None
    if (folder / GENERATED["samples"]).is_file():
        with np.load(folder / GENERATED["samples"]) as arrays:
            data["samples"] = {name: arrays[f"samples_{name}"] for name in SAMPLERS if f"samples_{name}" in arrays}
    if (folder / GENERATED["recon"]).is_file():
        with np.load(folder / GENERATED["recon"]) as arrays:
            x0 = arrays["x0"] if "x0" in arrays else None
            for row in parts.get("reconstruction", []):
                key = f"{row['kind']}_{row['steps']}"
                if f"recon_{key}" in arrays:
                    data["recon"][row["kind"], row["steps"]] = (arrays[f"recon_{key}"], arrays[f"psnr_{key}"])
    return parts, data, x0


def all_stages(args, model, settings: dict, batch: int, parts: dict, data: dict, timer: StageTimer) -> None:
    """--stage all: everything on this machine (the network on --device, YuNet and FR on the CPU)."""
    parts["training"] = training_summary(args.loss_log, args.out / "training_curve.png", model.config.name)
    write_atomic(args.out / "training_loss.csv", lambda tmp: shutil.copyfile(args.loss_log, tmp))
    timer.lap("training curve")
    x0_images = network_stages(args, model, settings, batch, parts, data, timer,
                               on_samples=lambda samples: samples_outputs(args, parts, samples, timer))
    scoring(args, parts, data, x0_images, timer)


def samples_outputs(args, parts: dict, samples: dict, timer: StageTimer) -> None:
    """The samples figure and YuNet's detection rates (samples and the FRLL reference)."""
    settings, model = parts["settings"], parts["model"]
    size, name = model["image_size"], model["name"]
    n_grid = min(settings["n_grid"], settings["n_detect"])
    panel_titles = {"ode": "DDIM on ε_θ (the ODE the adjoint differentiates)",
                    "clipped": "DDIM with x̂₀ clipped to [-1, 1] (DDPM/DiffAE sampling)"}
    steps = "?" if model["train_steps"] is None else model["train_steps"]
    samples_figure({panel_titles[sampler]: x[:n_grid] for sampler, x in samples.items()},
                   f"{n_grid} random samples of {name} ({steps} training steps), "
                   f"DDIM N={settings['sample_steps']}, the same x_T and z in both panels; z ~ Gaussian fitted to "
                   "training codes", args.out / "samples.png")
    timer.lap("samples figure")
    frll = fc.load_frll_aligned(size)
    detector = fc.YuNetDetector()
    parts["detection"] = {
        "size": args.detect_size, "upsampling": f"{size} px -> {args.detect_size} px, bilinear (cv2.INTER_LINEAR)",
        "samples": {sampler: detection(detector, x, args.detect_size) for sampler, x in samples.items()},
        "frll_reference": detection(detector, np.concatenate([frll.neutral, frll.smiling]), args.detect_size)}
    timer.lap("detection")


def scoring(args, parts: dict, data: dict, x0_images: np.ndarray, timer: StageTimer) -> None:
    """Identity kept (FR systems on the CPU) for every reconstruction row and the reconstruction figure."""
    settings, name = parts["settings"], parts["model"]["name"]
    frll = fc.load_frll_aligned(parts["model"]["image_size"])
    if not np.array_equal(x0_images, frll.neutral[:settings["n_faces"]]):
        raise SystemExit("the reconstructions' FRLL input crops differ from this machine's FRLL crops")
    parts["device"]["fr_and_yunet"] = {"device": "cpu", "cpu": cpu_name(), "threads": torch.get_num_threads(),
                                       "torch": torch.__version__}
    systems = {fr: fc.get_fr_system(fr) for fr in FR_SYSTEMS}
    probes = fc.load_frll_aligned(fc.EVAL_SIZE)
    bona = {fr: fc.frll_bona_fide(system, probes) for fr, system in systems.items()}
    timer.lap("FR systems and FRLL thresholds")
    add_identity(parts["reconstruction"], data["recon"], x0_images, systems, bona)
    timer.lap("identity")
    n_show, first = settings["n_show"], settings["recon_steps"][0]
    shown = {kind: (images[:n_show], values[:n_show]) for (kind, steps), (images, values) in data["recon"].items()
             if steps == first}
    reconstruction_figure(x0_images[:n_show], shown, first, args.out / "reconstructions.png", f"the face model {name}")
    timer.lap("reconstruction figure")


def score_main(args) -> dict:
    """--stage score: YuNet, FR systems, figures and quality.json from a --stage generate folder (on the CPU)."""
    if args.generated is None:
        raise SystemExit("--stage score needs --generated FOLDER (the --out of --stage generate)")
    start = time.time()
    parts, data, x0_images = load_generated(args.generated)
    parts.pop("stage", None)
    parts.pop("traceback", None)
    if "error" in parts:  # an interrupted --stage generate: score what it made, and say so
        parts["generate_error"] = parts.pop("error")
    if x0_images is None:
        x0_images = fc.load_frll_aligned(parts["model"]["image_size"]).neutral[:parts["settings"]["n_faces"]]
    generate_runtime = parts.get("runtime_s") or 0.0
    timer = StageTimer(torch.device("cpu"))
    timer.times = parts.setdefault("timings_s", {})
    args.out.mkdir(parents=True, exist_ok=True)
    parts["training"] = training_summary(args.loss_log, args.out / "training_curve.png", parts["model"]["name"])
    write_atomic(args.out / "training_loss.csv", lambda tmp: shutil.copyfile(args.loss_log, tmp))
    timer.lap("training curve")
    if data["samples"]:
        samples_outputs(args, parts, data["samples"], timer)
    scoring(args, parts, data, x0_images, timer)
    parts["runtime_s"] = round(generate_runtime + time.time() - start, 1)
    parts["runtime_note"] = (f"generate {generate_runtime:.1f} s on {parts['device'].get('name')}, "
                             f"score {time.time() - start:.1f} s on the CPU ({cpu_name()})")
    return finish(args.out, parts)


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum} (SIGTERM, e.g. from timeout)")


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # so a `timeout` still leaves quality.partial.json
    result = main()
    print(json.dumps({k: result[k] for k in ("detection", "reconstruction", "z_codes", "inputs", "runtime_s",
                                              "timings_s") if k in result}, indent=1))

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

Progress bars honour ``TQDM_DISABLE=1``; every random draw comes from a seeded ``torch.Generator``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import adjointlib as al  # noqa: E402
import adjointlib.faces as fc  # noqa: E402
from adjointlib.facemodel import DEFAULT_MODEL_DIR, load_face_model  # noqa: E402
from adjointlib.facemodel.pretrained import CONFIG_FILE  # noqa: E402
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
| `training_curve.png` | training loss per step (raw and moving average), log scale |

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
- `training`: `loss_log`, `steps_logged`, `loss_first_100`, `loss_last_100` (mean losses), `moving_average`
  (window of the curve).
- `runtime_s`, `versions`.

Faces shown: FRLL, DeBruine, L. & Jones, B. (2017), Face Research Lab London Set,
doi:10.6084/m9.figshare.5047666.v5, CC BY 4.0 (aligned, cropped, resized and reconstructed here), and
generated faces. The model was trained on UTKFace (non-commercial research only).
"""


# ---------------------------------------------------------------- small helpers


def batched(n: int, size: int, desc: str) -> list[slice]:
    """Slices covering range(n) in chunks of ``size``, wrapped in a tqdm bar."""
    return tqdm([slice(i, min(i + size, n)) for i in range(0, n, size)], desc=desc, leave=False)


def write_atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def save_figure(fig, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def display_path(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (portable JSON), else absolute."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images to [0, 1], clipped, float64."""
    return ((x.double() + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """Per-image PSNR (dB) of ``x`` against ``ref`` (see PSNR_NOTE); (b, 3, S, S) → (b,)."""
    mse = (to_unit(x) - to_unit(ref)).square().mean(dim=(1, 2, 3))
    return (10.0 * torch.log10(1.0 / mse)).numpy()


# ---------------------------------------------------------------- model, codes and sampling


def load_model(path: Path):
    """Our face model from ``path``; a clear error if the folder is not one (this script needs an encoder)."""
    if not (path / CONFIG_FILE).is_file():
        raise SystemExit(f"no face model at {path} ({CONFIG_FILE} missing); train and export one with "
                         "python -m adjointlib.facemodel.train --config faces32 --out runs/faces32 and pass "
                         "--model runs/faces32/model")
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # silence the optional-`accelerate` notice
    model = load_face_model(path)
    if model.encoder is None:
        raise SystemExit(f"{path} is an unconditional model; this evaluation needs the DiffAE encoder")
    return model.requires_grad_(False)


@torch.no_grad()
def encode(model, x: torch.Tensor, batch: int) -> torch.Tensor:
    """z = E(x) in batches; (n, 3, S, S) → (n, z_dim)."""
    return torch.cat([model.encode(x[sl]) for sl in batched(len(x), batch, "encoding")])


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
    """DDIM (adjointlib.sample, order 1, ODE) from x_T with codes z, in batches; ``clipped``: on
    ClipDenoised(ε_θ), i.e. x̂₀ clipped to [-1, 1] at every step."""
    eps_model = al.ClipDenoised(model.eps_model, model.schedule) if clipped else model.eps_model
    return torch.cat([al.sample(eps_model, model.schedule, x_T[sl], z[sl], steps=steps)
                      for sl in batched(len(x_T), batch, desc)])


def invert(model, x0: torch.Tensor, z: torch.Tensor, kind: str, steps: int, batch: int) -> tuple[torch.Tensor, list]:
    """x_T for each face by ``kind`` and the exact inversion's NFE per batch; both z-only kinds get the
    same random x_T (seed ``SEEDS["z_only"]``)."""
    if kind.startswith("z_only"):
        return torch.randn(x0.shape, generator=torch.Generator().manual_seed(SEEDS["z_only"])), []
    out, nfe = [], []
    for sl in batched(len(x0), batch, f"{kind} inversion, N={steps}"):
        if kind == "one_pass":
            out.append(al.ddim_invert_one_pass(model.eps_model, model.schedule, x0[sl], z[sl], steps=steps))
        else:
            counter = CountingModel(model.eps_model)
            out.append(al.ddim_invert(counter, model.schedule, x0[sl], z[sl], steps=steps))
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


def summary(kind: str, steps: int | None, recon: torch.Tensor, x0: torch.Tensor, id_scores: dict,
            nfe: list[int]) -> dict:
    """One row of the reconstruction table."""
    values = psnr(recon, x0)
    return {"kind": kind, "steps": steps, "psnr_mean": float(values.mean()), "psnr_median": float(np.median(values)),
            "psnr_min": float(values.min()), "max_abs_error": float((recon - x0).abs().max()),
            "uint8_identical": float(np.mean([np.array_equal(a, b) for a, b in
                                              zip(fc.tensor_to_images(recon), fc.tensor_to_images(x0))])),
            "inversion_nfe": float(np.mean(nfe)) if nfe else None, "identity": id_scores}


# ---------------------------------------------------------------- the experiments


def random_samples(model, settings: dict, batch: int) -> tuple[dict, dict]:
    """``n_detect`` random samples (z from the fitted Gaussian, x_T ~ N(0, I)) decoded by each of ``SAMPLERS``
    from the same x_T and z ({sampler: samples}), and a description of z's prior."""
    size = model.config.image_size
    chips = fc.load_utkface_aligned(size, limit=settings["n_codes"]).images
    mean, root = fit_gaussian(encode(model, fc.images_to_tensor(chips), batch))
    generator = torch.Generator().manual_seed(SEEDS["samples"])
    z = draw_codes(mean, root, settings["n_detect"], generator)
    x_T = torch.randn((settings["n_detect"], 3, size, size), generator=generator)
    prior = {"source": f"encoder codes of the first {settings['n_codes']} UTKFace zip members (training "
                       f"images; {len(chips)} with a YuNet face)", "n": len(chips),
             "fit": "Gaussian, sample mean and full sample covariance"}
    samples = {name: ddim(model, x_T, z, settings["sample_steps"], batch, f"random samples ({name})",
                          clipped=name == "clipped") for name in SAMPLERS}
    return samples, prior


def reconstructions(model, x0: torch.Tensor, settings: dict, batch: int, systems: dict,
                    bona: dict) -> tuple[list[dict], dict]:
    """Reconstruction rows for every kind and N, and the reconstructions at the first N (for the figure)."""
    rows_frll = np.arange(len(x0))
    z = encode(model, x0, batch)
    table = [{"kind": "input", "steps": None, "psnr_mean": None, "psnr_median": None, "psnr_min": None,
              "max_abs_error": 0.0, "uint8_identical": 1.0, "inversion_nfe": None,
              "identity": identity(systems, bona, fc.tensor_to_images(x0), rows_frll)}]
    shown = {}
    runs = [(kind, n) for n in settings["recon_steps"] for kind in ("exact", "one_pass")]
    runs += [("z_only", settings["recon_steps"][0]), ("z_only_clipped", settings["recon_steps"][0])]
    for kind, steps in runs:
        x_T, nfe = invert(model, x0, z, kind, steps, batch)
        recon = ddim(model, x_T, z, steps, batch, f"{kind} decoding, N={steps}", clipped=kind == "z_only_clipped")
        ids = identity(systems, bona, fc.tensor_to_images(recon), rows_frll)
        table.append(summary(kind, steps, recon, x0, ids, nfe))
        if steps == settings["recon_steps"][0]:
            shown[kind] = recon
    return table, shown


def training_summary(loss_log: Path, fig_path: Path) -> dict:
    """Plot the loss log (raw + moving average, log y) and summarise it."""
    import matplotlib.pyplot as plt

    if not loss_log.is_file():
        raise SystemExit(f"loss log {loss_log} not found; pass --loss-log (written by adjointlib.facemodel.train)")
    with loss_log.open(newline="") as handle:
        rows = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(handle)]
    if not rows:
        raise SystemExit(f"loss log {loss_log} has no rows")
    steps, losses = np.array(rows).T
    window = max(1, min(100, len(losses) // 10))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.plot(steps, losses, color="tab:blue", alpha=0.25, lw=0.6, label="loss per step (batch)")
    ax.plot(steps[window - 1:], smooth, color="tab:blue", lw=1.8, label=f"moving average, {window} steps")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("DDPM loss  E‖ε − ε_θ(x_t, E(x₀), t)‖²")
    ax.set_title("Face diffusion model: training loss")
    ax.legend()
    ax.grid(alpha=0.3, which="both")
    save_figure(fig, fig_path)
    return {"loss_log": display_path(loss_log), "steps_logged": len(losses),
            "loss_first_100": float(losses[:100].mean()), "loss_last_100": float(losses[-100:].mean()),
            "moving_average": window}


# ---------------------------------------------------------------- figures


def image_grid(samples: torch.Tensor) -> np.ndarray:
    """A square-ish uint8 grid of the samples (b, 3, S, S), 1 px white gaps."""
    images = fc.tensor_to_images(samples)
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    size = images.shape[1]
    grid = np.full((rows * (size + 1) - 1, cols * (size + 1) - 1, 3), 255, np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * (size + 1):r * (size + 1) + size, c * (size + 1):c * (size + 1) + size] = image
    return grid


def samples_figure(panels: dict, title: str, path: Path) -> None:
    """One grid per panel ({panel title: samples}) side by side, nearest-neighbour upscaled, with a title."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 6.4), squeeze=False, layout="constrained")
    for ax, (panel, samples) in zip(axes[0], panels.items()):
        ax.imshow(image_grid(samples), interpolation="nearest")
        ax.set_title(panel, fontsize=10)
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def reconstruction_figure(x0: torch.Tensor, shown: dict, steps: int, path: Path) -> None:
    """Rows = FRLL faces; columns = input | exact | one-pass | z-only | z-only clipped, titled with PSNR."""
    import matplotlib.pyplot as plt

    columns = [("input", x0, f"input {x0.shape[-1]}×{x0.shape[-1]}"),
               ("exact", shown["exact"], f"exact inversion, N={steps}"),
               ("one_pass", shown["one_pass"], f"one-pass inversion, N={steps}"),
               ("z_only", shown["z_only"], f"z only (random x_T), N={steps}"),
               ("z_only_clipped", shown["z_only_clipped"], f"z only, x̂₀ clipped, N={steps}")]
    fig, axes = plt.subplots(len(x0), len(columns), figsize=(2.3 * len(columns), 2.3 * len(x0) + 0.4),
                             squeeze=False)
    for c, (kind, images, title) in enumerate(columns):
        values = psnr(images, x0)
        for r, image in enumerate(fc.tensor_to_images(images)):
            axes[r, c].imshow(image, interpolation="nearest")
            axes[r, c].set_title(title if kind == "input" else f"{title}\nPSNR {values[r]:.1f} dB", fontsize=8)
            axes[r, c].axis("off")
    fig.text(0.01, 0.0, fc.FRLL_ATTRIBUTION + " Reconstructed by the face model.", fontsize=6)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    save_figure(fig, path)


# ---------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR, help="face model folder (default: embedded)")
    parser.add_argument("--loss-log", type=Path, default=ROOT / "runs" / "faces32" / "loss_log.csv",
                        help="the training run's loss_log.csv (columns step, loss)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "facemodel", help="output folder")
    parser.add_argument("--quick", action="store_true", help="a few images only (for testing)")
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps of the random samples")
    parser.add_argument("--recon-steps", type=int, nargs="+", default=[20, 50],
                        help="DDIM steps of the reconstructions (z-only and the figure use the first)")
    parser.add_argument("--detect-size", type=int, default=128, help="YuNet input size (upsampled crops)")
    parser.add_argument("--batch", type=int, default=34, help="images per network call")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """Run every measurement, write results/facemodel (or --out) and return the quality dict."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    settings = {**(QUICK if args.quick else FULL), "quick": args.quick, "sample_steps": args.sample_steps,
                "recon_steps": args.recon_steps, "batch": args.batch, "seeds": SEEDS, "psnr": PSNR_NOTE}
    model = load_model(args.model)
    size = model.config.image_size
    args.out.mkdir(parents=True, exist_ok=True)
    training = training_summary(args.loss_log, args.out / "training_curve.png")

    samples, settings["z_prior"] = random_samples(model, settings, args.batch)
    card = json.loads((args.model / CONFIG_FILE).read_text())
    n_grid = min(settings["n_grid"], settings["n_detect"])
    panel_titles = {"ode": "DDIM on ε_θ (the ODE the adjoint differentiates)",
                    "clipped": "DDIM with x̂₀ clipped to [-1, 1] (DDPM/DiffAE sampling)"}
    samples_figure({panel_titles[name]: x[:n_grid] for name, x in samples.items()},
                   f"{n_grid} random samples of {model.config.name} ({card.get('train_steps', '?')} training steps), "
                   f"DDIM N={args.sample_steps}, the same x_T and z in both panels; z ~ Gaussian fitted to "
                   "training codes", args.out / "samples.png")
    frll = fc.load_frll_aligned(size)
    detector = fc.YuNetDetector()
    found = {"size": args.detect_size, "upsampling": f"{size} px -> {args.detect_size} px, bilinear (cv2.INTER_LINEAR)",
             "samples": {name: detection(detector, fc.tensor_to_images(x), args.detect_size)
                         for name, x in samples.items()},
             "frll_reference": detection(detector, np.concatenate([frll.neutral, frll.smiling]), args.detect_size)}

    systems = {name: fc.get_fr_system(name) for name in FR_SYSTEMS}
    probes = fc.load_frll_aligned(fc.EVAL_SIZE)
    bona = {name: fc.frll_bona_fide(system, probes) for name, system in systems.items()}
    x0 = fc.images_to_tensor(frll.neutral[:settings["n_faces"]])
    table, shown = reconstructions(model, x0, settings, args.batch, systems, bona)
    n_show = settings["n_show"]
    reconstruction_figure(x0[:n_show], {k: v[:n_show] for k, v in shown.items()}, args.recon_steps[0],
                          args.out / "reconstructions.png")

    counts = model.parameter_count()
    quality = {
        "model": {"path": display_path(args.model), "name": model.config.name, "image_size": size,
                  "train_steps": card.get("train_steps"), "parameters": {**counts, "total": sum(counts.values())}},
        "settings": settings, "samplers": SAMPLERS, "kinds": KINDS, "detection": found, "reconstruction": table,
        "training": training, "runtime_s": round(time.time() - start, 1),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    write_atomic(args.out / "quality.json", lambda tmp: tmp.write_text(json.dumps(quality, indent=2) + "\n"))
    write_atomic(args.out / "README.md", lambda tmp: tmp.write_text(README))
    return quality


if __name__ == "__main__":
    result = main()
    print(json.dumps({"detection": result["detection"], "reconstruction": result["reconstruction"],
                      "runtime_s": result["runtime_s"]}, indent=1))

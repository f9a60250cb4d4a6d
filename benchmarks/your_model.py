"""Chapter 11 ("Your own model"): every gradient method on a tiny latent text-to-image model with classifier-free
guidance and on a tiny flow-matching model, accuracy against a fine reference and peak memory.

Problems (random weights, built in code, no download):
- ``latent-cfg``: ``adjointlib.latent.tiny_text_to_image`` (UNet2DConditionModel + AutoencoderKL + DDIM schedule,
  ``DiscreteVP``), guided with w = 5, loss through the checkpointed VAE decoder: L = mean((D(x_0) − target)²);
- ``flow-cfg``: a UNet2DConditionModel read as a flow-matching velocity model (``FlowMatchEulerDiscreteScheduler``,
  shift 3 → ``RectifiedFlow`` + ``EpsilonFromVelocity``), guided with w = 3, pixel loss L = mean((x_0 − target)²).
Both optimise noise (dL/dx_T, as direct noise optimisation) and the condition (dL/dz, the prompt embeddings), and
differentiate the guidance scale w.  Grids are λ-uniform over the schedule.  Both UNets are made smooth in t
(``smooth_in_time``: random weights on diffusers' sinusoidal time features make ε oscillate every few timesteps).

Accuracy (float64): relative error of each method's dL/dx_T, dL/dz, dL/dw against backprop through DPM-Solver-2M
on ``--reference-steps`` steps (its own error estimated from the run at half as many steps: |g_N − g_{N/2}|/3 for
order 2).  Memory (float32, one thread, one fresh subprocess per method and N, larger inputs: ``MEMORY_SIZES``):
peak RSS above the baseline after building the model and one plain sampling pass on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA.
Writes ``results/your_model/accuracy.csv``, ``memory.csv`` and ``meta.json`` (atomically).

    python benchmarks/your_model.py [--mode quick|full] [--device cpu] [--problems latent-cfg flow-cfg]
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import adjointlib as al
from adjointlib.atomic import write_text_atomic
from adjointlib.gradients.compare import METHODS as METHOD_KWARGS
from gradbench import errors, peak_bytes, write_csv

RESULTS = Path(__file__).resolve().parent.parent / "results" / "your_model"
METHODS = ["adjoint-1", "adjoint-2M", "adjoint-1 (recomputed)", "backprop-1", "backprop-2M", "checkpoint-2M",
           "reversible-1", "blackbox-rk4"]
PROBLEMS = ("latent-cfg", "flow-cfg")
CONFIG = {  # steps of the accuracy sweep, reference steps, steps of the memory runs
    "quick": dict(steps=[10, 20, 40], reference=160, memory_steps=[10, 40]),
    "full": dict(steps=[10, 20, 40, 80, 160], reference=320, memory_steps=[10, 50, 100]),
}


@dataclass
class Problem:
    """One differentiable sampling problem: ``loss(sample(model, schedule, x_T, z, ...))`` with gradients w.r.t.
    x_T (b, ...), z (b, L, D) and the guidance scale ``model.scale``."""

    name: str
    model: torch.nn.Module
    schedule: al.NoiseSchedule
    x_T: torch.Tensor
    z: torch.Tensor
    loss: object
    description: str


MAX_TIME_FREQUENCY = 0.02  # rad per diffusers timestep (module doc: "smooth in t")
MEMORY_SIZES = {"latent-cfg": dict(batch=4, latent_size=16), "flow-cfg": dict(batch=4, size=16)}


def smooth_in_time(unet, max_frequency: float = MAX_TIME_FREQUENCY) -> None:
    """Zero the time embedding's weights on the sinusoidal features faster than ``max_frequency`` (rad per timestep).

    With random weights, diffusers' sinusoidal timestep embedding (frequencies up to 1 rad per timestep) makes ε
    oscillate in t with a period of about 6 timesteps, which no grid of a few hundred steps resolves: backprop-2M's
    gradient then stalls at a 4e-3 change from N = 160 to 320 instead of converging at order 2 (measured on the flow
    problem; with the cut: 9.3e-4, 2.4e-4, 6.3e-5 from N = 40 to 320).  A trained network's ε is smooth in t (we
    infer this from high-order solvers reaching their orders on trained models, not from a measurement here)."""
    import math

    # diffusers.models.embeddings.get_timestep_embedding: frequency_k = exp(−log(max_period) k/(half − shift))
    proj = unet.time_proj
    half = proj.num_channels // 2
    exponent = -math.log(proj.max_period if hasattr(proj, "max_period") else 10000) * torch.arange(half, dtype=torch.float64)
    frequencies = torch.exp(exponent / (half - proj.downscale_freq_shift))
    fast = torch.nonzero(frequencies > max_frequency).flatten()
    with torch.no_grad():
        weight = unet.time_embedding.linear_1.weight
        weight[:, fast] = 0
        weight[:, half + fast] = 0


def _quiet_diffusers():
    from diffusers.utils import logging

    logging.set_verbosity_error()


def latent_problem(dtype=torch.float64, device="cpu", batch=2, latent_size=8, seed=0) -> Problem:
    """The tiny latent text-to-image model (smooth in t) with guidance w = 5 and a loss through its checkpointed VAE
    decoder; latents (batch, 4, latent_size, latent_size)."""
    from adjointlib import latent

    _quiet_diffusers()
    pipe = latent.tiny_text_to_image(seed=seed)
    smooth_in_time(pipe.unet)
    model, schedule = latent.pipeline_model(pipe, guidance_scale=5.0)
    model = model.to(device, dtype)
    model.requires_grad_(False)  # θ frozen: noise and condition optimisation (and w)
    model.scale.requires_grad_(True)
    decoder = latent.LatentDecoder(pipe.vae).to(device, dtype)
    g = torch.Generator().manual_seed(seed + 1)
    unet = pipe.unet
    shape = (batch, unet.config.in_channels, latent_size, latent_size)
    x_T = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)
    z = latent.prompt_embeddings(pipe, ["a face"] * batch).to(device, dtype)
    with torch.no_grad():
        target = decoder(torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype))
    return Problem("latent-cfg", model, schedule, x_T, z, lambda x0: (decoder(x0) - target).square().mean(),
                   f"latent {tuple(shape[1:])} → image {tuple(target.shape[1:])}, DiscreteVP (DDIM scheduler), w = 5")


def flow_problem(dtype=torch.float64, device="cpu", batch=2, size=8, seed=0) -> Problem:
    """A tiny text-conditional velocity model (smooth in t) on rectified flow (shift-3 scheduler config) with guidance
    w = 3; pixels (batch, 3, size, size)."""
    import diffusers

    _quiet_diffusers()
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=size, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8)
    smooth_in_time(unet)
    velocity, schedule = al.DiffusersUNet.from_pipeline_parts(
        unet, diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), conditioning="encoder")
    g = torch.Generator().manual_seed(seed + 1)
    z_u = torch.randn(1, 6, 16, generator=g, dtype=torch.float64)
    model = al.ClassifierFreeGuidance(velocity, 3.0, z_u).to(device, dtype)
    model.requires_grad_(False)
    model.scale.requires_grad_(True)
    x_T = torch.randn(batch, 3, size, size, generator=g, dtype=torch.float64).to(device, dtype)
    z = torch.randn(batch, 6, 16, generator=g, dtype=torch.float64).to(device, dtype)
    target = torch.rand(batch, 3, size, size, generator=g, dtype=torch.float64).to(device, dtype) * 2 - 1
    return Problem("flow-cfg", model, schedule, x_T, z, lambda x0: (x0 - target).square().mean(),
                   f"pixels {tuple(x_T.shape[1:])}, RectifiedFlow (t from 0.999 to 0.001), velocity model, w = 3")


BUILDERS = {"latent-cfg": latent_problem, "flow-cfg": flow_problem}


def gradients(problem: Problem, method: str, steps: int) -> dict:
    """dL/dx_T, dL/dz, dL/dw of ``problem`` by ``method`` (a label of ``adjointlib.gradients.compare.METHODS``)."""
    x_T = problem.x_T.clone().requires_grad_(True)
    z = problem.z.clone().requires_grad_(True)
    scale = problem.model.scale
    x0 = al.sample(problem.model, problem.schedule, x_T, z, steps=steps, params=[scale], **METHOD_KWARGS[method])
    g_x, g_z, g_w = torch.autograd.grad(problem.loss(x0), [x_T, z, scale])
    return dict(x_T=g_x, z=g_z, w=g_w.reshape(1))


def accuracy(problem: Problem, methods, steps_list, reference_steps, progress=None):
    """(rows, reference info): one row per (method, N) with the relative errors of x_T, z and w."""
    reference = gradients(problem, "backprop-2M", reference_steps)
    coarse = gradients(problem, "backprop-2M", reference_steps // 2)
    ref_error = {k: e / 3 for k, e in errors(coarse, reference).items()}
    rows = []
    for method in methods:
        for n in steps_list:
            got = gradients(problem, method, n)
            rows.append(dict(problem=problem.name, method=method, steps=n,
                             **{f"err_{k}": e for k, e in errors(got, reference).items()}))
            if progress is not None:
                progress.update()
    return rows, dict(method="backprop-2M", steps=reference_steps, estimated_rel_error=ref_error)


# ---------------------------------------------------------------- memory: one subprocess per (problem, method, N)

def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def child(problem_name, method, steps, device):
    """Measure one gradient in this (fresh) process; prints one JSON line."""
    al.exact_float32(device)
    problem = BUILDERS[problem_name](dtype=torch.float32, device=device, **MEMORY_SIZES[problem_name])
    sampler = METHOD_KWARGS[method]["sampler"]
    plain_sampler = "dpm-solver-2m" if sampler == "dpm-solver-2m" else "ddim"
    with torch.no_grad():
        al.solve(problem.model, problem.schedule, problem.x_T, problem.z, 2, sampler=plain_sampler)
        w0 = _sync(device)
        al.solve(problem.model, problem.schedule, problem.x_T, problem.z, steps, sampler=plain_sampler)
        w1 = _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_bytes(device)
    w2 = _sync(device)
    grads = gradients(problem, method, steps)
    w3 = _sync(device)
    peak = peak_bytes(device)
    print(json.dumps(dict(problem=problem_name, method=method, steps=steps, device=device,
                          above_baseline_mib=(peak - baseline) / 2**20, plain_s=w1 - w0, grad_s=w3 - w2,
                          finite=bool(all(torch.isfinite(g).all() for g in grads.values())))))


def memory_row(problem_name, method, steps, device) -> dict:
    """One memory measurement in a fresh process; a failed one is kept as a row with its error."""
    out = subprocess.run([sys.executable, __file__, "--device", device, "--child", problem_name, method, str(steps)],
                         capture_output=True, text=True)
    if out.returncode == 0:
        return dict(json.loads(out.stdout.strip().splitlines()[-1]), error="")
    last = (out.stderr.strip().splitlines() or ["exit status %d" % out.returncode])[-1]
    return dict(problem=problem_name, method=method, steps=steps, device=device, above_baseline_mib=float("nan"),
                plain_s=float("nan"), grad_s=float("nan"), finite=False, error=last)


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["steps"] = int(r["steps"])
    return rows


def main(argv=None):
    """Run (or resume) the benchmark: results are written after each problem's accuracy sweep and after each memory
    measurement, and a re-run with the same --out, --mode and --device skips what is already there."""
    from tqdm import tqdm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--mode", choices=sorted(CONFIG), default="quick")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("PROBLEM", "METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # tiny networks: more threads only add OpenMP waiting on a busy machine
    if args.child:
        return child(args.child[0], args.child[1], int(args.child[2]), args.device)
    config = CONFIG[args.mode]
    args.out.mkdir(parents=True, exist_ok=True)
    meta_path = args.out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta and (meta.get("mode"), meta.get("device")) != (args.mode, args.device):
        parser.error(f"{args.out} holds a {meta.get('mode')} run on {meta.get('device')}; use another --out")
    meta = dict(mode=args.mode, device=args.device, problems=meta.get("problems", {}))
    acc_rows, mem_rows = _read_csv(args.out / "accuracy.csv"), _read_csv(args.out / "memory.csv")
    for name in args.problems:
        wanted = {(m, n) for m in args.methods for n in config["steps"]}
        if not wanted <= {(r["method"], r["steps"]) for r in acc_rows if r["problem"] == name}:
            problem = BUILDERS[name]()
            with tqdm(total=len(wanted), desc=f"{name}: accuracy") as bar:
                rows, reference = accuracy(problem, args.methods, config["steps"], config["reference"], bar)
            acc_rows = [r for r in acc_rows if r["problem"] != name] + rows
            meta["problems"][name] = dict(description=problem.description, reference=reference)
            write_csv(args.out / "accuracy.csv", acc_rows)
            write_text_atomic(meta_path, json.dumps(meta, indent=1))
        if args.skip_memory:
            continue
        done = {(r["method"], r["steps"]) for r in mem_rows if r["problem"] == name and not r.get("error")}
        todo = [(m, n) for m in args.methods for n in config["memory_steps"] if (m, n) not in done]
        for method, n in tqdm(todo, desc=f"{name}: memory"):
            mem_rows = [r for r in mem_rows if (r["problem"], r["method"], r["steps"]) != (name, method, n)]
            mem_rows.append(memory_row(name, method, n, args.device))
            write_csv(args.out / "memory.csv", mem_rows)
    for r in acc_rows:
        print(f"{r['problem']:10s} {r['method']:24s} N={r['steps']:4d}  x_T {float(r['err_x_T']):.2e}  "
              f"z {float(r['err_z']):.2e}  w {float(r['err_w']):.2e}")
    for r in mem_rows:
        note = f"  FAILED: {r['error']}" if r.get("error") else ""
        print(f"{r['problem']:10s} {r['method']:24s} N={r['steps']:4d}  {float(r['above_baseline_mib']):9.1f} MiB  "
              f"{float(r['grad_s']) / float(r['plain_s']):6.2f} x one sampling pass{note}")


if __name__ == "__main__":
    main()

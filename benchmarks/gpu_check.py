"""One prepared check of adjointlib on a device: accuracy of every gradient method against CPU float64, host
synchronisations per pass, time per step against a plain DDIM loop and a bare forward, the adjoint's overhead
beyond its network work, peak memory against N, and the low-precision cases of issue 13.

    python benchmarks/gpu_check.py --device cuda --out results/gpu/gpu_check_cuda.json      # ≤ 5 min on an H200
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/check.json               # the CI-sized run

Stages (each prints its figures and a PASS/FAIL line where it has a target; the JSON holds everything):
1. accuracy: a small diffusers UNet (``small_unet``, random weights, x_θ-prediction, continuous class code z),
   N = 8, gradient of <c, x_0> w.r.t. x_T and z for every method, on the device in float64 and in float32 with
   PyTorch's default TF32 settings (TF32 convolutions allowed), against the same method on the CPU in float64.
   Tolerances: float64 1e-5 (diffusers builds the sinusoidal time embedding in float32, so float64 CUDA and CPU
   agree to ~1e-6 only); float32 2e-2 for every method except blackbox (5e-2, RK4's extra evaluations); the
   reversible SDE coupling must refuse float32 (its frame's dynamic range, ``adjointlib.gradients.reversible``).
2. synchronisations (CUDA only): ``torch.cuda.set_sync_debug_mode("warn")`` counts the host synchronisations of
   one adjoint sample + backward at N and 2N; target: the same count (none per network evaluation).
3. time (faces64 UNet configuration, 25 M parameters, random weights, batch 8, float32 with TF32 off; ``--config``
   picks another, e.g. faces32 on a CPU): bare
   forward, VJP (with its own forward evaluation), a ``solve`` step, a plain DDIM loop with Python-float
   coefficients, and the adjoint gradient (sampling + backward) at N = 50 against N forwards + N VJPs timed
   alone (target ≤ 1.10: the library's own work at most 10 %).
4. peak memory above the inputs for N in {10, 25, 50, 100} (backprop up to 50 on the device, 10 in quick mode):
   adjoint, backprop, checkpoint, reversible (CUDA: ``max_memory_allocated``; CPU: not measured).
5. low precision: a bf16 v-prediction UNet from ``DiffusersUNet.from_pipeline_parts`` samples on the device
   (before issue 13: a device-side assert that poisoned the CUDA context), and the reversible method refuses bf16.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import adjointlib as al  # noqa: E402
from adjointlib.atomic import write_text_atomic  # noqa: E402
from adjointlib.models import call_model, model_vjp  # noqa: E402
from small_unet import small_unet  # noqa: E402

METHODS = {  # label → (sampler, gradient)
    "adjoint-1": ("ddim", "adjoint"),
    "adjoint-2M": ("dpm-solver-2m", "adjoint"),
    "adjoint-1 SDE": ("sde-dpm-solver-1", "adjoint"),
    "backprop": ("ddim", "backprop"),
    "checkpoint": ("ddim", "checkpoint"),
    "blackbox-rk4": ("rk4", "blackbox"),
    "reversible ODE": ("reversible-ddim", "reversible"),
}
FLOAT64_ONLY = {"reversible SDE": ("reversible-sde", "reversible")}  # refused in float32 (its frame's dynamic range)
FLOAT32_TOLERANCE = {label: (5e-2 if label.startswith("blackbox") else 2e-2) for label in METHODS}
FLOAT64_TOLERANCE = 1e-5


def log(*args):
    print(*args, flush=True)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def _gradient(model, schedule, x_T, z, cot, noises, label, steps):
    sampler, gradient = {**METHODS, **FLOAT64_ONLY}[label]
    x_T, z = x_T.clone().requires_grad_(True), z.clone().requires_grad_(True)
    x0 = al.sample(model, schedule, x_T, z, steps=steps, sampler=sampler, gradient=gradient, params=(),
                   noises=noises if al.SAMPLERS[sampler].sde else None)
    return torch.cat([g.flatten() for g in torch.autograd.grad((cot * x0).sum(), [x_T, z])])


def stage_accuracy(device, quick, config=None):
    schedule, steps = al.LinearVP(), (4 if quick else 8)
    unet = dict(channels=(8, 16), size=8) if quick else {}
    g = torch.Generator().manual_seed(0)
    model64, z_dim, shape = small_unet(schedule, dtype=torch.float64, **unet)
    x_T, cot = (torch.randn(2, *shape, generator=g, dtype=torch.float64) for _ in range(2))
    z = torch.randn(2, z_dim, generator=g, dtype=torch.float64)
    noises = torch.randn(steps, 2, *shape, generator=g, dtype=torch.float64)
    rows = {}
    for label in [*METHODS, *FLOAT64_ONLY]:
        reference = _gradient(model64, schedule, x_T, z, cot, noises, label, steps)
        row = {}
        for dtype in (torch.float64, torch.float32):
            model = small_unet(schedule, dtype=dtype, **unet)[0].to(device)
            args = [t.to(device, dtype) for t in (x_T, z, cot, noises)]
            if label in FLOAT64_ONLY and dtype == torch.float32:
                try:
                    _gradient(model, schedule, *args[:3], args[3], label, steps)
                    row["float32"] = {"refused": False, "pass": False}
                except TypeError:
                    row["float32"] = {"refused": True, "pass": True}
                continue
            got = _gradient(model, schedule, *args[:3], args[3], label, steps).cpu().double()
            error = _rel(got, reference)
            tolerance = FLOAT64_TOLERANCE if dtype == torch.float64 else FLOAT32_TOLERANCE[label]
            row[str(dtype).replace("torch.", "")] = {"relative_error": error, "tolerance": tolerance,
                                                      "pass": error <= tolerance}
        rows[label] = row
        f32 = row["float32"]
        log(f"accuracy {label:16s} float64 {row['float64']['relative_error']:.2e}  "
            f"float32 {'refused' if f32.get('refused') else format(f32.get('relative_error', math.nan), '.2e')}  "
            f"{'PASS' if all(r['pass'] for r in row.values()) else 'FAIL'}")
    return rows


def stage_synchronisations(device, quick, config=None, steps=10):
    if device.type != "cuda":
        log("synchronisations: n/a on", device.type)
        return None
    schedule = al.LinearVP()
    model, z_dim, shape = small_unet(schedule, dtype=torch.float32)
    model = model.to(device)
    counts = {}
    for n in (steps, 2 * steps):
        x_T = torch.randn(2, *shape, device=device).requires_grad_(True)
        z = torch.randn(2, z_dim, device=device)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                x0 = al.sample(model, schedule, x_T, z, steps=n, params=())
                (grad,) = torch.autograd.grad(x0.sum(), [x_T])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts[n] = sum("synchroniz" in str(w.message) for w in caught)
    ok = counts[steps] == counts[2 * steps]
    log(f"synchronisations per sample + backward: N={steps}: {counts[steps]}, N={2 * steps}: {counts[2 * steps]}  "
        f"{'PASS' if ok else 'FAIL'} (target: independent of N)")
    return {"counts": counts, "pass": ok}


def _timed(fn, device, repeats):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def _face_model(device, config):
    from adjointlib.facemodel.config import CONFIGS
    from adjointlib.facemodel.networks import FaceDiffusionModel

    torch.manual_seed(0)
    model = FaceDiffusionModel(CONFIGS[config]).to(device)
    model.requires_grad_(False)
    return model


def stage_time(device, quick, config):
    model = _face_model(device, config)
    eps_model, schedule = model.eps_model, model.schedule
    size, batch, steps = model.config.image_size, 8, (10 if quick else 50)
    x = torch.randn(batch, 3, size, size, device=device)
    z = torch.randn(batch, model.config.z_dim, device=device)
    t = float(schedule.t_max) / 2
    repeats = 3 if quick else 20
    forward = _timed(lambda: call_model(eps_model, x, t, z), device, repeats)
    z_leaf = z.clone().requires_grad_(True)
    vjp = _timed(lambda: model_vjp(eps_model, x, t, z_leaf, x, [z_leaf]), device, repeats)
    times = al.time_grid(schedule, steps)
    with torch.no_grad():
        solve = _timed(lambda: al.solve(eps_model, schedule, x, z, times), device, 2) / steps
        coefficients = [schedule.alpha_sigma_lam(times[i], times[i + 1]) for i in range(steps)]

        def plain_ddim():
            """The DDIM step of ``adjointlib.steps.ddim_step`` (paper §7.3), with precomputed Python floats."""
            y = x
            for i, ((a_s, _, l_s), (a_t, s_t, l_t)) in enumerate(coefficients):
                tt = torch.full((batch,), float(times[i]), device=device)
                y = (a_t / a_s) * y - s_t * math.expm1(l_t - l_s) * eps_model(y, tt, z)
            return y

        plain = _timed(plain_ddim, device, 2) / steps

    def adjoint_gradient():
        x_T, zz = x.clone().requires_grad_(True), z.clone().requires_grad_(True)
        x0 = al.sample(eps_model, schedule, x_T, zz, steps=steps, params=())
        return torch.autograd.grad(x0.sum(), [x_T, zz])

    adjoint = _timed(adjoint_gradient, device, 1 if not quick else 2)
    ratio = adjoint / (steps * (forward + vjp))  # the VJP timed alone includes its own forward evaluation
    out = {"model": model.config.name, "parameters": sum(p.numel() for p in model.parameters()), "batch": batch,
           "steps": steps, "forward_ms": 1e3 * forward, "vjp_ms": 1e3 * vjp, "solve_step_ms": 1e3 * solve,
           "plain_ddim_step_ms": 1e3 * plain, "adjoint_gradient_s": adjoint,
           "adjoint_over_network_work": ratio, "pass": ratio <= 1.10}
    log(f"time ({model.config.name}, batch {batch}): forward {1e3 * forward:.2f} ms, VJP {1e3 * vjp:.2f} ms, "
        f"solve step {1e3 * solve:.2f} ms, plain DDIM step {1e3 * plain:.2f} ms")
    log(f"adjoint gradient at N={steps}: {adjoint:.3f} s = {ratio:.3f} × (N forwards + N VJPs timed alone)  "
        f"{'PASS' if out['pass'] else 'FAIL'} (target ≤ 1.10)")
    return out


def stage_memory(device, quick, config):
    if device.type != "cuda":
        log("peak memory: n/a on", device.type)
        return None
    model = _face_model(device, config)
    eps_model, schedule = model.eps_model, model.schedule
    size, batch = model.config.image_size, 8
    x = torch.randn(batch, 3, size, size, device=device)
    z = torch.randn(batch, model.config.z_dim, device=device)
    grid = (10,) if quick else (10, 25, 50, 100)
    runs = {"adjoint": ("ddim", "adjoint"), "backprop": ("ddim", "backprop"), "checkpoint": ("ddim", "checkpoint"),
            "reversible": ("reversible-ddim", "reversible")}
    out = {}
    for label, (sampler, gradient) in runs.items():
        out[label] = {}
        for n in grid:
            if label == "backprop" and n > 50:
                continue
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            x_T, zz = x.clone().requires_grad_(True), z.clone().requires_grad_(True)
            x0 = al.sample(eps_model, schedule, x_T, zz, steps=n, sampler=sampler, gradient=gradient, params=())
            grads = torch.autograd.grad(x0.sum(), [x_T, zz])
            torch.cuda.synchronize()
            out[label][n] = (torch.cuda.max_memory_allocated() - base) / 2**20
            del x0, grads
        log(f"peak memory {label:10s} MiB above inputs: " + ", ".join(f"N={n}: {m:.0f}" for n, m in out[label].items()))
    return out


def stage_low_precision(device, quick, config=None):
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4).to(device, torch.bfloat16)
    model, schedule = al.DiffusersUNet.from_pipeline_parts(unet, DDIMScheduler(prediction_type="v_prediction"))
    x_T = torch.randn(2, 3, 8, 8, device=device, dtype=torch.bfloat16)
    with torch.no_grad():
        x0 = al.sample(model, schedule, x_T, None, steps=[999.0, 750.0, 333.0, 0.0])
    finite = bool(torch.isfinite(x0).all())
    after = float(torch.ones(1, device=device).sum())  # the context still works
    try:
        al.sample(model, schedule, x_T, None, steps=4, sampler="reversible-ddim", gradient="reversible")
        refused = False
    except TypeError:
        refused = True
    ok = finite and after == 1.0 and x0.dtype == torch.bfloat16 and refused
    log(f"low precision: bf16 v-prediction UNet samples ({x0.dtype}, finite {finite}), device usable after, "
        f"reversible refuses bf16 {refused}  {'PASS' if ok else 'FAIL'}")
    return {"finite": finite, "dtype": str(x0.dtype), "reversible_refuses_bf16": refused, "pass": ok}


STAGES = {"accuracy": stage_accuracy, "synchronisations": stage_synchronisations, "time": stage_time,
          "memory": stage_memory, "low_precision": stage_low_precision}


def environment(device):
    out = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        out.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (the CI run on a CPU)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for every figure")
    parser.add_argument("--config", default=None, help="face-model configuration of the time and memory stages "
                        "(default faces64; tiny with --quick; faces32 is the CPU-sized one)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run (default all)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    config = args.config or ("tiny" if args.quick else "faces64")
    results = {"environment": environment(device), "quick": args.quick, "config": config}
    started = time.perf_counter()
    for stage in STAGES:  # accuracy and synchronisations first: PyTorch's default TF32 settings, as users run
        if stage in args.stages:
            if stage == "time":
                al.exact_float32(device)  # timings and memory in IEEE float32
            try:
                results[stage] = STAGES[stage](device, args.quick, config)
            except Exception as error:  # report and go on: one device call must bring back every other stage
                log(f"{stage}: FAIL with {error!r}")
                results[stage] = {"error": repr(error), "pass": False}
    results["seconds"] = time.perf_counter() - started
    accuracy = results.get("accuracy") or {}
    verdicts = ([accuracy["pass"]] if "error" in accuracy else
                [r["pass"] for row in accuracy.values() for r in row.values()])
    verdicts += [results[k]["pass"] for k in ("synchronisations", "time", "memory", "low_precision")
                 if results.get(k) and "pass" in results[k]]
    results["pass"] = all(verdicts)
    log(f"{'PASS' if results['pass'] else 'FAIL'}: {sum(verdicts)}/{len(verdicts)} checks in {results['seconds']:.0f} s")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    sys.exit(0 if main()["pass"] else 1)

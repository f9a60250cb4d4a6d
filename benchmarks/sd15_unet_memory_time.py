"""Peak memory and time per gradient through a Stable Diffusion 1.5-sized UNet (issue 15, item 4).

The network is a diffusers ``UNet2DConditionModel`` built in code from SD 1.5's UNet configuration (random
weights from ``torch.manual_seed(seed)``, built in float32 on the device and cast to ``--dtype``; nothing is
downloaded), used as an ε-model with the prompt embeddings as ``encoder_hidden_states``
(``adjointlib.DiffusersUNet(unet, conditioning="encoder")``); the schedule is ``adjointlib.DiscreteVP`` from a
``diffusers.DDIMScheduler`` with SD 1.5's scaled-linear betas (0.00085 to 0.012, 1000 steps); sampling runs over
the whole schedule, t = 999 → 0, on the λ-uniform grid of ``adjointlib.time_grid``.  Inputs: x_T (1, 4, 64, 64)
latents and random prompt embeddings z (1, 77, 768), both standard normal from a CPU generator (the same on every
device).  Loss: mean(x_0²); gradient w.r.t. x_T and z with the parameters frozen (``params=[]``), or also w.r.t.
every UNet parameter θ with ``--theta``.

Gradient methods (``adjointlib.sample(..., sampler=, gradient=)``, the labels of ``adjointlib.gradients.compare``):
    adjoint     AdjointDEIS-1 on DDIM            (sampler="ddim",            gradient="adjoint")
    backprop    autograd through DDIM            (sampler="ddim",            gradient="backprop")
    checkpoint  per-step checkpointed backprop   (sampler="ddim",            gradient="checkpoint")
    reversible  reversible DDIM coupling, ζ=0.999 (sampler="reversible-ddim", gradient="reversible")
backprop and checkpoint compute the same number (the exact gradient of DDIM); the adjoint solves the continuous
adjoint ODE with its own first-order steps, and the reversible method differentiates a different (coupled)
sampler exactly, so both differ from backprop by an O(1/N) discretisation gap, not by round-off.

Every measurement (the model stage and each (method, N)) runs in its own process: forked on a CPU (the parent
imports but never computes, so the fork is safe and costs no re-import), spawned on CUDA.  In each:
    build the UNet → warm up (a no-grad partial sampling pass and a gradient of the same method at N = 2) →
    one plain no-grad DDIM sampling pass over N steps (the unit of time) → the measured gradient
    (sample + torch.autograd.grad, NFE counted by ``adjointlib.CountingModel``).
Memory: CUDA: ``torch.cuda.max_memory_allocated`` during the gradient minus ``memory_allocated`` before it (the
weights and inputs), after ``reset_peak_memory_stats``.  CPU: peak RSS (VmHWM, gradbench.peak_bytes) minus the peak RSS after the
plain pass (weights, inputs and a no-grad pass's transients).  Time: wall-clock (CUDA synchronised) of sampling +
backward, in seconds and as a multiple of the plain pass measured in the same process; CPU time too.
Float32 runs use IEEE float32 (``adjointlib.exact_float32``: TF32 off on CUDA), so the accuracy figures compare
methods, not TF32 round-off.  The reversible method refuses bf16/fp16 states (its backward pass needs each network
evaluation to reproduce the forward pass's): reported as "refused", with the library's message.

Time budget: ``--budget-s`` for the whole run (default 480 s) and ``--stage-timeout-s`` per measurement; a stage
that would start with less than ``--min-stage-s`` left is skipped, one that overruns is killed, and either is
recorded with its reason, so one 10-minute device call always returns its JSON.

    python benchmarks/sd15_unet_memory_time.py --size small --device cpu --steps 10 50 \
        --out results/gpu/sd15/cpu_small.json
    python benchmarks/sd15_unet_memory_time.py --size sd15 --device cuda --steps 10 50 --out sd15_cuda_float32.json
    python benchmarks/sd15_unet_memory_time.py --size sd15 --device cpu --methods   # model stage only (no gradient)
    bash scripts/gpu/sd15_check.sh                                                  # the GPU run, into $OUT
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from gradbench import peak_bytes

METHODS = {  # label → sample() keywords (the "-1" rows of adjointlib.gradients.compare.METHODS)
    "adjoint": dict(sampler="ddim", gradient="adjoint"),
    "backprop": dict(sampler="ddim", gradient="backprop"),
    "checkpoint": dict(sampler="ddim", gradient="checkpoint"),
    "reversible": dict(sampler="reversible-ddim", gradient="reversible"),
}
_BLOCKS = dict(down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
               up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SIZES = {  # UNet2DConditionModel keywords, latent side, prompt tokens
    # SD 1.5's unet/config.json (runwayml/stable-diffusion-v1-5), written out
    "sd15": dict(unet=dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                           layers_per_block=2, cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
                           norm_eps=1e-5, act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
                           mid_block_scale_factor=1, center_input_sample=False, **_BLOCKS),
                 latent=64, tokens=77),
    # the same block structure scaled down: runs on 2 CPU cores in seconds per method
    "small": dict(unet=dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64, 64),
                            layers_per_block=2, cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
                            **_BLOCKS),
                  latent=16, tokens=8),
    # the test's size (tests/test_sd15_benchmark.py)
    "tiny": dict(unet=dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16, 16),
                           layers_per_block=1, cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8,
                           **_BLOCKS),
                 latent=8, tokens=4),
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SD15_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
# Verdicts (float32 only; bf16/fp16 gaps are reported, not judged).  Backprop and checkpoint compute the same
# gradient of the same DDIM pass, the adjoint samples with that same pass: they differ by round-off only — measured
# ≤ 2.5e-7 on a CPU (small size, N = 50, one thread); on a GPU the no-grad and with-grad passes may take different
# kernels (SDPA chooses by requires_grad), hence 1e-4, still far below the gaps that are not round-off (≥ 1.7e-2
# for the adjoint's and the reversible method's x_T gradients at N = 50, small size).  The adjoint and the reversible method are first-order-consistent with the same continuous gradient,
# so their gap to backprop shrinks as N^-1: the observed order between the smallest and largest N must lie in
# ORDER_RANGE (measured 0.9-1.0 for the adjoint, 0.65-0.8 for the reversible coupling, pre-asymptotic at small N,
# on the CPU sizes); a gradient with a wrong term keeps a gap that does not shrink (order ≈ 0).
ROUNDOFF_TOLERANCE = {"float32": 1e-4}
ORDER_RANGE = (0.5, 1.5)
THETA_PROBE = ("conv_in.weight", "time_embedding.linear_1.weight", "conv_out.weight")  # θ-gradient compared here


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------- child side


def _build(size, device, dtype, seed):
    """(DiffusersUNet ε-model, DiscreteVP, UNet, build seconds): random float32 weights on ``device``, cast to dtype."""
    import adjointlib as al
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from diffusers.utils import logging

    logging.set_verbosity_error()
    started = time.perf_counter()
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the device: the 860 M-parameter init is slow on a CPU
        unet = UNet2DConditionModel(**SIZES[size]["unet"])
    unet = unet.to(dtype).eval().requires_grad_(False)
    _sync(device)
    schedule = al.DiscreteVP.from_diffusers(DDIMScheduler(**SD15_BETAS))
    return al.DiffusersUNet(unet, conditioning="encoder"), schedule, unet, time.perf_counter() - started


def _inputs(size, device, dtype, seed):
    spec, width = SIZES[size], SIZES[size]["unet"]["cross_attention_dim"]
    g = torch.Generator().manual_seed(seed + 1)
    x_T = torch.randn(1, 4, spec["latent"], spec["latent"], generator=g)
    z = torch.randn(1, spec["tokens"], width, generator=g)
    return x_T.to(device, dtype), z.to(device, dtype)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _clock(device):
    _sync(device)
    return time.process_time(), time.perf_counter()


def _rss_mib():
    return peak_bytes("cpu") / 2**20  # this process's peak resident set (gradbench.peak_bytes)


def _child_setup(job):
    import adjointlib as al

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    if job["dtype"] == "float32":
        al.exact_float32(job["device"])  # IEEE float32 (TF32 off on CUDA)


def run_model_stage(job):
    """Parameter count, build time, one forward's time and FLOPs, the tensors autograd saves in one forward."""
    from torch.utils.flop_counter import FlopCounterMode

    _child_setup(job)
    device, dtype = job["device"], DTYPES[job["dtype"]]
    model, schedule, unet, build_s = _build(job["size"], device, dtype, job["seed"])
    x, z = _inputs(job["size"], device, dtype, job["seed"])
    t = torch.full((1,), 500.0, device=device)
    out = dict(parameters=sum(p.numel() for p in unet.parameters()), build_s=build_s,
               weights_mib=sum(p.numel() * p.element_size() for p in unet.parameters()) / 2**20)
    with torch.no_grad():
        with FlopCounterMode(display=False) as flops:
            model(x, t, z)  # also the warm-up
        out["forward_gflop"] = flops.get_total_flops() / 1e9
        repeats = job["forward_repeats"]
        times = []
        for _ in range(repeats):
            c0, w0 = _clock(device)
            model(x, t, z)
            c1, w1 = _clock(device)
            times.append(w1 - w0)
        out["forward_ms"] = 1e3 * float(np.median(times))
        out["forward_repeats"] = repeats
    # what autograd keeps for one forward evaluation with x requiring grad: backprop keeps N of these
    params = {p.data_ptr() for p in unet.parameters()}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    xg = x.clone().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        eps = model(xg, t, z)
    out["saved_activations_mib"] = sum(seen.values()) / 2**20
    del eps
    if torch.device(device).type == "cuda":
        out["weights_allocated_mib"] = torch.cuda.memory_allocated() / 2**20
    return out


def run_method(job):
    """One gradient of mean(x_0²) by ``job["method"]`` at N = job["steps"]; figures, and the gradients as arrays."""
    import adjointlib as al

    _child_setup(job)
    device, dtype, steps, method = job["device"], DTYPES[job["dtype"]], job["steps"], job["method"]
    cuda = torch.device(device).type == "cuda"
    model, schedule, unet, build_s = _build(job["size"], device, dtype, job["seed"])
    counter = al.CountingModel(model)
    x_T, z = _inputs(job["size"], device, dtype, job["seed"])
    params = list(unet.requires_grad_(True).parameters()) if job["theta"] else []
    times = al.time_grid(schedule, steps)
    kwargs = METHODS[method]

    def gradient(n):
        x, zz = x_T.clone().requires_grad_(True), z.clone().requires_grad_(True)
        x0 = al.sample(counter, schedule, x, zz, steps=n, params=params, **kwargs)
        forwards = counter.forwards
        c_mid, w_mid = _clock(device)
        grads = torch.autograd.grad(x0.float().square().mean(), [x, zz, *params])
        return x0.detach(), grads, forwards, (c_mid, w_mid)

    with torch.no_grad():  # warm-up and the unit of time: one plain DDIM sampling pass
        al.solve(model, schedule, x_T, z, times[:3])
        c0, w0 = _clock(device)
        al.solve(model, schedule, x_T, z, times)
        c1, w1 = _clock(device)
    base_rss = _rss_mib()
    out = dict(load_average=os.getloadavg(), build_s=build_s, plain_wall_s=w1 - w0, plain_cpu_s=c1 - c0,
               plain_step_ms=1e3 * (w1 - w0) / steps)
    try:
        gradient(min(2, steps))  # warm-up of this method's backward kernels (on a CPU: a peak below the measured one)
    except TypeError as error:  # the method refuses these inputs (reversible: bf16/fp16 states)
        return dict(out, status="refused", reason=str(error)), None
    counter.reset()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base_allocated = torch.cuda.memory_allocated()
    c2, w2 = _clock(device)
    x0, grads, forwards, (c3, w3) = gradient(steps)
    c4, w4 = _clock(device)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base_allocated) / 2**20
        out.update(peak_reserved_mib=torch.cuda.max_memory_reserved() / 2**20,
                   inputs_allocated_mib=base_allocated / 2**20)
    else:
        peak = _rss_mib() - base_rss
        out.update(peak_rss_mib=_rss_mib(), baseline_rss_mib=base_rss)
    out.update(status="ok", peak_mib=peak, grad_wall_s=w4 - w2, grad_cpu_s=c4 - c2, sampling_wall_s=w3 - w2,
               backward_wall_s=w4 - w3, grad_over_plain=(w4 - w2) / (w1 - w0),
               grad_over_plain_cpu=(c4 - c2) / max(c1 - c0, 1e-9),
               nfe=dict(forward=forwards, backward_forward=counter.forwards - forwards, backward_vjp=counter.vjps,
                        total=counter.total))
    arrays = dict(x0=x0, x_T=grads[0], z=grads[1])
    if params:
        named = dict(zip([n for n, _ in unet.named_parameters()], grads[2:]))
        arrays["theta_probe"] = torch.cat([named[n].flatten() for n in THETA_PROBE])
        out["theta_grad_norm"] = float(torch.sqrt(sum(g.double().square().sum() for g in grads[2:])))
    arrays = {k: v.detach().double().cpu().numpy() for k, v in arrays.items()}
    finite = all(np.isfinite(a).all() for a in arrays.values())
    if not finite:
        out.update(status="non-finite", reason="x_0 or a gradient has NaN/Inf")
    return out, arrays


def _child(conn, job):
    """Process entry: run the job, send (figures, arrays) back; every failure becomes a status, never a hang."""
    try:
        if job["kind"] == "model":
            result = (dict(status="ok", **run_model_stage(job)), None)
        else:
            result = run_method(job)
    except torch.cuda.OutOfMemoryError as error:
        result = (dict(status="out of memory", reason=str(error).splitlines()[0]), None)
    except FloatingPointError as error:
        result = (dict(status="non-finite", reason=str(error)), None)
    except Exception as error:  # noqa: BLE001 - reported, with its traceback, in the JSON
        result = (dict(status="error", reason=repr(error), traceback=traceback.format_exc()[-2000:]), None)
    conn.send(result)
    conn.close()


# ---------------------------------------------------------------------------------------------- parent side


def run_stage(job, timeout, start_method):
    """Run one job in its own process (``start_method``: fork or spawn) with a wall-clock limit."""
    ctx = mp.get_context(start_method)
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(send, job), daemon=True)
    started = time.perf_counter()
    process.start()
    send.close()  # the child holds the only writer: its death shows here as EOF
    timed_out = False
    try:
        if receive.poll(timeout):
            result = receive.recv()
        else:
            timed_out = True
            result = (dict(status="timeout", reason=f"stopped after {timeout:.3g} s (its stage limit)"), None)
    except EOFError:
        result = None
    finally:
        process.join(0 if timed_out else 30)
        if process.is_alive():
            process.terminate()
            process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
    if result is None:
        result = (dict(status="crashed", reason=f"the process ended with exit code {process.exitcode} and no result "
                                                "(killed for memory?)"), None)
    result[0]["stage_wall_s"] = time.perf_counter() - started
    return result


def _rel(a, b):
    den = math.sqrt(float(np.sum(b * b)))
    return math.sqrt(float(np.sum((a - b) ** 2))) / den if den > 0 else math.nan


def compare(runs, arrays):
    """Relative difference of each method's x_T, z (and θ-probe) gradients and x_0 from the reference at its N:
    backprop, or checkpoint (the same number) where backprop did not finish."""
    for run in runs:
        run.pop("rel_diff", None)
        if run["status"] != "ok":
            continue
        n = run["steps"]
        reference = next((m for m in ("backprop", "checkpoint") if (m, n) in arrays), None)
        if reference is None:
            continue
        ref, got = arrays[(reference, n)], arrays[(run["method"], n)]
        run["reference"] = reference
        run["rel_diff"] = {k: _rel(got[k], ref[k]) for k in ref if k in got}


def checks(results):
    """The verdicts above, from the runs' relative differences (float32 only)."""
    out = []
    tolerance = ROUNDOFF_TOLERANCE.get(results["config"]["dtype"])
    if tolerance is None:
        return out
    ok = {(r["method"], r["steps"]): r for r in results["runs"]
          if r["status"] == "ok" and r.get("reference") == "backprop"}
    for (method, n), run in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        keys = {"checkpoint": ("x_T", "z", "x0"), "adjoint": ("x0",)}.get(method, ())
        for key in keys:
            value = run["rel_diff"][key]
            out.append(dict(check=f"{method} {key} = backprop's up to round-off", steps=n, value=value,
                            tolerance=tolerance, passed=bool(value <= tolerance)))
    steps = sorted({n for (m, n) in ok if m == "backprop"})
    if len(steps) >= 2:
        lo, hi = steps[0], steps[-1]
        for method in ("adjoint", "reversible"):
            if (method, lo) in ok and (method, hi) in ok:
                for key in ("x_T", "z"):
                    a, b = ok[(method, lo)]["rel_diff"][key], ok[(method, hi)]["rel_diff"][key]
                    order = math.log(a / b) / math.log(hi / lo) if a > 0 and b > 0 else math.nan
                    out.append(dict(check=f"{method} {key} gap to backprop shrinks as N^-1", steps=[lo, hi],
                                    gaps=[a, b], value=order, range=list(ORDER_RANGE),
                                    passed=bool(ORDER_RANGE[0] <= order <= ORDER_RANGE[1])))
    return out


def environment(device):
    out = dict(device=str(device), torch=torch.__version__, python=platform.python_version(),
               torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(), load_average=os.getloadavg())
    try:
        import diffusers

        out["diffusers"] = diffusers.__version__
    except ImportError:
        out["diffusers"] = None
    if torch.device(device).type == "cuda":  # spawn children: querying CUDA here is safe
        out.update(name=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   total_memory_gib=torch.cuda.get_device_properties(device).total_memory / 2**30)
    return out


def table(results):
    lines = []
    cfg, model = results["config"], results.get("model", {})
    lines.append(f"{cfg['size']} UNet ({model.get('parameters', 0) / 1e6:.1f} M parameters), latents "
                 f"{tuple(cfg['latent_shape'])}, prompt {tuple(cfg['prompt_shape'])}, {cfg['dtype']}"
                 f"{' (TF32 off)' if cfg['dtype'] == 'float32' else ''}, device {cfg['device']}, "
                 f"wrt {'x_T, z, θ' if cfg['theta'] else 'x_T, z'}")
    if model.get("status") == "ok":
        lines.append(f"one forward: {model['forward_ms']:.1f} ms, {model['forward_gflop']:.1f} GFLOP; autograd keeps "
                     f"{model['saved_activations_mib']:.1f} MiB per forward evaluation")
    elif model:
        lines.append(f"model stage: {model.get('status')} {model.get('reason', '')}")
    theta = " rel θprobe" if cfg["theta"] else ""
    lines.append(f"{'method':11s} {'N':>4s} {'status':>8s} {'peak MiB':>10s} {'grad s':>9s} {'× plain':>8s} "
                 f"{'NFE f/bf/vjp':>14s} {'rel x_T':>9s} {'rel z':>9s}{theta}  reference")
    for r in results["runs"]:
        if r["status"] != "ok":
            lines.append(f"{r['method']:11s} {r['steps']:4d} {r['status']:>8s}  {r.get('reason', '')[:90]}")
            continue
        nfe = f"{r['nfe']['forward']}/{r['nfe']['backward_forward']}/{r['nfe']['backward_vjp']}"
        rel = r.get("rel_diff", {})
        lines.append(f"{r['method']:11s} {r['steps']:4d} {'ok':>8s} {r['peak_mib']:10.1f} {r['grad_wall_s']:9.3f} "
                     f"{r['grad_over_plain']:8.2f} {nfe:>14s} {rel.get('x_T', math.nan):9.2e} "
                     f"{rel.get('z', math.nan):9.2e}"
                     f"{format(rel.get('theta_probe', math.nan), '10.2e') if theta else ''}  {r.get('reference', '-')}")
    lines.append(f"memory: {cfg['memory_definition']}")
    lines.append(f"time: {cfg['time_definition']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=SIZES, default="sd15")
    parser.add_argument("--steps", type=int, nargs="+", default=[50], help="sampling steps N (default 50)")
    parser.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS),
                        help="gradient methods (none: the model stage only)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument("--theta", action="store_true", help="also differentiate w.r.t. every UNet parameter")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per measurement (default: 1 on a "
                        "CPU, as benchmarks/grad_memory_time.py: on a shared 2-core machine two OpenMP threads made a "
                        "forward pass up to 100x slower; torch's default on CUDA)")
    parser.add_argument("--forward-repeats", type=int, default=5)
    parser.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole run")
    parser.add_argument("--stage-timeout-s", type=float, default=240.0, help="limit of one measurement")
    parser.add_argument("--min-stage-s", type=float, default=20.0, help="skip a stage with less than this left")
    parser.add_argument("--start-method", choices=("fork", "spawn"), default=None,
                        help="how each measurement's process starts (default: fork on a CPU, spawn on CUDA, whose "
                             "context cannot be forked)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (written atomically)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    device = torch.device(args.device).type if ":" not in args.device else args.device
    spec = SIZES[args.size]
    unet_config = {k: list(v) if isinstance(v, tuple) else v for k, v in spec["unet"].items()}
    config = dict(size=args.size, unet=unet_config, latent_shape=[1, 4, spec["latent"], spec["latent"]],
                  prompt_shape=[1, spec["tokens"], spec["unet"]["cross_attention_dim"]], dtype=args.dtype,
                  device=device, steps=args.steps, methods=args.methods, theta=args.theta, seed=args.seed,
                  tf32=False if args.dtype == "float32" else None,
                  schedule=dict(type="adjointlib.DiscreteVP from diffusers.DDIMScheduler", **SD15_BETAS,
                                grid="adjointlib.time_grid: λ-uniform, t = 999 → 0"),
                  sample_kwargs={m: METHODS[m] for m in args.methods},
                  loss="mean(x_0²)", weights=f"random, torch.manual_seed({args.seed}) on the device",
                  theta_probe=list(THETA_PROBE) if args.theta else None,
                  memory_definition=("peak allocated during the gradient above the allocation before it (weights, "
                                     "inputs): torch.cuda.max_memory_allocated" if device.startswith("cuda") else
                                     "peak RSS during the gradient above the peak RSS after one plain no-grad "
                                     "sampling pass (weights, inputs, one no-grad pass's transients): VmHWM"),
                  time_definition="wall clock of sample() + autograd.grad (CUDA synchronised), and that over one "
                                  "plain no-grad DDIM pass of N steps timed in the same process",
                  budget_s=args.budget_s, stage_timeout_s=args.stage_timeout_s)
    start_method = args.start_method or ("spawn" if device.startswith("cuda") else "fork")
    config["start_method"] = start_method
    if start_method == "fork":  # forked children then start with everything imported
        import adjointlib  # noqa: F401
        from diffusers import DDIMScheduler, UNet2DConditionModel  # noqa: F401
        from torch.utils.flop_counter import FlopCounterMode  # noqa: F401
    results = dict(benchmark="sd15_unet_memory_time", argv=sys.argv[1:] if argv is None else list(argv),
                   environment=environment(device), config=config, runs=[])
    threads = args.threads if args.threads is not None else (0 if device.startswith("cuda") else 1)
    config["threads"] = threads or torch.get_num_threads()
    base_job = dict(device=device, size=args.size, dtype=args.dtype, seed=args.seed, threads=threads,
                    theta=args.theta, forward_repeats=args.forward_repeats)
    arrays = {}

    def write():
        results["seconds"] = time.perf_counter() - started
        results["complete"] = results.get("model", {}).get("status") == "ok" and all(
            r["status"] in ("ok", "refused") for r in results["runs"])
        results["checks"] = checks(results)
        results["pass"] = all(c["passed"] for c in results["checks"])
        if args.out is not None:
            from adjointlib.atomic import write_text_atomic

            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(args.out, json.dumps(results, indent=2))

    def budget_left():
        return args.budget_s - (time.perf_counter() - started)

    stages = [("model", None)] + [(m, n) for n in args.steps for m in args.methods]
    for name, steps in stages:
        left = budget_left()
        entry = dict(method=name, steps=steps) if name != "model" else {}
        if left < args.min_stage_s:
            entry.update(status="skipped", reason=f"time budget: {max(left, 0):.3g} s of {args.budget_s:.3g} s left "
                                                  f"(< {args.min_stage_s:.3g} s per stage)")
            got = None
        else:
            job = dict(base_job, kind="model" if name == "model" else "method", method=name, steps=steps)
            figures, got = run_stage(job, min(args.stage_timeout_s, left), start_method)
            entry.update(figures)
        if name == "model":
            results["model"] = entry
            log(f"model: {entry.get('status')} " + (f"{entry['parameters'] / 1e6:.1f} M parameters, forward "
                f"{entry['forward_ms']:.1f} ms" if entry.get("status") == "ok" else entry.get("reason", "")))
        else:
            results["runs"].append(entry)
            if got is not None:
                arrays[(name, steps)] = got
            compare(results["runs"], arrays)
            log(f"{name} N={steps}: {entry['status']}" + (
                f", {entry['peak_mib']:.1f} MiB, {entry['grad_wall_s']:.2f} s = {entry['grad_over_plain']:.2f} × plain"
                if entry["status"] == "ok" else f" ({entry.get('reason', '')[:200]})"))
        write()  # after every stage: a call stopped from outside still leaves the finished stages
    print(table(results))
    for c in results["checks"]:
        bound = f"≤ {c['tolerance']:.0e}" if "tolerance" in c else f"in [{c['range'][0]}, {c['range'][1]}]"
        print(f"{'PASS' if c['passed'] else 'FAIL'}  {c['check']} (N = {c['steps']}): {c['value']:.3g} {bound}")
    if not results["checks"]:
        print(f"no verdicts ({args.dtype}: figures reported, not judged)" if args.dtype != "float32" else
              "no verdicts (needs backprop, and two N for the orders)")
    print(f"{'complete' if results['complete'] else 'INCOMPLETE'} in {results['seconds']:.0f} s; "
          f"{sum(c['passed'] for c in results['checks'])}/{len(results['checks'])} checks pass")
    return results


if __name__ == "__main__":
    results = main()
    sys.exit(0 if results["complete"] and results["pass"] else 1)

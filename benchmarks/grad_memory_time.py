"""Peak memory against N and time per gradient for every gradient method, on the small UNet.

Each (method, N) runs in a fresh subprocess with one thread: it builds the UNet (benchmarks/small_unet.py,
float32), times one plain sampling pass under no_grad (DDIM, or DPM-Solver-2M for second-order
methods) as the unit of time, records its baseline peak memory, then runs sample(gradient=...) and
the backward pass.  Memory: CPU peak RSS (getrusage) above that baseline; CUDA: max_memory_allocated.
Time: (sampling + backward) / plain sampling, in process CPU time and wall time; NFE from CountingModel.
Writes results/gradients/memory_time.csv and memory.png (atomically).

    python benchmarks/grad_memory_time.py [--steps 10 50 200 500] [--device cuda]
Targets (issue 4): adjoint, checkpoint and reversible peak memory flat in N (≤ 15 % growth from the
smallest to the largest N); backprop growing linearly.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

METHODS = ["adjoint-1", "adjoint-2M", "adjoint-1 (recomputed)", "backprop-1", "checkpoint-1", "blackbox-rk4",
           "reversible-1", "reversible-2"]



def _clock(device):
    if device == "cuda":
        torch.cuda.synchronize()
    return time.process_time(), time.perf_counter()


def child(method, steps, device, batch, size, channels):
    import adjointlib as al
    from adjointlib.gradients.compare import METHODS as SPECS
    from small_unet import small_unet

    torch.set_num_threads(1)
    schedule = al.LinearVP()
    model, z_dim, shape = small_unet(schedule, channels=channels, size=size, dtype=torch.float32)
    model = model.to(device)
    counter = al.CountingModel(model)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(batch, *shape, generator=g).to(device)
    z = torch.randn(batch, z_dim, generator=g).to(device)
    spec = SPECS[method]
    sampler = "dpm-solver-2m" if method.endswith(("2M", "-2")) else "ddim"  # the unit: a plain pass of that order
    times = al.time_grid(schedule, steps)
    with torch.no_grad():  # warm-up and the unit of time: one plain sampling pass
        al.solve(model, schedule, x_T, z, times[:3], sampler=sampler)
        c0, w0 = _clock(device)
        al.solve(model, schedule, x_T, z, times, sampler=sampler)
        c1, w1 = _clock(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_bytes(device)
    x = x_T.clone().requires_grad_(True)
    zz = z.clone().requires_grad_(True)
    c2, w2 = _clock(device)
    x0 = al.sample(counter, schedule, x, zz, steps=steps, **spec)
    forward_evals = counter.forwards
    c3, w3 = _clock(device)
    x0.square().mean().backward()
    c4, w4 = _clock(device)
    peak = peak_bytes(device)
    print(json.dumps(dict(method=method, steps=steps, device=device, peak_mib=peak / 2**20,
                          above_baseline_mib=(peak - baseline) / 2**20, plain_cpu_s=c1 - c0, plain_wall_s=w1 - w0,
                          grad_cpu_s=c4 - c2, grad_wall_s=w4 - w2, forward_cpu_s=c3 - c2,
                          nfe_forward=forward_evals, nfe_backward_forward=counter.forwards - forward_evals,
                          nfe_backward_vjp=counter.vjps)))


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradbench import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for k, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        sel = [r for r in rows if r["method"] == method]
        style = "--" if "recomputed" in method else ("-." if method.startswith("checkpoint") else "-")
        color = plt.cm.tab10(k % 10)
        axes[0].plot([r["steps"] for r in sel], [r["above_baseline_mib"] for r in sel], style, marker="o", color=color,
                     label=method)
        axes[1].plot([r["steps"] for r in sel], [r["grad_cpu_s"] / r["plain_cpu_s"] for r in sel], style, marker="o",
                     color=color, label=method)
    axes[0].set_xlabel("sampling steps N")
    axes[0].set_ylabel("peak memory above baseline (MiB)")
    axes[0].set_yscale("log")
    axes[0].set_title("peak memory of one gradient")
    axes[1].set_xlabel("sampling steps N")
    axes[1].set_ylabel("(sampling + backward) / plain sampling, CPU time")
    axes[1].set_title("time per gradient relative to one sampling pass")
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 200, 500])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs=2, default=[32, 64])
    parser.add_argument("--out", default=None)
    parser.add_argument("--tag", default="", help="suffix of the output names (memory_time{tag}.csv, memory{tag}.png)")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    common = ["--device", args.device, "--batch", str(args.batch), "--size", str(args.size),
              "--channels", *map(str, args.channels)]
    if args.child:
        return child(args.child[0], int(args.child[1]), args.device, args.batch, args.size, tuple(args.channels))
    from gradbench import RESULTS, write_csv

    out = Path(args.out) if args.out else RESULTS
    rows = []
    for method in args.methods:
        for steps in args.steps:
            res = subprocess.run([sys.executable, __file__, *common, "--child", method, str(steps)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"done {method} N={steps}: {r['above_baseline_mib']:.1f} MiB, "
                  f"{r['grad_cpu_s'] / r['plain_cpu_s']:.2f}x", file=sys.stderr, flush=True)
    write_csv(out / f"memory_time{args.tag}.csv", rows)
    plot(rows, out / f"memory{args.tag}.png")
    print(f"device={args.device} batch={args.batch} image=3x{args.size}x{args.size} UNet channels={args.channels} "
          "float32, 1 thread")
    print(f"{'method':24s} {'N':>4s} {'peak MiB':>9s} {'above base':>10s} {'NFE f/bf/vjp':>16s} "
          f"{'cpu ratio':>9s} {'wall ratio':>10s}")
    for r in rows:
        nfe = f"{r['nfe_forward']}/{r['nfe_backward_forward']}/{r['nfe_backward_vjp']}"
        print(f"{r['method']:24s} {r['steps']:4d} {r['peak_mib']:9.1f} {r['above_baseline_mib']:10.1f} {nfe:>16s} "
              f"{r['grad_cpu_s'] / r['plain_cpu_s']:9.2f} {r['grad_wall_s'] / r['plain_wall_s']:10.2f}")
    print("memory growth above baseline, smallest → largest N (target ≤ 15 % for adjoint, checkpoint, reversible):")
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        growth = sel[-1]["above_baseline_mib"] / sel[0]["above_baseline_mib"] - 1
        print(f"  {method:24s} {100 * growth:8.1f} %")


if __name__ == "__main__":
    main()

"""Peak memory and time of sample() + backward (AdjointDEIS) versus plain autograd through the sampler.

For a convolutional ε-model with large activations, each configuration runs in a fresh subprocess
and reports its peak memory (CPU: peak RSS; CUDA: torch.cuda.max_memory_allocated) above the
process's baseline after building the model and one warm-up evaluation.  Also printed: the wall time
of the adjoint backward pass relative to the network work it must do (M forward evaluations + M
VJPs, timed alone), i.e. the library's overhead.

    python benchmarks/adjoint_memory_time.py [--device cuda] [--steps 10 50 200]
Targets (issue 2): adjoint peak memory flat in N (≤ 15 % growth from N = 10 to 200); overhead ≤ 10 %.
"adjoint" records the states (N states of the image's size are kept, as in the paper);
"adjoint-recompute" (``Adjoint(recompute=True)``) rebuilds them backwards and keeps O(1) of everything.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from torch import nn

import adjointlib as al
from gradbench import peak_bytes
from adjointlib.models import model_vjp


class ConvEpsModel(nn.Module):
    """A plain conv net with large activations: 6 × (3×3 conv, 64 channels, SiLU) at full resolution."""

    def __init__(self, channels=64, depth=6):
        super().__init__()
        layers = [nn.Conv2d(3, channels, 3, padding=1), nn.SiLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU()]
        layers += [nn.Conv2d(channels, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x, t, z=None):
        return x + 0.1 * self.net(x) * t.view(-1, 1, 1, 1)



def child(method, steps, device, batch, size):
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    schedule = al.LinearVP()
    model = ConvEpsModel().to(device)
    x_T = torch.randn(batch, 3, size, size, device=device, requires_grad=True)
    params = list(model.parameters())
    model_vjp(model, x_T.detach(), 0.5, None, torch.randn_like(x_T), params)  # warm-up: allocator, kernels
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_bytes(device)
    start = time.perf_counter()
    if method.startswith("adjoint"):
        x0 = al.sample(model, schedule, x_T, steps=steps, gradient=al.Adjoint(recompute=method != "adjoint"))
    else:
        x0, _ = al.solve(model, schedule, x_T, None, steps)
    forward_time = time.perf_counter() - start
    start = time.perf_counter()
    x0.square().sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    backward_time = time.perf_counter() - start
    peak = peak_bytes(device)
    result = dict(method=method, steps=steps, peak_mib=peak / 2**20, above_baseline_mib=(peak - baseline) / 2**20,
                  forward_s=forward_time, backward_s=backward_time)
    if method.startswith("adjoint"):  # the network work of the backward pass alone: `steps` evaluations + VJPs
        times = al.time_grid(schedule, steps)
        a = torch.randn_like(x_T)
        start = time.perf_counter()
        for t in times[1:]:
            model_vjp(model, x_T.detach(), float(t), None, a, params)
        if device == "cuda":
            torch.cuda.synchronize()
        result["network_work_s"] = time.perf_counter() - start
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "STEPS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.device, args.batch, args.size)
    rows = []
    for method in ("adjoint", "adjoint-recompute", "backprop"):
        for steps in args.steps:
            out = subprocess.run([sys.executable, __file__, "--device", args.device, "--batch", str(args.batch),
                                  "--size", str(args.size), "--child", method, str(steps)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"done {method} N={steps}", file=sys.stderr)
    print(f"device={args.device} batch={args.batch} image=3x{args.size}x{args.size} model=ConvEpsModel(64 ch, depth 6)")
    print(f"{'method':17s} {'N':>4s} {'peak MiB':>9s} {'above base MiB':>15s} {'fwd s':>7s} {'bwd s':>7s} {'bwd/net work':>13s}")
    for r in rows:
        ratio = f"{r['backward_s'] / r['network_work_s']:.3f}" if "network_work_s" in r else "-"
        print(f"{r['method']:17s} {r['steps']:4d} {r['peak_mib']:9.1f} {r['above_baseline_mib']:15.1f} "
              f"{r['forward_s']:7.2f} {r['backward_s']:7.2f} {ratio:>13s}")
    for method in ("adjoint", "adjoint-recompute"):
        adj = [r for r in rows if r["method"] == method]
        growth = adj[-1]["above_baseline_mib"] / adj[0]["above_baseline_mib"] - 1
        print(f"{method}: memory growth above baseline N={adj[0]['steps']}→{adj[-1]['steps']}: {100 * growth:.1f}%, "
              f"total peak growth {100 * (adj[-1]['peak_mib'] / adj[0]['peak_mib'] - 1):.1f}% (target ≤ 15%); "
              f"backward overhead beyond network work: "
              + ", ".join(f"N={r['steps']} {100 * (r['backward_s'] / r['network_work_s'] - 1):+.1f}%" for r in adj)
              + " (target ≤ 10%)")


if __name__ == "__main__":
    main()

"""How much a morph depends on its batch-mates, the CPU thread count and float32 round-off, and why.

One pair (default 250, the issue's example) is morphed by DiM + AdjointDEIS-1 (ODE), the main method, in
several ways on the CPU: alone, in a batch of 2 and of 8 (with the next pairs of the random order), with 1
and 2 threads; then alone with x_T perturbed by a relative 1e-6 (a round-off-sized change), once with
L*_ID and once with the smooth part L_ID = d_a + d_b only (no |d_a − d_b| term), to find which part
amplifies round-off.  Each case records the L*_ID trajectory, the final uint8 morph and both FR systems'
scores; the JSON gives every case's difference from the reference (alone, 1 thread).

    python scripts/measure_morph_determinism.py --out results/morphs/determinism.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adjointlib.atomic import write_text_atomic  # noqa: E402
from adjointlib.faces import load_morph_pairs, tensor_to_images  # noqa: E402
from adjointlib.facemodel.pretrained import load_default_face_model  # noqa: E402
from adjointlib.morph import MorphJob, dim_start, method_settings, optimise_morph, select_pairs  # noqa: E402
from adjointlib.morph.identity import identity_loss  # noqa: E402


def smooth_identity_loss(system, morph, v_a, v_b):
    """L_ID = d(v_ab, v_a) + d(v_ab, v_b): eq. 5.1 without the non-smooth imbalance term |d_a − d_b|."""
    v_ab = system(morph)
    return system.distance(v_ab, v_a.to(v_ab)) + system.distance(v_ab, v_b.to(v_ab))


def morph_case(job, batch, target, threads, perturb=0.0, loss_fn=identity_loss, settings=None):
    torch.set_num_threads(threads)
    settings = settings or method_settings("adjointdeis1_ode")
    started = time.perf_counter()
    x_a, x_b, v_a, v_b = job.contributors(batch)
    start = dim_start(job.model, x_a, x_b, steps=settings.steps)
    x_T = start.x_T
    if perturb:
        noise = torch.randn(x_T.shape, generator=torch.Generator().manual_seed(1))
        x_T = x_T + perturb * x_T.abs().max() * noise
    result = optimise_morph(job.model, job.loss_system, x_T, start.z, v_a, v_b, settings, loss_fn=loss_fn)
    k = [p["pair"] for p in batch].index(target)
    image = tensor_to_images(result.x0[k:k + 1])
    final = float(identity_loss(job.loss_system, result.x0[k:k + 1], v_a[k:k + 1], v_b[k:k + 1]))
    scores = {name: s[0].tolist() for name, s in job.scores(image, [batch[k]]).items()}
    return {"batch": [p["pair"] for p in batch], "threads": threads, "perturb": perturb,
            "loss_fn": loss_fn.__name__, "x_T": start.x_T[k].clone(), "trajectory": result.losses[:, k].tolist(),
            "final_l_star": final, "image": image[0], "scores": scores, "seconds": time.perf_counter() - started}


def compare(case, reference, thresholds):
    trajectory = np.abs(np.array(case["trajectory"]) - np.array(reference["trajectory"]))
    first = int(np.argmax(trajectory > 1e-3)) if (trajectory > 1e-3).any() else None
    return {"max_x_T_difference": float((case["x_T"] - reference["x_T"]).abs().max()),
            "loss_difference_by_step": [float(f"{v:.3g}") for v in trajectory],
            "first_step_loss_differs_by_1e-3": first,
            "final_l_star_difference": case["final_l_star"] - reference["final_l_star"],
            "max_pixel_difference": int(np.abs(case["image"].astype(int) - reference["image"].astype(int)).max()),
            "score_differences": {s: [a - b for a, b in zip(case["scores"][s], reference["scores"][s])]
                                  for s in case["scores"]},
            "decision_changed": {s: (min(case["scores"][s]) > t) != (min(reference["scores"][s]) > t)
                                 for s, t in thresholds.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", type=int, default=250)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "morphs" / "determinism.json")
    parser.add_argument("--quick", action="store_true", help="2 optimisation steps (for testing)")
    args = parser.parse_args(argv)
    pairs = {p["pair"]: p for p in load_morph_pairs()}
    order = [p for p in select_pairs(list(pairs.values())) if p["pair"] != args.pair]
    target = pairs[args.pair]
    job = MorphJob(load_default_face_model())
    settings = method_settings("adjointdeis1_ode", n_opt=2 if args.quick else None)
    run = lambda batch, threads, **kw: morph_case(job, batch, args.pair, threads, settings=settings, **kw)  # noqa: E731
    cases = {
        "alone, 1 thread": run([target], 1),
        "alone, 2 threads": run([target], 2),
        "batch of 2, 1 thread": run([target] + order[:1], 1),
        "batch of 8, 1 thread": run([target] + order[:7], 1),
        "batch of 8, 2 threads": run([target] + order[:7], 2),
        "alone, x_T perturbed 1e-6, L*_ID": run([target], 1, perturb=1e-6),
        "alone, smooth L_ID": run([target], 1, loss_fn=smooth_identity_loss),
        "alone, x_T perturbed 1e-6, smooth L_ID": run([target], 1, perturb=1e-6, loss_fn=smooth_identity_loss),
    }
    thresholds = job.thresholds()
    reference = cases["alone, 1 thread"]
    smooth_reference = cases["alone, smooth L_ID"]
    report = {"pair": args.pair, "method": "adjointdeis1_ode", "settings": settings.to_dict(),
              "torch": torch.__version__, "thresholds": thresholds, "cases": {}}
    for name, case in cases.items():
        ref = smooth_reference if case["loss_fn"] == "smooth_identity_loss" else reference
        report["cases"][name] = {"batch": case["batch"], "threads": case["threads"], "seconds": round(case["seconds"], 1),
                                 "final_l_star": case["final_l_star"], "trajectory": case["trajectory"],
                                 "scores": case["scores"], "versus_reference": compare(case, ref, thresholds)}
        diff = report["cases"][name]["versus_reference"]
        print(f"{name:42s} final L*_ID {case['final_l_star']:.4f} (Δ {diff['final_l_star_difference']:+.2e}), "
              f"max Δpixel {diff['max_pixel_difference']:3d}, Δx_T {diff['max_x_T_difference']:.1e}, "
              f"first step Δloss > 1e-3: {diff['first_step_loss_differs_by_1e-3']}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

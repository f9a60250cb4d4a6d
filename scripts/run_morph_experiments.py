"""The face-morph experiments: analogues of the paper's Tables 1, 4, 5 and 6 (paper-notes §8.7-8.8).

Every row runs ``adjointlib.morph.run_morphs`` (DiM start, 50 steps of gradient descent on L*_ID with
the row's gradient method) on the same fixed pair subset, into ``results/morphs/runs/<row>/`` (morph
PNGs, one JSON line per pair; resumable: re-run the same command after an interruption), then writes
``results/morphs/table<K>.csv`` and prints the tables.  The classic baselines are scored at the model's
resolution with the same protocol.

Usage:  python scripts/run_morph_experiments.py --tables 1 --pairs 16 [--model DIR] [--threads 2]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from adjointlib.faces import frll_baseline_morphs, images_to_tensor, load_morph_pairs, mmpmr  # noqa: E402
from adjointlib.facemodel.pretrained import DEFAULT_MODEL_DIR, load_face_model  # noqa: E402
from adjointlib.morph import (MorphJob, identity_loss, method_settings, mmpmr_rows, run_morphs,  # noqa: E402
                              select_pairs)

#: row name -> (label, method preset, overrides); "baseline:<name>" rows are not optimised.
ROWS = {
    "pixel_blend": ("Pixel blend", "baseline:pixel_blend", {}),
    "landmark_morph": ("Landmark morph (Delaunay)", "baseline:landmark_morph", {}),
    "dim": ("DiM (Alg. 2)", "dim", {}),
    "adjointdeis1_ode": ("DiM + AdjointDEIS-1 (ODE)", "adjointdeis1_ode", {}),
    "adjointdeis1_sde": ("DiM + AdjointDEIS-1 (SDE)", "adjointdeis1_sde", {}),
    "adjointdeis2m_ode": ("DiM + AdjointDEIS-2M (ODE)", "adjointdeis2m_ode", {}),
    "checkpoint": ("DiM + checkpointed backprop", "checkpoint", {}),
    "reversible": ("DiM + reversible solver", "reversible", {}),
    "ode_M5": ("ODE, M = 5", "adjointdeis1_ode", {"adjoint_steps": 5}),
    "ode_M10": ("ODE, M = 10", "adjointdeis1_ode", {"adjoint_steps": 10}),
    "ode_M15": ("ODE, M = 15", "adjointdeis1_ode", {"adjoint_steps": 15}),
    "ode_recompute": ("ODE, states recomputed by DDIM", "adjointdeis1_ode", {"record": False}),
}
for _sde in (False, True):
    for _lr in (1.0, 0.1, 0.01):
        for _m in (5, 10, 20):
            _name = f"{'sde' if _sde else 'ode'}_lr{_lr:g}_M{_m}"
            _base = "adjointdeis1_sde" if _sde else "adjointdeis1_ode"
            ROWS.setdefault(_name, (f"{'SDE' if _sde else 'ODE'}, η = {_lr:g}, M = {_m}", _base,
                                    {"lr": _lr, "adjoint_steps": _m}))

#: The tables; rows that equal another (same settings) share its run folder (see ``run_folder``).
TABLES = {
    "1": ["pixel_blend", "landmark_morph", "dim", "adjointdeis1_ode", "adjointdeis1_sde", "adjointdeis2m_ode",
          "checkpoint", "reversible"],
    "4": ["ode_M5", "ode_M10", "ode_M15", "adjointdeis1_ode"],
    "5": ["ode_recompute", "adjointdeis1_ode"],
    "6": [f"{k}_lr{lr:g}_M{m}" for k in ("ode", "sde") for lr in (1.0, 0.1, 0.01) for m in (5, 10, 20)],
}


def run_folder(out: Path, name: str) -> Path:
    """Rows with identical settings (e.g. ode_lr0.1_M20 and adjointdeis1_ode) share one folder."""
    label, method, overrides = ROWS[name]
    canonical = {n: r for n, r in ROWS.items() if not r[1].startswith("baseline:")}
    settings = method_settings(method, **overrides)
    for other, (_, m, o) in canonical.items():
        if method_settings(m, **o) == settings:
            return out / "runs" / other
    return out / "runs" / name


def baseline_rows(job: MorphJob, method: str, pairs: list[dict]) -> list[dict]:
    """MMPMR (and L*_ID) of a classic baseline made at 256 px and area-resized to the model's size."""
    images = frll_baseline_morphs(method, pairs, job.size)
    scores = job.scores(images, pairs)
    _, _, v_a, v_b = job.contributors(pairs)
    with torch.no_grad():
        loss = float(identity_loss(job.loss_system, images_to_tensor(images), v_a, v_b).mean())
    rows = []
    for name, threshold in job.thresholds().items():
        value = mmpmr(scores[name], threshold)
        rows.append({"system": name, "mmpmr": value, "accepted": int(round(value * len(pairs))),
                     "n_morphs": len(pairs), "nfe": 0.0, "seconds": float("nan"), "loss_start": loss,
                     "loss_end": loss})
    return rows


def write_table(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.4f}" if isinstance(v, float) else v for k, v in row.items()})
    tmp.replace(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="1", help="comma-separated: 1,4,5,6")
    parser.add_argument("--pairs", type=int, default=16, help="even: the N/2 most similar pairs per gender")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--out", default=str(ROOT / "results" / "morphs"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    pairs = select_pairs(load_morph_pairs(), args.pairs)
    job = MorphJob(load_face_model(args.model))
    for table in args.tables.split(","):
        table_rows = []
        for name in TABLES[table]:
            label, method, overrides = ROWS[name]
            if method.startswith("baseline:"):
                rows = baseline_rows(job, method.split(":", 1)[1], pairs)
            else:
                records = run_morphs(job, pairs, method_settings(method, **overrides), run_folder(out, name),
                                     method=method, batch_size=args.batch_size, model_name=Path(args.model).name)
                wanted = {p["pair"] for p in pairs}
                rows = mmpmr_rows([r for r in records if r["pair"] in wanted], job.thresholds())
            for row in rows:
                table_rows.append({"table": table, "row": name, "label": label, **row})
            print(f"table {table} | {label}: " + ", ".join(
                f"{r['system']} {100 * r['mmpmr']:.1f}% ({r['accepted']}/{r['n_morphs']})" for r in rows)
                + f" | NFE {rows[0]['nfe']:.0f}, {rows[0]['seconds']:.1f} s/morph", flush=True)
        write_table(out / f"table{table}.csv", table_rows)
    print(f"pairs: {len(pairs)} ({', '.join(str(p['pair']) for p in pairs)}); mean NFE/s per morph as in each row")


if __name__ == "__main__":
    main()

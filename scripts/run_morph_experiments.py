"""The face-morph experiment: its rows on a seeded random pair set, with controls, intervals and paired tests.

Two steps, so that the morphs can be made on any machine (or several) and the tables here:

    python scripts/run_morph_experiments.py run --experiment faces32 --rows key --pairs 64 [--device cuda]
    python scripts/run_morph_experiments.py tables --experiment faces32

``run`` makes each optimised row with ``adjointlib.morph.run_morphs`` (DiM start, 50 gradient steps on
L*_ID with the row's gradient method) into ``results/morphs/<experiment>/runs/<row>/``: resumable per pair,
one file per batch holding its finished pairs, stopping cleanly at ``--budget-s``.  ``tables`` merges the batch files and
writes, for each pair subset (every pair done in all rows; the first 64 of the random order; the 16 most
similar pairs), ``table.csv`` (MMPMR with exact 95 % intervals, margins, NFE, seconds), ``paired.csv``
(exact McNemar tests between rows on the same pairs, Holm-adjusted within each subset and system),
``pairs.csv`` (every pair's margin min_n S − δ per row and system), ``fmr.csv`` (the false-match rate of
probes at the morph resolution) and ``summary.json`` (pair sets, identity reuse).  The no-morph control
and the classic baselines are scored here at the morph resolution.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adjointlib import exact_float32  # noqa: E402
from adjointlib.atomic import atomic_path, write_text_atomic  # noqa: E402
from adjointlib.faces import (fmr_at_resolution, frll_baseline_morphs, holm_adjust, load_morph_pairs,  # noqa: E402
                              mcnemar_exact)
from adjointlib.faces.paths import shared_dir  # noqa: E402
from adjointlib.facemodel.pretrained import DEFAULT_MODEL_DIR, load_face_model  # noqa: E402
from adjointlib.morph import (MorphJob, MorphScorer, identity_reuse, merge_batches, method_settings,  # noqa: E402
                              mmpmr_rows, run_morphs, select_pairs)

#: experiment -> (face model folder, or None for the embedded faces32; pair order; pair seed).
EXPERIMENTS = {
    "faces32": (None, "random", 0),
    "faces64": ("models/faces64", "random", 0),
}

#: row -> (label, method preset or "control" / "baseline:<name>", overrides).
ROWS = {
    "control": ("No morph (a contributor's own photo)", "control", {}),
    "pixel_blend": ("Pixel blend", "baseline:pixel_blend", {}),
    "landmark_morph": ("Landmark morph (Delaunay)", "baseline:landmark_morph", {}),
    "dim": ("DiM (Alg. 2)", "dim", {}),
    "adjointdeis1_ode": ("DiM + AdjointDEIS-1 (ODE)", "adjointdeis1_ode", {}),
    "adjointdeis2m_ode": ("DiM + AdjointDEIS-2M (ODE)", "adjointdeis2m_ode", {}),
    "checkpoint": ("DiM + checkpointed backprop", "checkpoint", {}),
    "adjointdeis1_sde": ("DiM + AdjointDEIS-1 (SDE)", "adjointdeis1_sde", {}),
    "reversible": ("DiM + reversible solver", "reversible", {}),
    "ode_M5": ("ODE, M = 5", "adjointdeis1_ode", {"gradient_options": {"steps": 5}}),
    "ode_M10": ("ODE, M = 10", "adjointdeis1_ode", {"gradient_options": {"steps": 10}}),
    "ode_M15": ("ODE, M = 15", "adjointdeis1_ode", {"gradient_options": {"steps": 15}}),
    "ode_recompute": ("ODE, states recomputed by DDIM", "adjointdeis1_ode", {"gradient_options": {"recompute": True}}),
    "adjointdeis1_ode_bf16": ("DiM + AdjointDEIS-1 (ODE), ε-model in bf16", "adjointdeis1_ode", {"precision": "bf16"}),
}
#: Row groups for ``--rows``; "key" are the headline rows (issue 12), in the order they are made.
ROW_GROUPS = {
    "key": ["dim", "adjointdeis1_ode", "checkpoint", "adjointdeis2m_ode"],
    "ablation": ["ode_M5", "ode_M10", "ode_M15", "ode_recompute"],
}
#: Rows every table shows first (computed here, no diffusion model needed).
SCORED_ROWS = ["control", "pixel_blend", "landmark_morph"]
#: The declared paired comparisons (row_a, row_b); p-values are Holm-adjusted over this family.
COMPARISONS = [
    ("dim", "control"), ("landmark_morph", "control"),
    ("adjointdeis1_ode", "dim"), ("adjointdeis2m_ode", "dim"), ("checkpoint", "dim"),
    ("adjointdeis1_ode", "checkpoint"), ("adjointdeis2m_ode", "checkpoint"), ("adjointdeis2m_ode", "adjointdeis1_ode"),
    ("adjointdeis1_ode", "landmark_morph"), ("adjointdeis2m_ode", "landmark_morph"), ("checkpoint", "landmark_morph"),
    ("adjointdeis1_sde", "adjointdeis1_ode"), ("reversible", "checkpoint"),
    ("ode_M5", "adjointdeis1_ode"), ("ode_M10", "adjointdeis1_ode"), ("ode_M15", "adjointdeis1_ode"),
    ("ode_recompute", "adjointdeis1_ode"), ("adjointdeis1_ode_bf16", "adjointdeis1_ode"),
]
HEADLINE_SUBSET = 64


def experiment_folder(out: Path, experiment: str) -> Path:
    return out / experiment


def model_path(experiment: str, override: str | None) -> Path:
    if override:
        return Path(override)
    folder = EXPERIMENTS[experiment][0]
    return DEFAULT_MODEL_DIR if folder is None else shared_dir() / folder


def experiment_pairs(experiment: str, count: int | None = None) -> list[dict]:
    _, order, seed = EXPERIMENTS[experiment]
    return select_pairs(load_morph_pairs(), count, order=order, seed=seed)


def expand_rows(spec: str) -> list[str]:
    rows = [r for part in spec.split(",") for r in ROW_GROUPS.get(part, [part])]
    unknown = [r for r in rows if r not in ROWS or ROWS[r][1] == "control" or ROWS[r][1].startswith("baseline:")]
    if unknown:
        raise SystemExit(f"--rows: {unknown} are not rows made by `run` (choose from groups {sorted(ROW_GROUPS)} "
                         f"or {sorted(r for r, v in ROWS.items() if v[1] not in ('control',) and ':' not in v[1])})")
    return rows


def run(args) -> None:
    """Make the morphs of each row in turn, until every row is done or the budget is spent."""
    started = time.time()
    deadline = None if args.budget_s is None else started + args.budget_s
    if args.threads:
        torch.set_num_threads(args.threads)
    exact_float32(args.device)
    folder = experiment_folder(Path(args.out), args.experiment)
    path = model_path(args.experiment, args.model)
    pairs = experiment_pairs(args.experiment, args.pairs)
    job = MorphJob(load_face_model(path), device=args.device)
    for name in expand_rows(args.rows):
        _, method, overrides = ROWS[name]
        records = run_morphs(job, pairs, method_settings(method, **overrides), folder / "runs" / name,
                             method=method, batch_size=args.batch_size, model_name=path.name, deadline=deadline,
                             progress=args.progress)
        done = {r["pair"] for r in records} & {p["pair"] for p in pairs}
        secs = np.mean([r["seconds"] for r in records if r["pair"] in done]) if done else float("nan")
        print(f"{args.experiment} | {name}: {len(done)}/{len(pairs)} pairs, {secs:.2f} s/morph "
              f"({time.time() - started:.0f} s elapsed)", flush=True)
        if deadline is not None and time.time() > deadline:
            print("budget spent: stopped cleanly; run the same command again to go on", flush=True)
            break


def row_scores(scorer: MorphScorer, folder: Path, name: str, pairs: list[dict]) -> dict[int, dict] | None:
    """{pair: {system: [s_a, s_b]}} of a row on ``pairs`` (None if the row has no run folder)."""
    _, method, _ = ROWS[name]
    if method == "control":
        scores = scorer.own_photo_scores(pairs)
    elif method.startswith("baseline:"):
        scores = scorer.scores(frll_baseline_morphs(method.split(":", 1)[1], pairs, scorer.size), pairs)
    else:
        if not (folder / "runs" / name / "batches").is_dir():
            return None
        return {r["pair"]: r for r in merge_batches(folder / "runs" / name)}
    return {p["pair"]: {"scores": {s: scores[s][k].tolist() for s in scores}} for k, p in enumerate(pairs)}


def write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})


def tables(args) -> None:
    """Score the control and baselines, merge the runs, and write the tables of every subset."""
    folder = experiment_folder(Path(args.out), args.experiment)
    all_pairs = experiment_pairs(args.experiment)
    size = load_face_model(model_path(args.experiment, args.model)).config.image_size
    scorer = MorphScorer(size)
    thresholds = scorer.thresholds()
    made = {name: row_scores(scorer, folder, name, all_pairs) for name in ROWS}
    made = {name: rows for name, rows in made.items() if rows}
    common = [p for p in all_pairs if all(p["pair"] in rows for rows in made.values())]
    similar = {p["pair"] for p in select_pairs(load_morph_pairs(), 16, order="similar")}
    first = [p for p in all_pairs[:HEADLINE_SUBSET] if p in common]
    labelled = [p for p in common if p["pair"] in similar]
    subsets = {f"all{len(common)}": common}  # the labelled subsets only where every one of their pairs is done
    subsets.update({f"first{HEADLINE_SUBSET}": first} if len(first) == HEADLINE_SUBSET < len(common) else {})
    subsets.update({"similar16": labelled} if len(labelled) == len(similar) else {})
    table, paired = [], []
    for subset, pairs in subsets.items():
        ids = [p["pair"] for p in pairs]
        for name, rows in made.items():
            records = [{"nfe": 0, "seconds": float("nan"), "loss": [float("nan")], **rows[i]} for i in ids]
            table += [{"subset": subset, "row": name, "label": ROWS[name][0], **row}
                      for row in mmpmr_rows(records, thresholds)]
        for system, threshold in thresholds.items():
            accepted = {name: np.array([min(rows[i]["scores"][system]) > threshold for i in ids]) for name, rows in made.items()}
            tests = [(a, b, mcnemar_exact(accepted[a], accepted[b])) for a, b in COMPARISONS if a in made and b in made]
            for (a, b, test), p_holm in zip(tests, holm_adjust([t["p_value"] for _, _, t in tests])):
                paired.append({"subset": subset, "system": system, "row_a": a, "row_b": b, "n": test["n"],
                               "accepted_a": test["accepted_a"], "accepted_b": test["accepted_b"],
                               "only_a": test["b10"], "only_b": test["b01"], "p_value": test["p_value"],
                               "p_holm": p_holm, "differ_at_5pct": p_holm < 0.05})
    per_pair = []
    for p in common:
        entry = {k: p[k] for k in ("pair", "gender", "id_a", "id_b")}
        for name, rows in made.items():
            for system, threshold in thresholds.items():
                entry[f"{name}:{system}"] = min(rows[p["pair"]]["scores"][system]) - threshold
        per_pair.append(entry)
    fmr = [fmr_at_resolution(system, scorer.faces.neutral, scorer.bona_fide[name], scorer.faces.ids)
           for name, system in scorer.systems.items()]
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "table.csv", table)
    write_csv(folder / "paired.csv", paired)
    write_csv(folder / "pairs.csv", per_pair)
    write_csv(folder / "fmr.csv", [{k: v for k, v in f.items()} for f in fmr])
    summary = {"experiment": args.experiment, "order": EXPERIMENTS[args.experiment][1],
               "pair_seed": EXPERIMENTS[args.experiment][2], "image_size": size, "thresholds": thresholds,
               "rows": {name: ROWS[name][0] for name in made},
               "subsets": {k: {"pairs": [p["pair"] for p in v], "identity_reuse": identity_reuse(v)}
                           for k, v in subsets.items()},
               "runs": {name: json.loads((folder / "runs" / name / "config.json").read_text())
                        for name in made if (folder / "runs" / name / "config.json").is_file()}}
    write_text_atomic(folder / "summary.json", json.dumps(summary, indent=1))
    for subset in subsets:
        print(f"\n{args.experiment}, {subset}: MMPMR % [95 % CI] (accepted/n)")
        for name in made:
            cells = [f"{r['system']} {100 * r['mmpmr']:5.1f} [{100 * r['mmpmr_low']:4.1f}, {100 * r['mmpmr_high']:5.1f}] "
                     f"({r['accepted']}/{r['n_morphs']})" for r in table if r["subset"] == subset and r["row"] == name]
            print(f"  {ROWS[name][0]:40s} " + " | ".join(cells))
    for f in fmr:
        print(f"FMR of {f['probe_size']} px probes, {f['system']}: {100 * f['fmr']:.3f} % "
              f"[{100 * f['fmr_low']:.3f}, {100 * f['fmr_high']:.3f}] at the 128 px threshold")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("run", "tables"):
        p = sub.add_parser(command)
        p.add_argument("--experiment", choices=sorted(EXPERIMENTS), default="faces32")
        p.add_argument("--model", default=None, help="face model folder (default: the experiment's)")
        p.add_argument("--out", default=str(ROOT / "results" / "morphs"))
    run_parser = sub.choices["run"]
    run_parser.add_argument("--rows", default="key", help=f"rows or groups, comma-separated ({sorted(ROW_GROUPS)})")
    run_parser.add_argument("--pairs", type=int, default=HEADLINE_SUBSET, help="even: the first N of the random order")
    run_parser.add_argument("--batch-size", type=int, default=8)
    run_parser.add_argument("--device", default="cpu")
    run_parser.add_argument("--threads", type=int, default=None)
    run_parser.add_argument("--budget-s", type=float, default=None, help="start no new batch after this many seconds")
    run_parser.add_argument("--progress", action="store_true", default=None)
    args = parser.parse_args(argv)
    (run if args.command == "run" else tables)(args)


if __name__ == "__main__":
    main()

"""python -m adjointlib.morph --pairs 8 --out results/morphs/demo  (see ``adjointlib.morph``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..faces.pairs import load_morph_pairs
from ..facemodel.pretrained import DEFAULT_MODEL_DIR, load_face_model
from .methods import METHODS, method_settings
from .runner import MorphJob, format_mmpmr_table, mmpmr_rows, run_morphs, select_pairs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m adjointlib.morph",
        description="Face morphs of FRLL pairs: DiM + gradient descent on L*_ID (AdjointDEIS by default). "
                    "Resumable: re-run the same command to finish an interrupted job.")
    parser.add_argument("--out", required=True, help="result folder (morph PNGs, morphs.jsonl, mmpmr.json)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="even number: the N/2 most similar pairs of each gender (default: all 500)")
    parser.add_argument("--method", choices=sorted(METHODS), default="adjointdeis1_ode")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="face model folder or hub id")
    parser.add_argument("--pairs-file", default=None, help="pair list CSV (default data/frll_morph_pairs.csv)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps N (default 20)")
    parser.add_argument("--n-opt", type=int, default=None, help="optimisation steps (default 50)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate η (default 0.1)")
    parser.add_argument("--optimiser", choices=("sgd", "adam"), default=None)
    parser.add_argument("--adjoint-steps", type=int, default=None, help="adjoint steps M (default 20)")
    parser.add_argument("--adjoint-order", type=int, choices=(1, 2), default=None)
    parser.add_argument("--recompute", action="store_true", help="recompute states backwards (ODE adjoint)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = method_settings(args.method, steps=args.steps, n_opt=args.n_opt, lr=args.lr,
                               optimiser=args.optimiser, adjoint_steps=args.adjoint_steps,
                               adjoint_order=args.adjoint_order, record=False if args.recompute else None)
    pairs = select_pairs(load_morph_pairs(args.pairs_file), args.pairs)
    model = load_face_model(args.model)
    job = MorphJob(model)
    records = run_morphs(job, pairs, settings, args.out, method=args.method, batch_size=args.batch_size,
                         seed=args.seed, model_name=Path(args.model).name)
    selected = {p["pair"] for p in pairs}
    rows = mmpmr_rows([r for r in records if r["pair"] in selected], job.thresholds())
    tmp = Path(args.out) / "mmpmr.json.tmp"
    tmp.write_text(json.dumps({"method": args.method, "rows": rows}, indent=2))
    tmp.replace(Path(args.out) / "mmpmr.json")
    print(format_mmpmr_table(rows, f"{args.method}: MMPMR at FMR 0.1 % ({len(selected)} FRLL pairs)"))
    return rows


if __name__ == "__main__":
    main()

"""python -m adjointlib.morph --pairs 64 --out results/my_morphs  (see ``adjointlib.morph``).

On several processes (GPUs or CPU workers) through torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK:
    torchrun --nproc-per-node K -m adjointlib.morph --pairs 500 --device cuda --out results/my_morphs
Each rank does the batches k with k mod K == rank and writes each finished batch atomically; rank 0 merges
the batch files and prints the table.  A failed rank loses only its unfinished batches: run the same
command again (with any K) to finish.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

from ..atomic import write_text_atomic
from ..faces.pairs import load_morph_pairs
from ..facemodel.pretrained import DEFAULT_MODEL_DIR, load_face_model
from ..models import exact_float32
from .methods import METHODS, method_settings
from .runner import MorphJob, format_mmpmr_table, merge_batches, mmpmr_rows, run_morphs
from .selection import PAIR_ORDERS, select_pairs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m adjointlib.morph",
        description="Face morphs of FRLL pairs: DiM + gradient descent on L*_ID (AdjointDEIS by default). "
                    "Resumable: re-run the same command to finish an interrupted job.")
    parser.add_argument("--out", required=True, help="result folder (morph PNGs, batches/, morphs.jsonl, mmpmr.json)")
    parser.add_argument("--pairs", type=int, default=None,
                        help="even number: N/2 pairs of each gender in --order (default: all 500)")
    parser.add_argument("--order", choices=PAIR_ORDERS, default="random",
                        help="random: a seeded random sample stratified by gender (the headline set); "
                             "similar: the most similar pairs first")
    parser.add_argument("--pair-seed", type=int, default=0, help="seed of the random pair order")
    parser.add_argument("--method", choices=sorted(METHODS), default="adjointdeis1_ode")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="face model folder or hub id")
    parser.add_argument("--pairs-file", default=None,
                        help="pair list CSV (default: the packaged list adjointlib/faces/data/frll_morph_pairs.csv)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of each pair's SDE noises")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps N (default 20)")
    parser.add_argument("--n-opt", type=int, default=None, help="optimisation steps (default 50)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate η (default 0.1)")
    parser.add_argument("--optimiser", choices=("sgd", "adam"), default=None)
    parser.add_argument("--adjoint-steps", type=int, default=None, help="adjoint steps M (default 20)")
    parser.add_argument("--adjoint-order", type=int, choices=(1, 2), default=None)
    parser.add_argument("--recompute", action="store_true", help="recompute states backwards (ODE adjoint)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="bf16: the ε-model under bf16 autocast while optimising (not with reversible)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<i> (under torchrun: cuda:<LOCAL_RANK>)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (pinned in config.json)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new batch after this many seconds (stop cleanly; re-run to go on)")
    return parser.parse_args(argv)


def _distributed(device: str):
    """(rank, world size, device) from torchrun's environment; initialises gloo (CPU) or nccl (CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", timeout=datetime.timedelta(hours=24))
    return dist.get_rank(), world, device


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    import torch

    deadline = None if args.budget_s is None else time.time() + args.budget_s
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = _distributed(args.device)
    exact_float32(device)
    gradient_options = dict(steps=args.adjoint_steps, order=args.adjoint_order, recompute=args.recompute or None)
    settings = method_settings(args.method, gradient_options, steps=args.steps, n_opt=args.n_opt, lr=args.lr,
                               optimiser=args.optimiser, precision=args.precision)
    pairs = select_pairs(load_morph_pairs(args.pairs_file), args.pairs, order=args.order, seed=args.pair_seed)
    job = MorphJob(load_face_model(args.model), device=device)
    records = run_morphs(job, pairs, settings, args.out, method=args.method, batch_size=args.batch_size,
                         seed=args.seed, model_name=Path(args.model).name, rank=rank, world_size=world,
                         deadline=deadline)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if rank == 0:
            records = merge_batches(args.out)
        dist.destroy_process_group()
        if rank != 0:
            return []
    selected = {p["pair"] for p in pairs}
    done = [r for r in records if r["pair"] in selected]
    rows = mmpmr_rows(done, job.thresholds())
    write_text_atomic(Path(args.out) / "mmpmr.json", json.dumps({"method": args.method, "rows": rows}, indent=2))
    print(format_mmpmr_table(rows, f"{args.method}: MMPMR at FMR 0.1 % ({len(done)} of {len(selected)} "
                                   f"FRLL pairs, {args.order} order)"))
    return rows


if __name__ == "__main__":
    main()

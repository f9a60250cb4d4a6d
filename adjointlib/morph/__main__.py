"""python -m adjointlib.morph --pairs 64 --out results/my_morphs  (see ``adjointlib.morph``; --help lists every option).

On several processes (GPUs or CPU workers) through torchrun, which sets RANK / WORLD_SIZE / LOCAL_RANK:
    torchrun --nproc-per-node K -m adjointlib.morph --pairs 500 --device cuda --out results/my_morphs
Each rank does the batches k with k mod K == rank and records each finished pair atomically; rank 0 merges
the batch files and prints the table.  A failed rank loses only the batch it was making: run the same
command again (with any K) to finish.

Mistakes in the arguments, the data folders or the output folder end the command with one line
``python -m adjointlib.morph: error: ...`` and exit status 2 (``cli``); anything else is a bug and keeps its
traceback.  ``main`` is the same job for callers in Python: it raises instead (``UsageError``, or
``runner.FolderError`` for a folder made with other settings).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import textwrap
import time
from pathlib import Path

from ..atomic import write_text_atomic
from ..faces.pairs import load_morph_pairs
from ..faces.paths import ENV_CACHE, ENV_FRLL, ENV_SHARED, ENV_UTKFACE
from ..facemodel.pretrained import DEFAULT_MODEL_DIR, load_face_model
from ..models import exact_float32
from .methods import METHODS, method_settings
from .runner import FolderError, MorphJob, format_mmpmr_table, merge_batches, mmpmr_rows, run_morphs
from .selection import PAIR_ORDERS, select_pairs

PROG = "python -m adjointlib.morph"


class UsageError(Exception):
    """A mistake of the user's (arguments, data folders, output folder), reported as one line by ``cli``."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help; options whose default is None say in words what they fall back to."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _number(convert, accept, requirement: str, name: str):
    """An argparse type: ``convert(text)``, refused unless ``accept(value)``, with one-line messages."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if convert is int else 'a number'}: {text!r}") \
                from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {value}")
        return value
    parse.__name__ = name
    return parse


def _int_at_least(low: int):
    return _number(int, lambda v: v >= low, f"at least {low}", "integer")


_pair_count = _number(int, lambda v: v >= 2 and v % 2 == 0,
                      "an even number of at least 2 (half the pairs from each gender)", "pair count")
_positive_float = _number(float, lambda v: v > 0, "positive", "number")


def build_parser() -> argparse.ArgumentParser:
    defaults = METHODS["adjointdeis1_ode"]
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_HelpFormatter,
        description="Face morphs of FRLL pairs: DiM + gradient descent on L*_ID (AdjointDEIS by default).\n"
                    "Resumable per pair: run the same command again to finish an interrupted job.",
        epilog="\n".join(textwrap.fill(text, 100, subsequent_indent="  ") for text in (
            "writes, in --out: config.json (the settings, pinned: another configuration is refused), "
            "morphs/<pair>_<a>_<b>.png (the morphs at the model's size), batches/<k>.jsonl (one line per finished "
            "pair), morphs.jsonl (all pairs merged) and mmpmr.json (the table printed at the end).",
            "progress: a bar over the pairs and, inside each batch, one over the optimisation steps, each with its "
            "ETA; TQDM_DISABLE=1 or --no-progress silences both.",
            f"example: {PROG} --pairs 2 --out results/try  (the embedded 32 px model, on the CPU)")))
    parser.add_argument("--out", required=True, help="result folder (created; re-use it to resume)")
    parser.add_argument("--pairs", type=_pair_count, default=None,
                        help="even number N: the first N/2 pairs of each gender in --order (default: every pair of "
                             "the list, 500 for the packaged one)")
    parser.add_argument("--order", choices=PAIR_ORDERS, default="random",
                        help="random: a seeded random sample stratified by gender (the headline set); "
                             "similar: the most similar pairs first")
    parser.add_argument("--pair-seed", type=int, default=0, help="seed of the random pair order")
    parser.add_argument("--method", choices=sorted(METHODS), default="adjointdeis1_ode", help="morphing method")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR),
                        help="face model folder or hub id (default: the embedded faces32 model)")
    parser.add_argument("--pairs-file", default=None,
                        help="pair list CSV (default: the packaged list, adjointlib/faces/data/frll_morph_pairs.csv)")
    parser.add_argument("--batch-size", type=_int_at_least(1), default=8,
                        help="pairs optimised together (faster per pair); an interrupted run loses the batch in "
                             "progress, so 1 loses at most one pair")
    parser.add_argument("--seed", type=int, default=0, help="seed of each pair's SDE noises")
    parser.add_argument("--steps", type=_int_at_least(1), default=None,
                        help=f"sampling steps N (default: the method's, {defaults.steps})")
    parser.add_argument("--n-opt", type=_int_at_least(0), default=None,
                        help=f"optimisation steps (default: the method's, {defaults.n_opt}; 0 for dim)")
    parser.add_argument("--lr", type=_positive_float, default=None,
                        help=f"learning rate η (default: the method's, {defaults.lr})")
    parser.add_argument("--optimiser", choices=("sgd", "adam"), default=None,
                        help=f"default: the method's, {defaults.optimiser}")
    parser.add_argument("--adjoint-steps", type=_int_at_least(1), default=None,
                        help="adjoint steps M (default: the gradient method's, 20 for the adjoint)")
    parser.add_argument("--adjoint-order", type=int, choices=(1, 2), default=None,
                        help="adjoint solver order (default: the method's, 1; 2 for adjointdeis2m_ode)")
    parser.add_argument("--recompute", action="store_true",
                        help="recompute states backwards (ODE adjoint; default: off, the sampler's states are kept)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default=None,
                        help="bf16: the ε-model under bf16 autocast while optimising, not with reversible "
                             "(default: fp32)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<i> (under torchrun: cuda:<LOCAL_RANK>)")
    parser.add_argument("--threads", type=_int_at_least(1), default=None,
                        help="torch CPU threads, pinned in config.json (default: torch's, usually the core count)")
    parser.add_argument("--budget-s", type=_positive_float, default=None,
                        help="start no new batch after this many seconds: stop cleanly, re-run to go on "
                             "(default: no limit)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars (default: on, unless the environment sets TQDM_DISABLE=1; under "
                             "torchrun on rank 0 only)")
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def _check_out(parser: argparse.ArgumentParser, out: str) -> None:
    """--out must be a folder or a path where one can be made (no file on the way)."""
    path = Path(out).expanduser()
    for folder in (path, *path.parents):
        if folder.exists():
            if not folder.is_dir():
                what = "is a file" if folder == path else f"is inside {folder}, which is a file"
                parser.error(f"argument --out: {out} {what}; give a folder (new or one to resume)")
            return


def _check_data_variables() -> None:
    """The data variables the job reads must name existing paths when they are set."""
    for name, what in ((ENV_SHARED, "the shared data folder (the one holding data/ and models/)"),
                       (ENV_FRLL, "the FRLL folder (holding neutral_front/ and smiling_front/)")):
        value = os.environ.get(name)
        if value and not Path(value).expanduser().exists():
            raise UsageError(f"${name} is set to {value}, which does not exist; set it to {what}, or unset it to "
                             "use the default location")


def _data_error(error: OSError) -> UsageError:
    """A missing-data error as one line, noting the variables it mentions that are already set."""
    message = " ".join(str(error).split())
    notes = [f"${name} is already set, to {os.environ[name]}" for name in (ENV_SHARED, ENV_FRLL, ENV_UTKFACE, ENV_CACHE)
             if name in message and os.environ.get(name)]
    if notes:
        message += f" (note: {'; '.join(notes)}, and the file is missing there)"
    return UsageError(message)


def _load_model(parser: argparse.ArgumentParser, name: str):
    path = Path(name).expanduser()
    hub_id = re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not name.startswith(".")
    if not path.exists() and not hub_id:
        parser.error(f"argument --model: no face model folder at {name}")
    try:
        return load_face_model(path if path.exists() else name)
    except OSError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"--model {name}: cannot load it ({first})") from error


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
    """Run the job; returns the MMPMR rows (rank 0; [] on other ranks or when no pair is finished).  Mistakes
    in the arguments exit through argparse (SystemExit, status 2).
    Raises:
        UsageError: a data variable names a missing path, data or the model cannot be found or loaded.
        runner.FolderError: --out holds morphs made with other settings (each differing one named), or
            a record file edited by hand.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_out(parser, args.out)
    _check_data_variables()
    try:
        pair_list = load_morph_pairs(args.pairs_file)
    except FileNotFoundError as error:
        parser.error(f"argument --pairs-file: {error}")
    if args.pairs is not None:
        per_gender = {}
        for pair in pair_list:
            per_gender[pair["gender"]] = per_gender.get(pair["gender"], 0) + 1
        most = 2 * min(per_gender.values(), default=0)
        if args.pairs > most:
            parser.error(f"argument --pairs: {args.pairs} is more than the list has; at most {most} "
                         f"({', '.join(f'{n} {g}' for g, n in sorted(per_gender.items()))} pairs)")
    gradient_options = dict(steps=args.adjoint_steps, order=args.adjoint_order, recompute=args.recompute or None)
    try:
        settings = method_settings(args.method, gradient_options, steps=args.steps, n_opt=args.n_opt, lr=args.lr,
                                   optimiser=args.optimiser, precision=args.precision)
    except (ValueError, TypeError) as error:
        parser.error(f"--method {args.method}: {error}")
    try:
        pairs = select_pairs(pair_list, args.pairs, order=args.order, seed=args.pair_seed)
    except ValueError as error:
        parser.error(f"argument --pairs: {error}")
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device}, but this torch ({torch.__version__}) sees no CUDA device")
    deadline = None if args.budget_s is None else time.time() + args.budget_s
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = _distributed(args.device)
    exact_float32(device)
    model = _load_model(parser, args.model)
    try:
        job = MorphJob(model, device=device)
    except FileNotFoundError as error:
        raise _data_error(error) from error
    progress = args.progress if rank == 0 or args.progress else False
    records = run_morphs(job, pairs, settings, args.out, method=args.method, batch_size=args.batch_size,
                         seed=args.seed, model_name=Path(args.model).name, rank=rank, world_size=world,
                         deadline=deadline, progress=progress)
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
    if not done:
        print("no pair finished yet (budget spent); run the same command again to go on", flush=True)
        return []
    rows = mmpmr_rows(done, job.thresholds())
    write_text_atomic(Path(args.out) / "mmpmr.json", json.dumps({"method": args.method, "rows": rows}, indent=2))
    print(format_mmpmr_table(rows, f"{args.method}: MMPMR at FMR 0.1 % ({len(done)} of {len(selected)} "
                                   f"FRLL pairs, {args.order} order)"))
    return rows


def cli(argv=None) -> int:
    """The command: ``main`` with the user's mistakes as one line ``<prog>: error: ...`` and exit status 2
    (SystemExit), an interruption as one line and status 130; returns 0 when done.

    Raises:
        SystemExit: status 2 for a usage or output-folder error, 130 for an interruption (Ctrl-C).
    """
    try:
        main(argv)
    except (UsageError, FolderError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; every finished pair is saved: run the same command again to go on",
              file=sys.stderr)
        raise SystemExit(130) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())

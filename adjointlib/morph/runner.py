"""The morph job: FRLL pairs in fixed batches → DiM start → optimisation → PNG + one JSON line per pair.

Resumable, crash-safe and shardable: ``<out>/config.json`` pins every setting that changes a morph's numbers
(settings, model weights, batch size, seed, device, CPU threads, TF32, torch version); another configuration
in the same folder is refused, naming each differing setting with both values.  The pair list is cut into
fixed batches by position; batch k is recorded in ``batches/<k>.jsonl``, one line per finished pair in
planned order.  The pairs of a batch are optimised together and finish together; then each pair's PNG is
written and the batch file is rewritten with that pair's line added (each write atomic), so the file always
holds a prefix of the planned pairs and a pair is done exactly when its line is there.  Resume is per pair:
an interrupted run loses only what was not yet written, i.e. the batch being optimised (at most one pair
with ``batch_size=1``), and a run that finds a batch partly done (the last, partial batch of a smaller
selection, or a write interrupted between two pairs) makes only the missing pairs, together, as a smaller
batch.  Any number of processes (``torchrun``) or machines can share the batches (batch k goes to rank k mod
world size); merging concatenates the batch files in order into ``morphs.jsonl``.

Batch-mates: each pair's SDE noises are drawn from its own seed (``seed``, pair number), and DDIM inversion
decides convergence per sample, so a morph depends on its batch-mates only through the network's
batch-size-dependent round-off, which L*_ID's max over the two contributors can amplify over 50 steps
(``scripts/measure_morph_determinism.py``, results/morphs/determinism.json: for the measured pair at one CPU
thread, alone vs in a batch of 2 or 8 differed by up to 3 pixel levels, while a 1e-6 change of x_T gave 62;
no accept/reject decision changed). A batch interrupted while optimising is made again whole, so resuming
changes no batch's composition except where a batch is found partly done; the pairs then made in a smaller
batch record their actual batch-mates in ``made_with`` (absent for a pair made in its planned batch, so an
uninterrupted run's records are unchanged).

Scores follow the FRLL protocol of ``adjointlib.faces.evaluate`` (probes: the contributors' smiling photos
at 128 px; thresholds at FMR 0.1 % from the bona fide comparisons) and are computed on the CPU from the
saved uint8 morphs.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import write_bytes_atomic as _write_atomic
from ..faces import (EVAL_SIZE, embed_images, frll_bona_fide, get_fr_system, images_to_tensor, load_frll_aligned,
                     margin_summary, mmpmr, mmpmr_interval, morph_contributor_scores, tensor_to_images)
from .dim import dim_start
from .optimise import MorphSettings, optimise_morph

__all__ = ["MorphScorer", "MorphJob", "run_morphs", "merge_batches", "read_records", "mmpmr_rows", "format_mmpmr_table",
           "run_environment", "EVAL_SYSTEMS", "FolderError"]

EVAL_SYSTEMS = ("mobilefacenet", "dlib_resnet")


class FolderError(ValueError):
    """A result folder that cannot be used as it is: made with another configuration (``differences``:
    (setting, value in the folder, value now) triples), a record file edited by hand, or batch files of
    different layouts.  A user's mistake, not a bug: the command line prints it as one line."""

    def __init__(self, message: str, differences: list | None = None):
        super().__init__(message)
        self.differences = differences or []


def _save_png(path: Path, image: np.ndarray) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    _write_atomic(path, buffer.getvalue())


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise FolderError(f"{path}, line {number}: not valid JSON ({error}); this file is only ever "
                             "replaced atomically, so it was edited by hand") from error
    return records


def read_records(out: str | Path) -> list[dict]:
    """The merged pairs of a morph folder (``morphs.jsonl``, in pair-list order); [] if none yet."""
    path = Path(out) / "morphs.jsonl"
    return _read_jsonl(path) if path.is_file() else []


class MorphScorer:
    """The evaluation side of a morph experiment, on the CPU: the FR systems, the FRLL canonical crops at
    the morph size and at 128 px, and the bona fide thresholds at FMR 0.1 % (Chapter 8's protocol).
    size: the morph resolution (the face model's image size)."""

    def __init__(self, size: int, eval_systems=EVAL_SYSTEMS):
        self.size = int(size)
        self.systems = {name: get_fr_system(name) for name in eval_systems}
        self.faces = load_frll_aligned(self.size)
        self.probes = load_frll_aligned(EVAL_SIZE)
        self.row = {face_id: i for i, face_id in enumerate(self.faces.ids)}
        self.bona_fide = {name: frll_bona_fide(system, self.probes) for name, system in self.systems.items()}

    def scores(self, images: np.ndarray, pairs: list[dict]) -> dict:
        """{system: (b, 2) similarities of each morph (uint8 canonical crops) to a's and b's smiling photo}
        (``faces.morph_contributor_scores``, the protocol of Chapter 8)."""
        return {name: morph_contributor_scores(system, embed_images(system, images), self.bona_fide[name],
                                               self.probes, pairs)
                for name, system in self.systems.items()}

    def own_photo_scores(self, pairs: list[dict]) -> dict:
        """The no-morph control: {system: (b, 2)} scores of the contributor's own neutral photo (at the morph
        size) that comes closest to passing as both, i.e. of a's photo or b's photo, whichever has the larger
        min over the two smiling probes.  A pair is accepted iff one contributor's unmorphed photo is."""
        out = {}
        for name, system in self.systems.items():
            own = embed_images(system, self.faces.neutral)  # every person's photo once
            a, b = (morph_contributor_scores(system, own[[self.row[p[key]] for p in pairs]], self.bona_fide[name],
                                             self.probes, pairs) for key in ("id_a", "id_b"))
            out[name] = np.where((a.min(1) >= b.min(1))[:, None], a, b)
        return out

    def thresholds(self) -> dict:
        return {name: float(b.threshold) for name, b in self.bona_fide.items()}


class MorphJob:
    """Everything a batch of morphs needs, loaded once: the face model and the loss FR network on
    ``device`` ("cpu", "cuda", "cuda:1"), and a ``MorphScorer`` on the CPU (so that a morph's scores depend
    only on its uint8 image).  model: ``FaceDiffusionModel``; loss_system: FR name used in L*_ID."""

    def __init__(self, model, loss_system: str = "mobilefacenet", eval_systems=EVAL_SYSTEMS, device="cpu"):
        self.device = torch.device(device)
        self.model = model.requires_grad_(False).to(self.device)
        self.size = int(model.config.image_size)
        self.loss_system = get_fr_system(loss_system).to(self.device)
        self.scorer = MorphScorer(self.size, eval_systems)

    def contributors(self, pairs: list[dict]):
        """Neutral canonical crops of a and b at the model size, and their loss-network embeddings at 128,
        on the job's device."""
        faces, probes, row = self.scorer.faces, self.scorer.probes, self.scorer.row
        ia, ib = [row[p["id_a"]] for p in pairs], [row[p["id_b"]] for p in pairs]
        x_a, x_b = images_to_tensor(faces.neutral[ia]), images_to_tensor(faces.neutral[ib])
        with torch.no_grad():
            v_a = self.loss_system(images_to_tensor(probes.neutral[ia]).to(self.device))
            v_b = self.loss_system(images_to_tensor(probes.neutral[ib]).to(self.device))
        return x_a.to(self.device), x_b.to(self.device), v_a, v_b

    def scores(self, images: np.ndarray, pairs: list[dict]) -> dict:
        return self.scorer.scores(images, pairs)

    def thresholds(self) -> dict:
        return self.scorer.thresholds()


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's parameters and buffers, in state-dict order: pins the
    weights a run folder was made with, so that morphs of a retrained model never mix with older ones."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def run_environment(device) -> dict:
    """What, besides the settings, changes a morph's float32 numbers: the device (and its name), the CPU
    thread count (reduction order on the CPU), TF32 on CUDA, and the torch version."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"device": torch.cuda.get_device_name(device), "threads": None,
                "tf32": bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32),
                "torch": torch.__version__.split("+")[0]}
    return {"device": device.type, "threads": torch.get_num_threads(), "tf32": False,
            "torch": torch.__version__.split("+")[0]}


def _flatten(config: dict, prefix: str = "") -> dict:
    """{"settings": {"lr": 0.1}} -> {"settings.lr": 0.1} (nested settings compared and named one by one)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_ABSENT = object()


def config_differences(old: dict, new: dict) -> list[tuple[str, object, object]]:
    """(setting, old value, new value) for every setting (nested ones as "settings.lr") that differs;
    a setting missing on one side has the value "(absent)"."""
    old, new = _flatten(old), _flatten(new)
    return [(key, old.get(key, "(absent)"), new.get(key, "(absent)")) for key in sorted(set(old) | set(new))
            if old.get(key, _ABSENT) != new.get(key, _ABSENT)]


def _check_config(out: Path, config: dict, write: bool = True) -> None:
    """Refuse ``out`` if its config.json differs from ``config``; write config.json into a new folder
    (only if ``write``: under torchrun rank 0 writes it and every rank checks it)."""
    path = out / "config.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise FolderError(f"{path} is not valid JSON ({error}); it is only ever replaced atomically, so it "
                              "was edited by hand") from error
        if old != config:
            differences = config_differences(old, config)
            named = "; ".join(f"{key} was {json.dumps(was)}, now {json.dumps(now)}" for key, was, now in differences)
            raise FolderError(f"{out} holds morphs made with other settings: {named}. Resume with the same settings, "
                              "or use another --out folder", differences)
    elif write:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(config, indent=2).encode())


def pair_seed(seed: int, pair: int) -> int:
    """The seed of one pair's random draws (SDE noises), independent of its batch and position."""
    return int(np.random.SeedSequence([seed, pair]).generate_state(1)[0])


def _pair_draws(pairs: list[dict], seed: int, shape: tuple, steps: int) -> torch.Tensor:
    """(steps, b, *shape) standard normals, one independent stream per pair (drawn on the CPU)."""
    return torch.cat([torch.randn((steps, 1, *shape), generator=torch.Generator().manual_seed(pair_seed(seed, p["pair"])))
                      for p in pairs], dim=1)


def _batch_path(out: Path, index: int) -> Path:
    return out / "batches" / f"{index:04d}.jsonl"


def _batch_records(out: Path, index: int, batch: list[dict]) -> tuple[list[dict], list[dict]]:
    """(records kept, pairs still to make) of batch ``index``.  The batch file holds a prefix of the planned
    pairs (its finished pairs), or all of them and more (a larger selection's batch: kept whole); a file
    of another pair order is made again."""
    path = _batch_path(out, index)
    made = _read_jsonl(path) if path.is_file() else []
    made_pairs, planned = [r["pair"] for r in made], [p["pair"] for p in batch]
    if made_pairs[: len(planned)] == planned:
        return made, []
    if planned[: len(made_pairs)] == made_pairs:
        return made, batch[len(made):]
    return [], batch


def progress_enabled(progress: bool | None) -> bool:
    """Whether to show progress bars: ``progress`` if given, else tqdm's own default (on, also when writing
    to a log; off when the environment sets TQDM_DISABLE=1, as CI does)."""
    if progress is not None:
        return bool(progress)
    probe = tqdm(total=0, file=io.StringIO())  # reads tqdm's TQDM_* environment defaults
    enabled = not probe.disable
    probe.close()
    return enabled


def _morph_batch(job: MorphJob, batch: list[dict], settings: MorphSettings, seed: int, progress: bool,
                 stage=lambda text: None) -> list[dict]:
    started = time.perf_counter()
    stage("DiM start (inversion)")
    x_a, x_b, v_a, v_b = job.contributors(batch)
    draws = None
    if settings.sde:
        draws = _pair_draws(batch, seed, tuple(x_a.shape[1:]), settings.steps).to(x_a)
    start = dim_start(job.model, x_a, x_b, steps=settings.steps, sde=settings.sde, draws=draws)
    stage(f"optimising {len(batch)} together")
    result = optimise_morph(job.model, job.loss_system, start.x_T, start.z, v_a, v_b, settings,
                            noises=start.noises, progress=progress)
    images = tensor_to_images(result.x0)
    seconds = (time.perf_counter() - started) / len(batch)
    stage("scoring")
    scores = job.scores(images, batch)
    records = []
    for k, pair in enumerate(batch):
        records.append({
            "pair": pair["pair"], "id_a": pair["id_a"], "id_b": pair["id_b"], "gender": pair["gender"],
            "image": f"morphs/{pair['pair']:03d}_{pair['id_a']}_{pair['id_b']}.png", "_png": images[k],
            "loss": [round(float(v), 6) for v in result.losses[:, k]],
            "nfe": start.encode_nfe + result.forwards, "nfe_encode": start.encode_nfe,
            "nfe_forward": result.forwards, "nfe_vjp": result.vjps, "seconds": round(seconds, 3),
            "scores": {name: [round(float(s), 6) for s in scores[name][k]] for name in scores},
        })
    return records


def run_morphs(job: MorphJob, pairs: list[dict], settings: MorphSettings, out: str | Path, *,
               method: str = "custom", batch_size: int = 8, seed: int = 0, model_name: str = "",
               rank: int = 0, world_size: int = 1, deadline: float | None = None,
               progress: bool | None = None) -> list[dict]:
    """Make (or finish) the morphs of ``pairs`` into ``out``; returns the merged records of the folder
    (those of every finished pair; with world_size > 1 call ``merge_batches`` after all ranks finish).

    Per pair: ``morphs/<pair>_<id_a>_<id_b>.png`` (canonical crop at the model size) and a JSON line with
    the loss history; the NFE of its batch: ``nfe_encode`` (DiM's inversion of a and b in one batch),
    ``nfe_forward`` (every ε evaluation while optimising and sampling the result, including the forward
    pass inside each VJP), ``nfe_vjp``, and ``nfe`` = encode + forward, the paper's count (H.2: N_E +
    n_opt (N + M), a VJP counted once) plus the final sampling; wall seconds per morph (batch time / batch
    size); each evaluation system's similarities to a's and b's smiling photos; and, only for a pair made
    on resume in a smaller batch than planned, ``made_with``: the pairs it was optimised with.
    rank, world_size: this process does the batches k with k mod world_size == rank.  deadline: a
    ``time.time()`` after which no new batch is started (the job stops cleanly; run again to go on).
    Resume is per pair (module docstring): a batch whose file holds some of its planned pairs makes only
    the others; a batch file that holds other pairs is made again.  progress: show a bar over the pairs
    and, inside each batch, one over the optimisation steps (with the ETA and mean L*_ID); None: on unless
    TQDM_DISABLE=1 (``progress_enabled``).
    Raises FolderError (a ValueError) if ``out`` holds another configuration, naming each differing setting.
    """
    out = Path(out)
    config = {"method": method, "settings": settings.to_dict(), "model": model_name,
              "model_sha256": model_fingerprint(job.model), "batch_size": batch_size, "seed": seed,
              "loss_system": job.loss_system.name, "image_size": job.size, **run_environment(job.device)}
    _check_config(out, config, write=rank == 0)  # every rank refuses another configuration; rank 0 writes it
    (out / "morphs").mkdir(parents=True, exist_ok=True)
    (out / "batches").mkdir(exist_ok=True)
    batches = [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)]
    mine = [k for k in range(len(batches)) if k % world_size == rank]
    plan = {k: _batch_records(out, k, batches[k]) for k in mine}
    todo = [k for k in mine if plan[k][1]]
    show = progress_enabled(progress)
    bar = tqdm(total=sum(len(batches[k]) for k in mine), initial=sum(len(batches[k]) - len(plan[k][1]) for k in mine),
               desc=f"morphs {method}", unit="pair", disable=not show)
    for k in todo:
        if deadline is not None and time.time() > deadline:
            break
        kept, missing = plan[k]
        stage = (lambda text, k=k: bar.set_postfix_str(f"batch {k}: {text}")) if show else (lambda text: None)
        records = _morph_batch(job, missing, settings, seed, show, stage)
        stage("saving")
        for record in records:
            if len(missing) < len(batches[k]):
                record["made_with"] = [p["pair"] for p in missing]
            _save_png(out / record["image"], record.pop("_png"))
            kept.append(record)
            _write_atomic(_batch_path(out, k), "".join(json.dumps(r) + "\n" for r in kept).encode())
            bar.update(1)
    bar.set_postfix_str("")
    bar.close()
    return merge_batches(out) if world_size == 1 else []


def merge_batches(out: str | Path) -> list[dict]:
    """Concatenate the batch files of ``out`` in batch order into ``morphs.jsonl`` (atomically) and return
    the records.  Run by rank 0 after every rank has finished, and after unpacking batches from another
    machine.
    Raises:
        FolderError (a ValueError): two batch files in ``out``/batches hold the same pair (batches of different
            sizes), or a batch file is not valid JSON lines.
    """
    out = Path(out)
    records = [r for path in sorted((out / "batches").glob("*.jsonl")) for r in _read_jsonl(path)]
    pairs = [r["pair"] for r in records]
    if len(set(pairs)) != len(pairs):
        raise FolderError(f"{out}/batches holds some pairs twice; it mixes batch layouts")
    _write_atomic(out / "morphs.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
    return records


def mmpmr_rows(records: list[dict], thresholds: dict) -> list[dict]:
    """MMPMR (paper eq. 5.2) per evaluation system over the records, with its exact 95 % interval
    (Clopper–Pearson over pairs: ``faces.mmpmr_interval``), counts, the median and quartiles of the margin
    min_n S − δ and the pairs within ±0.01 of δ (``faces.margin_summary``), mean NFE and seconds, and the mean
    L*_ID at DiM's start and at the end.
    Raises:
        ValueError: ``records`` is empty.
        KeyError: a record has no score for a system named in ``thresholds``.
    """
    if not records:
        raise ValueError("no finished morphs to score")
    rows = []
    for name, threshold in thresholds.items():
        scores = np.array([r["scores"][name] for r in records])
        accepted = int(round(mmpmr(scores, threshold) * len(records)))
        low, high = mmpmr_interval(accepted, len(records))
        margins = margin_summary(scores, threshold)
        rows.append({"system": name, "mmpmr": accepted / len(records), "mmpmr_low": low, "mmpmr_high": high,
                     "accepted": accepted, "n_morphs": len(records), "margin_median": margins["median"],
                     "margin_q1": margins["q1"], "margin_q3": margins["q3"], "n_near": margins["n_near"],
                     "nfe": float(np.mean([r["nfe"] for r in records])),
                     "seconds": float(np.mean([r["seconds"] for r in records])),
                     "loss_start": float(np.mean([r["loss"][0] for r in records])),
                     "loss_end": float(np.mean([r["loss"][-1] for r in records]))})
    return rows


def format_mmpmr_table(rows: list[dict], title: str = "") -> str:
    """A plain-text MMPMR table (percent with its 95 % interval, counts, NFE and seconds per morph)."""
    lines = [title] if title else []
    lines.append(f"{'FR system':16s} {'MMPMR %':>8s} {'95 % CI':>15s} {'accepted':>10s} {'NFE':>7s} {'s/morph':>8s}")
    for r in rows:
        interval = f"[{100 * r['mmpmr_low']:.1f}, {100 * r['mmpmr_high']:.1f}]"
        lines.append(f"{r['system']:16s} {100 * r['mmpmr']:8.2f} {interval:>15s} {r['accepted']:>4d}/{r['n_morphs']:<5d} "
                     f"{r['nfe']:7.0f} {r['seconds']:8.2f}")
    return "\n".join(lines)

"""The morph job: FRLL pairs in fixed batches → DiM start → optimisation → PNG + one JSON line per pair.

Resumable and crash-safe: ``<out>/config.json`` pins the settings and the model's weights (another
configuration or model in the same folder is refused); pairs are processed in fixed batches (position
in the pair list), each batch's SDE noises are drawn from ``seed + batch index``, and after every batch
the morph PNGs and then ``morphs.jsonl`` are written atomically (temporary file, then rename), so an interrupted run
leaves only finished pairs and a re-run does exactly the missing ones.  Scores follow the FRLL
protocol of ``adjointlib.faces.evaluate`` (probes: the contributors' smiling photos at 128 px;
thresholds at FMR 0.1 % from the bona fide comparisons).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..faces import (EVAL_SIZE, embed_images, frll_bona_fide, get_fr_system, images_to_tensor, load_frll_aligned,
                     mmpmr, morph_contributor_scores, tensor_to_images)
from .dim import dim_start
from .optimise import MorphSettings, optimise_morph

__all__ = ["MorphJob", "run_morphs", "read_records", "mmpmr_rows", "format_mmpmr_table", "select_pairs",
           "EVAL_SYSTEMS"]

EVAL_SYSTEMS = ("mobilefacenet", "dlib_resnet")


def select_pairs(pairs: list[dict], count: int | None) -> list[dict]:
    """The first ``count // 2`` pairs of each gender in the list's order (the most similar ones of the
    committed SYN-MAD-style list), interleaved female, male, female, ...; all pairs when ``count`` is None.

    Interleaving makes every selection a prefix of the larger ones, so a run extended from 8 to 16
    pairs keeps its finished batches and computes only the new ones.
    """
    if count is None:
        return list(pairs)
    if count < 2 or count % 2:
        raise ValueError(f"--pairs must be an even number >= 2 (half per gender), got {count}")
    genders = sorted({p["gender"] for p in pairs})
    by_gender = [[p for p in pairs if p["gender"] == gender][: count // 2] for gender in genders]
    if any(len(group) < count // 2 for group in by_gender):
        raise ValueError(f"--pairs {count}: the list has only {[len(g) for g in by_gender]} pairs per gender")
    return [pair for group in zip(*by_gender) for pair in group]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _save_png(path: Path, image: np.ndarray) -> None:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    _write_atomic(path, buffer.getvalue())


def read_records(out: str | Path) -> list[dict]:
    """The finished pairs of a morph folder (``morphs.jsonl``), in the order written."""
    path = Path(out) / "morphs.jsonl"
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not valid JSON ({error}); this file is only ever "
                             "replaced atomically, so it was edited by hand") from error
    return records


class MorphJob:
    """Everything a batch of morphs needs, loaded once: the face model, the FR systems, FRLL crops and
    the bona fide thresholds.  model: ``FaceDiffusionModel``; loss_system: FR name used in L*_ID."""

    def __init__(self, model, loss_system: str = "mobilefacenet", eval_systems=EVAL_SYSTEMS):
        self.model = model.requires_grad_(False)
        self.size = int(model.config.image_size)
        self.loss_system = get_fr_system(loss_system)
        self.systems = {name: get_fr_system(name) for name in eval_systems}
        self.faces = load_frll_aligned(self.size)
        self.probes = load_frll_aligned(EVAL_SIZE)
        self.row = {face_id: i for i, face_id in enumerate(self.faces.ids)}
        self.bona_fide = {name: frll_bona_fide(system, self.probes) for name, system in self.systems.items()}

    def contributors(self, pairs: list[dict]):
        """Neutral canonical crops of a and b at the model size, and their loss-network embeddings at 128."""
        ia = [self.row[p["id_a"]] for p in pairs]
        ib = [self.row[p["id_b"]] for p in pairs]
        x_a, x_b = images_to_tensor(self.faces.neutral[ia]), images_to_tensor(self.faces.neutral[ib])
        with torch.no_grad():
            v_a = self.loss_system(images_to_tensor(self.probes.neutral[ia]))
            v_b = self.loss_system(images_to_tensor(self.probes.neutral[ib]))
        return x_a, x_b, v_a, v_b

    def scores(self, images: np.ndarray, pairs: list[dict]) -> dict:
        """{system: (b, 2) similarities of each morph (uint8 canonical crops) to a's and b's smiling photo}
        (``faces.morph_contributor_scores``, the protocol of Chapter 8)."""
        return {name: morph_contributor_scores(system, embed_images(system, images), self.bona_fide[name],
                                               self.probes, pairs)
                for name, system in self.systems.items()}

    def thresholds(self) -> dict:
        return {name: float(b.threshold) for name, b in self.bona_fide.items()}


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of a model's parameters and buffers, in state-dict order: pins the
    weights a run folder was made with, so that morphs of a retrained model never mix with older ones."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_config(out: Path, config: dict) -> None:
    path = out / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if old != config:
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise ValueError(f"{out} holds morphs made with other settings (differing: {changed}); "
                             "use another --out folder or delete it")
    else:
        out.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(config, indent=2).encode())


def run_morphs(job: MorphJob, pairs: list[dict], settings: MorphSettings, out: str | Path, *,
               method: str = "custom", batch_size: int = 8, seed: int = 0, model_name: str = "",
               progress: bool | None = None) -> list[dict]:
    """Make (or finish) the morphs of ``pairs`` into ``out``; returns all records of the folder.

    Per pair: ``morphs/<pair>_<id_a>_<id_b>.png`` (canonical crop at the model size) and a JSON line with
    the loss history; the NFE of its batch: ``nfe_encode`` (DiM's inversion of a and b in one batch),
    ``nfe_forward`` (every ε evaluation while optimising and sampling the result, including the forward
    pass inside each VJP), ``nfe_vjp``, and ``nfe`` = encode + forward, the paper's count (H.2: N_E +
    n_opt (N + M), a VJP counted once) plus the final sampling; wall seconds per morph; and each
    evaluation system's similarities to a's and b's smiling photos.
    """
    out = Path(out)
    config = {"method": method, "settings": settings.to_dict(), "model": model_name,
              "model_sha256": model_fingerprint(job.model), "batch_size": batch_size, "seed": seed,
              "loss_system": job.loss_system.name, "image_size": job.size}
    _check_config(out, config)
    (out / "morphs").mkdir(exist_ok=True)
    records = read_records(out)
    done = {r["pair"] for r in records}
    batches = [pairs[i:i + batch_size] for i in range(0, len(pairs), batch_size)]
    bar = tqdm(total=len(pairs), initial=sum(p["pair"] in done for p in pairs), desc=f"morphs {method}",
               disable=progress is False)
    for index, batch in enumerate(batches):
        if all(p["pair"] in done for p in batch):
            continue
        started = time.perf_counter()
        x_a, x_b, v_a, v_b = job.contributors(batch)
        generator = torch.Generator().manual_seed(seed + index)
        start = dim_start(job.model, x_a, x_b, steps=settings.steps, sde=settings.sde, generator=generator)
        result = optimise_morph(job.model, job.loss_system, start.x_T, start.z, v_a, v_b, settings,
                                noises=start.noises, progress=progress)
        seconds = (time.perf_counter() - started) / len(batch)
        images = tensor_to_images(result.x0)
        scores = job.scores(images, batch)
        for k, pair in enumerate(batch):
            if pair["pair"] in done:
                continue
            name = f"morphs/{pair['pair']:03d}_{pair['id_a']}_{pair['id_b']}.png"
            _save_png(out / name, images[k])
            records.append({
                "pair": pair["pair"], "id_a": pair["id_a"], "id_b": pair["id_b"], "gender": pair["gender"],
                "image": name, "loss": [round(float(v), 6) for v in result.losses[:, k]],
                "nfe": start.encode_nfe + result.forwards, "nfe_encode": start.encode_nfe,
                "nfe_forward": result.forwards, "nfe_vjp": result.vjps, "seconds": round(seconds, 3),
                "scores": {name_: [round(float(s), 6) for s in scores[name_][k]] for name_ in scores},
            })
            done.add(pair["pair"])
        _write_atomic(out / "morphs.jsonl", "".join(json.dumps(r) + "\n" for r in records).encode())
        bar.update(len(batch))
    bar.close()
    return records


def mmpmr_rows(records: list[dict], thresholds: dict) -> list[dict]:
    """MMPMR (paper eq. 5.2) per evaluation system over the records, with counts, mean NFE and seconds,
    and the mean L*_ID at DiM's start and at the end."""
    if not records:
        raise ValueError("no finished morphs to score")
    rows = []
    for name, threshold in thresholds.items():
        scores = np.array([r["scores"][name] for r in records])
        value = mmpmr(scores, threshold)
        rows.append({"system": name, "mmpmr": value, "accepted": int(round(value * len(records))),
                     "n_morphs": len(records), "nfe": float(np.mean([r["nfe"] for r in records])),
                     "seconds": float(np.mean([r["seconds"] for r in records])),
                     "loss_start": float(np.mean([r["loss"][0] for r in records])),
                     "loss_end": float(np.mean([r["loss"][-1] for r in records]))})
    return rows


def format_mmpmr_table(rows: list[dict], title: str = "") -> str:
    """A plain-text MMPMR table (percent, counts, NFE per morph, seconds per morph)."""
    lines = [title] if title else []
    lines.append(f"{'FR system':16s} {'MMPMR %':>8s} {'accepted':>10s} {'NFE':>7s} {'s/morph':>8s}")
    for r in rows:
        lines.append(f"{r['system']:16s} {100 * r['mmpmr']:8.2f} {r['accepted']:>4d}/{r['n_morphs']:<5d} "
                     f"{r['nfe']:7.0f} {r['seconds']:8.2f}")
    return "\n".join(lines)

"""Score the classic morph baselines on FRLL and write ``results/faces/*.csv``.

Source: ``../shared/reference/paper-notes.md`` §8.5 (MMPMR, eq. 5.2, at FMR = 0.1 %) with the
protocol of ``adjointlib.faces.evaluate`` and the pairs of ``adjointlib/faces/data/frll_morph_pairs.csv``.
Writes ``results/faces/fr_bona_fide.csv`` (thresholds and TAR) and
``results/faces/baseline_mmpmr.csv`` (MMPMR per method, morph size and FR system).

Usage: ``python scripts/evaluate_face_baselines.py``
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adjointlib.atomic import atomic_path  # noqa: E402
from adjointlib.faces import evaluate_frll_baselines, load_morph_pairs  # noqa: E402


def write_rows(rows: list[dict], path: Path) -> None:
    """Write dict rows as CSV, floats with 6 decimals, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6f}" if isinstance(v, float) else v for k, v in row.items()})


def main() -> None:
    """Evaluate and write both tables; print them."""
    bona, morph = evaluate_frll_baselines(load_morph_pairs())
    write_rows(bona, ROOT / "results" / "faces" / "fr_bona_fide.csv")
    write_rows(morph, ROOT / "results" / "faces" / "baseline_mmpmr.csv")
    for row in bona + morph:
        print(row)


if __name__ == "__main__":
    main()

"""Build ``adjointlib/faces/data/frll_morph_pairs.csv``: the FRLL morph pairs every experiment uses.

Source: ``../shared/reference/paper-notes.md`` §8.4 (SYN-MAD 2022: the 250 most similar
same-gender pairs per gender under a held-out FR system). Here the selector is the dlib ResNet
(MobileFaceNet is the white-box model of the identity loss, so it is not used to pick pairs);
similarity = −(Euclidean distance) between the neutral photos, canonical crops at
``EVAL_SIZE``; gender from ``london_info.csv``.

Usage: ``python scripts/build_morph_pairs.py [--per-gender 250] [--out adjointlib/faces/data/frll_morph_pairs.csv]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adjointlib.faces import (  # noqa: E402
    EVAL_SIZE,
    embed_images,
    get_fr_system,
    load_frll_aligned,
    save_morph_pairs,
    select_morph_pairs,
)
from adjointlib.faces.pairs import default_pairs_path  # noqa: E402

SELECTOR = "dlib_resnet"


def main() -> None:
    """Select the pairs and write the CSV; prints the counts per gender."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-gender", type=int, default=250)
    parser.add_argument("--out", type=Path, default=default_pairs_path())
    args = parser.parse_args()

    aligned = load_frll_aligned(EVAL_SIZE)
    system = get_fr_system(SELECTOR)
    emb = embed_images(system, aligned.neutral)
    similarity = system.similarity_matrix(emb, emb).numpy()
    pairs = select_morph_pairs(similarity, aligned.ids, aligned.genders, args.per_gender,
                               selector=f"{SELECTOR}:neutral:canonical{EVAL_SIZE}")
    path = save_morph_pairs(pairs, args.out)
    for gender in sorted({p["gender"] for p in pairs}):
        rows = [p for p in pairs if p["gender"] == gender]
        print(f"{gender}: {len(rows)} pairs, similarity {rows[-1]['similarity']:.4f} .. {rows[0]['similarity']:.4f}")
    print(f"wrote {len(pairs)} pairs to {path}")


if __name__ == "__main__":
    main()

"""Face morphing with AdjointDEIS (paper §5): DiM's start, then gradient descent on the identity loss.

* :mod:`.identity` — L*_ID (paper eq. 5.1);
* :mod:`.dim` — slerp/lerp and DiM's blended start (paper Alg. 2; exact DDIM inversion, or Cycle-SDE);
* :mod:`.optimise` — ``MorphSettings`` and ``optimise_morph`` (any gradient method of the library);
* :mod:`.methods` — named presets (the rows of Table 1);
* :mod:`.selection` — the pair set (seeded random sample stratified by gender, or the most similar);
* :mod:`.runner` — the resumable, shardable FRLL job and the MMPMR table; ``python -m adjointlib.morph``
  (or ``torchrun --nproc-per-node K -m adjointlib.morph``) runs it.
"""
from .dim import MorphStart, dim_start, lerp, slerp
from .identity import identity_loss
from .methods import METHODS, method_settings
from .optimise import MorphResult, MorphSettings, optimise_morph
from .runner import MorphJob, MorphScorer, format_mmpmr_table, merge_batches, mmpmr_rows, read_records, run_morphs
from .selection import PAIR_ORDERS, identity_reuse, select_pairs

__all__ = ["identity_loss", "slerp", "lerp", "MorphStart", "dim_start", "MorphSettings", "MorphResult",
           "optimise_morph", "METHODS", "method_settings", "MorphJob", "MorphScorer", "run_morphs", "read_records",
           "merge_batches", "mmpmr_rows", "format_mmpmr_table", "select_pairs", "identity_reuse", "PAIR_ORDERS"]

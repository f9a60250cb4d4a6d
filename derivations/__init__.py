"""SymPy derivations behind adjointlib (AdjointDEIS, Blasingame & Liu, NeurIPS 2024).

Each module derives one group of formulas of the paper symbolically, proves them in
``test_*`` functions (collected by pytest: ``pytest derivations``), and exposes the results as
plain float64 numpy functions so that ``tests/test_derivations_vs_adjointlib.py`` can compare the
library against them.  See ``derivations/ERRATA.md`` for every discrepancy with the paper.
"""

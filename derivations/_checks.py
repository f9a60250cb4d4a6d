"""Small helpers shared by the derivation modules (no tests live here).

Two kinds of proof are used throughout ``derivations/``:

* exact: ``is_zero(expr)`` runs ``sm.simplify`` (after cheap rewrites) and asks for 0;
* numeric: ``numeric_zero(expr, sampler)`` substitutes random points drawn with a fixed
  seed and checks the value is 0 to float64 round-off. It is used where ``simplify`` would be
  slow or cannot decide (branches of ``acos``/``sqrt``), never as a replacement for a derivation
  that is already symbolic elsewhere.
"""
import numpy as np
import sympy as sm

SEED = 20240515  # arXiv 2405.15020


def rng(offset=0):
    """The fixed random generator used by every numeric check."""
    return np.random.default_rng(SEED + offset)


def is_zero(expr):
    """True when SymPy can show ``expr == 0`` (expr may be a Matrix)."""
    if isinstance(expr, sm.MatrixBase):
        return all(is_zero(e) for e in expr)
    expr = sm.expand(expr)
    if expr == 0:
        return True
    return sm.simplify(expr) == 0


def numeric_zero(expr, points, rtol=1e-10, atol=1e-12, scale=None):
    """Check ``expr`` vanishes at every substitution dict in ``points``.

    ``scale`` (an expression) sets the size the residual is compared with; by default the
    tolerance is absolute ``atol`` plus ``rtol``.
    """
    for p in points:
        val = complex(sm.N(expr.subs(p), 30))
        ref = 1.0 if scale is None else abs(complex(sm.N(scale.subs(p), 30)))
        if not abs(val) <= atol + rtol * ref:
            return False
    return True

r"""AdjointDEIS-1 and AdjointDEIS-2M update coefficients and their orders
(paper eqs. 2.11–2.15, B.14–B.31, Algorithm 1, Theorem 2.1).

Write the integrand of (2.8) with the *scaled VJP* :math:`V(x;\lambda)=\alpha_\lambda^2a_x^\top
\partial_x\epsilon` (2.11) and, for z, :math:`V(z;\lambda)=\alpha_\lambda a_x^\top\partial_z\epsilon`
(B.28).  Freezing V by its Taylor polynomial about :math:`\lambda_t` (the known, less noisy end of
the adjoint step) and integrating with (B.16) gives the k-th order step, :math:`h=\lambda_s-\lambda_t<0`:

.. math:: a_x(s)\approx\frac{\alpha_t}{\alpha_s}a_x(t)+\frac{\sigma_s}{\alpha_s^2}\sum_{n<k}
          h^{n+1}\varphi_{n+1}(h)V^{(n)}(x;\lambda_t),\qquad
          a_z(s)\approx a_z(t)+\frac{\sigma_s}{\alpha_s}\sum_{n<k}h^{n+1}\varphi_{n+1}(h)V^{(n)}(z;\lambda_t).

* k = 1 (2.14): :math:`a_x(s)=\frac{\alpha_t}{\alpha_s}a_x(t)+\sigma_s(e^h-1)\frac{\alpha_t^2}{\alpha_s^2}
  a_x(t)^\top\partial_x\epsilon(x_t)`, :math:`a_z(s)=a_z(t)+\sigma_s(e^h-1)\frac{\alpha_t}{\alpha_s}a_x(t)^\top\partial_z\epsilon(x_t)`.
* k = 2, multistep (2.15 = B.27, B.31): :math:`V^{(1)}\approx(V_t-V_r)/(\rho h)`,
  :math:`\rho=(\lambda_t-\lambda_r)/h>0`, and DPM-Solver's :math:`h\varphi_2\approx(e^h-1)/2` (B.25).
  Algorithm 1 writes the same step as
  :math:`D=(1+\frac1{2\rho})V_t-\frac1{2\rho}V_r`, :math:`a_x(s)=\frac{\alpha_t}{\alpha_s}a_x(t)+
  \frac{\sigma_s}{\alpha_s^2}(e^h-1)D` (lines 10–16) with :math:`\rho_i=h_{i-1}/h_i`; it is identical
  to (B.27)/(B.31) — only with :math:`\alpha^2_{t_{i+1}}` in line 14 (the printed
  :math:`\alpha_{t_{i+1}^2}` is a typo), and line 5 must read :math:`\alpha_{t_0}/\alpha_{t_1}`.

**Orders.**  Expanding the exact increment and the scheme in h with symbolic Taylor coefficients
:math:`v_n=V^{(n)}(\lambda_t)` gives local errors :math:`e^{-\lambda_t}v_1h^2/2+O(h^3)` for k = 1 and
:math:`O(h^3)` (leading coefficient :math:`e^{-\lambda_t}(-v_1/12+(1/6+\rho/4)v_2)`) for k = 2.  M steps
of size :math:`h_{max}=O(1/M)` accumulate to a *global* error :math:`O(h_{max}^k)`: first order for
AdjointDEIS-1.  Theorem 2.1 as printed claims :math:`O(h_{max}^2)` for both k — a typo; its own
proof (C.6) ends with :math:`O(h_{max})` for k = 1.  (Measured slopes: derivations/solver_order.py.)

For the diffusion SDE every VJP term is doubled (Prop. 3.1, derivations/sde_adjoint.py).

Exposed (numpy, float64, inputs α, σ at the grid points; coefficients multiply the *raw* VJPs
:math:`v_x=a_x^\top\partial_x\epsilon`, :math:`v_z=a_x^\top\partial_z\epsilon`):
:func:`adjointdeis1_coefficients`, :func:`adjointdeis2m_coefficients`.
"""
import numpy as np
import sympy as sm

from derivations._checks import is_zero
from derivations.phi_functions import PHI
from derivations.phi_functions import h as h_phi

a_r, s_r, a_t, s_t, a_s, s_s = sm.symbols("alpha_r sigma_r alpha_t sigma_t alpha_s sigma_s", positive=True)
ax_t, ax_r = sm.symbols("a_t a_r", real=True)  # a_x(t), a_x(r) (one component suffices)
ax_s = sm.Symbol("a_s", real=True)  # a_x(s), the step's output: an explicit step never reads it
Jx_t, Jx_r, Jz_t, Jz_r = sm.symbols("Jx_t Jx_r Jz_t Jz_r", real=True)  # d eps/dx, d eps/dz at t, r
lam_of = lambda a, s: sm.log(a / s)  # noqa: E731
l_r, l_t, l_s = lam_of(a_r, s_r), lam_of(a_t, s_t), lam_of(a_s, s_s)
h = l_s - l_t  # < 0 in the adjoint
rho = (l_t - l_r) / h
c = sm.Symbol("c", positive=True)  # 1 for the ODE, 2 for the diffusion SDE

Vx_t, Vx_r = a_t**2 * ax_t * Jx_t, a_r**2 * ax_r * Jx_r  # (2.11)
Vz_t, Vz_r = a_t * ax_t * Jz_t, a_r * ax_r * Jz_r  # (B.28)


def kth_order_update(k, Vx_derivs, Vz_derivs):
    """General k-th order AdjointDEIS step (2.13, B.20) from V^{(n)}(lambda_t), n < k."""
    hs = sm.Symbol("h_", real=True)
    w = [(hs ** (n + 1) * PHI[n + 1].subs(h_phi, hs)).subs(hs, h) for n in range(k)]
    a_x_s = a_t / a_s * ax_t + s_s / a_s**2 * sum(wn * v for wn, v in zip(w, Vx_derivs))
    d_a_z = s_s / a_s * sum(wn * v for wn, v in zip(w, Vz_derivs))
    return a_x_s, d_a_z


# (2.14) as printed in the paper, and (B.27)/(B.31) as printed (with the factor c for SDEs)
E = sm.exp(h) - 1
ADEIS1_X = a_t / a_s * ax_t + c * s_s * E * a_t**2 / a_s**2 * ax_t * Jx_t
ADEIS1_Z = c * s_s * E * a_t / a_s * ax_t * Jz_t
ADEIS2M_X = ADEIS1_X + c * s_s * E / (2 * rho) * (a_t**2 / a_s**2 * ax_t * Jx_t - a_r**2 / a_s**2 * ax_r * Jx_r)
ADEIS2M_Z = ADEIS1_Z + c * s_s * E / (2 * rho) * (a_t / a_s * ax_t * Jz_t - a_r / a_s * ax_r * Jz_r)


def _coef(expr, sym):
    return sm.expand(expr).coeff(sym)


def adjointdeis1_coefficients(alpha_t, sigma_t, alpha_s, sigma_s, sde=False):
    """(c_a, c_vx, c_vz): a_x(s) = c_a a_x(t) + c_vx v_x(t), a_z(s) = a_z(t) + c_vz v_z(t)."""
    hh = np.log(alpha_s / sigma_s) - np.log(alpha_t / sigma_t)
    k = (2.0 if sde else 1.0) * sigma_s * np.expm1(hh)
    return alpha_t / alpha_s, k * alpha_t**2 / alpha_s**2, k * alpha_t / alpha_s


_ARGS = (a_r, s_r, a_t, s_t, a_s, s_s, c)
_COEF_2M = [
    sm.lambdify(_ARGS, e, modules="numpy")
    for e in (
        _coef(ADEIS2M_X, ax_t).coeff(Jx_t, 0),  # linear
        _coef(ADEIS2M_X, ax_t * Jx_t),
        _coef(ADEIS2M_X, ax_r * Jx_r),
        _coef(ADEIS2M_Z, ax_t * Jz_t),
        _coef(ADEIS2M_Z, ax_r * Jz_r),
    )
]


def adjointdeis2m_coefficients(alpha_r, sigma_r, alpha_t, sigma_t, alpha_s, sigma_s, sde=False):
    """(c_a, c_vx_t, c_vx_r, c_vz_t, c_vz_r) of (B.27)/(B.31) for the grid r < t < s:
    a_x(s) = c_a a_x(t) + c_vx_t v_x(t) + c_vx_r v_x(r),  a_z(s) = a_z(t) + c_vz_t v_z(t) + c_vz_r v_z(r).
    (Direct lambdification of the printed formulas; cancellation-prone only for |h| < 1e-8.)"""
    args = (alpha_r, sigma_r, alpha_t, sigma_t, alpha_s, sigma_s, 2.0 if sde else 1.0)
    return tuple(float(f(*args)) for f in _COEF_2M)


# ---------------------------------------------------------------- checks
def test_adjointdeis1_from_first_order_taylor_2_14():
    ax, dz = kth_order_update(1, [Vx_t], [Vz_t])
    assert is_zero(sm.expand_log(ax - ADEIS1_X.subs(c, 1), force=True))
    assert is_zero(sm.expand_log(dz - ADEIS1_Z.subs(c, 1), force=True))


def test_adjointdeis2m_from_taylor_finite_difference_and_B25():
    """(B.24) -> (B.26) -> (B.27), (B.29) -> (B.31)."""
    hh, rr = sm.symbols("h rho", real=True)
    # B.24 with V^(1) ~ (V_t - V_r)/(rho h), then B.25: (e^h-h-1)/h -> (e^h-1)/2
    two_term = hh * PHI[1].subs(h_phi, hh) * sm.Symbol("V0") + hh**2 * PHI[2].subs(h_phi, hh) * sm.Symbol("V1")
    V0, V1 = sm.Symbol("V0"), sm.Symbol("V1")
    assert is_zero(two_term - ((sm.exp(hh) - 1) * V0 + (sm.exp(hh) - hh - 1) * V1))
    approx = (sm.exp(hh) - 1) * V0 + (sm.exp(hh) - 1) / 2 * hh * V1
    Vt, Vr = sm.symbols("V_t V_r")
    approx = approx.subs({V0: Vt, V1: (Vt - Vr) / (rr * hh)})
    b27_bracket = (sm.exp(hh) - 1) * Vt + (sm.exp(hh) - 1) / (2 * rr) * (Vt - Vr)
    assert is_zero(approx - b27_bracket)
    # multiply by sigma_s/alpha_s^2 (x) or sigma_s/alpha_s (z): the printed (B.27), (B.31)
    sub = {hh: h, rr: rho}
    x_step = a_t / a_s * ax_t + s_s / a_s**2 * b27_bracket.subs({Vt: Vx_t, Vr: Vx_r}).subs(sub)
    z_step = s_s / a_s * b27_bracket.subs({Vt: Vz_t, Vr: Vz_r}).subs(sub)
    assert is_zero(x_step - ADEIS2M_X.subs(c, 1))
    assert is_zero(z_step - ADEIS2M_Z.subs(c, 1))


def test_algorithm1_lines_14_16_equal_B27_B31():
    hm1, hi = l_t - l_r, l_s - l_t  # h_{i-1}, h_i of Algorithm 1 (grid t_{i-1}=r, t_i=t, t_{i+1}=s)
    rho_i = hm1 / hi  # line 10
    D = (1 + 1 / (2 * rho_i)) * Vx_t - 1 / (2 * rho_i) * Vx_r  # line 11
    Ez = (1 + 1 / (2 * rho_i)) * Vz_t - 1 / (2 * rho_i) * Vz_r  # line 12
    line14 = a_t / a_s * ax_t + s_s / a_s**2 * (sm.exp(hi) - 1) * D
    line15 = s_s / a_s * (sm.exp(hi) - 1) * Ez
    assert is_zero(line14 - ADEIS2M_X.subs(c, 1))
    assert is_zero(line15 - ADEIS2M_Z.subs(c, 1))
    # the printed "alpha_{t_{i+1}^2}" read as alpha_{t_{i+1}} (no square) would NOT match
    misread = a_t / a_s * ax_t + s_s / a_s * (sm.exp(hi) - 1) * D
    pt = {a_r: 0.9, s_r: sm.sqrt(1 - sm.Rational(81, 100)), a_t: 0.8, s_t: 0.6, a_s: 0.6, s_s: 0.8,
          ax_t: 1.3, ax_r: 0.7, Jx_t: 0.4, Jx_r: -0.2}
    assert abs(float((misread - ADEIS2M_X.subs(c, 1)).subs(pt))) > 1e-3


def test_algorithm1_warm_start_line_5_is_adjointdeis1():
    """Line 5 is the k = 1 step from t_0 to t_1: its ratio must be alpha_{t_0}/alpha_{t_1}
    (the printed alpha_{t_i} has no i in scope there)."""
    a0, a1, s1, l0, l1 = sm.symbols("alpha_0 alpha_1 sigma_1 lambda_0 lambda_1", positive=True)
    ax0, J0 = sm.symbols("a_0 J_0")
    line5 = a0 / a1 * ax0 + s1 * (sm.exp(l1 - l0) - 1) * a0**2 / a1**2 * ax0 * J0
    ours = ADEIS1_X.subs(c, 1).subs({a_t: a0, a_s: a1, s_s: s1, ax_t: ax0, Jx_t: J0})
    ours = ours.subs(sm.log(a1 / s1) - sm.log(a0 / s_t), l1 - l0)
    assert is_zero(sm.expand_log(ours - line5.subs({l1: sm.log(a1 / s1), l0: sm.log(a0 / s_t)}), force=True))


def test_2m_without_history_difference_reduces_to_adjointdeis1():
    same = {ax_r: ax_t * a_t**2 / a_r**2, Jx_r: Jx_t, Jz_r: Jz_t * a_t / a_r * (a_r**2 / a_t**2)}
    # V_r = V_t  =>  2M == 1 (constant scaled VJP is integrated exactly by both)
    assert is_zero((ADEIS2M_X - ADEIS1_X).subs(same))
    assert is_zero((ADEIS2M_Z - ADEIS1_Z).subs(same))


def _local_errors():
    """Exact increment of alpha_s a_x over one step vs the two schemes, V(l) = sum v_n (l-l_t)^n/n!."""
    hh, rr, lt = sm.symbols("h rho lambda_t", real=True)
    u = sm.Symbol("u", real=True)
    v = sm.symbols("v0:4", real=True)
    V = lambda x: sum(v[n] * x**n / sm.factorial(n) for n in range(4))  # noqa: E731
    exact = sm.integrate(sm.exp(-(lt + u)) * V(u), (u, 0, hh))
    pref = sm.exp(-(lt + hh)) * (sm.exp(hh) - 1)  # e^{-lambda_s}(e^h - 1) = sigma_s/alpha_s (e^h-1)
    one = pref * V(0)
    Vr = V(-rr * hh)  # lambda_r = lambda_t - rho h
    two = pref * ((1 + 1 / (2 * rr)) * V(0) - 1 / (2 * rr) * Vr)
    ser = lambda e: sm.expand(sm.series(e, hh, 0, 5).removeO())  # noqa: E731
    return ser(exact - one), ser(exact - two), hh, rr, lt, v


def test_local_truncation_errors_settle_theorem_2_1_orders():
    e1, e2, hh, rr, lt, v = _local_errors()
    # AdjointDEIS-1: local error v1 e^{-lambda_t} h^2/2 + O(h^3)  -> global O(h)
    assert e1.coeff(hh, 0) == 0 and e1.coeff(hh, 1) == 0
    assert sm.simplify(e1.coeff(hh, 2) - v[1] * sm.exp(-lt) / 2) == 0
    # AdjointDEIS-2M: local O(h^3) with a generically nonzero coefficient -> global O(h^2)
    for p in range(3):
        assert sm.simplify(e2.coeff(hh, p)) == 0
    lead = sm.simplify(e2.coeff(hh, 3))
    assert sm.simplify(lead - sm.exp(-lt) * (-v[1] / 12 + (sm.Rational(1, 6) + rr / 4) * v[2])) == 0
    # M = O(1/h) steps of local error C h^{k+1} add up to O(h^k): the global error of k = 1 is
    # O(h_max), not the O(h_max^2) printed in Theorem 2.1 (slopes measured in solver_order.py)
    assert sm.limit(e1 / hh, hh, 0) == 0 and sm.limit(e1 / hh**2, hh, 0) != 0


def test_proof_typos_C13_and_C14():
    """C.13 prints (e^h - h + 1): it is 2 + O(h), not the O(h^2) weight e^h - h - 1 = h^2 phi_2.
    C.14 needs Delta_{i-1}: the 2M step reads a_x(t) and a_x(r) only, never a_x(s)."""
    hh = sm.Symbol("h")
    assert sm.series(sm.exp(hh) - hh + 1, hh, 0, 1).removeO() == 2
    assert sm.series(sm.exp(hh) - hh - 1, hh, 0, 2).removeO() == 0
    assert _is_explicit(ADEIS2M_X) and _is_explicit(ADEIS2M_Z) and sm.diff(ADEIS2M_X, ax_r) != 0
    # the check fails for a step that reads its own output a_x(s), as C.14's Delta_{i+1} would make it
    assert not _is_explicit(ADEIS2M_X + s_s * E * ax_s * Jx_t)


def _is_explicit(step):
    """The step's right-hand side reads only a_x(t), a_x(r), the Jacobians at t and r, the schedule and c: never its
    own output a_x(s) (an explicit multistep method)."""
    allowed = {a_r, s_r, a_t, s_t, a_s, s_s, c, ax_t, ax_r, Jx_t, Jx_r, Jz_t, Jz_r}
    return step.free_symbols <= allowed


def _reads_vjps_at_r_only(step, jacobian_r):
    """The step depends on the point r only through the VJP V(r) = alpha_r^k a_x(r) J_r: after writing J_r = V_r /
    (alpha_r^k a_x(r)) neither a_x(r) nor J_r is left, and V_r is (a model output at r would not be)."""
    v_r = sm.Symbol("V_r", real=True)
    power = 2 if jacobian_r == Jx_r else 1  # (2.11) for x, (B.28) for z
    rewritten = sm.simplify(step.subs(jacobian_r, v_r / (a_r**power * ax_r)))
    return not ({ax_r, jacobian_r} & rewritten.free_symbols) and v_r in rewritten.free_symbols


def test_2m_reuses_the_previous_vjp_not_the_model_output():
    """The main text says 2M needs "a_x(r) and the model output eps(x_r)"; (B.27)/(B.31) read the point r only
    through the VJPs V(x; r) = alpha_r^2 a_x(r)^T d eps/dx_r and V(z; r) = alpha_r a_x(r)^T d eps/dz (2.11, B.28)."""
    assert _reads_vjps_at_r_only(ADEIS2M_X, Jx_r) and _reads_vjps_at_r_only(ADEIS2M_Z, Jz_r)
    # the check fails for the main text's reading: a step that uses the model output eps(x_r) at r
    eps_r = sm.Symbol("eps_r", real=True)
    mutant = ADEIS1_X + c * s_s * E / (2 * rho) * (a_t**2 / a_s**2 * ax_t * Jx_t - a_r**2 / a_s**2 * ax_t * eps_r)
    assert not _reads_vjps_at_r_only(mutant, Jx_r)


def test_B24_B29_intermediate_integrals_need_the_exponential_weight():
    """Without e^{-lambda} the n = 0 integral is h, not sigma_s/alpha_s (e^h - 1)."""
    lt, hh, lam = sm.symbols("lambda_t h lambda", real=True)
    with_w = sm.integrate(sm.exp(-lam), (lam, lt, lt + hh))
    without = sm.integrate(1, (lam, lt, lt + hh))
    assert is_zero(with_w - sm.exp(-(lt + hh)) * (sm.exp(hh) - 1))
    assert not is_zero(without - sm.exp(-(lt + hh)) * (sm.exp(hh) - 1))


def test_numpy_coefficients_match_symbolic():
    from derivations.lambda_change import alpha_sigma_of_lam

    (ar, at, as_), (sr, st, ss) = alpha_sigma_of_lam(np.array([1.3, 0.9, 0.2]))
    c1 = adjointdeis1_coefficients(at, st, as_, ss)
    sub = {a_r: ar, s_r: sr, a_t: at, s_t: st, a_s: as_, s_s: ss, c: 1}
    assert np.isclose(c1[0], float(_coef(ADEIS1_X, ax_t).coeff(Jx_t, 0).subs(sub)), rtol=1e-14)
    assert np.isclose(c1[1], float(_coef(ADEIS1_X, ax_t * Jx_t).subs(sub)), rtol=1e-14)
    assert np.isclose(c1[2], float(_coef(ADEIS1_Z, ax_t * Jz_t).subs(sub)), rtol=1e-14)
    c2 = adjointdeis2m_coefficients(ar, sr, at, st, as_, ss)
    # constant scaled VJP: 2M reduces to 1
    assert np.isclose(c2[1] + c2[2] * at**2 / ar**2, c1[1], rtol=1e-13)
    assert np.isclose(c2[3] + c2[4] * at / ar, c1[2], rtol=1e-13)
    s2 = adjointdeis2m_coefficients(ar, sr, at, st, as_, ss, sde=True)
    assert np.allclose(np.array(s2[1:]), 2 * np.array(c2[1:]), rtol=1e-14) and s2[0] == c2[0]

r"""AdjointDEIS-1 versus the exact discrete adjoint of one DDIM step (paper §2.2, eq. 2.14, against autograd through DDIM).

One DDIM step from s to t < s is :math:`x_t=\frac{\alpha_t}{\alpha_s}x_s-\sigma_t(e^{h'}-1)\epsilon_\theta(x_s,z,s)`,
:math:`h'=\lambda_t-\lambda_s>0`.  Differentiating it (what autograd does through the sampler):

.. math:: \frac{\partial\mathcal L}{\partial x_s}=\frac{\alpha_t}{\alpha_s}a(t)
          -\sigma_t(e^{h'}-1)\,a(t)^\top\partial_x\epsilon_\theta(x_s,z,s),\qquad
          \Delta\frac{\partial\mathcal L}{\partial z}=-\sigma_t(e^{h'}-1)\,a(t)^\top\partial_z\epsilon_\theta(x_s,z,s).

Since :math:`-\sigma_t(e^{h'}-1)=\alpha_t(e^{-\lambda_t}-e^{-\lambda_s})=\sigma_s(e^h-1)\frac{\alpha_t}{\alpha_s}`
with :math:`h=\lambda_s-\lambda_t=-h'`, compared with AdjointDEIS-1 (2.14):

* the linear coefficient :math:`\alpha_t/\alpha_s` is identical;
* the x-VJP coefficient differs by the factor :math:`\alpha_s/\alpha_t` (DDIM / AdjointDEIS);
* the z-VJP coefficient is identical;
* the Jacobian is evaluated at the *other end* of the step, :math:`(x_s,s)` instead of :math:`(x_t,t)`.

Both factors are :math:`1+O(h)`, so the two per-step maps differ by :math:`O(h^2)` and
AdjointDEIS-1 is a consistent (first-order) discretisation of the continuous adjoint, but it is
*not* the gradient of the discrete sampler.  The SDE step (3.6) behaves the same with factor 2.

**A stability limit near t = T.**  As :math:`\alpha\to0`, :math:`x_t\approx\sigma_t\epsilon`, so an
accurate network approaches the linear model :math:`\epsilon(x,s)=x/\sigma_s` (Jacobian :math:`1/\sigma`).
For it the exact VJP of one step s → t is :math:`\frac{\sigma_t}{\sigma_s}a(t)` (DDIM) and
:math:`\frac{\sigma_t}{\sigma_s}(2-e^{h'})a(t)` (SDE-DPM-Solver-1, 3.6), while AdjointDEIS-1 (VJP at
:math:`x_t`, :math:`J=1/\sigma_t`) gives

.. math:: a(s)=\frac{\alpha_t}{\alpha_s}\big(1-c\,(e^{h'}-1)\big)a(t)
          =\frac{\sigma_t}{\sigma_s}\,e^{h'}\big(1-c\,(e^{h'}-1)\big)a(t),\qquad c=1\ \text{(ODE)},\ 2\ \text{(SDE)}.

Relative to the exact gradient of a sampler with N steps of size :math:`h_N=h'M/N`, the adjoint's factor per
adjoint step is

.. math:: \rho=\frac{e^{h'}\big(1-c(e^{h'}-1)\big)}{\kappa^{N/M}},\qquad \kappa=1\ \text{(DDIM)},\quad
          \kappa=2-e^{h_N}\ \text{(SDE-DPM-Solver-1)},

and each step near T multiplies the gradient's *error relative to the exact discrete gradient* by :math:`|\rho|`.
**Where that error starts to grow** is :math:`|\rho|=1`, which for M = N solves exactly to

* ODE: :math:`e^{h'}(2-e^{h'})=-1\Rightarrow h'=\ln(1+\sqrt2)\approx0.881`;
* SDE: :math:`e^{h'}(3-2e^{h'})=-(2-e^{h'})\Rightarrow e^{h'}=\tfrac{1+\sqrt5}2,\ h'=\ln\tfrac{1+\sqrt5}2\approx0.481`

(for M < N the SDE threshold depends on N/M; :func:`error_ratio_threshold` solves it).  These are *smaller* than
:math:`\ln(1+2/c)` (ln 3 ≈ 1.10 for the ODE, ln 2 ≈ 0.69 for the SDE), where the adjoint's *own* step factor
:math:`1-c(e^{h'}-1)` passes −1: between the two the adjoint step is still "stable" by that measure, yet every step
multiplies the error against the exact gradient (at h' = 1.0 the ODE ratio is −1.95 per step).  An earlier version of
this module and of chapter 10 gave ln(1 + 2/c) as the limit; the checks below fail for it.  Chapter 10 measures the
blow-up this predicts.

Exposed (numpy): :func:`ddim_discrete_adjoint_coefficients` (coefficients of the raw VJPs at s),
:func:`noise_regime_relative_factor` (ρ above), :func:`error_ratio_threshold` (the h' where :math:`|\rho|` reaches 1).
"""
import numpy as np
import sympy as sm

from derivations._checks import is_zero
from derivations.lambda_change import ALPHA_OF_LAM, SIGMA_OF_LAM, lam_sym
from derivations.solver_coefficients import ADEIS1_X, ADEIS1_Z, Jx_t, Jz_t, a_s, a_t, ax_t, c, s_s, s_t

x_s, z, a_out = sm.symbols("x_s z a", real=True)
eps = sm.Function("eps")(x_s, z)  # eps_theta(x_s, z, s)


def ddim(xs_):
    hp = sm.log(a_t / s_t) - sm.log(a_s / s_s)
    return a_t / a_s * xs_ - s_t * (sm.exp(hp) - 1) * eps


def ddim_discrete_adjoint_coefficients(alpha_s, sigma_s, alpha_t, sigma_t, sde=False):
    """(c_a, c_vx, c_vz) of the exact VJP of one DDIM (or, sde=True, SDE-DPM-Solver-1) step s -> t:
    dL/dx_s = c_a a(t) + c_vx a(t)^T d eps/dx (x_s, s), Delta dL/dz = c_vz a(t)^T d eps/dz (x_s, s)."""
    hp = np.log(alpha_t / sigma_t) - np.log(alpha_s / sigma_s)
    k = -(2.0 if sde else 1.0) * sigma_t * np.expm1(hp)
    return alpha_t / alpha_s, k, k


def noise_regime_relative_factor(h_adjoint, h_sampling, sde=False):
    """rho: AdjointDEIS-1's per-step factor over the exact discrete one, for eps(x, s) = x / sigma_s.

    h_adjoint = |lambda_t - lambda_s| of one adjoint step, h_sampling that of one sampling step
    (h_adjoint / h_sampling sampling steps per adjoint step, an integer)."""
    c_ = 2.0 if sde else 1.0
    steps = int(round(h_adjoint / h_sampling))
    if steps < 1 or not np.isclose(steps * h_sampling, h_adjoint):
        raise ValueError(f"h_adjoint = {h_adjoint} is not a whole number of sampling steps of {h_sampling}")
    kappa = 2.0 - np.exp(h_sampling) if sde else 1.0
    return np.exp(h_adjoint) * (1.0 - c_ * np.expm1(h_adjoint)) / kappa**steps


def error_ratio_threshold(sde=False, steps_per_adjoint_step=1):
    """The adjoint step h' > 0 at which |rho| reaches 1 (the error against the exact discrete gradient starts to
    grow), for ``steps_per_adjoint_step`` = N/M sampling steps per adjoint step.  ODE: ln(1 + sqrt 2) whatever N/M;
    SDE with N = M: ln((1 + sqrt 5)/2).  Solved numerically (brentq) on |rho(h')| - 1 between 1e-6 and the first
    h' where the SDE's exact factor 2 - e^{h_N} vanishes."""
    from scipy.optimize import brentq

    k = int(steps_per_adjoint_step)
    upper = np.log(3.0) if not sde else min(np.log(3.0), k * np.log(2.0) * (1 - 1e-9))
    return brentq(lambda h: abs(noise_regime_relative_factor(h, h / k, sde=sde)) - 1.0, 1e-3, upper)


def _rho_sym(h, c_, kappa):
    return sm.exp(h) * (1 - c_ * (sm.exp(h) - 1)) / kappa


def _discrete_vjp():
    step = ddim(x_s)
    return sm.expand(a_out * sm.diff(step, x_s)), sm.expand(a_out * sm.diff(step, z))


# ---------------------------------------------------------------- checks
def test_discrete_ddim_adjoint_coefficients():
    gx, gz = _discrete_vjp()
    Jx, Jz = sm.Derivative(eps, x_s), sm.Derivative(eps, z)
    lin = gx.coeff(Jx, 0)
    cx, cz = gx.coeff(Jx), gz.coeff(Jz)
    h = sm.log(a_s / s_s) - sm.log(a_t / s_t)
    assert is_zero(lin - a_t / a_s * a_out)
    target = s_s * (sm.exp(h) - 1) * a_t / a_s * a_out
    assert is_zero(sm.expand_log(cx - target, force=True))
    assert is_zero(sm.expand_log(cz - target, force=True))


def test_ratio_to_adjointdeis1_is_alpha_s_over_alpha_t_for_x_and_1_for_z():
    gx, gz = _discrete_vjp()
    Jx, Jz = sm.Derivative(eps, x_s), sm.Derivative(eps, z)
    ad_x = sm.expand(ADEIS1_X.subs(c, 1)).coeff(ax_t * Jx_t) * a_out
    ad_z = sm.expand(ADEIS1_Z.subs(c, 1)).coeff(ax_t * Jz_t) * a_out
    ad_lin = sm.expand(ADEIS1_X.subs(c, 1)).coeff(ax_t).coeff(Jx_t, 0) * a_out
    assert is_zero(sm.expand_log(gx.coeff(Jx) / ad_x - a_s / a_t, force=True))
    assert is_zero(sm.expand_log(gz.coeff(Jz) / ad_z - 1, force=True))
    assert is_zero(gx.coeff(Jx, 0) - ad_lin)


def test_difference_per_step_is_second_order_in_h():
    """On a VP schedule alpha_t/alpha_s = 1 + O(h) and e^h - 1 = O(h): coefficient gap O(h^2)."""
    lt, h = sm.symbols("lambda_t h", real=True)
    A = lambda l: ALPHA_OF_LAM.subs(lam_sym, l)  # noqa: E731
    S = lambda l: SIGMA_OF_LAM.subs(lam_sym, l)  # noqa: E731
    ls = lt + h
    adeis = S(ls) * (sm.exp(h) - 1) * A(lt) ** 2 / A(ls) ** 2
    ddim_c = S(ls) * (sm.exp(h) - 1) * A(lt) / A(ls)
    gap = sm.series(adeis - ddim_c, h, 0, 3).removeO()
    assert gap.coeff(h, 0) == 0 and sm.simplify(gap.coeff(h, 1)) == 0
    assert sm.simplify(gap.coeff(h, 2)) != 0


def test_numpy_matches():
    from derivations.solver_coefficients import adjointdeis1_coefficients

    at, st, as_, ss = 0.8, 0.6, 0.6, 0.8
    d = ddim_discrete_adjoint_coefficients(as_, ss, at, st)
    a = adjointdeis1_coefficients(at, st, as_, ss)
    assert np.isclose(d[0], a[0]) and np.isclose(d[1] / a[1], as_ / at) and np.isclose(d[2], a[2])
    dsde = ddim_discrete_adjoint_coefficients(as_, ss, at, st, sde=True)
    assert np.isclose(dsde[1], 2 * d[1]) and np.isclose(dsde[2], 2 * d[2])


def test_linear_noise_model_factors_exact_and_adjointdeis1():
    """eps = x / sigma: exact step VJPs sigma_t/sigma_s (DDIM) and (sigma_t/sigma_s)(2 - e^{h'}) (SDE);
    AdjointDEIS-1's factor (alpha_t/alpha_s)(1 - c (e^{h'} - 1)) = (sigma_t/sigma_s) e^{h'} (1 - c (e^{h'} - 1))."""
    from derivations.sde_adjoint import sde_step
    from derivations.solver_coefficients import ADEIS1_X, Jx_t, ax_t, c

    hp = sm.log(a_t / s_t) - sm.log(a_s / s_s)  # h' > 0
    step = ddim(x_s).subs(eps, x_s / s_s).doit()
    assert is_zero(sm.expand_log(sm.diff(step, x_s) - s_t / s_s, force=True))
    sde = sde_step(a_s, s_s, a_t, s_t, x_s, x_s / s_s, 0)
    assert is_zero(sm.expand_log(sm.diff(sde, x_s) - s_t / s_s * (2 - sm.exp(hp)), force=True))
    adeis = ADEIS1_X.subs(Jx_t, 1 / s_t) / ax_t
    assert is_zero(sm.expand_log(adeis - a_t / a_s * (1 - c * (sm.exp(hp) - 1)), force=True))
    assert is_zero(sm.expand_log(adeis - s_t / s_s * sm.exp(hp) * (1 - c * (sm.exp(hp) - 1)), force=True))


def test_adjoint_step_factor_flips_at_log_1_plus_2_over_c():
    """Where the adjoint's own step factor 1 - c (e^{h'} - 1) passes -1 (ln 3 ODE, ln 2 SDE): *not* where the error
    against the exact gradient starts to grow (next tests)."""
    x = sm.Symbol("x", positive=True)
    for c_, limit in ((1, sm.log(3)), (2, sm.log(2))):
        assert sm.solve(sm.Eq(1 - c_ * (sm.exp(x) - 1), -1), x) == [limit]


def test_error_ratio_threshold_ode_is_log_1_plus_sqrt2():
    """|rho_ODE| = |e^{h'}(2 - e^{h'})| reaches 1 at h' = ln(1 + sqrt 2) (u = e^{h'}: u^2 - 2u - 1 = 0), below ln 3."""
    h = sm.Symbol("h", positive=True)
    rho = _rho_sym(h, 1, 1)
    roots = sm.solve(sm.Eq(rho, -1), h)
    assert roots == [sm.log(1 + sm.sqrt(2))]
    assert sm.solve(sm.Eq(rho, 1), h) == []  # rho < 1 for every h' > 0: only -1 is crossed
    threshold = float(roots[0])
    assert abs(threshold - 0.8814) < 1e-4 and threshold < float(sm.log(3))
    grid = np.linspace(1e-3, 1.2, 400)
    ratio = np.abs([noise_regime_relative_factor(g, g) for g in grid])
    assert np.all(ratio[grid < threshold] < 1) and np.all(ratio[grid > threshold] > 1)
    assert np.isclose(error_ratio_threshold(), threshold) and np.isclose(error_ratio_threshold(False, 4), threshold)


def test_error_ratio_threshold_sde_is_log_golden_ratio_when_m_equals_n():
    """|rho_SDE| = |e^{h'}(3 - 2e^{h'})/(2 - e^{h'})| reaches 1 at e^{h'} = (1 + sqrt 5)/2 (u^2 - u - 1 = 0), below ln 2."""
    h = sm.Symbol("h", positive=True)
    rho = _rho_sym(h, 2, 2 - sm.exp(h))
    roots = [r for r in sm.solve(sm.Eq(rho, -1), h) if r.is_real and float(r) < float(sm.log(2))]
    assert len(roots) == 1 and is_zero(roots[0] - sm.log((1 + sm.sqrt(5)) / 2))
    threshold = float(roots[0])
    assert abs(threshold - 0.4812) < 1e-4 and threshold < float(sm.log(2))
    assert np.isclose(error_ratio_threshold(sde=True), threshold)


def test_the_old_limit_is_not_where_the_error_grows():
    """The statement this module used to make (the gradient blows up only past ln(1 + 2/c)) is false: inside it the
    per-step error ratio already exceeds 1 in magnitude (the issue's examples: ODE at h' = 1.0, SDE at 0.6)."""
    assert abs(noise_regime_relative_factor(1.0, 1.0)) > 1.9 and 1.0 < np.log(3)
    assert abs(noise_regime_relative_factor(0.6, 0.6, sde=True)) > 6 and 0.6 < np.log(2)
    # below the limit the bracket lies in (-1, 1), beyond it below -1
    for c_, limit in ((1, np.log(3)), (2, np.log(2))):
        assert abs(1 - c_ * np.expm1(0.99 * limit)) < 1 < abs(1 - c_ * np.expm1(1.01 * limit))


def test_relative_factor_numpy_equals_the_derived_step_factors_composed():
    """noise_regime_relative_factor against the symbolic factors above, lambdified and composed on a VP
    schedule (alpha^2 + sigma^2 = 1): one AdjointDEIS-1 step over k sampling steps, divided by the
    product of the k exact step VJPs; and rho_ODE = 1 - (e^h - 1)^2 = 1 - h^2 + O(h^3)."""
    from derivations.sde_adjoint import sde_step
    from derivations.solver_coefficients import ADEIS1_X, Jx_t, ax_t, c

    args = (a_s, s_s, a_t, s_t)
    adeis = sm.lambdify((*args, c), ADEIS1_X.subs(Jx_t, 1 / s_t) / ax_t)
    exact = {False: sm.lambdify(args, sm.diff(ddim(x_s).subs(eps, x_s / s_s).doit(), x_s)),
             True: sm.lambdify(args, sm.diff(sde_step(a_s, s_s, a_t, s_t, x_s, x_s / s_s, 0), x_s))}

    def alpha_sigma(lam_):  # VP: alpha/sigma = e^lambda
        return 1 / np.sqrt(1 + np.exp(-2 * lam_)), 1 / np.sqrt(1 + np.exp(2 * lam_))

    lam_t, h_n = 0.4, 0.35
    for sde_ in (False, True):
        for k in (1, 2, 4):
            lams = lam_t - h_n * np.arange(k + 1)  # t = lams[0] (least noisy) ... s = lams[k]
            composed = np.prod([exact[sde_](*alpha_sigma(lams[i + 1]), *alpha_sigma(lams[i])) for i in range(k)])
            one_step = adeis(*alpha_sigma(lams[k]), *alpha_sigma(lams[0]), 2.0 if sde_ else 1.0)
            assert np.isclose(one_step / composed, noise_regime_relative_factor(k * h_n, h_n, sde=sde_), rtol=1e-12)
    hh = sm.Symbol("h", positive=True)
    assert is_zero(sm.exp(hh) * (2 - sm.exp(hh)) - (1 - (sm.exp(hh) - 1) ** 2))
    try:
        noise_regime_relative_factor(0.5, 0.3)
    except ValueError as err:
        assert "whole number" in str(err)
    else:
        raise AssertionError("a non-integer step ratio must be refused")

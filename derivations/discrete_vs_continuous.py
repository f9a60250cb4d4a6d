r"""AdjointDEIS-1 versus the exact discrete adjoint of one DDIM step (paper-notes §4.2).

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

The bracket passes −1 at :math:`h'=\ln(1+2/c)` (ln 3 ≈ 1.10 for the ODE, ln 2 ≈ 0.69 for the SDE):
with larger adjoint steps every step flips and amplifies the adjoint — the explicit step's stability
limit, reached by the SDE adjoint (twice the Jacobian term) at smaller steps than by the ODE one.
Relative to the exact gradient of a sampler with N steps of size :math:`h_N=h'M/N`, the adjoint's
factor per adjoint step is :math:`\rho=e^{h'}(1-c(e^{h'}-1))/\kappa^{N/M}` with :math:`\kappa=1` (DDIM) or
:math:`2-e^{h_N}` (SDE).  Chapter 10 measures the blow-up this predicts.

Exposed (numpy): :func:`ddim_discrete_adjoint_coefficients` (coefficients of the raw VJPs at s),
:func:`noise_regime_relative_factor` (ρ above).
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


def test_stability_limit_is_log_1_plus_2_over_c():
    x = sm.Symbol("x", positive=True)
    for c_, limit in ((1, sm.log(3)), (2, sm.log(2))):
        assert sm.solve(sm.Eq(1 - c_ * (sm.exp(x) - 1), -1), x) == [limit]
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

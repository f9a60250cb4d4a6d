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

Exposed (numpy): :func:`ddim_discrete_adjoint_coefficients` (coefficients of the raw VJPs at s).
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

r"""AdjointDPM's ρ-parametrisation (paper A.12–A.15) and its inverse for the linear VP schedule.

AdjointDPM (Pan et al., ICLR 2024) removes the linear term of the diffusion ODE with
:math:`y=e^{-\int_0^tf}x=\frac{\alpha_0}{\alpha_t}x` and a new time
:math:`\rho=\gamma(t)`, :math:`\frac{d\gamma}{dt}=e^{-\int_0^tf}\frac{g^2}{2\sigma_t}` (A.12).  By (B.6)
:math:`\frac{d\gamma}{dt}=-\frac{\alpha_0}{\alpha_t}\sigma_t\dot\lambda_t=-\alpha_0e^{-\lambda_t}\dot\lambda_t`,
so in closed form

.. math:: \gamma(t)=\alpha_0(e^{-\lambda_t}-e^{-\lambda_0})=\frac{\alpha_0\sigma_t}{\alpha_t}-\sigma_0 ,

i.e. ρ is, up to an affine map, the VE noise level :math:`e^{-\lambda}=\sigma/\alpha` that the
AdjointDPM code integrates over.  Then :math:`dy/d\rho=\epsilon_\theta(\frac{\alpha_t}{\alpha_0}y,t)`
(A.12) and the adjoint is :math:`\frac{da_y}{d\rho}=-a_y^\top\partial_y\epsilon` (A.13) with
:math:`a_y=\frac{\alpha_t}{\alpha_0}a_x`.  Changing variables ρ → λ
(:math:`d\rho=-\alpha_0e^{-\lambda}d\lambda`) turns (A.13) into exactly the λ-form of Prop. 2.1,
:math:`d(\alpha a_x)/d\lambda=\alpha^2e^{-\lambda}a_x^\top J`: AdjointDPM and AdjointDEIS solve the same
equation in different time variables (ρ vs λ); what differs is the solver.

**Inverse (A.15).**  :math:`e^{-\lambda_t}=r:=(\rho+\sigma_0)/\alpha_0` and, for VP,
:math:`\log\alpha_t=\log(1/\sqrt{r^2+1})=:A`; solving the quadratic (I.1) for t gives

.. math:: \gamma^{-1}(\rho)=\frac{\beta_0-\sqrt{\beta_0^2+4A(\beta_0-\beta_1)}}{\beta_0-\beta_1},

the paper's (A.15) — consistent with (A.14).  (Here "0" may be any base time
:math:`t_b` with :math:`\alpha_0=\alpha(t_b),\sigma_0=\sigma(t_b)`, e.g. the :math:`t=\epsilon` start.)

Exposed (numpy): :func:`rho_of_t`, :func:`t_of_rho` for the linear VP schedule.
"""
import numpy as np
import sympy as sm

from derivations._checks import is_zero, numeric_zero, rng
from derivations.vp_sde import (alpha_g, alpha_lin, beta0, dbeta, diffusion_g2, drift_f, half_log_snr,
                                sigma_g, sigma_lin, t)

tb = sm.Symbol("t_b", positive=True)  # base time ("0" of the paper)
rho = sm.Symbol("rho", positive=True)
b1 = beta0 + dbeta


def gamma_expr(alpha, sigma):
    """gamma(t) = alpha_0 sigma_t/alpha_t - sigma_0 with base time t_b."""
    return alpha.subs(t, tb) * sigma / alpha - sigma.subs(t, tb)


def gamma_inverse_A15(alpha0, sigma0):
    """(A.15) for the linear VP schedule."""
    A = sm.log(1 / sm.sqrt(((rho + sigma0) / alpha0) ** 2 + 1))
    return (beta0 - sm.sqrt(beta0**2 + 4 * A * (beta0 - b1))) / (beta0 - b1)


_GAMMA_LIN = gamma_expr(alpha_lin, sigma_lin)
_INV_LIN = gamma_inverse_A15(alpha_lin.subs(t, tb), sigma_lin.subs(t, tb))
_rho_np = sm.lambdify((t, tb, beta0, dbeta), _GAMMA_LIN, modules="numpy")
_t_np = sm.lambdify((rho, tb, beta0, dbeta), _INV_LIN, modules="numpy")


def rho_of_t(tv, t_base=0.0, beta_0=0.1, beta_1=20.0):
    """AdjointDPM's rho = gamma(t) for the linear VP schedule (numpy)."""
    return _rho_np(tv, t_base, beta_0, beta_1 - beta_0)


def t_of_rho(rv, t_base=0.0, beta_0=0.1, beta_1=20.0):
    """(A.15): gamma^{-1}(rho) for the linear VP schedule (numpy)."""
    return _t_np(rv, t_base, beta_0, beta_1 - beta_0)


# ---------------------------------------------------------------- checks
def test_gamma_closed_form_solves_A12():
    g2 = diffusion_g2(alpha_g, sigma_g)
    integrating = alpha_g.subs(t, tb) / alpha_g  # e^{-int_{t_b}^t f} = alpha_b/alpha_t (f = (log alpha)')
    assert is_zero(sm.diff(sm.log(integrating), t) + drift_f(alpha_g))
    dgamma = integrating * g2 / (2 * sigma_g)
    gam = gamma_expr(alpha_g, sigma_g)
    assert is_zero(sm.diff(gam, t) - dgamma)
    assert is_zero(gam.subs(t, tb))
    lam = half_log_snr(alpha_g, sigma_g)
    assert is_zero(gam - alpha_g.subs(t, tb) * (sm.exp(-lam) - sm.exp(-lam.subs(t, tb))))


def test_y_ode_in_rho_A12():
    """y = (alpha_0/alpha_t) x: dy/dt = gamma'(t) eps, i.e. dy/drho = eps(alpha_t/alpha_0 y, t)."""
    xfun, eps = sm.Function("x")(t), sm.Function("eps")(t)
    f, g2 = drift_f(alpha_g), diffusion_g2(alpha_g, sigma_g)
    y = alpha_g.subs(t, tb) / alpha_g * xfun
    dy = sm.diff(y, t).subs(sm.Derivative(xfun, t), f * xfun + g2 / (2 * sigma_g) * eps)
    assert is_zero(dy - sm.diff(gamma_expr(alpha_g, sigma_g), t) * eps)


def test_A13_in_lambda_is_the_adjointdeis_equation():
    """a_y = (alpha_t/alpha_0) a_x, da_y/drho = -(alpha_t/alpha_0) a_y J, drho/dlambda = -alpha_0 e^{-lambda}
    => d(alpha a_x)/dlambda = alpha^2 e^{-lambda} a_x J (the lambda form of Prop. 2.1)."""
    al, al0, ax, J, lam = sm.symbols("alpha alpha_0 a_x J lambda", positive=True)
    a_y = al / al0 * ax
    da_y_drho = -a_y * (al / al0) * J
    drho_dlam = -al0 * sm.exp(-lam)
    d_alpha_ax_dlam = al0 * da_y_drho * drho_dlam  # alpha a_x = alpha_0 a_y
    assert is_zero(d_alpha_ax_dlam - al**2 * sm.exp(-lam) * ax * J)


def test_A15_inverts_A14():
    r = rng(9)
    pts = [{t: r.uniform(0.01, 1.0), tb: tb_, beta0: 0.1, dbeta: 19.9} for tb_ in (0.0, 1e-3, 0.005)
           for _ in range(3)]
    roundtrip = _INV_LIN.subs(rho, _GAMMA_LIN)
    assert numeric_zero(roundtrip - t, pts, rtol=1e-10, scale=t)
    # the key step: log alpha(gamma^{-1}(rho)) = log(1/sqrt(r^2+1)), r = (rho + sigma_0)/alpha_0
    r_ = (rho + sigma_lin.subs(t, tb)) / alpha_lin.subs(t, tb)
    pts2 = [{rho: v, tb: 1e-3, beta0: 0.1, dbeta: 19.9} for v in (0.05, 0.7, 3.0, 40.0)]
    assert numeric_zero(sm.log(alpha_lin).subs(t, _INV_LIN) - sm.log(1 / sm.sqrt(r_**2 + 1)), pts2)


def test_numpy_exports():
    ts = np.array([0.02, 0.3, 0.77, 1.0])
    for tb_ in (0.0, 1e-3):
        assert np.allclose(t_of_rho(rho_of_t(ts, tb_), tb_), ts, rtol=1e-10)
    assert np.all(np.diff(rho_of_t(ts)) > 0)  # gamma increases with t

r"""Probability-flow ODE and diffusion SDE in ε form, and their exact solution in λ (1.2–1.4, 3.1).

**ε form.** The network predicts :math:`\epsilon_\theta(x,t)\approx-\sigma_t\nabla_x\log p_t(x)`,
i.e. :math:`\nabla\log p_t=-\epsilon/\sigma_t`.  Substituting into the PF-ODE (1.3)
:math:`\dot x=f x-\tfrac12 g^2\nabla\log p_t` gives the *diffusion ODE* (1.4)
:math:`\dot x = f(t)x+\frac{g^2(t)}{2\sigma_t}\epsilon_\theta(x,t)`; substituting into the reverse
SDE (1.2) gives the diffusion SDE (3.1) whose drift has :math:`g^2/\sigma_t` — twice the ODE's
ε-coefficient.

**Exact solution (variation of constants).** By (B.6), :math:`g^2/(2\sigma)=-\sigma\dot\lambda`
and :math:`f=\dot{\log\alpha}`, so :math:`\frac{d}{dt}(x/\alpha)=-\frac{\sigma}{\alpha}\dot\lambda\,
\epsilon = -e^{-\lambda}\dot\lambda\,\epsilon`.  Integrating and changing variables to λ:

.. math::  x_t=\frac{\alpha_t}{\alpha_s}x_s-\alpha_t\int_{\lambda_s}^{\lambda_t}e^{-\lambda}
           \hat\epsilon_\theta(\hat x_\lambda,\lambda)\,d\lambda .

(DPM-Solver's Prop. 3.1; the adjoint analogue is the paper's Prop. 2.1.)  Freezing ε at the start
point :math:`(x_s,s)` and using (B.16) gives DDIM / DPM-Solver-1:
:math:`x_t=\frac{\alpha_t}{\alpha_s}x_s-\sigma_t(e^{h}-1)\epsilon_\theta(x_s,s)`,
:math:`h=\lambda_t-\lambda_s>0`.  A k-th order Taylor freeze gives
:math:`x_t=\frac{\alpha_t}{\alpha_s}x_s-\sigma_t\sum_{n<k}h^{n+1}\varphi_{n+1}(h)\,\epsilon^{(n)}(\lambda_s)`,
and the multistep DPM-Solver-2M estimate :math:`\epsilon^{(1)}\approx(\epsilon_s-\epsilon_r)/(r h)`,
:math:`r=(\lambda_s-\lambda_r)/h`, with :math:`h\varphi_2\approx(e^h-1)/2` gives
:math:`x_t=\frac{\alpha_t}{\alpha_s}x_s-\sigma_t(e^h-1)\epsilon_s-\frac{\sigma_t(e^h-1)}{2r}(\epsilon_s-\epsilon_r)`.

Exposed: :func:`ddim_coefficients`, :func:`dpm_solver_2m_coefficients` (numpy, from
:math:`\alpha,\sigma` values of the grid points).
"""
import numpy as np
import sympy as sm

from derivations._checks import is_zero
from derivations.phi_functions import PHI
from derivations.phi_functions import h as h_sym
from derivations.vp_sde import alpha_g, diffusion_g2, drift_f, half_log_snr, sigma_g, t

ell = sm.symbols("ell", real=True)  # integration variable (a value of lambda)
s_time = sm.symbols("s", positive=True)
x, score = sm.symbols("x score", real=True)
eps_hat = sm.Function("epsilon_hat")  # epsilon along the trajectory, as a function of lambda
eps = sm.symbols("epsilon", real=True)

f_t = drift_f(alpha_g)
g2_t = diffusion_g2(alpha_g, sigma_g)
lam_t = half_log_snr(alpha_g, sigma_g)

# grid values (symbols) used by the step formulas
a_s, s_s, a_t, s_t, a_r, s_r = sm.symbols("alpha_s sigma_s alpha_t sigma_t alpha_r sigma_r", positive=True)
ls, lt, lr = sm.log(a_s / s_s), sm.log(a_t / s_t), sm.log(a_r / s_r)


def pf_ode_score_form(xv, score_v):
    """(1.3): f x - g^2/2 * score."""
    return f_t * xv - g2_t / 2 * score_v


def pf_ode_eps_form(xv, eps_v):
    """(1.4): f x + g^2/(2 sigma) * eps."""
    return f_t * xv + g2_t / (2 * sigma_g) * eps_v


def exact_solution(x_s_val):
    """x_t = alpha_t/alpha_s x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-l} eps_hat(l) dl (t free)."""
    a_s_val = sm.Function("alpha", positive=True)(s_time)
    lam_s = sm.Symbol("lambda_s", real=True)
    integral = sm.Integral(sm.exp(-ell) * eps_hat(ell), (ell, lam_s, lam_t))
    return alpha_g / a_s_val * x_s_val - alpha_g * integral, lam_s


def ddim_coefficients(alpha_s, sigma_s, alpha_t, sigma_t):
    """DDIM / DPM-Solver-1, x_t = c_x x_s + c_eps eps(x_s, s); h = lambda_t - lambda_s."""
    hh = np.log(alpha_t / sigma_t) - np.log(alpha_s / sigma_s)
    return alpha_t / alpha_s, -sigma_t * np.expm1(hh)


def dpm_solver_2m_coefficients(alpha_r, sigma_r, alpha_s, sigma_s, alpha_t, sigma_t):
    """DPM-Solver-2M (noise prediction), x_t = c_x x_s + c_s eps_s + c_r eps_r, grid r > s > t."""
    hh = np.log(alpha_t / sigma_t) - np.log(alpha_s / sigma_s)
    r = (np.log(alpha_s / sigma_s) - np.log(alpha_r / sigma_r)) / hh
    e = -sigma_t * np.expm1(hh)
    return alpha_t / alpha_s, e * (1 + 1 / (2 * r)), -e / (2 * r)


# ---------------------------------------------------------------- checks
def test_eps_form_1_4_from_score_form_1_3():
    assert is_zero(pf_ode_score_form(x, -eps / sigma_g) - pf_ode_eps_form(x, eps))
    # and g^2/(2 sigma) = -sigma dlambda/dt (B.6) makes the eps coefficient -sigma lambda'
    assert is_zero(g2_t / (2 * sigma_g) + sigma_g * sm.diff(lam_t, t))


def test_diffusion_sde_3_1_drift_has_twice_the_eps_coefficient():
    sde_drift_score = f_t * x - g2_t * score  # (1.2)
    sde_drift_eps = sde_drift_score.subs(score, -eps / sigma_g)
    assert is_zero(sde_drift_eps - (f_t * x + g2_t / sigma_g * eps))
    assert is_zero((sde_drift_eps - f_t * x) - 2 * (pf_ode_eps_form(x, eps) - f_t * x))


def test_exact_solution_satisfies_the_diffusion_ode():
    xs = sm.Symbol("x_s", real=True)
    sol, lam_s = exact_solution(xs)
    lhs = sm.diff(sol, t)  # Leibniz rule on the variable upper limit lambda_t
    rhs = pf_ode_eps_form(sol, eps_hat(lam_t))
    assert is_zero((lhs - rhs).doit())
    # initial condition: at t = s the integral vanishes and the ratio is 1
    at_s = sol.subs(t, s_time).subs(lam_s, lam_t.subs(t, s_time))
    assert is_zero(at_s.doit() - xs)


def test_ddim_is_the_zeroth_order_freeze():
    hh = lt - ls
    integral = sm.integrate(sm.exp(-ell), (ell, ls, lt))  # eps frozen at (x_s, s)
    c_eps = -a_t * integral
    assert is_zero(sm.expand_log(c_eps - (-s_t * (sm.exp(hh) - 1)), force=True))


def test_kth_order_forward_coefficients_are_phi_functions():
    hh = sm.Symbol("h", positive=True)
    lam0 = sm.Symbol("lambda_0", real=True)
    for n in range(3):
        integral = sm.integrate(sm.exp(-ell) * (ell - lam0) ** n / sm.factorial(n), (ell, lam0, lam0 + hh))
        # alpha_t * integral = sigma_t h^{n+1} phi_{n+1}(h) with sigma_t/alpha_t = e^{-lambda_t}
        assert is_zero(integral - sm.exp(-(lam0 + hh)) * hh ** (n + 1) * PHI[n + 1].subs(h_sym, hh))


def test_dpm_solver_2m_from_taylor_and_B25():
    """2nd-order Taylor freeze + finite difference + (e^h-h-1)/h ~ (e^h-1)/2 gives the 2M step."""
    hh, r = sm.symbols("h r", positive=True)
    e_s, e_r, st = sm.symbols("eps_s eps_r sigma_t", real=True)
    d1 = (e_s - e_r) / (r * hh)  # backward difference for d eps/d lambda
    taylor = -st * (hh * PHI[1].subs(h_sym, hh) * e_s + hh**2 * PHI[2].subs(h_sym, hh) * d1)
    # B.25: h^2 phi_2(h) d1 = (e^h-h-1)/h * (eps_s-eps_r)/r  ~  (e^h-1)/2 * (eps_s-eps_r)/r
    approx = -st * (hh * PHI[1].subs(h_sym, hh) * e_s + (sm.exp(hh) - 1) / 2 * (e_s - e_r) / r)
    step = -st * (sm.exp(hh) - 1) * e_s - st * (sm.exp(hh) - 1) / (2 * r) * (e_s - e_r)
    assert is_zero(approx - step)
    # the approximation error is (h^2/12 + h^3/24 + ...) * sigma_t * (eps_s - eps_r)/r, and
    # eps_s - eps_r = O(h): a local O(h^3) error, as for the Taylor remainder itself
    diff_ = sm.series(((taylor - step) / ((e_s - e_r) / r)).subs(st, 1), hh, 0, 4).removeO()
    assert sm.simplify(diff_ - (hh**2 / 12 + hh**3 / 24)) == 0


def _local_order_of_2m(coefficients, ratio=0.5, lam_s=0.3, hs=(0.04, 0.02, 0.01, 0.005)):
    """Fitted slope of log |local error| vs log h of one multistep step r -> s -> t (lambda_r = lambda_s - ratio h,
    lambda_t = lambda_s + h) against the exact solution, its eps term by quadrature, for
    eps(lambda) = sin(lambda) + 0.3 lambda^2."""
    from scipy.integrate import quad

    from derivations.lambda_change import alpha_sigma_of_lam

    eps_of = lambda l: np.sin(l) + 0.3 * l**2  # noqa: E731
    errs = []
    for hv in hs:
        lams = np.array([lam_s - ratio * hv, lam_s, lam_s + hv])
        (ar, as_, at), (sr, ss, st) = alpha_sigma_of_lam(lams)
        _, c_s, c_r = coefficients(ar, sr, as_, ss, at, st)
        exact = -at * quad(lambda l: np.exp(-l) * eps_of(l), lams[1], lams[2], epsabs=0, epsrel=1e-13)[0]
        errs.append(abs(c_s * eps_of(lams[1]) + c_r * eps_of(lams[0]) - exact))
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


def test_numpy_coefficients():
    from scipy.integrate import quad

    from derivations.vp_sde import linear_vp

    sch = linear_vp()
    tr, ts, tt = 0.8, 0.6, 0.45
    cx, ce = ddim_coefficients(sch.alpha(ts), sch.sigma(ts), sch.alpha(tt), sch.sigma(tt))
    exact_ce = -sch.alpha(tt) * (np.exp(-sch.lam(ts)) - np.exp(-sch.lam(tt)))
    # the x coefficient is the integrating factor exp(int_s^t f), f = -beta/2 integrated by quadrature
    integrating_factor = np.exp(quad(sch.f, ts, tt, epsabs=0, epsrel=1e-13)[0])
    assert abs(cx - integrating_factor) < 1e-13 and abs(ce - exact_ce) < 1e-14
    # (the check fails for the sigma ratio sigma_t/sigma_s in its place)
    assert abs(sch.sigma(tt) / sch.sigma(ts) - integrating_factor) > 1e-3
    # DPM-Solver-2M's coefficients make a third-order local error on an uneven grid (r = 0.5): the ratio r is
    # right; with r inverted (h / (lambda_s - lambda_r)) the step is only second order locally
    assert 2.8 < _local_order_of_2m(dpm_solver_2m_coefficients) < 3.2

    def inverted_r(alpha_r, sigma_r, alpha_s, sigma_s, alpha_t, sigma_t):
        hh = np.log(alpha_t / sigma_t) - np.log(alpha_s / sigma_s)
        r = hh / (np.log(alpha_s / sigma_s) - np.log(alpha_r / sigma_r))
        e = -sigma_t * np.expm1(hh)
        return alpha_t / alpha_s, e * (1 + 1 / (2 * r)), -e / (2 * r)

    assert _local_order_of_2m(inverted_r) < 2.3
    c = dpm_solver_2m_coefficients(
        sch.alpha(tr), sch.sigma(tr), sch.alpha(ts), sch.sigma(ts), sch.alpha(tt), sch.sigma(tt)
    )
    assert abs(c[1] + c[2] - ce) < 1e-14  # constant eps: 2M reduces to DDIM

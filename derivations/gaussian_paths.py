r"""General Gaussian paths and flow matching: what of the paper holds without :math:`\alpha^2+\sigma^2=1`
(issue 15 item 3).

A Gaussian path is :math:`x_t=\alpha_tx_0+\sigma_t\epsilon`, :math:`\epsilon\sim\mathcal N(0,I)`, with *any*
positive :math:`\alpha_t` (decreasing) and :math:`\sigma_t` (increasing).  Rectified flow (SD3, Flux) is
:math:`\alpha_t=1-t`, :math:`\sigma_t=t`, :math:`t\in[0,1]`; then :math:`\alpha+\sigma=1`, not
:math:`\alpha^2+\sigma^2=1`.  Throughout :math:`\lambda=\log(\alpha/\sigma)`; for rectified flow
:math:`\lambda=\log\frac{1-t}{t}`, :math:`t(\lambda)=1/(1+e^{\lambda})`, :math:`\alpha(\lambda)=1/(1+e^{-\lambda})`,
:math:`\sigma(\lambda)=1/(1+e^{\lambda})`.

**PF-ODE in ε form (carries over).**  The marginal velocity is the conditional expectation of the path's
velocity, :math:`v(x,t)=\mathbb E[\dot\alpha x_0+\dot\sigma\epsilon\mid x_t=x]`; eliminating
:math:`x_0=(x-\sigma\epsilon)/\alpha` inside the expectation gives

.. math:: \frac{dx}{dt}=\frac{\dot\alpha}{\alpha}x+\Big(\dot\sigma-\sigma\frac{\dot\alpha}{\alpha}\Big)\epsilon^*(x,t),
          \qquad \dot\sigma-\sigma\frac{\dot\alpha}{\alpha}=-\sigma\frac{d\lambda}{dt}=\frac{g^2}{2\sigma},

with :math:`f=\dot\alpha/\alpha` and :math:`g^2` *from (1.5)*: this is (1.4) for every Gaussian path.  For a VP
schedule it is the familiar :math:`-f/\sigma`; for rectified flow :math:`f=-1/(1-t)` and the ε coefficient is
:math:`1/(1-t)`, not :math:`-f/\sigma=1/(t(1-t))`.  The field transports the marginals (continuity equation,
checked on Gaussian data); with :math:`-f/\sigma` it does not.

**Exact linear part, exponential integrals, DDIM, DPM-Solver-2M (carry over).**  :math:`\frac{d}{dt}(x/\alpha)
=\frac{d}{dt}(\sigma/\alpha)\,\epsilon=-e^{-\lambda}\dot\lambda\,\epsilon`, so
:math:`x_t=\frac{\alpha_t}{\alpha_s}x_s-\alpha_t\int_{\lambda_s}^{\lambda_t}e^{-\lambda}\epsilon\,d\lambda` and
(B.16) (:math:`\alpha_te^{-\lambda_t}=\sigma_t`) hold verbatim; DDIM
:math:`x_t=\frac{\alpha_t}{\alpha_s}x_s-\sigma_t(e^h-1)\epsilon_s`, :math:`h=\lambda_t-\lambda_s`, is exact for
constant ε, and DPM-Solver-2M is the same formula as for VP.  Only the values :math:`\alpha,\sigma` at the grid
points enter, so ``pf_ode.ddim_coefficients`` / ``dpm_solver_2m_coefficients`` and
``solver_coefficients.adjointdeis1_coefficients`` / ``adjointdeis2m_coefficients`` apply unchanged when fed
rectified-flow values — but ``lambda_change.alpha_sigma_of_lam`` (VP) must not be used to get them.

**Velocity prediction.**  From :math:`v=\dot x=\epsilon-x_0` and :math:`x=(1-t)x_0+t\epsilon`:
:math:`\epsilon=x+(1-t)v`, :math:`x_0=x-tv` (in general
:math:`\epsilon=(\alpha v-\dot\alpha x)/(\alpha\dot\sigma-\dot\alpha\sigma)`).  With this adapter the DDIM step is
:math:`\alpha_{t'}\hat x_0+\sigma_{t'}\hat\epsilon`, i.e. it moves along the path through
:math:`(\hat x_0,\hat\epsilon)`;
that path is a straight line exactly when α and σ are affine in t, and then DDIM *is* the Euler step in t,
:math:`x_{t'}=x_t+(t'-t)v(x_t,t)`.  Hence DDIM on the rectified-flow grid :math:`t_i=` the scheduler's sigmas
(after its timestep shift, with its appended final 0) equals diffusers' ``FlowMatchEulerDiscreteScheduler``
loop step for step (the model called at :math:`t_i`); the shift changes only the grid.  The two end points
:math:`t=1` (:math:`\alpha=0`, :math:`\lambda=-\infty`) and :math:`t=0` (:math:`\sigma=0`, :math:`\lambda=+\infty`)
are not representable in λ: there the λ-form coefficients are :math:`\infty\cdot0`, and the step must be taken in
its :math:`\hat x_0/\hat\epsilon` (or Euler) form, which is the continuous limit.

**Adjoint ODE and AdjointDEIS-1/-2M (carry over).**  The adjoint of :math:`\dot x=fx+c(t)\epsilon` uses only f and c:
:math:`d(\alpha a_x)/d\lambda=\alpha^2e^{-\lambda}a_x^\top\partial_x\epsilon`,
:math:`da_z/d\lambda=\alpha e^{-\lambda}a_x^\top\partial_z\epsilon` for any α, σ, and freezing
:math:`V=\alpha^2a_x^\top\partial_x\epsilon` (first order) or its finite difference plus (B.25) (2M) reproduces (2.14),
(B.27)/(B.31) symbol for symbol.  Caveat: a step *into* :math:`t=1` (:math:`\alpha_s=0`) has an infinite
AdjointDEIS-1 coefficient (the frozen V integrates :math:`e^{-\lambda}` to :math:`\lambda=-\infty`) although the
exact adjoint is finite; the adjoint (like the sampler in λ) must stop at :math:`T<1` or treat that step apart.

**What does not carry over.**  Every identity that uses :math:`\alpha^2+\sigma^2=1`:
:math:`\sigma=\sqrt{1-\alpha^2}`; :math:`g^2=-2f` (rectified flow: :math:`g^2=2t/(1-t)=-2tf`); the VP forms
:math:`\alpha(\lambda)=(1+e^{-2\lambda})^{-1/2}` and the linear-VP inverse :math:`t(\lambda)`; the ε coefficient
written :math:`-f/\sigma`.  The diffusion SDE (3.1) and SDE-DPM-Solver-1 (3.6) carry over *only with g² from (1.5)*:
then the step's noise is :math:`\sigma_t\sqrt{e^{2h}-1}` for any path (the derivation uses only (B.6)).  Written
in their VP forms — :math:`g^2=-2f` (i.e. :math:`\beta(t)`), noise scale :math:`\sqrt{\alpha_t^2/\alpha_s^2-1}`
(equal to :math:`\sigma_t\sqrt{e^{2h}-1}` only when :math:`\alpha^2+\sigma^2=1`) — they fail: the forward SDE with
:math:`g^2=-2f` has conditional variance :math:`1-\alpha_t^2=2t-t^2\ne t^2`.

**Numerics (Gaussian data :math:`x_0\sim\mathcal N(\mu,s^2)`, rectified flow).**
:math:`\epsilon^*=\sigma(x-\alpha\mu)/\tau^2`, :math:`\tau^2=\alpha^2s^2+\sigma^2`, and the exact flow
:math:`x_t=\alpha_t\mu+\frac{\tau_t}{\tau_u}(x_u-\alpha_u\mu)` (as in gaussian_toy.py, any path) reproduce an
accurate ODE solve; on a λ-uniform grid DDIM's global error has order 1 and DPM-Solver-2M's order 2 in h, and
AdjointDEIS-1/-2M give the exact gradients w.r.t. :math:`x_T`, μ (a condition z) and s (a parameter θ) at
orders 1 and 2.

Exposed (numpy, float64): :func:`rectified_flow` (schedule callables), :func:`eps_from_velocity`,
:func:`ddim_step_velocity` (DDIM in :math:`\hat x_0/\hat\epsilon` form, valid at t = 1 and t' = 0),
(``pf_ode.ddim_coefficients`` and ``dpm_solver_2m_coefficients`` serve unchanged), :func:`eps_star`, :func:`x0_star`,
:func:`velocity_star`, :func:`flow`.
"""
from types import SimpleNamespace

import numpy as np
import sympy as sm

from derivations._checks import is_zero, numeric_zero, rng
from derivations.pf_ode import ddim_coefficients, dpm_solver_2m_coefficients  # alpha, sigma values: any path
from derivations.phi_functions import PHI
from derivations.phi_functions import h as h_phi
from derivations.vp_sde import alpha_cos, alpha_g, cos_s, diffusion_g2, drift_f, half_log_snr, sigma_cos, sigma_g, t

xs, x0s, es, vs = sm.symbols("x x_0 e v", real=True)  # state, data, noise, velocity (one component)
mu, sd = sm.Symbol("mu", real=True), sm.Symbol("s_d", positive=True)  # data mean and std
tp = sm.symbols("t'", positive=True)  # the time a step goes to
ell = sm.symbols("ell", real=True)  # a value of lambda (integration variable)

# rectified flow (t in (0, 1)); alpha + sigma = 1
alpha_rf, sigma_rf = 1 - t, t
# VP with generic alpha: sigma = sqrt(1 - alpha^2)
sigma_vp = sm.sqrt(1 - alpha_g**2)


# ---------------------------------------------------------------- PF-ODE for any Gaussian path
def pf_ode_coefficients(alpha, sigma):
    """(f, c) of dx/dt = f x + c eps*: the path's velocity alpha' x_0 + sigma' e with x_0 eliminated through
    x = alpha x_0 + sigma e (exact inside E[. | x_t = x])."""
    x0_of = sm.solve(sm.Eq(xs, alpha * x0s + sigma * es), x0s)[0]
    vel = sm.expand(sm.diff(alpha, t) * x0_of + sm.diff(sigma, t) * es)
    return sm.simplify(vel.coeff(xs)), sm.simplify(vel.coeff(es))


def velocity_adapter(alpha, sigma):
    """(eps, x_0) as functions of the state x and the velocity v = alpha' x_0 + sigma' eps."""
    sol = sm.solve([sm.Eq(vs, sm.diff(alpha, t) * x0s + sm.diff(sigma, t) * es),
                    sm.Eq(xs, alpha * x0s + sigma * es)], [x0s, es], dict=True)[0]
    return sm.simplify(sol[es]), sm.simplify(sol[x0s])


F_G, C_G = pf_ode_coefficients(alpha_g, sigma_g)
F_RF, C_RF = pf_ode_coefficients(alpha_rf, sigma_rf)
EPS_OF_V_RF, X0_OF_V_RF = velocity_adapter(alpha_rf, sigma_rf)
LAM_RF = half_log_snr(alpha_rf, sigma_rf)
T_OF_LAM_RF = 1 / (1 + sm.exp(ell))
ALPHA_OF_LAM_RF, SIGMA_OF_LAM_RF = 1 / (1 + sm.exp(-ell)), 1 / (1 + sm.exp(ell))

# Gaussian data x_0 ~ N(mu, s_d^2): Tweedie eps*, E[x_0 | x], the velocity, the flow map (any path)
tau2_g = alpha_g**2 * sd**2 + sigma_g**2
EPS_STAR_G = sigma_g * (xs - alpha_g * mu) / tau2_g
X0_STAR_G = mu + alpha_g * sd**2 * (xs - alpha_g * mu) / tau2_g


def _rf(expr):
    return expr.subs({alpha_g: alpha_rf, sigma_g: sigma_rf}).doit()


# ---------------------------------------------------------------- DDIM / DPM-Solver-2M from the linear part
a_s, s_s, a_t, s_t, a_r, s_r = sm.symbols("alpha_s sigma_s alpha_t sigma_t alpha_r sigma_r", positive=True)
ls, lt, lr = sm.log(a_s / s_s), sm.log(a_t / s_t), sm.log(a_r / s_r)
e_s, e_r = sm.symbols("epsilon_s epsilon_r", real=True)
x_s_sym = sm.Symbol("x_s", real=True)


def forward_freeze(k):
    """x_t from x_s (grid r > s > t in time, alpha, sigma unrelated symbols) by freezing eps in lambda:
    k = 1 constant (DDIM), k = 2 linear with the backward difference (eps_s - eps_r)/(lambda_s - lambda_r)
    and (B.25) h phi_2 -> (e^h - 1)/2 (DPM-Solver-2M).  Uses only sigma_t = alpha_t e^{-lambda_t}."""
    hh = sm.Symbol("h", positive=True)
    lam0 = sm.Symbol("lambda_0", real=True)
    weights = [sm.integrate(sm.exp(-ell) * (ell - lam0) ** n / sm.factorial(n), (ell, lam0, lam0 + hh))
               for n in range(k)]
    # alpha_t * weight_n = sigma_t e^{lambda_t} weight_n, lambda_t = lambda_0 + h
    coef = [sm.simplify(s_t * sm.exp(lam0 + hh) * w) for w in weights]
    step = a_t / a_s * x_s_sym - coef[0] * e_s
    if k == 2:  # coef[1] = sigma_t h^2 phi_2(h) (B.16) is replaced by sigma_t h (e^h - 1)/2 (B.25)
        b25 = s_t * hh * (sm.exp(hh) - 1) / 2
        step -= b25 * (e_s - e_r) / (ls - lr)
    return step.subs(hh, lt - ls)


DDIM_STEP = forward_freeze(1)
DPM2M_STEP = forward_freeze(2)


# ---------------------------------------------------------------- numpy exports
def rectified_flow():
    """float64 numpy callables of the rectified-flow schedule: alpha, sigma, lam, f, g2 (of 1.5), eps_coef
    (the PF-ODE's eps coefficient), t_of_lam, alpha_of_lam, sigma_of_lam."""
    fns = {"alpha": (alpha_rf + 0 * t, t), "sigma": (sigma_rf, t), "lam": (LAM_RF, t), "f": (F_RF, t),
           "g2": (diffusion_g2(alpha_rf, sigma_rf), t), "eps_coef": (C_RF, t), "t_of_lam": (T_OF_LAM_RF, ell),
           "alpha_of_lam": (ALPHA_OF_LAM_RF, ell), "sigma_of_lam": (SIGMA_OF_LAM_RF, ell)}
    return SimpleNamespace(**{k: sm.lambdify(v, e, modules="numpy") for k, (e, v) in fns.items()})


def eps_from_velocity(x, v, t_val):
    """Velocity-prediction adapter for rectified flow: eps = x + (1 - t) v."""
    return x + (1.0 - t_val) * v


def ddim_step_velocity(x, v, t_from, t_to):
    """DDIM from t_from to t_to for rectified flow in x0/eps form: alpha_{t'} x0_hat + sigma_{t'} eps_hat with
    x0_hat = x - t v, eps_hat = x + (1 - t) v (finite at t_from = 1 and t_to = 0)."""
    return (1.0 - t_to) * (x - t_from * v) + t_to * eps_from_velocity(x, v, t_from)


def eps_star(x, alpha, sigma, mu_v, s):
    """Tweedie eps*(x) = sigma (x - alpha mu)/tau^2 for x_0 ~ N(mu, s^2)."""
    return sigma * (x - alpha * mu_v) / (alpha**2 * s**2 + sigma**2)


def x0_star(x, alpha, sigma, mu_v, s):
    """E[x_0 | x_t = x] = mu + alpha s^2 (x - alpha mu)/tau^2 (finite at alpha = 0)."""
    return mu_v + alpha * s**2 * (x - alpha * mu_v) / (alpha**2 * s**2 + sigma**2)


def velocity_star(x, t_val, mu_v, s):
    """Exact rectified-flow velocity E[eps - x_0 | x_t = x] (valid on [0, 1])."""
    a, sg = 1.0 - t_val, t_val
    return eps_star(x, a, sg, mu_v, s) - x0_star(x, a, sg, mu_v, s)


def flow(x_from, alpha_from, sigma_from, alpha_to, sigma_to, mu_v, s):
    """Exact PF-ODE flow map of any Gaussian path: alpha_to mu + tau_to/tau_from (x_from - alpha_from mu)."""
    tau = lambda a, sg: np.sqrt(a**2 * s**2 + sg**2)  # noqa: E731
    return alpha_to * mu_v + tau(alpha_to, sigma_to) / tau(alpha_from, sigma_from) * (x_from - alpha_from * mu_v)


# ---------------------------------------------------------------- checks: what carries over
def _is_pf_ode_eps_coefficient(coef, alpha, sigma):
    """coef = -sigma dlambda/dt = g^2/(2 sigma) with g^2 of (1.5)."""
    lam = half_log_snr(alpha, sigma)
    return is_zero(coef + sigma * sm.diff(lam, t)) and is_zero(coef - diffusion_g2(alpha, sigma) / (2 * sigma))


def test_pf_ode_eps_form_for_any_gaussian_path():
    assert is_zero(F_G - drift_f(alpha_g)) and is_zero(C_G - (sm.diff(sigma_g, t) - sigma_g * F_G))
    assert _is_pf_ode_eps_coefficient(C_G, alpha_g, sigma_g)
    # rectified flow: f = -1/(1-t), eps coefficient 1/(1-t)
    assert is_zero(F_RF + 1 / (1 - t)) and is_zero(C_RF - 1 / (1 - t))
    assert _is_pf_ode_eps_coefficient(C_RF, alpha_rf, sigma_rf)
    # VP (alpha^2 + sigma^2 = 1): the same coefficient is the familiar g^2/(2 sigma) with g^2 = -2f, i.e. -f/sigma
    _, c_vp = pf_ode_coefficients(alpha_g, sigma_vp)
    assert is_zero(c_vp + drift_f(alpha_g) / sigma_vp)
    assert _is_pf_ode_eps_coefficient(c_vp, alpha_g, sigma_vp)
    # the check fails for the velocity coefficient sigma' alone (x_0 not eliminated), and for the VP form -f/sigma
    # carried to rectified flow
    assert not _is_pf_ode_eps_coefficient(sm.diff(sigma_g, t), alpha_g, sigma_g)
    assert not _is_pf_ode_eps_coefficient(-F_RF / sigma_rf, alpha_rf, sigma_rf)


def _transports_the_marginal(f, coef, alpha, sigma):
    """dp/dt + d(p v)/dx = 0 for p_t = N(alpha mu, alpha^2 s^2 + sigma^2) and v = f x + coef eps*(x)."""
    tau2 = alpha**2 * sd**2 + sigma**2
    logp = -(xs - alpha * mu) ** 2 / (2 * tau2) - sm.log(tau2) / 2
    v = f * xs + coef * sigma * (xs - alpha * mu) / tau2
    return is_zero(sm.together(sm.diff(logp, t) + sm.diff(v, xs) + v * sm.diff(logp, xs)))


def test_pf_ode_transports_the_gaussian_marginals():
    assert _transports_the_marginal(F_G, C_G, alpha_g, sigma_g)
    assert _transports_the_marginal(F_RF, C_RF, alpha_rf, sigma_rf)
    # the check fails for the VP-written coefficient -f/sigma (g^2 = -2f) on rectified flow
    assert not _transports_the_marginal(F_RF, -F_RF / sigma_rf, alpha_rf, sigma_rf)


def _solves_the_ode(sol, f, coef, eps_fn, initial):
    """d sol/dt = f sol + coef eps_fn(t) and sol(s) = initial (s: the symbol s_time)."""
    return is_zero((sm.diff(sol, t) - f * sol - coef * eps_fn).doit()) and is_zero(initial)


def test_exact_linear_part_in_lambda_for_any_path():
    """x_t = alpha_t/alpha_s x_s - alpha_t int_{lambda_s}^{lambda_t} e^{-l} eps(l) dl solves dx/dt = f x + c eps."""
    s_time = sm.Symbol("s_time", positive=True)
    lam_s = sm.Symbol("lambda_s", real=True)
    eps_hat = sm.Function("epsilon_hat")
    lam = half_log_snr(alpha_g, sigma_g)
    integral = sm.Integral(sm.exp(-ell) * eps_hat(ell), (ell, lam_s, lam))

    def check(ratio):
        sol = ratio * x_s_sym - alpha_g * integral
        at_s = sol.subs(t, s_time).subs(lam_s, lam.subs(t, s_time)).doit() - x_s_sym
        return _solves_the_ode(sol, F_G, C_G, eps_hat(lam), at_s)

    alpha_s_fn = alpha_g.subs(t, s_time)
    assert check(alpha_g / alpha_s_fn)
    # the check fails for the sigma ratio in place of the integrating factor alpha_t/alpha_s
    assert not check(sigma_g / sigma_g.subs(t, s_time))
    # rectified flow: x/alpha has derivative (sigma/alpha)' eps = (t/(1-t))' eps, and sigma/alpha = e^{-lambda}
    dx = F_RF * xs + C_RF * es
    assert is_zero(dx / alpha_rf - sm.diff(alpha_rf, t) * xs / alpha_rf**2 - sm.diff(sigma_rf / alpha_rf, t) * es)
    assert is_zero(sm.exp(-LAM_RF) - sigma_rf / alpha_rf)


def test_exponentially_weighted_integrals_B16_need_only_sigma_equals_alpha_e_minus_lambda():
    """alpha_t int_{lambda_s}^{lambda_t} e^{-l} (l - lambda_s)^n/n! dl = sigma_t h^{n+1} phi_{n+1}(h) with alpha_t,
    sigma_t unrelated; at rectified-flow values too."""
    hh = lt - ls

    def b16(n, ratio_t):
        integral = sm.integrate(sm.exp(-ell) * (ell - ls) ** n / sm.factorial(n), (ell, ls, lt))
        return is_zero(sm.expand_log(a_t * integral - ratio_t * hh ** (n + 1) * PHI[n + 1].subs(h_phi, hh),
                                     force=True))

    for n in range(3):
        assert b16(n, s_t)
    # the check fails for the VP identity sigma_t = sqrt(1 - alpha_t^2) in place of sigma_t
    assert not b16(0, sm.sqrt(1 - a_t**2))
    t1, t2 = sm.Rational(3, 10), sm.Rational(7, 10)
    rf_vals = {a_t: 1 - t1, s_t: t1, a_s: 1 - t2, s_s: t2}
    integral = sm.integrate(sm.exp(-ell), (ell, ls, lt))
    assert is_zero((a_t * integral - s_t * (sm.exp(hh) - 1)).subs(rf_vals))


def test_ddim_is_exact_for_constant_eps_on_any_path():
    s_time = sm.Symbol("s_time", positive=True)
    eps_c = sm.Symbol("eps_c", real=True)
    grid = {a_t: alpha_g, s_t: sigma_g, a_s: alpha_g.subs(t, s_time), s_s: sigma_g.subs(t, s_time)}

    def exact_for_constant_eps(step):
        sol = step.subs(grid).subs(e_s, eps_c)
        sol = sm.expand_log(sol, force=True)
        return _solves_the_ode(sol, F_G, C_G, eps_c, sm.simplify(sol.subs(t, s_time) - x_s_sym))

    assert is_zero(sm.expand_log(DDIM_STEP - (a_t / a_s * x_s_sym - s_t * (sm.exp(lt - ls) - 1) * e_s), force=True))
    assert exact_for_constant_eps(DDIM_STEP)
    # DPM-Solver-2M (B.25 form) is DDIM plus a term in eps_s - eps_r: zero for constant eps
    assert is_zero((DPM2M_STEP - DDIM_STEP).subs(e_r, e_s))
    # the check fails for the VP-written DDIM, sigma_t -> sqrt(1 - alpha_t^2), on rectified flow
    vp_written = a_t / a_s * x_s_sym - sm.sqrt(1 - a_t**2) * (sm.exp(lt - ls) - 1) * e_s
    rf_grid = {a_t: alpha_rf, s_t: sigma_rf, a_s: 1 - s_time, s_s: s_time}
    sol = sm.expand_log(vp_written.subs(rf_grid).subs(e_s, eps_c), force=True)
    assert not _solves_the_ode(sol, F_RF, C_RF, eps_c, sm.simplify(sol.subs(t, s_time) - x_s_sym))
    # (residual 2.7 at t = 0.3, s = 0.6, x_s = 1, eps = 1/2: not a simplification failure)
    residual = (sm.diff(sol, t) - F_RF * sol - C_RF * eps_c).subs({t: 0.3, s_time: 0.6, x_s_sym: 1, eps_c: 0.5})
    assert abs(float(residual)) > 0.1


def test_velocity_adapter_for_rectified_flow():
    assert is_zero(EPS_OF_V_RF - (xs + (1 - t) * vs)) and is_zero(X0_OF_V_RF - (xs - t * vs))
    eps_g, x0_g = velocity_adapter(alpha_g, sigma_g)
    da, dsg = sm.diff(alpha_g, t), sm.diff(sigma_g, t)
    assert is_zero(eps_g - (alpha_g * vs - da * xs) / (alpha_g * dsg - da * sigma_g))

    def consistent(eps_of_v):
        """the eps-form PF-ODE, fed eps(x, v), returns the velocity v: f x + c eps(x, v) = v."""
        return is_zero(F_RF * xs + C_RF * eps_of_v - vs)

    assert consistent(EPS_OF_V_RF)
    # and Gaussian data: the exact velocity E[eps - x_0 | x] turns into Tweedie's eps* through the adapter
    v_star = _rf(EPS_STAR_G - X0_STAR_G)
    assert is_zero(EPS_OF_V_RF.subs(vs, v_star) - _rf(EPS_STAR_G))
    assert is_zero(X0_OF_V_RF.subs(vs, v_star) - _rf(X0_STAR_G))
    # the check fails for the adapter with t and 1 - t swapped
    assert not consistent(xs + t * vs)
    # numpy export
    assert np.isclose(eps_from_velocity(0.7, -0.4, 0.3), float(EPS_OF_V_RF.subs({xs: 0.7, vs: -0.4, t: 0.3})),
                      rtol=1e-15)


def _ddim_minus_euler(alpha, sigma):
    """DDIM from t to t' (lambda form, eps from the general velocity adapter) minus the Euler step x + (t'-t) v."""
    eps_v, _ = velocity_adapter(alpha, sigma)
    step = DDIM_STEP.subs({a_t: alpha.subs(t, tp), s_t: sigma.subs(t, tp), a_s: alpha, s_s: sigma})
    step = step.subs({x_s_sym: xs, e_s: eps_v})
    return sm.expand_log(step, force=True) - (xs + (tp - t) * vs)


def test_ddim_on_rectified_flow_is_euler_in_t():
    assert is_zero(_ddim_minus_euler(alpha_rf, sigma_rf))
    # x0/eps form (the numpy export) = lambda form = Euler, at rectified-flow values
    ddim_x0 = (1 - tp) * X0_OF_V_RF + tp * EPS_OF_V_RF
    assert is_zero(ddim_x0 - (xs + (tp - t) * vs))
    # why: DDIM moves along alpha_{t'} x0_hat + sigma_{t'} eps_hat; its t'-curvature alpha'' x0_hat + sigma'' eps_hat
    # vanishes for all (x0_hat, eps_hat) iff alpha and sigma are affine in t.  A VP (cosine) path: DDIM != Euler in t.
    cos_diff = _ddim_minus_euler(alpha_cos, sm.sqrt(1 - alpha_cos**2))
    r = rng(11)
    pts = [{t: r.uniform(0.2, 0.8), tp: r.uniform(0.05, 0.15), cos_s: 0.008, xs: r.normal(), vs: r.normal()}
           for _ in range(3)]
    assert not numeric_zero(cos_diff, pts, atol=1e-6)
    # continuity at t = 1 (alpha = 0, lambda = -inf): the lambda-form coefficient alpha_{t'}/alpha_t diverges,
    # the step has the finite limit x + (t' - 1) v
    assert sm.limit(1 / alpha_rf, t, 1, "-") == sm.oo
    assert is_zero(sm.limit(ddim_x0, t, 1) - (xs + (tp - 1) * vs))


def test_ddim_equals_diffusers_flow_match_euler_scheduler():
    """The scheduler's loop x <- x + (sigma_{i+1} - sigma_i) v(x, sigma_i) (float32) equals DDIM (float64) on the
    grid t_i = scheduler.sigmas (shift 3 applied, final 0 appended), the model called at t_i; not on the unshifted
    grid."""
    import pytest

    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(12)
    mu_v, s_v = 0.8, 0.5
    x_T = np.array([0.3, -1.2, 2.1, 0.0])
    xt = torch.tensor(x_T, dtype=torch.float32)
    for i, tstep in enumerate(sched.timesteps):
        sig = float(sched.sigmas[i])
        v = torch.tensor(velocity_star(xt.double().numpy(), sig, mu_v, s_v), dtype=torch.float32)
        xt = sched.step(v, tstep, xt).prev_sample
    grid = sched.sigmas.double().numpy()
    assert grid[0] == 1.0 and grid[-1] == 0.0

    def ddim(ts):
        x = x_T.copy()
        for a, b in zip(ts[:-1], ts[1:]):
            x = ddim_step_velocity(x, velocity_star(x, a, mu_v, s_v), a, b)
        return x

    ours = ddim(grid)
    assert np.allclose(ours, xt.double().numpy(), rtol=2e-6, atol=2e-6)
    # interior steps in the lambda form give the same numbers (the end points need the x0/eps form)
    mid = ddim(grid[:2])
    for a, b in zip(grid[1:-2], grid[2:-1]):
        cx, ce = ddim_coefficients(1 - a, a, 1 - b, b)
        mid = cx * mid + ce * eps_from_velocity(mid, velocity_star(mid, a, mu_v, s_v), a)
    assert np.allclose(ddim_step_velocity(mid, velocity_star(mid, grid[-2], mu_v, s_v), grid[-2], 0.0), ours,
                       rtol=1e-12, atol=1e-12)
    # the check fails on the unshifted grid (same number of steps)
    unshifted = np.append(np.linspace(1.0, grid[-2], len(grid) - 1), 0.0)
    assert not np.allclose(ddim(unshifted), xt.double().numpy(), rtol=2e-6, atol=2e-6)


def test_adjoint_ode_in_lambda_for_any_path():
    """From dx/dt = f x + c eps: da_x/dt = -f a - c a J, da_z/dt = -c a J_z; in lambda
    d(alpha a_x)/dlambda = alpha^2 e^{-lambda} a J and da_z/dlambda = alpha e^{-lambda} a J_z."""
    a_fn, J, Jz = sm.Function("a")(t), sm.Function("J")(t), sm.Function("J_z")(t)

    def lambda_form_holds(f, coef, alpha, sigma):
        lam = half_log_snr(alpha, sigma)
        da = -f * a_fn - coef * a_fn * J
        d_alpha_a = sm.diff(alpha * a_fn, t).subs(sm.Derivative(a_fn, t), da) / sm.diff(lam, t)
        daz = (-coef * a_fn * Jz) / sm.diff(lam, t)
        return (is_zero(d_alpha_a - alpha**2 * sm.exp(-lam) * a_fn * J)
                and is_zero(daz - alpha * sm.exp(-lam) * a_fn * Jz))

    assert lambda_form_holds(F_G, C_G, alpha_g, sigma_g)
    assert lambda_form_holds(F_RF, C_RF, alpha_rf, sigma_rf)
    # the check fails for the VP-written coefficient -f/sigma on rectified flow
    assert not lambda_form_holds(F_RF, -F_RF / sigma_rf, alpha_rf, sigma_rf)


def _adjoint_freeze(k, scale_x=2):
    """Integrate alpha_s a_x(s) = alpha_t a_x(t) + int_{lambda_t}^{lambda_s} e^{-l} V dl with V = alpha^scale_x a J
    frozen (k = 1) or linear through V_t, V_r with (B.25) (k = 2); alpha, sigma unrelated symbols."""
    from derivations.solver_coefficients import Jx_r, Jx_t, ax_r, ax_t
    from derivations.solver_coefficients import rho as rho_sc

    l_t, l_s = sm.log(a_t / s_t), sm.log(a_s / s_s)
    V_t, V_r = a_t**scale_x * ax_t * Jx_t, a_r**scale_x * ax_r * Jx_r
    inc = sm.integrate(sm.exp(-ell) * V_t, (ell, l_t, l_s))
    if k == 2:
        hh = l_s - l_t
        # h^2 phi_2(h) e^{-lambda_s} V' with V' ~ (V_t - V_r)/(rho h), then (B.25)
        inc += sm.exp(-l_s) * hh * (sm.exp(hh) - 1) / 2 * (V_t - V_r) / (rho_sc * hh)
    return a_t / a_s * ax_t + inc / a_s


def test_adjointdeis_1_and_2m_carry_over_to_any_alpha_sigma():
    from derivations.solver_coefficients import ADEIS1_X, ADEIS2M_X, Jx_r, Jx_t, ax_r, ax_t, c

    def matches(ours, paper, rf_check=True):
        ok = is_zero(sm.expand_log(ours - paper.subs(c, 1), force=True))
        if rf_check:  # and at rectified-flow values (grid r > t > s in lambda: times 0.2 < 0.35 < 0.6)
            rf = {a_r: 0.8, s_r: 0.2, a_t: 0.65, s_t: 0.35, a_s: 0.4, s_s: 0.6, ax_t: 1.3, ax_r: 0.7, Jx_t: 0.4,
                  Jx_r: -0.2}
            ok = ok and numeric_zero((ours - paper.subs(c, 1)).subs(rf), [{}])
        return ok

    assert matches(_adjoint_freeze(1), ADEIS1_X)  # (2.14)
    assert matches(_adjoint_freeze(2), ADEIS2M_X)  # (B.27)
    # the check fails for the freeze of the raw VJP a J (no alpha^2 of 2.11): a different step
    assert not matches(_adjoint_freeze(1, scale_x=0), ADEIS1_X)


# ---------------------------------------------------------------- checks: what does not carry over
def _variance_preserving(alpha, sigma):
    return is_zero(alpha**2 + sigma**2 - 1)


def _g2_is_minus_2f(alpha, sigma):
    return is_zero(diffusion_g2(alpha, sigma) + 2 * drift_f(alpha))


def test_vp_identities_fail_for_rectified_flow():
    assert _variance_preserving(alpha_g, sigma_vp) and not _variance_preserving(alpha_rf, sigma_rf)
    assert is_zero(alpha_rf + sigma_rf - 1)  # what holds instead
    assert is_zero(sigma_cos - sm.sqrt(1 - alpha_cos**2))
    assert not is_zero(sigma_rf - sm.sqrt(1 - alpha_rf**2))  # sigma != sqrt(1 - alpha^2): 1/2 vs sqrt(3)/2 at 1/2
    # g^2 = -2f holds for VP, fails for rectified flow, where g^2 = 2t/(1-t) = -2 t f
    assert _g2_is_minus_2f(alpha_g, sigma_vp) and not _g2_is_minus_2f(alpha_rf, sigma_rf)
    assert is_zero(diffusion_g2(alpha_rf, sigma_rf) - 2 * t / (1 - t))
    assert is_zero(diffusion_g2(alpha_rf, sigma_rf) + 2 * t * F_RF)


def test_vp_lambda_formulas_fail_for_rectified_flow():
    from derivations.lambda_change import ALPHA_OF_LAM, SIGMA_OF_LAM, lam_sym
    from derivations.vp_sde import beta0, dbeta, t_of_lam_lin
    from derivations.vp_sde import lam as lam_vp

    r = rng(12)
    pts = [{t: r.uniform(0.02, 0.98)} for _ in range(5)]
    # rectified flow's own inverse and alpha(lambda), sigma(lambda) hold
    assert numeric_zero(T_OF_LAM_RF.subs(ell, LAM_RF) - t, pts)
    assert numeric_zero(ALPHA_OF_LAM_RF.subs(ell, LAM_RF) - alpha_rf, pts)
    assert numeric_zero(SIGMA_OF_LAM_RF.subs(ell, LAM_RF) - sigma_rf, pts)
    # the linear VP inverse t(lambda) and the VP alpha(lambda), sigma(lambda) do not
    lin_inv = t_of_lam_lin.subs({beta0: 0.1, dbeta: 19.9}).subs(lam_vp, LAM_RF)
    assert not numeric_zero(lin_inv - t, pts, atol=1e-3)
    assert not numeric_zero(ALPHA_OF_LAM.subs(lam_sym, LAM_RF) - alpha_rf, pts, atol=1e-3)
    assert not numeric_zero(SIGMA_OF_LAM.subs(lam_sym, LAM_RF) - sigma_rf, pts, atol=1e-3)


def _conditional_variance(g2):
    """Variance of x_t given x_0 under dx = f x dt + g dw from x_0 at t = 0: v' = 2 f v + g^2, v(0) = 0, for
    rectified flow's f (solved by variation of constants)."""
    u = sm.Symbol("u", positive=True)
    # integrating factor exp(int 2 f) = alpha^2
    return sm.simplify(alpha_rf**2 * sm.integrate((g2 / alpha_rf**2).subs(t, u), (u, 0, t)))


def test_sde_3_1_and_3_6_carry_over_only_with_g2_from_1_5():
    g2_15, g2_vp = diffusion_g2(alpha_rf, sigma_rf), -2 * F_RF
    # forward SDE marginals: with g^2 of (1.5) the conditional variance is sigma^2 = t^2; with the VP g^2 = -2f it is
    # 1 - alpha^2 = 2t - t^2
    assert is_zero(_conditional_variance(g2_15) - sigma_rf**2)
    assert is_zero(_conditional_variance(g2_vp) - (1 - alpha_rf**2))
    assert not is_zero(_conditional_variance(g2_vp) - sigma_rf**2)
    # SDE-DPM-Solver-1 noise: variance alpha_t^2 int_t^s g^2/alpha^2 du added over the step s -> t (t < s)
    s_time = sm.Symbol("s_time", positive=True)
    u = sm.Symbol("u", positive=True)

    def step_variance(g2):
        return alpha_rf**2 * sm.integrate((g2 / alpha_rf**2).subs(t, u), (u, t, s_time))

    hh = LAM_RF - LAM_RF.subs(t, s_time)
    noise_36 = sigma_rf**2 * (sm.exp(2 * hh) - 1)  # (3.6): sigma_t^2 (e^{2h} - 1)
    noise_vp = alpha_rf**2 / (1 - s_time) ** 2 - 1  # its VP-written form alpha_t^2/alpha_s^2 - 1
    assert is_zero(sm.expand_log(step_variance(g2_15) - noise_36, force=True))
    assert is_zero(step_variance(g2_vp) - noise_vp)
    # the VP-written scale differs from (3.6) on rectified flow (t = 0.3, s = 0.6: 2.0625 vs 1.0125) ...
    pt = {t: sm.Rational(3, 10), s_time: sm.Rational(3, 5)}
    assert abs(float((noise_vp - noise_36).subs(pt))) > 1
    # ... and equals it for VP: sigma_t^2 (e^{2h} - 1) = alpha_t^2/alpha_s^2 - 1 when alpha^2 + sigma^2 = 1
    vp = {s_t: sm.sqrt(1 - a_t**2), s_s: sm.sqrt(1 - a_s**2)}
    assert is_zero(sm.expand_log((s_t**2 * (sm.exp(2 * (lt - ls)) - 1) - (a_t**2 / a_s**2 - 1)).subs(vp), force=True))


def _coefficient_growth(alpha_of_t, sigma_of_t, ends=(1 - 1e-2, 1 - 1e-4, 1 - 1e-6)):
    """|AdjointDEIS-1's x-VJP coefficient| for a step from t = 0.5 into s -> 1: its value at the last s and the ratio of
    the last two values."""
    from derivations.solver_coefficients import adjointdeis1_coefficients

    c = [abs(adjointdeis1_coefficients(alpha_of_t(0.5), sigma_of_t(0.5), alpha_of_t(sv), sigma_of_t(sv))[1])
         for sv in ends]
    return c[-1], c[-1] / c[-2]


def test_lambda_end_points_of_rectified_flow():
    """t = 1 is lambda = -inf: the AdjointDEIS-1 x-VJP coefficient into alpha_s -> 0 diverges like 1/alpha_s^2 although
    the exact gradients of the flow from T = 1 are finite (tau_1 = 1); a VP schedule has alpha(1) > 0, no such end."""
    from derivations.vp_sde import linear_vp

    assert sm.limit(LAM_RF, t, 1, "-") == -sm.oo and sm.limit(LAM_RF, t, 0, "+") == sm.oo
    value, ratio = _coefficient_growth(RF.alpha, RF.sigma)
    assert value > 1e11 and ratio > 1e3
    exact_at_1 = np.array(_exact_gradients(X_T[0], t_start=1.0))
    assert np.all(np.isfinite(exact_at_1))
    assert np.allclose(np.array(_exact_gradients(X_T[0], t_start=1 - 1e-9)), exact_at_1, rtol=1e-7)
    # the check fails for the linear VP schedule: the coefficient into s -> 1 stays bounded
    vp = linear_vp()
    value, ratio = _coefficient_growth(vp.alpha, vp.sigma)
    assert value < 1e4 and abs(ratio - 1) < 1e-2


# ---------------------------------------------------------------- numeric checks (rectified flow, Gaussian data)
RF = rectified_flow()
T_START, T_END, MU, S = 0.98, 0.02, 0.8, 0.5
X_T = np.array([0.3, -1.2, 2.1])


def test_numpy_exports_match_sympy():
    def ok(sched):
        tt, ll = 0.37, -0.8
        ref = {"alpha": alpha_rf, "sigma": sigma_rf, "lam": LAM_RF, "f": F_RF,
               "g2": diffusion_g2(alpha_rf, sigma_rf), "eps_coef": C_RF}
        good = all(abs(getattr(sched, k)(tt) - float(e.subs(t, tt))) < 1e-14 for k, e in ref.items())
        good &= abs(sched.t_of_lam(sched.lam(tt)) - tt) < 1e-14
        good &= abs(sched.alpha_of_lam(ll) - sched.alpha(sched.t_of_lam(ll))) < 1e-14
        return good and abs(sched.sigma_of_lam(ll) - sched.sigma(sched.t_of_lam(ll))) < 1e-14

    assert ok(RF)
    # pf_ode's numpy DDIM / 2M coefficients (VP module, fed alpha, sigma values) against this module's SymPy steps,
    # at rectified-flow grid values: usable unchanged
    tr, ts_, tt = 0.7, 0.5, 0.42
    vals = {a_r: 1 - tr, s_r: tr, a_s: 1 - ts_, s_s: ts_, a_t: 1 - tt, s_t: tt}
    cx, ce = ddim_coefficients(1 - ts_, ts_, 1 - tt, tt)
    assert abs(cx - float(DDIM_STEP.diff(x_s_sym).subs(vals))) < 1e-14
    assert abs(ce - float(DDIM_STEP.diff(e_s).subs(vals))) < 1e-14
    c2 = dpm_solver_2m_coefficients(1 - tr, tr, 1 - ts_, ts_, 1 - tt, tt)
    sym2 = [DPM2M_STEP.diff(x_s_sym), DPM2M_STEP.diff(e_s), DPM2M_STEP.diff(e_r)]
    assert all(abs(a - float(b.subs(vals))) < 1e-13 for a, b in zip(c2, sym2))
    # the check fails for a schedule with VP's alpha(lambda) or a 2M ratio r inverted
    from derivations.lambda_change import alpha_sigma_of_lam

    assert not ok(SimpleNamespace(**{**vars(RF), "alpha_of_lam": lambda l: alpha_sigma_of_lam(l)[0]}))
    hh = np.log((1 - tt) / tt) - np.log((1 - ts_) / ts_)
    r_inv = hh / (np.log((1 - ts_) / ts_) - np.log((1 - tr) / tr))
    bad = -tt * np.expm1(hh) * (1 + 1 / (2 * r_inv))
    assert abs(bad - float(sym2[1].subs(vals))) > 1e-3


def _ode_solve(coef_fn, x_T, t0, t1):
    from scipy.integrate import solve_ivp

    rhs = lambda tt, x: RF.f(tt) * x + coef_fn(tt) * eps_star(x, 1 - tt, tt, MU, S)  # noqa: E731
    return solve_ivp(rhs, (t0, t1), x_T, method="DOP853", rtol=1e-12, atol=1e-13).y[:, -1]


def test_exact_eps_and_flow_give_x0_from_xT():
    # eps* and E[x_0 | x] are Tweedie's (Gaussian conditioning), and E[x_0|x] = (x - sigma eps*)/alpha
    assert is_zero(X0_STAR_G - (xs - sigma_g * EPS_STAR_G) / alpha_g)
    # the flow map solves the rectified-flow PF-ODE (symbolically)
    tau_u, alpha_u, x_u = sm.symbols("tau_u alpha_u x_u", positive=True)
    tau = sm.sqrt(alpha_rf**2 * sd**2 + sigma_rf**2)
    x_path = alpha_rf * mu + tau / tau_u * (x_u - alpha_u * mu)
    assert is_zero(sm.diff(x_path, t) - (F_RF * x_path + C_RF * _rf(EPS_STAR_G).subs(xs, x_path)))
    # numerically: an accurate ODE solve from T_START to T_END agrees with the flow map to 1e-9
    ref = flow(X_T, 1 - T_START, T_START, 1 - T_END, T_END, MU, S)
    assert np.allclose(_ode_solve(RF.eps_coef, X_T, T_START, T_END), ref, rtol=1e-9, atol=1e-10)
    # from t = 1 (alpha = 0) the velocity form integrates to the same flow map (tau_1 = 1)
    from scipy.integrate import solve_ivp

    y = solve_ivp(lambda tt, x: velocity_star(x, tt, MU, S), (1.0, 0.0), X_T, method="DOP853",
                  rtol=1e-12, atol=1e-13).y[:, -1]
    assert np.allclose(y, flow(X_T, 0.0, 1.0, 1.0, 0.0, MU, S), rtol=1e-9, atol=1e-10)
    # the check fails for the VP-written eps coefficient -f/sigma
    assert not np.allclose(_ode_solve(lambda tt: -RF.f(tt) / tt, X_T, T_START, T_END), ref, rtol=1e-3)


def _lam_grid(M):
    lams = np.linspace(RF.lam(T_START), RF.lam(T_END), M + 1)
    return lams, RF.alpha_of_lam(lams), RF.sigma_of_lam(lams)


def _sample(M, order, coeff1=ddim_coefficients, coeff2=dpm_solver_2m_coefficients):
    """DDIM (order 1) or DPM-Solver-2M (order 2, DDIM warm start) on M lambda-uniform steps from T_START."""
    _, al, sg = _lam_grid(M)
    x, prev = X_T.copy(), None
    for i in range(M):
        e = eps_star(x, al[i], sg[i], MU, S)
        if order == 1 or prev is None:
            cx, ce = coeff1(al[i], sg[i], al[i + 1], sg[i + 1])
            x_new = cx * x + ce * e
        else:
            cx, cs, cr = coeff2(al[i - 1], sg[i - 1], al[i], sg[i], al[i + 1], sg[i + 1])
            x_new = cx * x + cs * e + cr * prev
        x, prev = x_new, e
    return x


def _fitted_order(errs, Ms):
    """Slope of log(error) against log(h), h = (lambda_end - lambda_start)/M."""
    hs = (RF.lam(T_END) - RF.lam(T_START)) / np.array(Ms)
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


def _order_is(run, target, ref, Ms=(64, 128, 256, 512)):
    errs = [np.max(np.abs(run(M) - ref)) for M in Ms]
    return abs(_fitted_order(errs, Ms) - target) < 0.15, _fitted_order(errs, Ms)


def test_ddim_order_1_and_dpm_solver_2m_order_2_on_rectified_flow():
    ref = flow(X_T, 1 - T_START, T_START, 1 - T_END, T_END, MU, S)
    ok1, p1 = _order_is(lambda M: _sample(M, 1), 1.0, ref)
    ok2, p2 = _order_is(lambda M: _sample(M, 2), 2.0, ref)
    assert ok1 and ok2, (p1, p2)
    assert np.max(np.abs(_sample(512, 2) - ref)) < 1e-4
    # the check fails for 2M without its correction term (it is DDIM: order 1), and for the VP-written DDIM
    # (sigma_t -> sqrt(1 - alpha_t^2)), which does not converge to x_0
    no_corr = lambda *a: (lambda cx, cs, cr: (cx, cs + cr, 0.0))(*dpm_solver_2m_coefficients(*a))  # noqa: E731
    assert not _order_is(lambda M: _sample(M, 2, coeff2=no_corr), 2.0, ref)[0]
    vp_ddim = lambda a_s_, s_s_, a_t_, s_t_: ddim_coefficients(a_s_, s_s_, a_t_, np.sqrt(1 - a_t_**2))  # noqa: E731
    assert np.max(np.abs(_sample(512, 1, coeff1=vp_ddim) - ref)) > 1e-1


def _exact_gradients(x_T, t_start=T_START):
    """d x_0/d x_T, d x_0/d mu, d x_0/d s of the flow map from t_start to T_END."""
    aT, sT, a0, s0 = 1 - t_start, t_start, 1 - T_END, T_END
    tT, t0 = np.sqrt(aT**2 * S**2 + sT**2), np.sqrt(a0**2 * S**2 + s0**2)
    d_ratio = (a0**2 * S / t0) / tT - t0 * aT**2 * S / tT**3
    return t0 / tT, a0 - t0 / tT * aT, d_ratio * (x_T - aT * MU)


def _adjoint(M, order, alpha_sigma=None):
    """AdjointDEIS-order (solver_coefficients' numpy steps, fed rectified-flow alpha, sigma) from T_END back to T_START
    with exact VJPs of eps* along the exact trajectory; returns (a_x, a_mu, a_s) for the loss x_0 (first component)."""
    from derivations.solver_coefficients import adjointdeis1_coefficients, adjointdeis2m_coefficients

    lams, al, sg = _lam_grid(M)
    lams, al, sg = lams[::-1], al[::-1], sg[::-1]  # lambda decreasing: T_END -> T_START
    if alpha_sigma is not None:
        al, sg = alpha_sigma(lams)
    xT = X_T[0]
    xs_path = flow(xT, 1 - T_START, T_START, RF.alpha_of_lam(lams), RF.sigma_of_lam(lams), MU, S)
    a_x, a_mu, a_s, prev = 1.0, 0.0, 0.0, None
    for i in range(M):
        at, st, as_, ss = al[i], sg[i], al[i + 1], sg[i + 1]
        tau2 = at**2 * S**2 + st**2
        vx = a_x * st / tau2
        vmu = -a_x * st * at / tau2
        vs_ = a_x * st * (xs_path[i] - at * MU) * (-2 * at**2 * S) / tau2**2
        if order == 1 or prev is None:
            c_a, c_x, c_z = adjointdeis1_coefficients(at, st, as_, ss)
            a_x_new, dmu, ds_ = c_a * a_x + c_x * vx, c_z * vmu, c_z * vs_
        else:
            ar, sr, vx_r, vmu_r, vs_r = prev
            c_a, cx_t, cx_r, cz_t, cz_r = adjointdeis2m_coefficients(ar, sr, at, st, as_, ss)
            a_x_new = c_a * a_x + cx_t * vx + cx_r * vx_r
            dmu, ds_ = cz_t * vmu + cz_r * vmu_r, cz_t * vs_ + cz_r * vs_r
        prev = (at, st, vx, vmu, vs_)
        a_x, a_mu, a_s = a_x_new, a_mu + dmu, a_s + ds_
    return np.array([a_x, a_mu, a_s])


def test_adjointdeis_orders_on_rectified_flow():
    ref = np.array(_exact_gradients(X_T[0]))
    Ms = (128, 256, 512, 1024)
    for order in (1, 2):
        errs = np.array([np.abs(_adjoint(M, order) - ref) for M in Ms])
        slopes = [_fitted_order(errs[:, j], Ms) for j in range(3)]
        assert all(abs(p - order) < 0.15 for p in slopes), (order, slopes)
    assert np.max(np.abs(_adjoint(1024, 2) - ref) / np.abs(ref)) < 1e-3
    # the check fails when the grid's alpha, sigma come from VP's alpha(lambda), sigma(lambda) (lambda_change.py)
    from derivations.lambda_change import alpha_sigma_of_lam

    wrong = _adjoint(1024, 2, alpha_sigma=alpha_sigma_of_lam)
    assert np.max(np.abs(wrong - ref) / np.abs(ref)) > 1e-2

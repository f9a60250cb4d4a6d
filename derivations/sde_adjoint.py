r"""The diffusion SDE: its adjoint is an ODE (Theorem 3.1, Prop. 3.1, App. E), the SDE-DPM-Solver-1
step (3.6), the Cycle-SDE noise inversion (3.7) and the noise in ρ = e^{-2λ}.

**Itô vs Stratonovich (E.12–E.14).**  :math:`dx=b\,dt+G(x,t)\,dw` (Itô) equals
:math:`dx=[b+\tfrac12 c]dt+G\circ dw` with :math:`c_i=\sum_{j,k}G_{kj}\partial_{x_k}G_{ij}`.  For the
diffusion SDE :math:`G=g(t)I` does not depend on x, so :math:`c=0` and both readings coincide
(the 2026 project page's ":math:`-\frac12 g g'`" is not a correction term).

**Adjoint (Thm 3.1, Prop 3.1).**  With state-independent noise the stochastic term of the
adjoint flow (E.8) vanishes, so :math:`a_x` solves :math:`\dot a_x=-a_x^\top\partial_x b` with the SDE
drift :math:`b=f x+\frac{g^2}{\sigma}\epsilon_\theta` (3.1).  Its ε coefficient is twice the PF-ODE's,
so every integral of Prop. 2.1 is doubled (3.3–3.5) and SDE-AdjointDEIS-k is AdjointDEIS-k with the
VJP terms doubled (linear term unchanged).

**SDE-DPM-Solver-1 (3.6).**  In :math:`y=x/\alpha`, by (B.6), :math:`dy=-2e^{-\lambda}\epsilon\,d\lambda
+\frac{g}{\alpha}d\bar w`, and :math:`g^2/\alpha^2=-2e^{-2\lambda}\dot\lambda=\frac{d}{dt}e^{-2\lambda}`.
So with :math:`\rho:=e^{-2\lambda}` the noise is a Brownian motion *in ρ*:
:math:`y_t=y_s-2\int e^{-\lambda}\epsilon\,d\lambda+(B(\rho_s)-B(\rho_t))`.  Freezing ε at
:math:`(x_s,s)`, :math:`h=\lambda_t-\lambda_s>0`:

.. math:: x_t=\frac{\alpha_t}{\alpha_s}x_s-2\sigma_t(e^h-1)\epsilon_\theta(x_s,s)+\sigma_t\sqrt{e^{2h}-1}\,\xi

because :math:`\alpha_t^2(\rho_s-\rho_t)=\sigma_t^2(e^{2h}-1)`.  Hence the noise increments of
refined grids add up (variances :math:`\rho_s-\rho_m` and :math:`\rho_m-\rho_t` sum to
:math:`\rho_s-\rho_t`), and a state inside a step s > τ > t consistent with a recorded step
noise ξ is obtained with the Brownian-bridge mean: noise :math:`\sqrt{(\rho_s-\rho_\tau)/(\rho_s-\rho_t)}\,\xi`
for the step s → τ.

**Cycle-SDE (3.7).**  Solving (3.6) for ξ:
:math:`\xi=\big(x_t-\frac{\alpha_t}{\alpha_s}x_s+2\sigma_t(e^h-1)\epsilon_\theta(x_s,s)\big)/(\sigma_t\sqrt{e^{2h}-1})`.
(FreeDoM's (A.4) prints :math:`h_i=\lambda_{t_i}-\lambda_{t_{i-1}}<0`, for which
:math:`e^{2h_i}-1<0` and the square root is imaginary: the sign must be :math:`\lambda_{t_{i-1}}-\lambda_{t_i}`.)

Exposed (numpy): :func:`sde_dpm_solver1_coefficients`, :func:`cycle_sde_noise`,
:func:`bridge_noise_fraction`, :func:`sde_adjointdeis1_coefficients`.
"""
import numpy as np
import sympy as sm

from derivations import solver_coefficients as sc
from derivations._checks import is_zero
from derivations.solver_coefficients import ADEIS1_X, ADEIS1_Z, ADEIS2M_X, adjointdeis1_coefficients, c
from derivations.vp_sde import alpha_g, diffusion_g2, drift_f, half_log_snr, sigma_g, t

a_s, s_s, a_t, s_t, a_m, s_m = sm.symbols("alpha_s sigma_s alpha_t sigma_t alpha_m sigma_m", positive=True)
x_s, x_t, eps_s, xi = sm.symbols("x_s x_t epsilon_s xi", real=True)
lam = lambda a, s: sm.log(a / s)  # noqa: E731
rho = lambda a, s: (s / a) ** 2  # e^{-2 lambda}  # noqa: E731


def sde_step(a_from, s_from, a_to, s_to, x_from, eps_from, noise):
    """(3.6) with h = lambda_to - lambda_from > 0."""
    hh = lam(a_to, s_to) - lam(a_from, s_from)
    return (a_to / a_from * x_from - 2 * s_to * (sm.exp(hh) - 1) * eps_from
            + s_to * sm.sqrt(sm.exp(2 * hh) - 1) * noise)


def sde_dpm_solver1_coefficients(alpha_s, sigma_s, alpha_t, sigma_t):
    """(c_x, c_eps, c_noise) of (3.6): x_t = c_x x_s + c_eps eps(x_s, s) + c_noise xi."""
    hh = np.log(alpha_t / sigma_t) - np.log(alpha_s / sigma_s)
    return alpha_t / alpha_s, -2 * sigma_t * np.expm1(hh), sigma_t * np.sqrt(np.expm1(2 * hh))


def cycle_sde_noise(x_t_val, x_s_val, eps_s_val, alpha_s, sigma_s, alpha_t, sigma_t):
    """(3.7): the xi that makes (3.6) map x_s to x_t."""
    cx, ce, cn = sde_dpm_solver1_coefficients(alpha_s, sigma_s, alpha_t, sigma_t)
    return (x_t_val - cx * x_s_val - ce * eps_s_val) / cn


def bridge_noise_fraction(lam_s, lam_tau, lam_t):
    """Noise factor for the sub-step s -> tau inside a recorded step s -> t (noise sqrt(.) * xi)."""
    return np.sqrt(np.expm1(-2 * (lam_tau - lam_s)) / np.expm1(-2 * (lam_t - lam_s)))


def sde_adjointdeis1_coefficients(alpha_t, sigma_t, alpha_s, sigma_s):
    """SDE-AdjointDEIS-1 (c_a, c_vx, c_vz): the ODE ones with the VJP terms doubled."""
    return adjointdeis1_coefficients(alpha_t, sigma_t, alpha_s, sigma_s, sde=True)


# ---------------------------------------------------------------- checks
def test_ito_stratonovich_correction_vanishes_for_state_independent_noise():
    xs = sm.symbols("x0:2", real=True)

    def correction(G):
        return sm.Matrix([sum(G[k, j] * sm.diff(G[i, j], xs[k]) for j in range(2) for k in range(2)) / 2
                          for i in range(2)])

    g = sm.Function("g")(t)
    assert correction(g * sm.eye(2)) == sm.zeros(2, 1)  # (E.14): the diffusion SDE
    assert is_zero(correction(sm.diag(*xs)) - sm.Matrix(xs) / 2)  # multiplicative noise does change


def test_sde_adjoint_equals_pf_ode_adjoint_with_doubled_vjp():
    """The drifts come from the score forms, the reverse SDE (1.2) f x - g^2 score and the PF-ODE (1.3)
    f x - g^2/2 score, with score = -eps/sigma (derivations/pf_ode.py), not retyped with their factor 2."""
    from derivations.pf_ode import pf_ode_score_form

    f, g2 = drift_f(alpha_g), diffusion_g2(alpha_g, sigma_g)
    xv, av = sm.symbols("x a", real=True)
    eps = sm.Function("eps")(xv)

    def vjp_part_is_doubled(reverse_sde_score_form):
        b_sde = reverse_sde_score_form(xv, -eps / sigma_g)  # (3.1)
        b_ode = pf_ode_score_form(xv, -eps / sigma_g)  # (2.2)
        rhs_sde, rhs_ode = -av * sm.diff(b_sde, xv), -av * sm.diff(b_ode, xv)
        linear = -f * av
        return is_zero((rhs_sde - linear) - 2 * (rhs_ode - linear))

    assert vjp_part_is_doubled(lambda x_, score_: f * x_ - g2 * score_)  # (1.2)
    # the check fails for a reverse SDE with the PF-ODE's g^2/2 (no doubling) or a drift missing its f x
    assert not vjp_part_is_doubled(pf_ode_score_form)
    assert not vjp_part_is_doubled(lambda x_, score_: -g2 * score_)


def test_proposition_3_1_integral_form_solves_the_sde_adjoint():
    """d/ds of (3.3): alpha_s a(s) = alpha_t a(t) + 2 int alpha^2 e^{-l} a J dl gives -f a - g^2/sigma a J."""
    s = sm.Symbol("s", positive=True)
    A, J = sm.symbols("A J", real=True)  # a_x(s) and the Jacobian at s
    lam_s = half_log_snr(alpha_g, sigma_g).subs(t, s)
    al_s = alpha_g.subs(t, s)
    # (alpha a)' = 2 alpha^2 e^{-lambda} a J lambda'  =>  a' = -f a + 2 alpha e^{-lambda} lambda' a J
    da = -drift_f(alpha_g).subs(t, s) * A + 2 * al_s * sm.exp(-lam_s) * sm.diff(lam_s, s) * A * J
    target = -drift_f(alpha_g).subs(t, s) * A - (diffusion_g2(alpha_g, sigma_g) / sigma_g).subs(t, s) * A * J
    assert is_zero(da - target)


def _is_ode_step_with_doubled_vjps(sde_step_, ode_step):
    """The SDE step is the ODE step with every VJP doubled (each Jacobian J -> 2J) and the linear term unchanged."""
    double = {sc.Jx_t: 2 * sc.Jx_t, sc.Jx_r: 2 * sc.Jx_r, sc.Jz_t: 2 * sc.Jz_t, sc.Jz_r: 2 * sc.Jz_r}
    return is_zero(sde_step_ - ode_step.subs(double, simultaneous=True))


def test_sde_adjointdeis_is_the_ode_one_with_factor_two():
    """c = 2 in (2.14), (B.27)/(B.31) is the ODE step with doubled VJPs; for k = 1 it is also the first-order
    Taylor step of Prop. 3.1's doubled integrals (3.3)-(3.5)."""
    for e in (ADEIS1_X, ADEIS1_Z, ADEIS2M_X, sc.ADEIS2M_Z):
        assert _is_ode_step_with_doubled_vjps(e.subs(c, 2), e.subs(c, 1))
    ax, dz = sc.kth_order_update(1, [2 * sc.Vx_t], [2 * sc.Vz_t])
    assert is_zero(sm.expand_log(ax - ADEIS1_X.subs(c, 2), force=True))
    assert is_zero(sm.expand_log(dz - ADEIS1_Z.subs(c, 2), force=True))
    # the check fails for a step whose linear term also carries c (the old check, "(c=2 step - c=0 step) is twice
    # (c=1 step - c=0 step)", passed it: with c on every term the c = 0 step is 0)
    mutant = ADEIS1_X + (c - 1) * sc.a_t / sc.a_s * sc.ax_t
    assert not _is_ode_step_with_doubled_vjps(mutant.subs(c, 2), mutant.subs(c, 1))
    lin = mutant.subs(c, 0)
    assert is_zero((mutant.subs(c, 2) - lin) - 2 * (mutant.subs(c, 1) - lin))


def test_noise_is_brownian_in_rho_equals_exp_minus_2_lambda():
    lam_t = half_log_snr(alpha_g, sigma_g)
    g2 = diffusion_g2(alpha_g, sigma_g)
    assert is_zero(g2 / alpha_g**2 - sm.diff(sm.exp(-2 * lam_t), t))
    # one-step variance of (3.6) is alpha_t^2 (rho_s - rho_t)
    hh = lam(a_t, s_t) - lam(a_s, s_s)
    assert is_zero(sm.expand_log(s_t**2 * (sm.exp(2 * hh) - 1), force=True) - a_t**2 * (rho(a_s, s_s) - rho(a_t, s_t)))


def test_sde_dpm_solver_1_drift_is_doubled_ddim():
    ell = sm.Symbol("ell", real=True)
    hh = lam(a_t, s_t) - lam(a_s, s_s)
    drift = -2 * a_t * sm.integrate(sm.exp(-ell), (ell, lam(a_s, s_s), lam(a_t, s_t)))
    assert is_zero(sm.expand_log(drift + 2 * s_t * (sm.exp(hh) - 1), force=True))


def test_noise_increments_add_up_across_refined_grids():
    """Two steps s -> m -> t with independent noises == one step s -> t in distribution
    (same mean map for constant eps, same variance)."""
    xi1, xi2 = sm.symbols("xi_1 xi_2", real=True)
    x_m = sde_step(a_s, s_s, a_m, s_m, x_s, eps_s, xi1)
    two = sde_step(a_m, s_m, a_t, s_t, x_m, eps_s, xi2)
    one = sde_step(a_s, s_s, a_t, s_t, x_s, eps_s, xi)
    mean2, mean1 = two.subs({xi1: 0, xi2: 0}), one.subs(xi, 0)
    assert is_zero(sm.expand_log(sm.expand(mean2 - mean1), force=True))
    var2 = sm.diff(two, xi1) ** 2 + sm.diff(two, xi2) ** 2
    var1 = sm.diff(one, xi) ** 2
    assert is_zero(sm.expand_log(sm.expand(var2 - var1), force=True))
    # in y = x/alpha coordinates the variances are rho differences that telescope
    assert is_zero(sm.expand_log(sm.expand(var1 / a_t**2 - (rho(a_s, s_s) - rho(a_t, s_t))), force=True))


def test_cycle_sde_inversion_3_7():
    sol = sm.solve(sm.Eq(x_t, sde_step(a_s, s_s, a_t, s_t, x_s, eps_s, xi)), xi)
    assert len(sol) == 1
    hh = lam(a_t, s_t) - lam(a_s, s_s)
    printed = (x_t - a_t / a_s * x_s + 2 * s_t * (sm.exp(hh) - 1) * eps_s) / (s_t * sm.sqrt(sm.exp(2 * hh) - 1))
    assert is_zero(sol[0] - printed)
    # round trip with numbers: x_t from the symbolic step (3.6), xi recovered by the numpy (3.7) (a round trip
    # through the numpy forward step would pass whatever coefficients it used)
    vals = dict(a_s=0.3, s_s=np.sqrt(1 - 0.09), a_t=0.7, s_t=np.sqrt(1 - 0.49))
    r = np.random.default_rng(0)
    xs_, eps_, xi_ = r.standard_normal(3)
    at_vals = {a_s: vals["a_s"], s_s: vals["s_s"], a_t: vals["a_t"], s_t: vals["s_t"], x_s: xs_, eps_s: eps_, xi: xi_}
    xt_ = float(sde_step(a_s, s_s, a_t, s_t, x_s, eps_s, xi).subs(at_vals))

    def recovers_xi():
        return abs(cycle_sde_noise(xt_, xs_, eps_, vals["a_s"], vals["s_s"], vals["a_t"], vals["s_t"]) - xi_) < 1e-13

    assert recovers_xi()
    # the check fails when the numpy coefficients are wrong: noise scale sigma_t sqrt(e^h - 1) instead of (3.6)'s
    original = sde_dpm_solver1_coefficients
    globals()["sde_dpm_solver1_coefficients"] = lambda a_s_, s_s_, a_t_, s_t_: (
        *original(a_s_, s_s_, a_t_, s_t_)[:2], s_t_ * np.sqrt(np.expm1(np.log(a_t_ / s_t_) - np.log(a_s_ / s_s_))))
    try:
        assert not recovers_xi()
    finally:
        globals()["sde_dpm_solver1_coefficients"] = original


def test_freedom_A4_sign_makes_the_noise_scale_imaginary():
    k = sm.Symbol("k", positive=True)  # h_i = lambda_{t_i} - lambda_{t_{i-1}} = -k < 0 as printed
    radicand = sm.exp(2 * -k) - 1
    assert sm.diff(radicand, k).is_negative and radicand.subs(k, 0) == 0  # so radicand < 0 for k > 0
    assert sm.sqrt(radicand.subs(k, sm.Rational(1, 2))).is_real is False


def test_brownian_bridge_mean_for_interior_states():
    """W = B(rho_s) - B(rho_t) recorded; E[B(rho_s) - B(rho_tau) | W] = (rho_s - rho_tau)/(rho_s - rho_t) W.
    Plugging it into the s -> tau step needs xi' = sqrt((rho_s - rho_tau)/(rho_s - rho_t)) xi."""
    r_t, d1, d2 = sm.symbols("rho_t d_1 d_2", positive=True)
    r_tau, r_s = r_t + d1, r_t + d1 + d2  # rho_t < rho_tau < rho_s
    cov = r_s - r_tau  # Cov(B(rho_s)-B(rho_tau), B(rho_s)-B(rho_t)) for rho_t < rho_tau < rho_s
    var_W = r_s - r_t
    W = sm.sqrt(var_W) * xi
    mean_increment = cov / var_W * W
    xi_prime = sm.solve(sm.Eq(sm.sqrt(r_s - r_tau) * sm.Symbol("xp"), mean_increment), sm.Symbol("xp"))[0]
    assert is_zero(xi_prime - sm.sqrt((r_s - r_tau) / (r_s - r_t)) * xi)
    # the numpy helper, written with lambdas (rho = e^{-2 lambda}), agrees
    ls_, ltau_, lt_ = 0.1, 0.7, 1.5
    ref = np.sqrt((np.exp(-2 * ls_) - np.exp(-2 * ltau_)) / (np.exp(-2 * ls_) - np.exp(-2 * lt_)))
    assert abs(bridge_noise_fraction(ls_, ltau_, lt_) - ref) < 1e-15

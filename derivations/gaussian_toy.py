r"""The Gaussian toy problem: exact ε, exact flow, exact ODE and SDE gradients (the library's oracle).

Data :math:`x_0\sim\mathcal N(\mu,s^2I)` (s = data std).  Since :math:`x_t=\alpha_tx_0+\sigma_tn`,
the marginal is :math:`x_t\sim\mathcal N(\alpha_t\mu,\tau_t^2I)`, :math:`\tau_t^2=\alpha_t^2s^2+\sigma_t^2`,
and the optimal noise predictor is

.. math:: \epsilon^*(x,t)=\mathbb E[n\mid x_t=x]=\frac{\sigma_t}{\tau_t^2}(x-\alpha_t\mu)
          =-\sigma_t\nabla_x\log p_t(x).

Everything below holds for *any* schedule :math:`\alpha(t),\sigma(t)` with f, g² from (1.5); the
two facts doing the work are (write :math:`\dot{}` for d/dt)

.. math:: f+\frac{g^2}{2\tau^2}=\frac{\dot\tau}{\tau},\qquad
          f+\frac{g^2}{\tau^2}=\frac{d}{dt}\log\tau^2-f=\frac{d}{dt}\log\frac{\tau^2}{\alpha}.

**PF-ODE.**  With :math:`y=x-\alpha_t\mu`, (1.4) becomes :math:`\dot y=(f+g^2/(2\tau^2))y=(\dot\tau/\tau)y`,
so the flow map between any two times u, t is
:math:`x_t=\alpha_t\mu+\frac{\tau_t}{\tau_u}(x_u-\alpha_u\mu)`.  Writing 0 for the end
:math:`t_{end}` and T for the start :math:`t_{start}` of sampling:

.. math:: \frac{\partial x_0}{\partial x_T}=\frac{\tau_0}{\tau_T},\quad
          \frac{\partial x_0}{\partial\mu}=\alpha_0-\frac{\tau_0}{\tau_T}\alpha_T,\quad
          \frac{\partial x_0}{\partial s}=\frac{\partial}{\partial s}\Big(\frac{\tau_0}{\tau_T}\Big)(x_T-\alpha_T\mu),
          \quad\frac{\partial\tau}{\partial s}=\frac{\alpha^2s}{\tau}.

μ enters the model like a conditional z, s like a parameter θ: these are exact targets for
:math:`a_x(T), a_z(T), a_\theta(T)`.  The module also checks that the continuous adjoint (2.4),
(2.9)/(2.10) reproduces them: :math:`a_x(t)=a_0\tau_0/\tau_t` and the accumulated
:math:`a_\mu, a_s` have exactly the t-derivatives the adjoint equations prescribe.

**Diffusion SDE (3.1).**  The drift :math:`f x+(g^2/\sigma)\epsilon^*` is linear and the noise
additive, so :math:`dy=(f+g^2/\tau^2)y\,dt+g\,d\bar w` and the Jacobians do not depend on the
Brownian path:

.. math:: \frac{\partial x_0}{\partial x_T}=\frac{\tau_0^2}{\tau_T^2}\frac{\alpha_T}{\alpha_0},\qquad
          \frac{\partial x_0}{\partial\mu}=\alpha_0-\frac{\tau_0^2\alpha_T^2}{\alpha_0\tau_T^2}.

The adjoint route (Prop. 3.1, doubled VJP) gives the same μ-gradient through
:math:`\frac{d}{du}\frac{\alpha^2}{\tau^2}=-\frac{\alpha^2g^2}{\tau^4}`.  (The s-gradient of the SDE
does depend on the path, through the noise term, and is not an oracle.)

Checks: SymPy with generic :math:`\alpha(t),\sigma(t)`; numerically on the linear VP schedule
(RK4 for the ODE, Euler–Maruyama with a fixed noise path for the SDE).

Exposed (numpy, from α, σ values): :func:`tau`, :func:`eps_star`, :func:`flow`,
:func:`ode_gradients`, :func:`sde_jacobians`.
"""
import numpy as np
import sympy as sm

from derivations._checks import is_zero
from derivations.vp_sde import alpha_g, diffusion_g2, drift_f, linear_vp, sigma_g, t

mu, x, xu = sm.symbols("mu x x_u", real=True)
sd = sm.symbols("s", positive=True)  # data standard deviation
u = sm.symbols("u", positive=True)  # a second, fixed time

f_t, g2_t = drift_f(alpha_g), diffusion_g2(alpha_g, sigma_g)
tau2_t = alpha_g**2 * sd**2 + sigma_g**2
tau_t = sm.sqrt(tau2_t)
eps_star_t = sigma_g * (x - alpha_g * mu) / tau2_t

# values at grid points, for the exported formulas
aT, sT, a0, s0 = sm.symbols("alpha_T sigma_T alpha_0 sigma_0", positive=True)
xT = sm.symbols("x_T", real=True)
tauT, tau0 = sm.sqrt(aT**2 * sd**2 + sT**2), sm.sqrt(a0**2 * sd**2 + s0**2)
FLOW = a0 * mu + tau0 / tauT * (xT - aT * mu)  # x_0 from x_T
ODE_DX = sm.diff(FLOW, xT)
ODE_DMU = sm.diff(FLOW, mu)
ODE_DS = sm.diff(FLOW, sd)
SDE_DX = tau0**2 / tauT**2 * aT / a0
SDE_DMU = a0 - tau0**2 * aT**2 / (a0 * tauT**2)

_V = (xT, mu, aT, sT, a0, s0, sd)
_ode = sm.lambdify(_V, [FLOW, ODE_DX, ODE_DMU, ODE_DS], modules="numpy")
_sde = sm.lambdify((aT, sT, a0, s0, sd), [SDE_DX, SDE_DMU], modules="numpy")


def tau(alpha, sigma, s):
    """tau_t = sqrt(alpha^2 s^2 + sigma^2)."""
    return np.sqrt(alpha**2 * s**2 + sigma**2)


def eps_star(x_val, alpha, sigma, mu_val, s):
    """epsilon*(x, t) = sigma (x - alpha mu)/tau^2."""
    return sigma * (x_val - alpha * mu_val) / (alpha**2 * s**2 + sigma**2)


def flow(x_from, alpha_from, sigma_from, alpha_to, sigma_to, mu_val, s):
    """Exact PF-ODE flow map between any two times."""
    return alpha_to * mu_val + tau(alpha_to, sigma_to, s) / tau(alpha_from, sigma_from, s) * (x_from - alpha_from * mu_val)


def ode_gradients(x_T, mu_val, alpha_T, sigma_T, alpha_0, sigma_0, s):
    """(x_0, dx_0/dx_T, dx_0/dmu, dx_0/ds) per component for the PF-ODE from T (start) to 0 (end)."""
    return tuple(np.asarray(v, dtype=np.float64) + 0 * np.asarray(x_T, dtype=np.float64)
                 for v in _ode(x_T, mu_val, alpha_T, sigma_T, alpha_0, sigma_0, s))


def sde_jacobians(alpha_T, sigma_T, alpha_0, sigma_0, s):
    """(dx_0/dx_T, dx_0/dmu) of the diffusion SDE (3.1), independent of the noise path."""
    return tuple(float(v) for v in _sde(alpha_T, sigma_T, alpha_0, sigma_0, s))


def _tau_dot_identities():
    """f + g^2/(2 tau^2) - tau'/tau and f + g^2/tau^2 - (log(tau^2/alpha))'."""
    one = f_t + g2_t / (2 * tau2_t) - sm.diff(tau2_t, t) / (2 * tau2_t)
    two = f_t + g2_t / tau2_t - sm.diff(sm.log(tau2_t) - sm.log(alpha_g), t)
    return one, two


# ---------------------------------------------------------------- checks
def _marginal_moments():
    """Mean, variance of x_t = alpha (mu + s e) + sigma n and Cov(n, x_t), from the model's coefficients
    (e, n independent standard normals)."""
    e, n = sm.symbols("e n", real=True)
    x_t = alpha_g * (mu + sd * e) + sigma_g * n
    return x_t.subs({e: 0, n: 0}), sm.diff(x_t, e) ** 2 + sm.diff(x_t, n) ** 2, sm.diff(x_t, n)


def _is_tweedie_and_score(eps_candidate):
    """eps_candidate = E[n | x_t = x] (Gaussian conditioning) = -sigma d/dx log p_t(x), p_t = N(mean, var)."""
    mean, var, cov_n_x = _marginal_moments()
    logp = -(x - mean) ** 2 / (2 * var) - sm.log(var) / 2  # + const
    return is_zero(cov_n_x / var * (x - mean) - eps_candidate) and is_zero(eps_candidate + sigma_g * sm.diff(logp, x))


def test_marginal_and_eps_star_is_tweedie_and_score():
    mean, var, _ = _marginal_moments()
    assert is_zero(mean - alpha_g * mu) and is_zero(var - tau2_t)  # N(alpha mu, tau^2)
    assert _is_tweedie_and_score(eps_star_t)
    # the check fails for a wrong predictor: the data std ignored (tau^2 -> sigma^2), or the sign of the score
    assert not _is_tweedie_and_score(sigma_g * (x - alpha_g * mu) / sigma_g**2)
    assert not _is_tweedie_and_score(-eps_star_t)


def test_tau_identities():
    one, two = _tau_dot_identities()
    assert is_zero(one) and is_zero(two)
    # d/du (alpha^2/tau^2) = -alpha^2 g^2 / tau^4
    assert is_zero(sm.diff(alpha_g**2 / tau2_t, t) + alpha_g**2 * g2_t / tau2_t**2)
    # d tau / d s = alpha^2 s / tau
    assert is_zero(sm.diff(tau_t, sd) - alpha_g**2 * sd / tau_t)


def test_flow_map_solves_the_pf_ode():
    tau_u, alpha_u = sm.symbols("tau_u alpha_u", positive=True)  # constants of the fixed time u
    x_t = alpha_g * mu + tau_t / tau_u * (xu - alpha_u * mu)
    rhs = f_t * x_t + g2_t / (2 * sigma_g) * eps_star_t.subs(x, x_t)
    assert is_zero(sm.diff(x_t, t) - rhs)
    # it maps the marginal to the marginal: mean alpha_t mu and std tau_t when x_u has std tau_u
    assert is_zero(x_t.subs(xu, alpha_u * mu) - alpha_g * mu)
    assert is_zero(sm.diff(x_t, xu) * tau_u - tau_t)


def test_ode_gradient_formulas():
    assert is_zero(ODE_DX - tau0 / tauT)
    assert is_zero(ODE_DMU - (a0 - tau0 / tauT * aT))
    d_ratio = (a0**2 * sd / tau0) / tauT - tau0 * aT**2 * sd / tauT**3  # quotient rule, dtau/ds
    assert is_zero(ODE_DS - d_ratio * (xT - aT * mu))


def test_continuous_adjoint_reproduces_the_ode_gradients():
    """a_x(t) = a0 tau_0/tau_t solves (2.4) with J = sigma/tau^2; the accumulated a_mu and a_s
    (exact gradients with the state at t held fixed) have the derivatives (2.9)/(2.10) prescribe."""
    a0_, tau0_, alpha0_ = sm.symbols("a_0 tau_0 alpha_0", positive=True)
    a_x = a0_ * tau0_ / tau_t
    J = sm.diff(eps_star_t, x)
    assert is_zero(sm.diff(a_x, t) - (-f_t * a_x - g2_t / (2 * sigma_g) * a_x * J))
    # a_mu(t) = a0 (alpha_0 - tau_0 alpha_t/tau_t); da_mu/dt = -g^2/(2 sigma) a_x d eps/d mu
    a_mu = a0_ * (alpha0_ - tau0_ * alpha_g / tau_t)
    assert is_zero(sm.diff(a_mu, t) - (-g2_t / (2 * sigma_g) * a_x * sm.diff(eps_star_t, mu)))
    # a_s(t) = a0 d(tau_0/tau_t)/ds (x_t - alpha_t mu) with x_t on the trajectory (tau_t K)
    K = sm.Symbol("K", real=True)
    tau0_expr = sm.sqrt(alpha0_**2 * sd**2 + sm.Symbol("sigma_0", positive=True) ** 2)
    a_s = a0_ * sm.diff(tau0_expr / tau_t, sd) * tau_t * K
    x_on_path = alpha_g * mu + tau_t * K
    rhs = -g2_t / (2 * sigma_g) * a0_ * tau0_expr / tau_t * sm.diff(eps_star_t, sd).subs(x, x_on_path)
    assert is_zero(sm.diff(a_s, t) - rhs)
    # the constants of integration: at t_end the adjoint starts from (a_0, 0, 0); at t_start it reads a_0 times
    # the exact gradients of the flow (ODE_DX, ODE_DMU, ODE_DS)
    end = {alpha_g: a0, sigma_g: s0, tau0_: tau0, alpha0_: a0}
    start = {alpha_g: aT, sigma_g: sT, tau0_: tau0, alpha0_: a0, K: (xT - aT * mu) / tauT}

    def reproduces_the_gradients(a_mu_):
        return (is_zero(a_x.subs(end) - a0_) and is_zero(a_mu_.subs(end)) and is_zero(a_s.subs(end))
                and is_zero(a_x.subs(start) - a0_ * ODE_DX) and is_zero(a_mu_.subs(start) - a0_ * ODE_DMU)
                and is_zero(a_s.subs(start) - a0_ * ODE_DS))

    assert reproduces_the_gradients(a_mu)
    # the derivative checks above cannot see a wrong constant; this one does: a_mu + a_0 has the same t-derivative
    assert is_zero(sm.diff(a_mu + a0_, t) - sm.diff(a_mu, t)) and not reproduces_the_gradients(a_mu + a0_)


def test_sde_jacobians_direct_and_by_the_doubled_adjoint():
    # y = x - alpha mu obeys y' = (f + g^2/tau^2) y (+ noise): the drift of (3.1) in y
    y = sm.Symbol("y", real=True)
    drift_x = f_t * x + g2_t / sigma_g * eps_star_t
    drift_y = (drift_x - sm.diff(alpha_g, t) * mu).subs(x, y + alpha_g * mu)
    assert is_zero(drift_y - (f_t + g2_t / tau2_t) * y)
    # Phi(t) = (tau_t^2/alpha_t) / (tau_u^2/alpha_u) solves Phi' = (f + g^2/tau^2) Phi
    Phi = tau2_t / alpha_g
    assert is_zero(sm.diff(Phi, t) - (f_t + g2_t / tau2_t) * Phi)

    def is_the_propagator(dx):  # dx_0/dx_T = Phi(t_end) / Phi(t_start), Phi evaluated at the two grid points
        return is_zero(dx - Phi.subs({alpha_g: a0, sigma_g: s0}) / Phi.subs({alpha_g: aT, sigma_g: sT}))

    assert is_the_propagator(SDE_DX)
    assert not is_the_propagator(ODE_DX)  # the check fails for the PF-ODE's tau_0/tau_T
    # mu: x_0 = alpha_0 mu + Phi (x_T - alpha_T mu) + noise  =>  alpha_0 - Phi alpha_T
    assert is_zero(SDE_DMU - (a0 - SDE_DX * aT))
    # adjoint route (Prop 3.1): a_mu(T) = int_0^T a_x(u) (g^2/sigma) (sigma alpha/tau^2) du with
    # a_x(u) = (tau_0^2/alpha_0) alpha_u/tau_u^2; the integrand is -(tau_0^2/alpha_0) d/du(alpha^2/tau^2)
    tau0_sq, alpha0_ = sm.symbols("tau0sq alpha_0", positive=True)
    a_x = tau0_sq / alpha0_ * alpha_g / tau2_t
    integrand = -a_x * (g2_t / sigma_g) * sm.diff(eps_star_t, mu)  # -(doubled coefficient) VJP
    assert is_zero(integrand + tau0_sq / alpha0_ * sm.diff(alpha_g**2 / tau2_t, t))
    # hence a_mu(T) = -(tau_0^2/alpha_0)(alpha_T^2/tau_T^2 - alpha_0^2/tau_0^2) = SDE_DMU
    closed = -(tau0**2 / a0) * (aT**2 / tauT**2 - a0**2 / tau0**2)
    assert is_zero(closed - SDE_DMU)


# ---------------------------------------------------------------- numeric checks (linear VP)
_SCH = linear_vp()
_T_START, _T_END, _S, _MU = 0.9, 0.05, 0.7, np.array([0.4, -1.1, 2.0])


def _ab(tt):
    return _SCH.alpha(tt), _SCH.sigma(tt)


def _rk4_ode(x_T, mu_v=_MU, n=400):
    ts = np.linspace(_T_START, _T_END, n + 1)

    def F(tt, xx):
        a, s = _ab(tt)
        return _SCH.f(tt) * xx + _SCH.g2(tt) / (2 * s) * eps_star(xx, a, s, mu_v, _S)

    xx = x_T.copy()
    for i in range(n):
        t0, dt = ts[i], ts[i + 1] - ts[i]
        k1 = F(t0, xx)
        k2 = F(t0 + dt / 2, xx + dt / 2 * k1)
        k3 = F(t0 + dt / 2, xx + dt / 2 * k2)
        k4 = F(t0 + dt, xx + dt * k3)
        xx = xx + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return xx


def test_numeric_pf_ode_linear_vp():
    r = np.random.default_rng(1)
    x_T = r.standard_normal(3)
    x0 = _rk4_ode(x_T)
    (aT_, sT_), (a0_, s0_) = _ab(_T_START), _ab(_T_END)
    ref, dx, dmu, ds = ode_gradients(x_T, _MU, aT_, sT_, a0_, s0_, _S)
    assert np.allclose(x0, ref, rtol=1e-9, atol=1e-10)
    assert np.allclose(x0, flow(x_T, aT_, sT_, a0_, s0_, _MU, _S), rtol=1e-9)
    # finite differences (the map is affine in x_T and mu: central differences are exact)
    e = 1e-3
    fd_x = (_rk4_ode(x_T + e) - _rk4_ode(x_T - e)) / (2 * e)
    assert np.allclose(fd_x, dx, rtol=1e-8)
    fd_mu = (_rk4_ode(x_T, _MU + e) - _rk4_ode(x_T, _MU - e)) / (2 * e)
    assert np.allclose(fd_mu, dmu, rtol=1e-7)
    # s: perturb the data std (smooth, not affine: central difference to O(e^2))
    g = lambda s: ode_gradients(x_T, _MU, aT_, sT_, a0_, s0_, s)[0]  # noqa: E731
    assert np.allclose((g(_S + e) - g(_S - e)) / (2 * e), ds, rtol=1e-5, atol=1e-8)


def test_numeric_sde_jacobians_linear_vp_are_path_independent():
    """Stochastic Heun (Stratonovich = Ito here: additive noise) on 4 fixed noise paths."""
    n = 2000
    ts = np.linspace(_T_START, _T_END, n + 1)
    r = np.random.default_rng(2)
    dW = r.standard_normal((n, 4)) * np.sqrt(np.abs(np.diff(ts)))[:, None]  # 4 noise paths

    def b(tt, xx, mu_v):
        a, s = _ab(tt)
        return _SCH.f(tt) * xx + _SCH.g2(tt) / s * eps_star(xx, a, s, mu_v, _S)

    def heun(x_T, mu_v):
        xx = np.full(4, x_T, dtype=np.float64)
        for i in range(n):
            t0, t1 = ts[i], ts[i + 1]
            dt, g0, g1 = t1 - t0, np.sqrt(_SCH.g2(t0)), np.sqrt(_SCH.g2(t1))
            b0 = b(t0, xx, mu_v)
            pred = xx + b0 * dt + g0 * dW[i]
            xx = xx + 0.5 * (b0 + b(t1, pred, mu_v)) * dt + 0.5 * (g0 + g1) * dW[i]
        return xx

    (aT_, sT_), (a0_, s0_) = _ab(_T_START), _ab(_T_END)
    jx, jmu = sde_jacobians(aT_, sT_, a0_, s0_, _S)
    base = heun(0.3, 0.5)
    fd_x = heun(1.3, 0.5) - base  # affine in x_T and mu: exact difference quotients of the scheme
    fd_mu = heun(0.3, 1.5) - base
    assert np.ptp(fd_x) < 1e-12 and np.ptp(fd_mu) < 1e-12  # the same on every noise path
    assert np.allclose(fd_x, jx, rtol=1e-4) and np.allclose(fd_mu, jmu, rtol=1e-5)
    # and they differ from the ODE ones (the SDE contracts more)
    _, dx_ode, dmu_ode, _ = ode_gradients(0.0, 0.0, aT_, sT_, a0_, s0_, _S)
    assert jx < 0.1 * dx_ode

r"""VP SDE coefficients from a noise schedule (paper eq. 1.5, B.6, Appendix I).

A variance-preserving (VP) diffusion is specified by two positive functions of time,
the signal scale :math:`\alpha_t` and the noise scale :math:`\sigma_t`, such that the forward
marginal is :math:`q(x_t\mid x_0)=\mathcal N(\alpha_t x_0,\sigma_t^2 I)`.  The linear SDE
:math:`dx_t = f(t)x_t\,dt + g(t)\,dw_t` (1.1) has exactly these marginals when (1.5)

.. math::  f(t)=\frac{d\log\alpha_t}{dt},\qquad
           g^2(t)=\frac{d\sigma_t^2}{dt}-2\frac{d\log\alpha_t}{dt}\sigma_t^2 .

(The mean obeys :math:`\dot m = f m`, so :math:`m=\alpha_t x_0`; the variance obeys
:math:`\dot v = 2 f v + g^2`, and substituting :math:`v=\sigma_t^2` gives the formula for g².)

With the half log-SNR :math:`\lambda_t=\log(\alpha_t/\sigma_t)` the log-derivative trick gives
(B.6): :math:`g^2 = 2\sigma^2(\dot{\log\sigma}-\dot{\log\alpha}) = -2\sigma_t^2\,d\lambda_t/dt`.
This identity holds for *any* schedule and is the single fact behind every exponential
integrator in the paper: :math:`g^2/(2\sigma) = -\sigma\,d\lambda/dt`.
When moreover :math:`\alpha^2+\sigma^2=1` (all VP schedules used here) one gets
:math:`d\sigma^2/dt = -2\alpha^2 f` and therefore :math:`g^2=-2f`.

Two concrete schedules are derived in closed form, each with the inverse :math:`t(\lambda)`:

* **linear VP** (I.1): :math:`\log\alpha_t=-\tfrac{\beta_1-\beta_0}{4}t^2-\tfrac{\beta_0}{2}t`,
  so :math:`f=-\tfrac12\beta(t)`, :math:`g^2=\beta(t)=\beta_0+(\beta_1-\beta_0)t`.  Inverting
  :math:`\log\alpha=-\tfrac12\log(1+e^{-2\lambda})` is a quadratic in t; the root written without
  cancellation is
  :math:`t=\dfrac{2L}{\sqrt{\beta_0^2+2(\beta_1-\beta_0)L}+\beta_0}`, :math:`L=\log(1+e^{-2\lambda})`.
  *Erratum (I.3):* the paper prints
  :math:`d\sigma^2/dt=\beta(t)\exp(-\tfrac{\beta_1-\beta_0}{2}t^2-2\beta_0t)`; the exponent is
  :math:`2\log\alpha_t=-\tfrac{\beta_1-\beta_0}{2}t^2-\beta_0 t`.  The paper also never sums (I.4):
  the sum is just :math:`\beta(t)`.
* **cosine VP** (Nichol & Dhariwal, s = 0.008):
  :math:`\log\alpha_t=\log\cos\big(\tfrac{\pi}{2}\tfrac{t+s}{1+s}\big)-\log\cos\big(\tfrac{\pi}{2}\tfrac{s}{1+s}\big)`,
  :math:`f=-\tfrac{\pi}{2(1+s)}\tan\big(\tfrac{\pi}{2}\tfrac{t+s}{1+s}\big)`, :math:`g^2=-2f`,
  :math:`t(\lambda)=\tfrac{2(1+s)}{\pi}\arccos\big(\cos(\tfrac{\pi}{2}\tfrac{s}{1+s})\,(1+e^{-2\lambda})^{-1/2}\big)-s`.

Exposed for library tests: :func:`linear_vp` and :func:`cosine_vp` return namespaces of
float64 numpy callables ``log_alpha, alpha, sigma, lam, f, g2, t_of_lam``.
"""
from types import SimpleNamespace

import sympy as sm

from derivations._checks import is_zero, numeric_zero, rng

t = sm.symbols("t", positive=True)
lam = sm.symbols("lambda", real=True)
beta0 = sm.symbols("beta_0", positive=True)
dbeta = sm.symbols("Delta_beta", positive=True)  # beta_1 - beta_0 > 0
beta1 = beta0 + dbeta
cos_s = sm.symbols("s", positive=True)

# generic schedule: two arbitrary positive functions of t
alpha_g = sm.Function("alpha", positive=True)(t)
sigma_g = sm.Function("sigma", positive=True)(t)


# ---------------------------------------------------------------- generic formulas (1.5)
def drift_f(alpha):
    """f(t) = d log(alpha_t)/dt  (1.5)."""
    return sm.diff(sm.log(alpha), t)


def diffusion_g2(alpha, sigma):
    """g^2(t) = d sigma^2/dt - 2 d log(alpha)/dt sigma^2  (1.5)."""
    return sm.diff(sigma**2, t) - 2 * sm.diff(sm.log(alpha), t) * sigma**2


def half_log_snr(alpha, sigma):
    """lambda_t = log(alpha_t / sigma_t)."""
    return sm.log(alpha) - sm.log(sigma)


# ---------------------------------------------------------------- linear VP (I.1-I.4)
log_alpha_lin = -dbeta / 4 * t**2 - beta0 / 2 * t
alpha_lin = sm.exp(log_alpha_lin)
sigma_lin = sm.sqrt(1 - sm.exp(2 * log_alpha_lin))
lam_lin = log_alpha_lin - sm.log(sigma_lin)
beta_t = beta0 + dbeta * t
f_lin = -dbeta / 2 * t - beta0 / 2  # (I.2)
g2_lin = beta_t  # sum of (I.4)
dsigma2_I3_printed = beta_t * sm.exp(-dbeta / 2 * t**2 - 2 * beta0 * t)  # as printed
dsigma2_I3_fixed = beta_t * sm.exp(-dbeta / 2 * t**2 - beta0 * t)
_L = sm.log(1 + sm.exp(-2 * lam))
t_of_lam_lin = 2 * _L / (sm.sqrt(beta0**2 + 2 * dbeta * _L) + beta0)

# ---------------------------------------------------------------- cosine VP
_theta = sm.pi / 2 * (t + cos_s) / (1 + cos_s)
_theta0 = sm.pi / 2 * cos_s / (1 + cos_s)
log_alpha_cos = sm.log(sm.cos(_theta)) - sm.log(sm.cos(_theta0))
alpha_cos = sm.cos(_theta) / sm.cos(_theta0)
sigma_cos = sm.sqrt(1 - alpha_cos**2)
lam_cos = log_alpha_cos - sm.log(sigma_cos)
f_cos = -sm.pi / (2 * (1 + cos_s)) * sm.tan(_theta)
g2_cos = -2 * f_cos
t_of_lam_cos = (
    2 * (1 + cos_s) / sm.pi * sm.acos(sm.cos(_theta0) / sm.sqrt(1 + sm.exp(-2 * lam))) - cos_s
)


# ---------------------------------------------------------------- numpy exports
def _namespace(exprs, params):
    out = {}
    for name, (expr, var) in exprs.items():
        out[name] = sm.lambdify(var, expr.subs(params), modules="numpy")
    return SimpleNamespace(**out)


def linear_vp(beta_0=0.1, beta_1=20.0):
    """float64 numpy callables for the linear VP schedule (I.1): log_alpha, alpha, sigma, lam,
    f, g2, t_of_lam, dsigma2_dt."""
    p = {beta0: beta_0, dbeta: beta_1 - beta_0}
    return _namespace(
        {
            "log_alpha": (log_alpha_lin, t),
            "alpha": (alpha_lin, t),
            "sigma": (sigma_lin, t),
            "lam": (lam_lin, t),
            "f": (f_lin + 0 * t, t),
            "g2": (g2_lin, t),
            "dsigma2_dt": (dsigma2_I3_fixed, t),
            "t_of_lam": (t_of_lam_lin, lam),
        },
        p,
    )


def cosine_vp(s=0.008):
    """float64 numpy callables for the cosine VP schedule (Nichol & Dhariwal)."""
    p = {cos_s: s}
    return _namespace(
        {
            "log_alpha": (log_alpha_cos, t),
            "alpha": (alpha_cos, t),
            "sigma": (sigma_cos, t),
            "lam": (lam_cos, t),
            "f": (f_cos, t),
            "g2": (g2_cos, t),
            "t_of_lam": (t_of_lam_cos, lam),
        },
        p,
    )


# ---------------------------------------------------------------- checks
def _lin_points(n=6, t_lo=1e-3, t_hi=1.0):
    r = rng(1)
    return [
        {t: r.uniform(t_lo, t_hi), beta0: r.uniform(0.05, 1.0), dbeta: r.uniform(1.0, 30.0)}
        for _ in range(n)
    ]


def test_B6_g2_equals_minus_2_sigma2_dlambda_dt_for_any_schedule():
    g2 = diffusion_g2(alpha_g, sigma_g)
    dlam = sm.diff(half_log_snr(alpha_g, sigma_g), t)
    assert is_zero(g2 - (-2 * sigma_g**2 * dlam))
    # corollaries used everywhere: g^2/(2 sigma) = -sigma dlambda/dt, sigma = alpha e^{-lambda}
    assert is_zero(g2 / (2 * sigma_g) + sigma_g * dlam)
    assert is_zero(alpha_g * sm.exp(-half_log_snr(alpha_g, sigma_g)) - sigma_g)


def _integrating_factor_is_alpha_ratio(f_expr, alpha_expr):
    """exp(int_{t_0}^t f(u) du), integrated by SymPy, equals alpha_t/alpha_{t_0}."""
    u_, t0 = sm.symbols("u t_0", positive=True)
    factor = sm.exp(sm.integrate(f_expr.subs(t, u_), (u_, t0, t)))
    return is_zero(factor - alpha_expr / alpha_expr.subs(t, t0))


def test_integrating_factor_is_alpha_ratio():
    """exp(int_s^t f) = alpha_t/alpha_s, for a generic schedule (f from 1.5) and for the linear VP f of (I.2)."""
    assert _integrating_factor_is_alpha_ratio(drift_f(alpha_g), alpha_g)
    assert _integrating_factor_is_alpha_ratio(f_lin, alpha_lin)
    # the check fails for a wrong drift: beta(t) in place of beta(t)/2 in (I.2), or f replaced by g^2/2
    assert not _integrating_factor_is_alpha_ratio(-beta_t, alpha_lin)
    assert not _integrating_factor_is_alpha_ratio(diffusion_g2(alpha_g, sigma_g) / 2, alpha_g)


def test_vp_marginal_moments_follow_from_1_5():
    """mean' = f mean and var' = 2 f var + g^2 are solved by alpha_t x0 and sigma_t^2."""
    x0 = sm.symbols("x0")
    assert is_zero(sm.diff(alpha_g * x0, t) - drift_f(alpha_g) * alpha_g * x0)
    assert is_zero(
        sm.diff(sigma_g**2, t) - (2 * drift_f(alpha_g) * sigma_g**2 + diffusion_g2(alpha_g, sigma_g))
    )


def test_g2_equals_minus_2f_when_alpha2_plus_sigma2_is_one():
    a = sm.Function("alpha", positive=True)(t)
    sig = sm.sqrt(1 - a**2)
    assert is_zero(diffusion_g2(a, sig) + 2 * drift_f(a))


def test_linear_vp_drift_I2():
    assert is_zero(drift_f(alpha_lin) - f_lin)


def test_linear_vp_g2_is_beta_I4():
    assert is_zero(diffusion_g2(alpha_lin, sigma_lin) - g2_lin)

    # the two brackets of (I.4), as the paper writes them, are the two terms of (1.5), d sigma^2/dt and
    # -2 f sigma^2, so their sum is g^2 = beta(t)
    def brackets_are_the_terms_of_1_5(first, second):
        return is_zero(sm.diff(sigma_lin**2, t) - first) and is_zero(-2 * drift_f(alpha_lin) * sigma_lin**2 - second)

    assert brackets_are_the_terms_of_1_5(beta_t * alpha_lin**2, beta_t * (1 - alpha_lin**2))
    # the check fails for a wrong bracket: the first one with (I.3)'s printed exponent, or the two swapped
    assert not brackets_are_the_terms_of_1_5(dsigma2_I3_printed, beta_t * (1 - alpha_lin**2))
    assert not brackets_are_the_terms_of_1_5(beta_t * (1 - alpha_lin**2), beta_t * alpha_lin**2)
    assert is_zero(g2_lin + 2 * f_lin)


def test_linear_vp_I3_exponent_erratum():
    dsig2 = sm.diff(sigma_lin**2, t)
    assert is_zero(dsig2 - dsigma2_I3_fixed)
    # the printed exponent (-2 beta_0 t) is wrong: nonzero difference at generic points
    diff_printed = dsig2 - dsigma2_I3_printed
    vals = [abs(float(diff_printed.subs(p))) for p in _lin_points()]
    assert min(vals) > 1e-6


def test_linear_vp_sigma_is_continuous_at_0_with_infinite_slope():
    """Appendix I says sigma_t is "discontinuous" at t = 0; it is continuous (sigma_0 = 0) and its
    derivative d sigma/dt = (d sigma^2/dt)/(2 sigma) blows up like 1/sqrt(t)."""
    assert sm.limit(sigma_lin, t, 0, "+") == 0
    dsig = sm.diff(sigma_lin, t)
    assert sm.limit(dsig, t, 0, "+") == sm.oo
    assert sm.limit(dsig * sm.sqrt(t), t, 0, "+") == sm.sqrt(beta0) / 2


def test_linear_vp_inverse_t_of_lambda():
    # exact: L(lambda(t)) = -2 log alpha_t, then the square root is beta(t) and t(lambda(t)) = t
    L_of_t = sm.log(1 + sm.exp(-2 * lam_lin))
    assert is_zero(sm.simplify(sm.expand_log(L_of_t, force=True)) + 2 * log_alpha_lin) or numeric_zero(
        L_of_t + 2 * log_alpha_lin, _lin_points()
    )
    # the radicand is a perfect square, beta(t)^2, and beta(t) > 0 picks the root
    assert is_zero(beta0**2 + 2 * dbeta * (-2 * log_alpha_lin) - beta_t**2)
    inv = (2 * _L / (beta_t + beta0)).subs(_L, -2 * log_alpha_lin)
    assert is_zero(inv - t)
    # numeric round trip both ways at random points
    assert numeric_zero(t_of_lam_lin.subs(lam, lam_lin) - t, _lin_points(), rtol=1e-12, scale=t)
    r = rng(2)
    pts = [{lam: r.uniform(-8, 8), beta0: 0.1, dbeta: 19.9} for _ in range(6)]
    assert numeric_zero(lam_lin.subs(t, t_of_lam_lin) - lam, pts, rtol=1e-12, scale=lam)


def test_linear_vp_quadratic_root_is_the_positive_one():
    """The quadratic dbeta t^2 + 2 beta0 t - 2L = 0 has exactly one positive root: ours."""
    Lp = sm.symbols("L", positive=True)
    roots = sm.solve(dbeta * t**2 + 2 * beta0 * t - 2 * Lp, t)  # t is declared positive
    assert len(roots) == 1
    ours = 2 * Lp / (sm.sqrt(beta0**2 + 2 * dbeta * Lp) + beta0)
    assert is_zero(sm.radsimp(roots[0] - ours))


def test_cosine_vp_drift_and_g2():
    assert is_zero(drift_f(alpha_cos) - f_cos)
    # alpha^2 + sigma^2 = 1 so g^2 = -2 f; check it from (1.5) numerically (sqrt branch)
    r = rng(3)
    pts = [{t: r.uniform(0.0, 0.99), cos_s: 0.008} for _ in range(6)]
    assert numeric_zero(diffusion_g2(alpha_cos, sigma_cos) - g2_cos, pts, rtol=1e-10, scale=g2_cos)
    assert is_zero(alpha_cos.subs(t, 0) - 1)


def test_cosine_vp_inverse_t_of_lambda():
    r = rng(4)
    pts = [{t: r.uniform(1e-3, 0.99), cos_s: 0.008} for _ in range(8)]
    assert numeric_zero(t_of_lam_cos.subs(lam, lam_cos) - t, pts, rtol=1e-11, scale=t)
    # exact on the principal branch: cos of the arccos argument recovers alpha_t
    arg = sm.cos(_theta0) / sm.sqrt(1 + sm.exp(-2 * lam))
    assert numeric_zero(arg.subs(lam, lam_cos) - alpha_cos * sm.cos(_theta0), pts)


def _exports_match(sched, alpha_expr, sigma_expr, params, tt):
    """The numpy callables agree at t = tt with the SymPy formulas they stand for: alpha, sigma, log alpha,
    lambda = log(alpha/sigma), f and g^2 of (1.5) computed from alpha and sigma; and t_of_lam inverts lam."""
    ref = {"alpha": alpha_expr, "sigma": sigma_expr, "log_alpha": sm.log(alpha_expr),
           "lam": half_log_snr(alpha_expr, sigma_expr), "f": drift_f(alpha_expr),
           "g2": diffusion_g2(alpha_expr, sigma_expr)}
    for name, expr in ref.items():
        want = float(sm.N(expr.subs(params).subs(t, tt), 30))
        if not abs(getattr(sched, name)(tt) - want) <= 1e-12 * max(1.0, abs(want)):
            return False
    return abs(sched.t_of_lam(sched.lam(tt)) - tt) < 1e-12


def test_numpy_exports_match_sympy():
    lin, cos = linear_vp(), cosine_vp()
    lin_p, cos_p = {beta0: 0.1, dbeta: 19.9}, {cos_s: 0.008}
    assert _exports_match(lin, alpha_lin, sigma_lin, lin_p, 0.37)
    assert _exports_match(cos, alpha_cos, sigma_cos, cos_p, 0.61)
    # the check fails for a wrong export: g^2 replaced by the first bracket of (I.4), d sigma^2/dt; the cosine
    # schedule's f taken with offset s = 0; Delta_beta set to beta_1 = 20 instead of beta_1 - beta_0 = 19.9
    wrong_g2 = SimpleNamespace(**{**vars(lin), "g2": lin.dsigma2_dt})
    wrong_f = SimpleNamespace(**{**vars(cos), "f": cosine_vp(0.0).f})
    assert not _exports_match(wrong_g2, alpha_lin, sigma_lin, lin_p, 0.37)
    assert not _exports_match(wrong_f, alpha_cos, sigma_cos, cos_p, 0.61)
    assert not _exports_match(linear_vp(0.1, 20.1), alpha_lin, sigma_lin, lin_p, 0.37)

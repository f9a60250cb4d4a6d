r"""Exact solution of the adjoint diffusion ODE in λ: Proposition 2.1 (eqs. 2.5–2.10, B.3–B.13).

The adjoint ODE (2.4) is semi-linear, :math:`\dot a_x=-f a_x-\frac{g^2}{2\sigma}a_x^\top J`,
:math:`J=\partial\epsilon_\theta/\partial x`.  Multiply by the integrating factor
:math:`e^{\int_0^t f}=\alpha_t/\alpha_0`: :math:`\frac{d}{dt}(\alpha_t a_x)=-\alpha_t\frac{g^2}{2\sigma_t}
a_x^\top J=\alpha_t\sigma_t\dot\lambda_t\,a_x^\top J` (2.5, using B.6).  Integrating from t to s>t
gives (2.7):

.. math:: a_x(s)=\frac{\alpha_t}{\alpha_s}a_x(t)+\frac1{\alpha_s}\int_t^s\alpha_u\sigma_u
          \frac{d\lambda_u}{du}\,a_x(u)^\top J(u)\,du ,

and since :math:`\alpha\sigma\,d\lambda=\alpha^2e^{-\lambda}d\lambda` the substitution
:math:`u\to\lambda` turns it into (2.8):

.. math:: a_x(s)=\frac{\alpha_t}{\alpha_s}a_x(t)+\frac1{\alpha_s}\int_{\lambda_t}^{\lambda_s}
          \alpha_\lambda^2e^{-\lambda}a_x(\lambda)^\top J(\lambda)\,d\lambda .

For z (and θ), whose equation has no linear part,
:math:`a_z(s)=a_z(t)+\int_{\lambda_t}^{\lambda_s}\alpha_\lambda e^{-\lambda}a_x^\top\partial_z\epsilon\,d\lambda`
(2.9, 2.10).  The weights read: one α from the integrating factor and one from
:math:`\sigma=\alpha e^{-\lambda}` for x, only the latter for z.

The proof here goes the other way, which is the cleanest check: differentiate the integral forms
with respect to the upper end s (Leibniz rule) and recover (2.4).  Equivalently, as an ODE in λ,
:math:`d(\alpha_\lambda a_x)/d\lambda=\alpha_\lambda^2e^{-\lambda}a_x^\top J` and
:math:`da_z/d\lambda=\alpha_\lambda e^{-\lambda}a_x^\top\partial_z\epsilon`.  For VP schedules
:math:`\alpha_\lambda=(1+e^{-2\lambda})^{-1/2}`, :math:`\sigma_\lambda=(1+e^{2\lambda})^{-1/2}`.

Exposed: ``ALPHA_OF_LAM``, ``SIGMA_OF_LAM`` (SymPy) and :func:`alpha_sigma_of_lam` (numpy).
"""
import numpy as np
import sympy as sm

from derivations._checks import is_zero
from derivations.vp_sde import alpha_g, diffusion_g2, drift_f, half_log_snr, sigma_g, t

s = sm.symbols("s", positive=True)
ell = sm.symbols("ell", real=True)
lam_sym = sm.symbols("lambda", real=True)

# generic integrands as functions of lambda: W_x(l) = alpha_l^2 e^{-l} a(l) J(l) etc. are
# abbreviated by a and J given as functions of *time*; the lambda-integrand is then obtained by
# composing with t_lambda, which the Leibniz rule evaluates at the end point s.
a_of = sm.Function("a")  # a_x(time), scalar component (d = 1 suffices: everything is linear in a)
J_of = sm.Function("J")  # a_x^T d eps/dx divided by a_x, i.e. the Jacobian for d = 1
Jz_of = sm.Function("J_z")  # d eps / d z
G = sm.Function("G")  # the lambda-integrand of (2.8) as an opaque function of lambda
H = sm.Function("H")  # the lambda-integrand of (2.9)

ALPHA_OF_LAM = 1 / sm.sqrt(1 + sm.exp(-2 * lam_sym))
SIGMA_OF_LAM = 1 / sm.sqrt(1 + sm.exp(2 * lam_sym))


def alpha_sigma_of_lam(lam):
    """(alpha, sigma) of a VP schedule as functions of lambda (numpy, overflow-safe)."""
    lam = np.asarray(lam, dtype=np.float64)
    return np.exp(-0.5 * np.logaddexp(0.0, -2 * lam)), np.exp(-0.5 * np.logaddexp(0.0, 2 * lam))


def _at(expr, time):
    return expr.subs(t, time)


# ---------------------------------------------------------------- checks
def test_integrating_factor_form_2_5():
    f, g2 = drift_f(alpha_g), diffusion_g2(alpha_g, sigma_g)
    a, J = a_of(t), J_of(t)
    da = -f * a - g2 / (2 * sigma_g) * a * J  # (2.4)
    lhs = sm.diff(alpha_g * a, t).subs(sm.Derivative(a, t), da)
    lam = half_log_snr(alpha_g, sigma_g)
    assert is_zero(lhs - (-alpha_g * g2 / (2 * sigma_g) * a * J))
    assert is_zero(lhs - alpha_g * sigma_g * sm.diff(lam, t) * a * J)


def test_time_integrand_2_7_equals_lambda_integrand_2_8():
    lam = half_log_snr(alpha_g, sigma_g)
    # alpha sigma dlambda/du du  ==  alpha^2 e^{-lambda} dlambda
    assert is_zero(alpha_g * sigma_g - alpha_g**2 * sm.exp(-lam))
    # and the (2.6) weight exp(int_s^u f) g^2/(2 sigma_u) = -(alpha_u/alpha_s) sigma_u lambda'_u
    a_s = sm.Function("alpha", positive=True)(s)
    w26 = alpha_g / a_s * diffusion_g2(alpha_g, sigma_g) / (2 * sigma_g)
    assert is_zero(w26 + alpha_g / a_s * sigma_g * sm.diff(lam, t))


def test_proposition_2_1_solves_the_adjoint_ode():
    """Differentiate (2.8)/(2.9) in s: recover (2.4) for a_x and a_z."""
    lam = half_log_snr(alpha_g, sigma_g)
    lam_s, alpha_s, sigma_s = _at(lam, s), _at(alpha_g, s), _at(sigma_g, s)
    lam_t0 = sm.Symbol("lambda_t", real=True)
    a_t0, az_t0, alpha_t0 = sm.symbols("a_t a_z_t alpha_t", real=True)
    Ix, Iz = sm.symbols("I_x I_z")  # stand-ins for the two integrals (values at the end s)
    a_x = alpha_t0 / alpha_s * a_t0 + Ix / alpha_s  # (2.8)
    a_z = az_t0 + Iz  # (2.9)
    # Leibniz rule: d/ds int_{lambda_t}^{lambda_s} G = G(lambda_s) dlambda_s/ds
    dIx = sm.diff(sm.Integral(G(ell), (ell, lam_t0, lam_s)), s)
    dIz = sm.diff(sm.Integral(H(ell), (ell, lam_t0, lam_s)), s)
    assert sm.simplify(dIx - G(lam_s) * sm.diff(lam_s, s)) == 0
    # integrands at the end point lambda_s (t_lambda(lambda_s) = s):
    G_s = alpha_s**2 * sm.exp(-lam_s) * a_x * J_of(s)
    H_s = alpha_s * sm.exp(-lam_s) * a_x * Jz_of(s)
    da_x = (sm.diff(a_x, s) + sm.diff(a_x, Ix) * dIx).subs(G(lam_s), G_s)
    da_z = (sm.diff(a_z, Iz) * dIz).subs(H(lam_s), H_s)
    f_s = _at(drift_f(alpha_g), s)
    c_s = _at(diffusion_g2(alpha_g, sigma_g) / (2 * sigma_g), s)
    assert is_zero(da_x - (-f_s * a_x - c_s * a_x * J_of(s)))
    assert is_zero(da_z - (-c_s * a_x * Jz_of(s)))


def test_lambda_ode_form():
    """d(alpha a_x)/d lambda = alpha^2 e^{-lambda} a J, da_z/d lambda = alpha e^{-lambda} a J_z."""
    f, g2 = drift_f(alpha_g), diffusion_g2(alpha_g, sigma_g)
    a = a_of(t)
    lam = half_log_snr(alpha_g, sigma_g)
    dlam = sm.diff(lam, t)
    da_dt = -f * a - g2 / (2 * sigma_g) * a * J_of(t)
    dalpha_a_dlam = sm.diff(alpha_g * a, t).subs(sm.Derivative(a, t), da_dt) / dlam
    assert is_zero(dalpha_a_dlam - alpha_g**2 * sm.exp(-lam) * a * J_of(t))
    daz_dlam = (-g2 / (2 * sigma_g) * a * Jz_of(t)) / dlam
    assert is_zero(daz_dlam - alpha_g * sm.exp(-lam) * a * Jz_of(t))


def test_vp_alpha_sigma_of_lambda():
    assert is_zero(ALPHA_OF_LAM**2 + SIGMA_OF_LAM**2 - 1)
    assert is_zero(sm.expand_log(sm.log(ALPHA_OF_LAM / SIGMA_OF_LAM), force=True) - lam_sym)
    lam = np.array([-30.0, -2.0, 0.3, 5.0, 30.0])
    a, sg = alpha_sigma_of_lam(lam)
    assert np.allclose(a**2 + sg**2, 1, rtol=0, atol=1e-15)
    assert np.allclose(np.log(a) - np.log(sg), lam, rtol=1e-14)

r"""φ-functions and the analytic Taylor-coefficient integrals (paper B.14–B.19, B.25).

Every exponential integrator in the paper (DPM-Solver forwards, AdjointDEIS backwards) freezes a
smooth integrand :math:`V(\lambda)` by its Taylor polynomial about the known end point and
integrates the remaining *exactly*:

.. math::  \int_{\lambda_t}^{\lambda_s} e^{-\lambda}\frac{(\lambda-\lambda_t)^n}{n!}\,d\lambda
           = \frac{\sigma_s}{\alpha_s}\,h^{n+1}\varphi_{n+1}(h),\qquad h=\lambda_s-\lambda_t
           \tag{B.16}

with the φ-functions (B.17) :math:`\varphi_0(h)=e^h`,
:math:`\varphi_{n+1}(h)=\int_0^1 e^{(1-u)h}\frac{u^n}{n!}\,du`.  Substituting
:math:`\lambda=\lambda_t+uh` into (B.16) shows it directly: the integral becomes
:math:`e^{-\lambda_t}h^{n+1}\int_0^1 e^{-uh}u^n/n!\,du = e^{-\lambda_s}h^{n+1}\varphi_{n+1}(h)`
and :math:`e^{-\lambda_s}=\sigma_s/\alpha_s`.

Integration by parts gives the recurrence
:math:`\varphi_{k+1}(h)=(\varphi_k(h)-\varphi_k(0))/h` with :math:`\varphi_k(0)=1/k!`, hence
:math:`\varphi_1=(e^h-1)/h` (B.18), :math:`\varphi_2=(e^h-h-1)/h^2` (B.19),
:math:`\varphi_3=(e^h-h^2/2-h-1)/h^3`.

DPM-Solver's second-order trick (B.25) replaces :math:`h\varphi_2(h)=(e^h-h-1)/h` by
:math:`(e^h-1)/2`.  The price is
:math:`\frac{e^h-h-1}{h}-\frac{e^h-1}{2}=-\frac{h^2}{12}-\frac{h^3}{24}+O(h^4)`, one power of h
smaller than the term itself, so the multistep scheme keeps second order.

Exposed: :func:`phi` (numpy, n = 0..3, with a series branch for tiny |h| to avoid cancellation)
and the SymPy expressions ``PHI[n]``.
"""
import math

import numpy as np
import sympy as sm

from derivations._checks import is_zero

h = sm.symbols("h", real=True, nonzero=True)
u = sm.symbols("u", real=True)
lam, lam_t = sm.symbols("lambda lambda_t", real=True)
alpha_s, sigma_s = sm.symbols("alpha_s sigma_s", positive=True)


def phi_definition(n):
    """phi_n(h) from its integral definition (B.17)."""
    if n == 0:
        return sm.exp(h)
    k = n - 1
    return sm.integrate(sm.exp((1 - u) * h) * u**k / sm.factorial(k), (u, 0, 1))


def phi_closed(n):
    """phi_n(h) = (e^h - sum_{j<n} h^j/j!) / h^n."""
    return (sm.exp(h) - sum(h**j / sm.factorial(j) for j in range(n))) / h**n


PHI = {n: phi_closed(n) for n in range(5)}


def taylor_integral(n):
    """int_{lambda_t}^{lambda_t+h} e^{-lambda} (lambda-lambda_t)^n/n! d lambda, done by SymPy."""
    return sm.integrate(sm.exp(-lam) * (lam - lam_t) ** n / sm.factorial(n), (lam, lam_t, lam_t + h))


def phi(n, hv):
    """float64 numpy phi_n(h); the Taylor series sum_j h^j/(j+n)! for |h| < 1 (cancellation-free),
    the closed form with expm1 otherwise."""
    hv = np.asarray(hv, dtype=np.float64)
    if n == 0:
        return np.exp(hv)
    small = np.abs(hv) < 1.0
    safe = np.where(small, 1.0, hv)
    poly = sum(safe**j / math.factorial(j) for j in range(n))
    direct = (np.expm1(safe) - (poly - 1.0)) / safe**n
    series = sum(hv**j / math.factorial(j + n) for j in range(25))
    return np.where(small, series, direct)


# ---------------------------------------------------------------- checks
def test_phi_closed_forms_B18_B19():
    assert is_zero(phi_definition(1) - (sm.exp(h) - 1) / h)
    assert is_zero(phi_definition(2) - (sm.exp(h) - h - 1) / h**2)
    for n in range(1, 5):
        assert is_zero(phi_definition(n) - PHI[n])


def test_phi_recurrence_and_values_at_zero():
    for k in range(0, 4):
        at0 = sm.limit(PHI[k], h, 0)
        assert at0 == sm.Rational(1, math.factorial(k))
        assert is_zero(PHI[k + 1] - (PHI[k] - at0) / h)


def test_B16_taylor_integrals_are_phi_functions():
    for n in range(0, 4):
        # e^{-lambda_s} = sigma_s/alpha_s with lambda_s = lambda_t + h
        rhs = sm.exp(-(lam_t + h)) * h ** (n + 1) * PHI[n + 1]
        assert is_zero(taylor_integral(n) - rhs)


def test_B25_dpm_solver_approximation_error():
    err = (sm.exp(h) - h - 1) / h - (sm.exp(h) - 1) / 2
    ser = sm.series(err, h, 0, 5).removeO()
    assert sm.expand(ser - (-h**2 / 12 - h**3 / 24 - h**4 / 80)) == 0
    # relative to the term it approximates (~h/2) the error is O(h): the 2nd-order scheme survives
    rel = sm.series(err / ((sm.exp(h) - h - 1) / h), h, 0, 2).removeO()
    assert sm.expand(rel + h / 6) == 0


def test_numpy_phi_matches_sympy_including_tiny_h():
    hs = np.array([-3.0, -1.0, -0.999, -0.7, -1e-2, -2e-4, -1e-7, 3e-5, 0.4, 2.0])
    for n in range(0, 4):
        ref = np.array([float(sm.N(PHI[n].subs(h, sm.Float(x, 40)), 30)) for x in hs])
        assert np.allclose(phi(n, hs), ref, rtol=1e-13, atol=0)

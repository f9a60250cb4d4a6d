r"""Measured convergence orders of AdjointDEIS-1/-2M on the Gaussian toy (Theorem 2.1 and its typo).

The Gaussian toy (derivations/gaussian_toy.py) has :math:`\partial_x\epsilon^*=\sigma_t/\tau_t^2` and
:math:`\partial_\mu\epsilon^*=-\sigma_t\alpha_t/\tau_t^2`, independent of the state, so the adjoint
solvers can be run with *exact* VJPs and compared with the exact gradients
:math:`a_x(T)=a_0\tau_0/\tau_T`, :math:`a_\mu(T)=a_0(\alpha_0-\tau_0\alpha_T/\tau_T)` (ODE) and the
path-independent SDE Jacobians.  The only error left is the solver's truncation error.

With M steps uniform in λ the error of AdjointDEIS-1 falls like :math:`M^{-1}` and that of
AdjointDEIS-2M like :math:`M^{-2}`: the global orders are k, as the local expansions in
derivations/solver_coefficients.py predict — not the :math:`O(h_{max}^2)` for both k printed in
Theorem 2.1.  The SDE versions (doubled VJP terms, Prop. 3.1) converge to the SDE Jacobians with
the same orders.  For comparison the exact gradient of the *discrete* DDIM sampler also converges
to the continuous one at first order — with an error constant about 15 times smaller here.

Note how large the AdjointDEIS-1 error constant is on this problem (about 19 % relative error for
:math:`a_x` at M = 128 steps over :math:`t\in[0.02,0.9]`): in
:math:`b=\alpha a_x`, :math:`db/d\lambda=(\sigma^2/\tau^2)\,b`, a rate close to 1 that the
exponential integrator (which only absorbs :math:`e^{-\lambda}`) leaves to the Taylor freeze.
The asymptotic regime only starts at a few hundred steps, so the slopes are fitted on
M = 256…2048.

The steps use only the numpy coefficient functions of solver_coefficients.py, so this module
also tests those end to end.
"""
import numpy as np

from derivations.discrete_vs_continuous import ddim_discrete_adjoint_coefficients
from derivations.gaussian_toy import ode_gradients, sde_jacobians
from derivations.lambda_change import alpha_sigma_of_lam
from derivations.solver_coefficients import adjointdeis1_coefficients, adjointdeis2m_coefficients
from derivations.vp_sde import linear_vp

SCH = linear_vp()
T_START, T_END, S = 0.9, 0.02, 0.6


def _toy_vjp(a, alpha, sigma):
    tau2 = alpha**2 * S**2 + sigma**2
    return a * sigma / tau2, -a * sigma * alpha / tau2  # a J_x, a J_mu


def run_adjoint(M, order, sde=False, a0=1.0):
    """AdjointDEIS-order on M steps uniform in lambda from t_end to t_start; returns (a_x, a_mu)."""
    lams = np.linspace(SCH.lam(T_END), SCH.lam(T_START), M + 1)  # adjoint runs t -> s, lambda decreasing
    alphas, sigmas = alpha_sigma_of_lam(lams)
    a_x, a_mu, prev = a0, 0.0, None
    for i in range(M):
        at, st, as_, ss = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        vx, vmu = _toy_vjp(a_x, at, st)
        if order == 1 or prev is None:
            c_a, c_x, c_z = adjointdeis1_coefficients(at, st, as_, ss, sde=sde)
            new_x, inc = c_a * a_x + c_x * vx, c_z * vmu
        else:
            ar, sr, vx_r, vmu_r = prev
            c_a, cx_t, cx_r, cz_t, cz_r = adjointdeis2m_coefficients(ar, sr, at, st, as_, ss, sde=sde)
            new_x, inc = c_a * a_x + cx_t * vx + cx_r * vx_r, cz_t * vmu + cz_r * vmu_r
        prev = (at, st, vx, vmu)
        a_x, a_mu = new_x, a_mu + inc
    return a_x, a_mu


def run_discrete_ddim(M, a0=1.0):
    """Exact gradient of the discrete DDIM sampler (same grid) w.r.t. x_T and mu."""
    lams = np.linspace(SCH.lam(T_END), SCH.lam(T_START), M + 1)
    alphas, sigmas = alpha_sigma_of_lam(lams)
    a_x, a_mu = a0, 0.0
    for i in range(M):  # backprop through the step s = i+1 -> t = i; Jacobian at s
        at, st, as_, ss = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        c_a, c_x, c_z = ddim_discrete_adjoint_coefficients(as_, ss, at, st)
        vx, vmu = _toy_vjp(a_x, as_, ss)
        a_x, a_mu = c_a * a_x + c_x * vx, a_mu + c_z * vmu
    return a_x, a_mu


def exact(sde=False):
    aT, sT, a0, s0 = SCH.alpha(T_START), SCH.sigma(T_START), SCH.alpha(T_END), SCH.sigma(T_END)
    if sde:
        return sde_jacobians(aT, sT, a0, s0, S)
    _, dx, dmu, _ = ode_gradients(0.0, 0.0, aT, sT, a0, s0, S)
    return float(dx), float(dmu)


def slopes(run, ref, Ms=(256, 512, 1024, 2048)):
    """Least-squares slope of log(error) vs log(1/M), for a_x and a_mu."""
    errs = np.array([[abs(v - r) for v, r in zip(run(M), ref)] for M in Ms])
    x = np.log(1.0 / np.array(Ms))
    return [np.polyfit(x, np.log(errs[:, j]), 1)[0] for j in range(2)], errs


# ---------------------------------------------------------------- checks
def test_adjointdeis_1_is_first_order():
    (sx, sz), errs = slopes(lambda M: run_adjoint(M, 1), exact())
    assert 0.9 < sx < 1.1 and 0.9 < sz < 1.1
    assert errs[-1][0] < 0.02 * abs(exact()[0])


def test_adjointdeis_2m_is_second_order():
    (sx, sz), errs = slopes(lambda M: run_adjoint(M, 2), exact())
    assert 1.9 < sx < 2.1 and 1.9 < sz < 2.1
    assert errs[-1][0] < 1e-4 * abs(exact()[0])


def test_sde_versions_converge_to_the_sde_jacobians_with_the_same_orders():
    (s1x, s1z), _ = slopes(lambda M: run_adjoint(M, 1, sde=True), exact(sde=True))
    (s2x, s2z), e2 = slopes(lambda M: run_adjoint(M, 2, sde=True), exact(sde=True))
    assert 0.9 < s1x < 1.1 and 0.9 < s1z < 1.1
    assert 1.9 < s2x < 2.1 and 1.9 < s2z < 2.1
    # and they do NOT converge to the ODE gradients
    assert abs(run_adjoint(128, 2, sde=True)[0] - exact()[0]) > 0.1 * abs(exact()[0])


def test_discrete_ddim_gradient_is_a_different_first_order_approximation():
    (sx, sz), errs = slopes(run_discrete_ddim, exact())
    assert 0.9 < sx < 1.1 and 0.9 < sz < 1.1
    # on this problem its error constant is ~15x smaller than AdjointDEIS-1's
    (_, _), errs1 = slopes(lambda M: run_adjoint(M, 1), exact())
    assert errs[-1][0] < errs1[-1][0] / 10
    # at fixed M, AdjointDEIS-1 and the exact discrete gradient differ (discrete_vs_continuous.py, ERRATA #21)
    assert abs(run_discrete_ddim(16)[0] - run_adjoint(16, 1)[0]) > 1e-4

"""adjointlib against the SymPy derivations (derivations/*.py), float64, random points, fixed seeds.

Each derivation module exposes its results as plain numpy functions (lambdified or written from
the proven formula); here the library's schedules, Gaussian oracle, solver and adjoint steps,
Cycle-SDE encoder, Brownian bridge and the full AdjointDEIS loop are compared with them.
"""
import math
import pathlib
import sys

import numpy as np
import pytest
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the derivations package

import adjointlib as al  # noqa: E402
from adjointlib import steps as st  # noqa: E402
from adjointlib import toy  # noqa: E402
from adjointlib.adjoint import adjoint_deis, state_on_recorded_trajectory  # noqa: E402
from adjointlib.solvers import Trajectory  # noqa: E402
from derivations import discrete_vs_continuous as dvc  # noqa: E402
from derivations import gaussian_paths  # noqa: E402
from derivations import gaussian_toy as gt  # noqa: E402
from derivations import pf_ode, sde_adjoint, solver_coefficients as sc, vp_sde  # noqa: E402

F64 = torch.float64
RTOL = 1e-12

SCHEDULES = {
    "linear": (al.LinearVP(), vp_sde.linear_vp()),
    "linear_0.05_12": (al.LinearVP(beta_min=0.05, beta_max=12.0), vp_sde.linear_vp(0.05, 12.0)),
    "cosine": (al.CosineVP(), vp_sde.cosine_vp()),
}


def _rng(k=0):
    return np.random.default_rng(1234 + k)


def _times(lib, n, k=0):
    return _rng(k).uniform(lib.t_min, lib.t_max, n)


def _close(a, b, rtol=RTOL, atol=1e-14):
    a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a, dtype=np.float64)
    np.testing.assert_allclose(a, np.asarray(b, dtype=np.float64), rtol=rtol, atol=atol)


def _ab(ref, t):
    return float(ref.alpha(t)), float(ref.sigma(t))


# ---------------------------------------------------------------- schedules (vp_sde.py)
@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_methods_match_closed_forms(name):
    lib, ref = SCHEDULES[name]
    tt = _times(lib, 64, 1)
    T = torch.tensor(tt, dtype=F64)
    for meth in ("log_alpha", "alpha", "sigma", "lam", "f", "g2"):
        out = getattr(lib, meth)(T)
        assert torch.is_tensor(out) and out.shape == T.shape and out.dtype == F64
        _close(out, getattr(ref, meth)(tt), rtol=1e-12, atol=1e-13)
    # tensors of other shapes go through unchanged
    assert lib.alpha(T.reshape(8, 8)).shape == (8, 8)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_inverse_t_of_lambda_matches(name):
    lib, ref = SCHEDULES[name]
    lo, hi = float(lib.lam(torch.tensor(lib.t_max, dtype=F64))), float(lib.lam(torch.tensor(lib.t_min, dtype=F64)))
    lam = _rng(2).uniform(lo, hi, 64)
    _close(lib.t_of_lam(torch.tensor(lam, dtype=F64)), ref.t_of_lam(lam), rtol=1e-11, atol=1e-13)


def test_linear_vp_g2_is_beta_and_dsigma2_uses_the_corrected_I3_exponent():
    lib, ref = SCHEDULES["linear"]
    tt = _times(lib, 32, 3)
    T = torch.tensor(tt, dtype=F64)
    _close(lib.g2(T), 0.1 + 19.9 * tt)
    # d sigma^2/dt by autograd equals beta(t) exp(-(b1-b0) t^2/2 - b0 t)  (erratum of I.3)
    T.requires_grad_(True)
    (dsig2,) = torch.autograd.grad((lib.sigma(T) ** 2).sum(), T)
    _close(dsig2, ref.dsigma2_dt(tt), rtol=1e-10)


# ---------------------------------------------------------------- toy oracle (gaussian_toy.py)
@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_toy_oracle_matches_derivation(name):
    lib, ref = SCHEDULES[name]
    r = _rng(4)
    for _ in range(5):
        t_end, t_start = np.sort(r.uniform(lib.t_min, lib.t_max, 2))
        s = r.uniform(0.2, 2.0)
        x_T, mu, cot = (r.standard_normal((2, 3)) for _ in range(3))
        aT, sT = _ab(ref, t_start)
        a0, s0 = _ab(ref, t_end)
        _close(toy.tau(lib, t_start, s), gt.tau(aT, sT, s))
        X, MU, COT = (torch.tensor(v, dtype=F64) for v in (x_T, mu, cot))
        _close(toy.eps_star(lib, X, t_start, MU, s), gt.eps_star(x_T, aT, sT, mu, s))
        _close(toy.flow(lib, X, t_start, t_end, MU, s), gt.flow(x_T, aT, sT, a0, s0, mu, s))
        x0, dx, dmu, ds = gt.ode_gradients(x_T, mu, aT, sT, a0, s0, s)
        g_x, g_mu, g_s = toy.ode_gradients(lib, X, MU, s, COT, t_start, t_end)
        _close(g_x, dx * cot)
        _close(g_mu, dmu * cot)
        _close(g_s, (ds * cot).sum(), rtol=1e-11)
        jx, jmu = toy.sde_jacobians(lib, t_start, t_end, s)
        rx, rmu = gt.sde_jacobians(aT, sT, a0, s0, s)
        _close(jx, rx)
        _close(jmu, rmu)
        model = toy.GaussianEpsModel(lib, data_std=s)
        tb = torch.full((2,), t_start, dtype=F64)
        _close(model(X, tb, MU), gt.eps_star(x_T, aT, sT, mu, s))


# ---------------------------------------------------------------- forward steps (pf_ode.py, sde_adjoint.py)
def _step_times(lib, k, n=6):
    """Triples r > s > t (forward: r the previous, noisier point), including a tiny step."""
    r = _rng(k)
    out = [np.sort(r.uniform(lib.t_min, lib.t_max, 3))[::-1] for _ in range(n)]
    mid = 0.5 * (lib.t_min + lib.t_max)
    out.append(np.array([mid + 0.05, mid + 1e-6, mid]))
    return out


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_forward_step_coefficients(name):
    lib, ref = SCHEDULES[name]
    g = torch.Generator().manual_seed(5)
    x_s, e_s, e_r, xi = (torch.randn(4, 3, generator=g, dtype=F64) for _ in range(4))
    for tr, ts, tt in _step_times(lib, 6):
        (ar, sr), (as_, ss), (at, stt) = _ab(ref, tr), _ab(ref, ts), _ab(ref, tt)
        cx, ce = pf_ode.ddim_coefficients(as_, ss, at, stt)
        _close(st.ddim_step(lib, x_s, ts, tt, e_s), cx * x_s.numpy() + ce * e_s.numpy(), rtol=1e-11)
        c2 = pf_ode.dpm_solver_2m_coefficients(ar, sr, as_, ss, at, stt)
        out = st.dpm_solver_2m_step(lib, x_s, ts, tt, e_s, prev=(tr, e_r))
        _close(out, c2[0] * x_s.numpy() + c2[1] * e_s.numpy() + c2[2] * e_r.numpy(), rtol=1e-10)
        cs = sde_adjoint.sde_dpm_solver1_coefficients(as_, ss, at, stt)
        out = st.sde_dpm_solver_1_step(lib, x_s, ts, tt, e_s, noise=xi)
        _close(out, cs[0] * x_s.numpy() + cs[1] * e_s.numpy() + cs[2] * xi.numpy(), rtol=1e-11)
        # Cycle-SDE (3.7) recovers the noise of this step
        rec = sde_adjoint.cycle_sde_noise(out.numpy(), x_s.numpy(), e_s.numpy(), as_, ss, at, stt)
        _close(rec, xi.numpy(), rtol=1e-7, atol=1e-7 if ts - tt < 1e-5 else 1e-11)


# ---------------------------------------------------------------- adjoint steps (solver_coefficients.py)
@pytest.mark.parametrize("name", list(SCHEDULES))
@pytest.mark.parametrize("sde", [False, True])
def test_adjoint_step_coefficients(name, sde):
    lib, ref = SCHEDULES[name]
    g = torch.Generator().manual_seed(7)
    a_x, v_x, v_z, v_th, vr_x, vr_z, vr_th = (torch.randn(2, 3, generator=g, dtype=F64) for _ in range(7))
    for ts, tt, tr in _step_times(lib, 8):  # adjoint: r < t < s
        (ar, sr), (as_, ss), (at, stt) = _ab(ref, tr), _ab(ref, ts), _ab(ref, tt)
        c1 = sc.adjointdeis1_coefficients(at, stt, as_, ss, sde=sde)
        new_a, (inc_z, inc_th) = st.adjoint_deis_1_step(lib, a_x, tt, ts, (v_x, v_z, v_th), sde=sde)
        _close(new_a, c1[0] * a_x.numpy() + c1[1] * v_x.numpy(), rtol=1e-11)
        _close(inc_z, c1[2] * v_z.numpy(), rtol=1e-11)
        _close(inc_th, c1[2] * v_th.numpy(), rtol=1e-11)
        if tt - tr < 1e-5:  # the 2M coefficients of the printed formula cancel badly for tiny rho h
            continue
        c2 = sc.adjointdeis2m_coefficients(ar, sr, at, stt, as_, ss, sde=sde)
        new_a, (inc_z, inc_th) = st.adjoint_deis_2m_step(
            lib, a_x, tt, ts, (v_x, v_z, v_th), prev=(tr, (vr_x, vr_z, vr_th)), sde=sde)
        _close(new_a, c2[0] * a_x.numpy() + c2[1] * v_x.numpy() + c2[2] * vr_x.numpy(), rtol=1e-10)
        _close(inc_z, c2[3] * v_z.numpy() + c2[4] * vr_z.numpy(), rtol=1e-10)
        _close(inc_th, c2[3] * v_th.numpy() + c2[4] * vr_th.numpy(), rtol=1e-10)


def test_autograd_through_ddim_step_is_the_discrete_adjoint_not_adjointdeis():
    """discrete_vs_continuous.py: autograd through ddim_step gives alpha_t/alpha_s a + c a^T J(x_s) with the
    x-VJP coefficient alpha_s/alpha_t times AdjointDEIS-1's."""
    lib, ref = SCHEDULES["linear"]
    s_, t_, data_std = 0.6, 0.45, 0.7
    (as_, ss), (at, stt) = _ab(ref, s_), _ab(ref, t_)
    g = torch.Generator().manual_seed(9)
    x_s = torch.randn(2, 3, generator=g, dtype=F64).requires_grad_(True)
    mu = torch.randn(2, 3, generator=g, dtype=F64).requires_grad_(True)
    a = torch.randn(2, 3, generator=g, dtype=F64)
    model = toy.GaussianEpsModel(lib, data_std=data_std)
    out = st.ddim_step(lib, x_s, s_, t_, model(x_s, torch.full((2,), s_, dtype=F64), mu))
    gx, gmu = torch.autograd.grad(out, [x_s, mu], grad_outputs=a)
    c_a, c_x, c_z = dvc.ddim_discrete_adjoint_coefficients(as_, ss, at, stt)
    J, Jmu = (x / gt.tau(as_, ss, data_std) ** 2 for x in (ss, -ss * as_))
    _close(gx, c_a * a.numpy() + c_x * J * a.numpy(), rtol=1e-12)
    _close(gmu, c_z * Jmu * a.numpy(), rtol=1e-12)
    ad = sc.adjointdeis1_coefficients(at, stt, as_, ss)
    assert math.isclose(c_x / ad[1], as_ / at, rel_tol=1e-12) and math.isclose(c_z, ad[2], rel_tol=1e-12)


# ---------------------------------------------------------------- encoders and Brownian noise (sde_adjoint.py)
def test_cycle_sde_encode_noises_solve_3_6():
    lib, ref = SCHEDULES["linear"]
    data_std = 0.8
    model = toy.GaussianEpsModel(lib, data_std=data_std)
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(3, 2, generator=g, dtype=F64)
    mu = torch.randn(3, 2, generator=g, dtype=F64)
    n = 6
    x_T, noises = al.cycle_sde_encode(model, lib, x0, mu, steps=n, t_start=0.9, t_end=0.05,
                                      generator=torch.Generator().manual_seed(3))
    times = al.time_grid(lib, n, 0.9, 0.05).numpy()
    draws = torch.randn((n, *x0.shape), generator=torch.Generator().manual_seed(3), dtype=F64).numpy()
    states = [ref.alpha(times[i]) * x0.numpy() + ref.sigma(times[i]) * draws[i] for i in range(n)] + [x0.numpy()]
    _close(x_T, states[0])
    for i in range(n):
        (as_, ss), (at, stt) = _ab(ref, times[i]), _ab(ref, times[i + 1])
        eps = gt.eps_star(states[i], as_, ss, mu.numpy(), data_std)
        _close(noises[i], sde_adjoint.cycle_sde_noise(states[i + 1], states[i], eps, as_, ss, at, stt), rtol=1e-10)


def test_interior_sde_state_uses_the_brownian_bridge_mean():
    lib, ref = SCHEDULES["linear"]
    g = torch.Generator().manual_seed(13)
    x_s, e_s, xi = (torch.randn(2, 3, generator=g, dtype=F64) for _ in range(3))
    s_, tau_, t_ = 0.7, 0.62, 0.5
    plan = al.plan_sampling(lib, x_s, None, steps=torch.tensor([s_, t_], dtype=F64), sampler="sde-dpm-solver-1",
                            noises=xi[None])
    traj = Trajectory(x0=x_s, record="states+eps", states=(x_s, x_s), eps=(e_s,))
    out = state_on_recorded_trajectory(plan, traj, tau_)
    (as_, ss), (aq, sq) = _ab(ref, s_), _ab(ref, tau_)
    cx, ce, cn = sde_adjoint.sde_dpm_solver1_coefficients(as_, ss, aq, sq)
    frac = sde_adjoint.bridge_noise_fraction(*(float(ref.lam(v)) for v in (s_, tau_, t_)))
    _close(out, cx * x_s.numpy() + ce * e_s.numpy() + cn * frac * xi.numpy(), rtol=1e-11)


def test_brownian_path_noise_increments_add_up_in_rho():
    lib, ref = SCHEDULES["linear"]
    fine = al.time_grid(lib, 8, 0.9, 0.1)
    path = al.BrownianPath(lib, fine, (5,), generator=torch.Generator().manual_seed(17))
    f_noise, c_noise = path.noises(fine).numpy(), path.noises(fine[::2]).numpy()
    rho = np.exp(-2 * ref.lam(fine.numpy()))
    for k in range(4):  # sqrt(rho_s - rho_t) xi_coarse = sum of the two fine increments
        lhs = math.sqrt(rho[2 * k] - rho[2 * k + 2]) * c_noise[k]
        rhs = sum(math.sqrt(rho[j] - rho[j + 1]) * f_noise[j] for j in (2 * k, 2 * k + 1))
        _close(lhs, rhs, rtol=1e-12)


# ---------------------------------------------------------------- the whole adjoint loop on the toy
def _numpy_adjoint(ref, times, a0, states, mu, data_std, order, sde):
    """AdjointDEIS with the derivations' coefficients and the toy's exact VJPs (x, mu, s)."""
    alphas = np.array([ref.alpha(t) for t in times])
    sigmas = np.array([ref.sigma(t) for t in times])

    def vjps(a, i):
        al_, sg = alphas[i], sigmas[i]
        tau2 = al_**2 * data_std**2 + sg**2
        d_s = -sg * (states[i] - al_ * mu) * 2 * al_**2 * data_std / tau2**2
        return a * sg / tau2, -a * sg * al_ / tau2, float((a * d_s).sum())

    a_x, a_mu, a_s, prev = a0, 0.0, 0.0, None
    for j in reversed(range(len(times) - 1)):  # t = times[j+1] -> s = times[j]
        i_t, i_s = j + 1, j
        v = vjps(a_x, i_t)
        if order == 1 or prev is None:
            c = sc.adjointdeis1_coefficients(alphas[i_t], sigmas[i_t], alphas[i_s], sigmas[i_s], sde=sde)
            a_new, d_mu, d_s = c[0] * a_x + c[1] * v[0], c[2] * v[1], c[2] * v[2]
        else:
            i_r, vr = prev
            c = sc.adjointdeis2m_coefficients(alphas[i_r], sigmas[i_r], alphas[i_t], sigmas[i_t],
                                              alphas[i_s], sigmas[i_s], sde=sde)
            a_new = c[0] * a_x + c[1] * v[0] + c[2] * vr[0]
            d_mu, d_s = c[3] * v[1] + c[4] * vr[1], c[3] * v[2] + c[4] * vr[2]
        prev = (i_t, v)
        a_x, a_mu, a_s = a_new, a_mu + d_mu, a_s + d_s
    return a_x, a_mu, a_s


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("sde", [False, True])
def test_adjoint_deis_loop_equals_derivation_coefficients_on_the_toy(order, sde):
    lib, ref = SCHEDULES["linear"]
    data_std, n = 0.6, 12
    g = torch.Generator().manual_seed(19)
    x_T, mu, cot = (torch.randn(2, 3, generator=g, dtype=F64) for _ in range(3))
    model = toy.GaussianEpsModel(lib, data_std=data_std)
    times = al.time_grid(lib, n, 0.9, 0.02)
    noises = torch.randn(n, 2, 3, generator=g, dtype=F64) if sde else None
    sampler = "sde-dpm-solver-1" if sde else {1: "ddim", 2: "dpm-solver-2m"}[order]
    plan = al.plan_sampling(lib, x_T, mu, steps=times, sampler=sampler, noises=noises,
                            gradient=al.Adjoint(order=order))
    with torch.no_grad():
        _, traj = al.integrate(model, plan, x_T, record=plan.gradient.record)
    a_x, grads_z, (a_s,) = adjoint_deis(model, plan, traj, cot, [model.data_std])
    assert len(grads_z) == 1  # one constant z: one gradient
    a_mu = grads_z[0]
    states = [x.numpy() for x in traj.states]
    r_x, r_mu, r_s = _numpy_adjoint(ref, times.numpy(), cot.numpy(), states, mu.numpy(), data_std, order, sde)
    _close(a_x, r_x, rtol=1e-10)
    _close(a_mu, r_mu, rtol=1e-10)
    _close(a_s, r_s, rtol=1e-9)


def test_g2_from_eq_1_5_by_autograd_equals_library_g2_for_every_schedule():
    """vp_sde.py: g^2 = d sigma^2/dt - 2 f sigma^2 (1.5) = -2 f when alpha^2 + sigma^2 = 1; also DiscreteVP
    (piecewise-linear log alpha, evaluated inside the segments) and its inverse t(lambda)."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    discrete = al.DiscreteVP(torch.cumprod(1 - betas, 0))
    for lib, tt in ((SCHEDULES["linear"][0], _times(SCHEDULES["linear"][0], 16, 20)),
                    (SCHEDULES["cosine"][0], _times(SCHEDULES["cosine"][0], 16, 21)),
                    (discrete, np.floor(_rng(22).uniform(0, 998, 16)) + 0.37)):
        T = torch.tensor(tt, dtype=F64, requires_grad=True)
        (ds2,) = torch.autograd.grad((lib.sigma(T) ** 2).sum(), T)
        g2_15 = ds2 - 2 * lib.f(T) * lib.sigma(T) ** 2
        _close(g2_15, lib.g2(T).detach().numpy(), rtol=1e-9, atol=1e-12)
        _close(lib.t_of_lam(lib.lam(T)), tt, rtol=1e-11, atol=1e-12)


def test_rectified_flow_schedule_and_velocity_adapter_match_gaussian_paths():
    """adjointlib.RectifiedFlow and EpsilonFromVelocity against derivations/gaussian_paths.py's lambdified SymPy
    (α, σ, λ, f, g² of eq. 1.5, t(λ), ε = x + (1 − t) v), and the toy's velocity oracle against its u*."""
    ref = gaussian_paths.rectified_flow()
    schedule = al.RectifiedFlow()
    t = np.linspace(0.01, 0.99, 11)
    tt = torch.tensor(t, dtype=torch.float64)
    for name in ("alpha", "sigma", "lam", "f", "g2"):
        assert np.allclose(getattr(schedule, name)(tt).numpy(), getattr(ref, name)(t), rtol=1e-12, atol=1e-14), name
    lam = np.linspace(-5, 5, 11)
    assert np.allclose(schedule.t_of_lam(torch.tensor(lam)).numpy(), ref.t_of_lam(lam), rtol=1e-12)
    rng = np.random.default_rng(0)
    x, v, mu = (rng.standard_normal((11, 3)) for _ in range(3))

    class Velocity(torch.nn.Module):
        def forward(self, x_, t_, z=None):
            return torch.tensor(v)

    eps = al.EpsilonFromVelocity(Velocity(), schedule)(torch.tensor(x), tt, None).numpy()
    assert np.allclose(eps, gaussian_paths.eps_from_velocity(x, v, t[:, None]), rtol=1e-12)
    u = toy.velocity_star(schedule, torch.tensor(x), tt, torch.tensor(mu), 0.5).numpy()
    assert np.allclose(u, gaussian_paths.velocity_star(x, t[:, None], mu, 0.5), rtol=1e-10, atol=1e-12)

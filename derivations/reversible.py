r"""Frames without a linear term, the base steps of the reversible sampler, and the McCallum–Foster coupling
(adjointlib/gradients/reversible.py, chapter 07).

**Frames.**  With :math:`f=\dot{\log\alpha}`, :math:`g^2=-2\sigma^2\dot\lambda` (B.6) and the data
prediction :math:`x_\theta=(x-\sigma\epsilon)/\alpha`, the PF-ODE :math:`\dot x=fx+\frac{g^2}{2\sigma}\epsilon`
and the reverse SDE :math:`dx=[fx+\frac{g^2}{\sigma}\epsilon]dt+g\,d\bar w` lose their linear term in

* data/ODE:  :math:`v=x/\sigma`, :math:`\dot v=\dot\mu\,x_\theta`, :math:`\mu=\alpha/\sigma=e^{\lambda}`;
* data/SDE:  :math:`v=\alpha x/\sigma^2`, drift :math:`\frac{d(\mu^2)}{dt}x_\theta`, diffusion
  :math:`(\alpha/\sigma^2)^2g^2=-\frac{d(\mu^2)}{dt}`, i.e. :math:`dv=x_\theta\,d(\mu^2)+dW(\mu^2)`
  run with decreasing t;
* noise/ODE: :math:`v=x/\alpha`, :math:`\dot v=\dot\nu\,\epsilon`, :math:`\nu=\sigma/\alpha=e^{-\lambda}`;
* noise/SDE: :math:`v=x/\alpha`, drift :math:`2\dot\nu\epsilon`, diffusion :math:`g^2/\alpha^2=\frac{d(\nu^2)}{dt}`.

**Base steps.**  One explicit Euler(–Maruyama) step of these, mapped back to x, is DDIM (both ODE
frames), SDE-DPM-Solver++1 :math:`x_t=\frac{\sigma_t}{\sigma_s}e^{-h}x_s+\alpha_t(1-e^{-2h})x_\theta+
\sigma_t\sqrt{1-e^{-2h}}\,\xi` (data/SDE) and SDE-DPM-Solver-1 (3.6) (noise/SDE), h = λ_t − λ_s; the
exponential midpoint rule with :math:`\lambda_r=\lambda_s+h/2` is DPM-Solver++(2S)
:math:`x_t=\frac{\sigma_t}{\sigma_s}x_s-\alpha_t(e^{-h}-1)x_\theta(u_r,r)` (data) and DPM-Solver-2 (noise).

**Coupling.**  For any increments Ψ (symbols here), McCallum & Foster's step
:math:`u'=\zeta u+(1-\zeta)\hat u+\Psi_f(\hat u)`, :math:`\hat u'=\hat u-\Psi_b(u')` is inverted by
:math:`\hat u=\hat u'+\Psi_b(u')`, :math:`u=(u'-(1-\zeta)\hat u-\Psi_f(\hat u))/\zeta`.  On the linear
test flow with factor J per step (:math:`\Psi_f(u)=(J-1)u`, :math:`\Psi_b(u)=(1/J-1)u`) the step
matrix has determinant ζ and eigenvalues J and ζ/J: a parasitic mode that grows forwards by
:math:`\prod\zeta/J_n` and backwards by :math:`\prod J_n/\zeta` — the reason the frame of the
coupling matters (the data frames: J ⪰ I step by step for a denoiser, so the parasitic mode is damped forwards).
"""
import sympy as sm

from derivations._checks import is_zero
from derivations.vp_sde import alpha_g, diffusion_g2, drift_f, half_log_snr, sigma_g, t

eps = sm.Function("epsilon")(t)
x = sm.Function("x")(t)
x_theta = (x - sigma_g * eps) / alpha_g
lam_g = half_log_snr(alpha_g, sigma_g)
f, g2 = drift_f(alpha_g), diffusion_g2(alpha_g, sigma_g)
ode_drift = f * x + g2 / (2 * sigma_g) * eps
sde_drift = f * x + g2 / sigma_g * eps


def _d_frame(kappa, drift):
    """d(x/κ)/dt with dx/dt = drift."""
    return sm.diff(x / kappa, t).subs(sm.Derivative(x, t), drift)


def test_frames_remove_the_linear_term():
    mu, nu = sm.exp(lam_g), sm.exp(-lam_g)
    assert is_zero(_d_frame(sigma_g, ode_drift) - sm.diff(mu, t) * x_theta)
    assert is_zero(_d_frame(alpha_g, ode_drift) - sm.diff(nu, t) * eps)
    assert is_zero(_d_frame(sigma_g**2 / alpha_g, sde_drift) - sm.diff(mu**2, t) * x_theta)
    assert is_zero(_d_frame(alpha_g, sde_drift) - 2 * sm.diff(nu, t) * eps)
    # diffusion coefficients: the noise clocks μ² (decreasing towards noise) and ν²
    assert is_zero((alpha_g / sigma_g**2) ** 2 * g2 + sm.diff(mu**2, t))
    assert is_zero(g2 / alpha_g**2 - sm.diff(nu**2, t))


a_s, s_s, a_t, s_t, a_r, s_r = sm.symbols("alpha_s sigma_s alpha_t sigma_t alpha_r sigma_r", positive=True)
xs, xt_s, xt_r, xi = sm.symbols("x_s x_theta_s x_theta_r xi", real=True)
h = sm.log(a_t / s_t) - sm.log(a_s / s_s)


def test_euler_in_the_frames_is_ddim_and_the_sde_solvers():
    e_s = (xs - a_s * xt_s) / s_s  # ε from the data prediction at (x_s, s)
    ddim = a_t / a_s * xs - s_t * (sm.exp(h) - 1) * e_s
    data_ode = s_t * (xs / s_s + (a_t / s_t - a_s / s_s) * xt_s)
    noise_ode = a_t * (xs / a_s + (s_t / a_t - s_s / a_s) * e_s)
    assert is_zero(data_ode - ddim) and is_zero(noise_ode - ddim)
    sde_pp = s_t / s_s * sm.exp(-h) * xs + a_t * (1 - sm.exp(-2 * h)) * xt_s + s_t * sm.sqrt(1 - sm.exp(-2 * h)) * xi
    mu2_s, mu2_t = (a_s / s_s) ** 2, (a_t / s_t) ** 2
    data_sde = s_t**2 / a_t * (a_s * xs / s_s**2 + (mu2_t - mu2_s) * xt_s + sm.sqrt(mu2_t - mu2_s) * xi)
    assert _same_gaussian_step(data_sde, sde_pp)
    sde_dpm = a_t / a_s * xs - 2 * s_t * (sm.exp(h) - 1) * e_s + s_t * sm.sqrt(sm.exp(2 * h) - 1) * xi
    nu2_s, nu2_t = (s_s / a_s) ** 2, (s_t / a_t) ** 2
    noise_sde = a_t * (xs / a_s + 2 * (s_t / a_t - s_s / a_s) * e_s + sm.sqrt(nu2_s - nu2_t) * xi)
    assert _same_gaussian_step(noise_sde, sde_dpm)
    # the noise scales are compared, not assumed equal: the check fails for a solver with the variance
    # 1 - e^{-h} (data) or e^h - 1 (noise) in place of 1 - e^{-2h}, e^{2h} - 1
    assert not _same_gaussian_step(data_sde, sde_pp.subs(sm.sqrt(1 - sm.exp(-2 * h)), sm.sqrt(1 - sm.exp(-h))))
    assert not _same_gaussian_step(noise_sde, sde_dpm.subs(sm.sqrt(sm.exp(2 * h) - 1), sm.sqrt(sm.exp(h) - 1)))


def _same_gaussian_step(one, other):
    """Two steps x_s -> x_t driven by xi ~ N(0, 1): the same mean map (xi = 0) and the same noise variance."""
    mean = sm.expand_log((one - other).subs(xi, 0), force=True)
    var = sm.expand_log(sm.expand(sm.diff(one, xi) ** 2 - sm.diff(other, xi) ** 2), force=True)
    return is_zero(mean) and is_zero(var)


def test_midpoint_in_the_data_frame_is_dpm_solver_pp_2s():
    u_r = s_r * (xs / s_s + (a_r / s_r - a_s / s_s) * xt_s)  # DDIM to the midpoint r
    assert is_zero(u_r - (s_r / s_s * xs - a_r * (sm.exp(-(sm.log(a_r / s_r) - sm.log(a_s / s_s))) - 1) * xt_s))
    frame = s_t * (xs / s_s + (a_t / s_t - a_s / s_s) * xt_r)  # v_t = v_s + (μ_t − μ_s) x_θ(u_r, r)
    assert is_zero(frame - (s_t / s_s * xs - a_t * (sm.exp(-h) - 1) * xt_r))


def test_coupling_inverse_and_parasitic_mode():
    u, uh, zeta, J = sm.symbols("u u_hat zeta J", positive=True)
    psi_f, psi_b = sm.Function("Psi_f"), sm.Function("Psi_b")
    u1 = zeta * u + (1 - zeta) * uh + psi_f(uh)
    uh1 = uh - psi_b(u1)
    uh0 = uh1 + psi_b(u1)
    u0 = (u1 - (1 - zeta) * uh0 - psi_f(uh0)) / zeta
    assert is_zero(uh0 - uh) and is_zero(u0 - u)
    lin = {psi_f(uh): (J - 1) * uh}
    u1_lin = u1.subs(lin)
    uh1_lin = uh - (1 / J - 1) * u1_lin
    m = sm.Matrix([[sm.diff(e, v) for v in (u, uh)] for e in (u1_lin, uh1_lin)])
    assert is_zero(m.det() - zeta)
    assert is_zero(m.trace() - (J + zeta / J))  # eigenvalues J and ζ/J

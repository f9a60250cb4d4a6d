r"""The continuous adjoint equations (2.3 = B.1), their structured form (2.4, B.9, B.10) and
time-scheduled conditional information (Theorem 2.2, Appendix D).

**Why the adjoint equation looks the way it does.**  Let :math:`\dot x=F(x,t)` and let
:math:`\Phi(t)=\partial x_t/\partial x_s` be the sensitivity of the state to an earlier state.
Differentiating the ODE gives the *variational equation* :math:`\dot\Phi=J(t)\Phi`,
:math:`J=\partial F/\partial x`.  If a row vector obeys :math:`\dot a=-a^\top J`, then

.. math:: \frac{d}{dt}\big(a(t)^\top\Phi(t)\big)=-a^\top J\Phi+a^\top J\Phi=0 ,

so :math:`a(t)^\top\partial x_t/\partial x_s` is constant in t.  Choosing
:math:`a(t_{end})=\partial\mathcal L/\partial x_{t_{end}}` makes this constant
:math:`\partial\mathcal L/\partial x_s`, hence :math:`a(t)=\partial\mathcal L/\partial x_t` for all
t — that is (2.3).  The parameter equations follow by treating z, θ as extra states with zero
dynamics (Remark B.2), which is also exactly the proof of Theorem 2.2 when z depends on t.

**Structured form (2.4).**  For the diffusion ODE field (2.2)
:math:`f_\theta=f(t)x+\frac{g^2}{2\sigma}\epsilon_\theta(x,z,t)` the Jacobian is
:math:`f(t)I+\frac{g^2}{2\sigma}\partial_x\epsilon_\theta`, so
:math:`\dot a_x=-f a_x-\frac{g^2}{2\sigma}a_x^\top\partial_x\epsilon_\theta` and
:math:`\dot a_z=-\frac{g^2}{2\sigma}a_x^\top\partial_z\epsilon_\theta
=\sigma\dot\lambda\,a_x^\top\partial_z\epsilon_\theta=\alpha e^{-\lambda}\dot\lambda\,a_x^\top\partial_z\epsilon_\theta`
(B.9, B.10, using B.6).  The equation is semi-linear: a linear part :math:`-f a_x` plus a
vector–Jacobian product (VJP).

**Theorem 2.2 (scheduled z).**  On each cell where z(t) is continuous, append z to the state with
dynamics :math:`\dot z=\overrightarrow{\partial}z(t)` (a function of t only).  The augmented Jacobian
has zero bottom rows (D.3), so the augmented adjoint gives
:math:`\dot a_z=-a_x^\top\partial f_\theta/\partial z\,(x_t,z_t,t)` — the constant-z formula with
:math:`z\to z_t`.  For a piecewise-constant schedule, the gradient of the value :math:`z_i` used on
cell i is the increment of :math:`a_z` over that cell only (checked on a scalar example).

Exposed: :func:`adjoint_rhs` (SymPy), :func:`structured_adjoint_rhs` (numpy).
"""
import sympy as sm

from derivations._checks import is_zero
from derivations.vp_sde import alpha_g, diffusion_g2, drift_f, half_log_snr, sigma_g, t

D = 2  # state dimension of the symbolic checks (generic enough, keeps expressions small)


def adjoint_rhs(F, xs, a):
    """-a^T dF/dx for a vector field F (Matrix) in the state symbols xs (list), row a (Matrix)."""
    return -(a.T * F.jacobian(xs))


def structured_adjoint_rhs(f, g2, sigma, a_x, vjp_x, vjp_z):
    """Right-hand sides of (2.4): (da_x/dt, da_z/dt), with vjp_* = a_x^T d eps/d(x, z)."""
    c = g2 / (2 * sigma)
    return -f * a_x - c * vjp_x, -c * vjp_z


def _funcs(name, n):
    return [sm.Function(f"{name}{i}")(t) for i in range(n)]


# ---------------------------------------------------------------- checks
def test_variational_equation_makes_a_dot_Phi_constant():
    J = sm.Matrix(D, D, lambda i, j: sm.Function(f"J{i}{j}")(t))
    Phi = sm.Matrix(D, D, lambda i, j: sm.Function(f"Phi{i}{j}")(t))
    a = sm.Matrix(_funcs("a", D))
    dPhi = J * Phi  # variational equation
    da = -(a.T * J).T  # adjoint equation (2.3)
    pairing = a.T * Phi
    derivative = pairing.diff(t)
    rules = {Phi[i, j].diff(t): dPhi[i, j] for i in range(D) for j in range(D)}
    rules.update({a[i].diff(t): da[i] for i in range(D)})
    assert is_zero(derivative.subs(rules))


def test_adjoint_of_a_nonlinear_flow_with_closed_form():
    """x' = x^2 has flow x_t = x_s/(1 - x_s (t - s)).  a(s) := a(t) dx_t/dx_s must solve
    da/ds = -a(s) dF/dx(x_s) = -2 x_s a(s), where x_s runs along the same trajectory."""
    s, tt, x0, aT = sm.symbols("s t_end x_0 a_T", real=True)
    # trajectory through x0 at time 0; state at s and at the end time
    x_at = lambda time: x0 / (1 - x0 * time)  # noqa: E731
    xs = sm.Symbol("x_s")
    x_end_from_s = xs / (1 - xs * (tt - s))
    a_s = aT * sm.diff(x_end_from_s, xs).subs(xs, x_at(s))
    assert sm.cancel(sm.diff(a_s, s) - (-2 * x_at(s) * a_s)) == 0  # rational: cancel decides
    assert sm.cancel(a_s.subs(s, tt) - aT) == 0


def test_structured_form_2_4_from_the_vector_field_2_2():
    xs = sm.symbols(f"x0:{D}", real=True)
    zs = sm.symbols("z0:2", real=True)
    eps = sm.Matrix([sm.Function(f"eps{i}")(*xs, *zs, t) for i in range(D)])
    f, g2 = drift_f(alpha_g), diffusion_g2(alpha_g, sigma_g)
    F = f * sm.Matrix(xs) + g2 / (2 * sigma_g) * eps  # (2.2)
    a = sm.Matrix(sm.symbols(f"a0:{D}", real=True))
    vjp_x, vjp_z = a.T * eps.jacobian(xs), a.T * eps.jacobian(zs)
    rx, rz = structured_adjoint_rhs(f, g2, sigma_g, a.T, vjp_x, vjp_z)
    assert is_zero(adjoint_rhs(F, xs, a) - rx)
    assert is_zero(adjoint_rhs(F, zs, a) - rz)
    # (B.9) and (B.10): -g^2/(2 sigma) = sigma lambda' = alpha e^{-lambda} lambda'
    lam = half_log_snr(alpha_g, sigma_g)
    dlam = sm.diff(lam, t)
    assert is_zero(rz - sigma_g * dlam * vjp_z)
    assert is_zero(rz - alpha_g * sm.exp(-lam) * dlam * vjp_z)


_XS, _ZS = sm.symbols(f"x0:{D}", real=True), sm.symbols("z0:2", real=True)


def _augmented_adjoint(zdot):
    """(D.1)-(D.4): z appended to the state with dz/dt = zdot; returns (J_aug, rhs, a_x, F)."""
    F = sm.Matrix([sm.Function(f"F{i}")(*_XS, *_ZS, t) for i in range(D)])
    F_aug = F.col_join(zdot)  # (D.1)
    J_aug = F_aug.jacobian(list(_XS) + list(_ZS))  # (D.3)
    a_aug = sm.Matrix(sm.symbols(f"a0:{D + 2}", real=True))
    return J_aug, -(a_aug.T * J_aug), a_aug[:D, :], F  # (D.4)


def _is_the_constant_z_adjoint(zdot):
    """(D.5): the augmented adjoint's x and z parts are the constant-z formulas with z -> z_t."""
    _, rhs, a_x, F = _augmented_adjoint(zdot)
    return is_zero(rhs[:, :D] - (-(a_x.T * F.jacobian(_XS)))) and is_zero(rhs[:, D:] - (-(a_x.T * F.jacobian(_ZS))))


def test_theorem_2_2_augmented_jacobian_has_zero_bottom_rows():
    zdot = sm.Matrix([sm.Function(f"zdot{i}")(t) for i in range(2)])  # right derivative of z(t): a function of t
    J_aug, _, _, _ = _augmented_adjoint(zdot)
    assert J_aug[D:, :] == sm.zeros(2, D + 2)
    assert _is_the_constant_z_adjoint(zdot)
    # both checks fail when z's dynamics read the state (a z that relaxes towards x_0 is not a schedule z(t))
    relaxing = sm.Matrix([_XS[0] - _ZS[0], sm.Function("zdot1")(t)])
    assert _augmented_adjoint(relaxing)[0][D:, :] != sm.zeros(2, D + 2) and not _is_the_constant_z_adjoint(relaxing)


def test_theorem_2_2_piecewise_constant_schedule_example():
    """x' = -k x + b z(t), z = z1 on [0, t1), z2 on [t1, T], L = x(T) (forward-time convention).
    dL/dz_i = int over cell i of a_x(t) b dt with a_x(t) = exp(-k (T - t)): the increment of a_z
    over cell i, not the accumulated a_z."""
    k, b, t1, T, x0, z1, z2 = sm.symbols("k b t_1 T x_0 z_1 z_2", positive=True)
    x_t1 = x0 * sm.exp(-k * t1) + b * z1 * (1 - sm.exp(-k * t1)) / k
    x_T = x_t1 * sm.exp(-k * (T - t1)) + b * z2 * (1 - sm.exp(-k * (T - t1))) / k
    a_x = sm.exp(-k * (T - t))
    assert is_zero(sm.diff(a_x, t) - k * a_x)  # da/dt = -a dF/dx with dF/dx = -k
    inc1 = sm.integrate(a_x * b, (t, 0, t1))
    inc2 = sm.integrate(a_x * b, (t, t1, T))
    assert is_zero(sm.diff(x_T, z1) - inc1)
    assert is_zero(sm.diff(x_T, z2) - inc2)
    # a constant z (z1 = z2 = z) gets the accumulated a_z, the integral over [0, T] ...
    zc = sm.Symbol("z", positive=True)
    accumulated = sm.integrate(a_x * b, (t, 0, T))
    assert is_zero(sm.diff(x_T.subs({z1: zc, z2: zc}), zc) - accumulated)
    # ... which is not the gradient of z1: the cell check above fails for the accumulated a_z
    assert not is_zero(sm.diff(x_T, z1) - accumulated)

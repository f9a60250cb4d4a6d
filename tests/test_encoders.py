"""Encoders: DDIM inversion and Cycle-SDE noises reproduce the input when the sampler is re-run."""
import math

import pytest
import torch

import adjointlib as al
from conftest import TanhEpsModel

SCH = al.LinearVP()


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_inversion_round_trip(steps):
    model = TanhEpsModel(4, 2)
    g = torch.Generator().manual_seed(0)
    x0, z = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)
    x_T = al.ddim_invert(model, SCH, x0, z, steps=steps)
    with torch.no_grad():
        again, _ = al.solve(model, SCH, x_T, z, al.time_grid(SCH, steps), record="none")
    assert float((again - x0).abs().max()) < 1e-10


def test_ddim_inversion_with_per_step_z_and_explicit_grid():
    model = TanhEpsModel(4, 2)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    grid = torch.linspace(0.9, 0.01, 13, dtype=torch.float64)
    zs = [torch.randn(2, 2, generator=g, dtype=torch.float64) for _ in range(12)]
    x_T = al.ddim_invert(model, SCH, x0, zs, steps=grid)
    with torch.no_grad():
        again, _ = al.solve(model, SCH, x_T, zs, grid, record="none")
    assert float((again - x0).abs().max()) < 1e-10


def test_ddim_inversion_reports_non_convergence():
    class Wild(torch.nn.Module):
        def forward(self, x, t, z=None):
            return 50.0 * torch.sin(40.0 * x)

    with pytest.raises(RuntimeError, match="did not converge"):
        al.ddim_invert(Wild(), SCH, torch.ones(1, 2, dtype=torch.float64), steps=2, max_iters=20)


def test_ddim_inversion_accepts_a_stall_at_the_round_off_floor_but_not_a_wrong_tolerance():
    class Jittery(torch.nn.Module):
        """A smooth ε-model plus a deterministic 1e-5 "round-off" that changes on every call."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x, t, z=None):
            self.calls += 1
            jitter = torch.sin(torch.arange(x.numel(), dtype=x.dtype) * 12.9898 + self.calls).view_as(x)
            return 0.8 * x + 0.2 * torch.tanh(x) + 1e-5 * jitter

    x0 = torch.linspace(-1, 1, 8, dtype=torch.float32).view(2, 4)
    model = Jittery()
    x_T = al.ddim_invert(model, SCH, x0, steps=20)
    with torch.no_grad():
        again, _ = al.solve(model, SCH, x_T, None, al.time_grid(SCH, 20), record="none")
    assert float((again - x0).abs().max()) < 1e-3
    with pytest.raises(RuntimeError, match="did not converge"):  # an explicit tol is never relaxed
        al.ddim_invert(model, SCH, x0, steps=20, tol=1e-9, max_iters=30)


def test_ddim_inversion_of_a_sample_does_not_depend_on_its_batch_mates():
    class Elementwise(torch.nn.Module):
        """ε acts on each entry alone (no batch-size-dependent round-off); larger states converge slower."""

        def forward(self, x, t, z=None):
            return 0.8 * x + 0.3 * torch.tanh(3.0 * x) * (1.0 + t)[:, None]

    model = Elementwise()
    x0 = torch.tensor([[0.1, -0.2, 0.05], [2.5, -3.0, 1.7]], dtype=torch.float64)
    alone = al.ddim_invert(model, SCH, x0[:1], steps=8)
    together = al.ddim_invert(model, SCH, x0, steps=8)
    assert torch.equal(together[:1], alone)  # bitwise: the slower batch-mate does not change its iterations


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_cycle_sde_round_trip(dtype, tol):
    model = TanhEpsModel(4, 2, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    x0, z = torch.randn(3, 4, generator=g, dtype=dtype), torch.randn(3, 2, generator=g, dtype=dtype)
    x_T, noises = al.cycle_sde_encode(model, SCH, x0, z, steps=20, generator=torch.Generator().manual_seed(3))
    assert noises.shape == (20, 3, 4)
    with torch.no_grad():
        again = al.sample(model, SCH, x_T, z, steps=20, sampler="sde-dpm-solver-1", noises=noises)
    assert float((again - x0).abs().max()) < tol * max(1.0, float(x0.abs().max()))


def test_cycle_sde_noises_grow_on_finer_grids():
    """Cycle-SDE noises are not N(0, I) draws: x_{t_i} are drawn independently, so consecutive states
    differ by O(1) while the step's noise scale σ_t sqrt(e^{2h} − 1) shrinks like sqrt(h), and the
    encoded noises' standard deviation grows like h^{−1/2} (measured 0.9, 1.3, 3.5 at N = 10, 20, 100)."""
    model = al.toy.GaussianEpsModel(SCH, 0.5)
    x0 = 0.5 * torch.randn(2000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    stds = []
    for n in (10, 40, 160):
        _, noises = al.cycle_sde_encode(model, SCH, x0, torch.zeros_like(x0), steps=n,
                                        generator=torch.Generator().manual_seed(5))
        stds.append(float(noises.std()))
    assert stds[0] < stds[1] < stds[2] and stds[2] / stds[1] > 1.5, stds


def test_one_pass_inversion_is_the_exact_ones_first_guess_and_converges_at_first_order():
    """One-pass DDIM inversion: exact for a constant ε; for a nonlinear ε the round-trip error
    falls like 1/N (first order), and stays far above the fixed-point inversion's."""
    g = torch.Generator().manual_seed(3)
    x0, z = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)

    class Constant(torch.nn.Module):
        def forward(self, x, t, z=None):
            return torch.full_like(x, 0.3)

    x_T = al.ddim_invert_one_pass(Constant(), SCH, x0, steps=7)
    with torch.no_grad():
        again, _ = al.solve(Constant(), SCH, x_T, None, al.time_grid(SCH, 7), record="none")
    assert float((again - x0).abs().max()) < 1e-12

    model, errors = TanhEpsModel(4, 2), []
    for steps in (20, 40, 80):
        x_T = al.ddim_invert_one_pass(model, SCH, x0, z, steps=steps)
        with torch.no_grad():
            again, _ = al.solve(model, SCH, x_T, z, al.time_grid(SCH, steps), record="none")
        errors.append(float((again - x0).abs().max()))
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(0.8 < p < 1.3 for p in orders), (errors, orders)
    assert errors[0] > 1e-4

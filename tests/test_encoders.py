"""Encoders: DDIM inversion and Cycle-SDE noises reproduce the input when the sampler is re-run."""
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
        again, _ = al.solve(model, SCH, x_T, z, al.time_grid(SCH, steps), record=False)
    assert float((again - x0).abs().max()) < 1e-10


def test_ddim_inversion_with_per_step_z_and_explicit_grid():
    model = TanhEpsModel(4, 2)
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(2, 4, generator=g, dtype=torch.float64)
    grid = torch.linspace(0.9, 0.01, 13, dtype=torch.float64)
    zs = [torch.randn(2, 2, generator=g, dtype=torch.float64) for _ in range(12)]
    x_T = al.ddim_invert(model, SCH, x0, zs, steps=grid)
    with torch.no_grad():
        again, _ = al.solve(model, SCH, x_T, zs, grid, record=False)
    assert float((again - x0).abs().max()) < 1e-10


def test_ddim_inversion_reports_non_convergence():
    class Wild(torch.nn.Module):
        def forward(self, x, t, z=None):
            return 50.0 * torch.sin(40.0 * x)

    with pytest.raises(RuntimeError, match="did not converge"):
        al.ddim_invert(Wild(), SCH, torch.ones(1, 2, dtype=torch.float64), steps=2, max_iters=20)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_cycle_sde_round_trip(dtype, tol):
    model = TanhEpsModel(4, 2, dtype=dtype)
    g = torch.Generator().manual_seed(2)
    x0, z = torch.randn(3, 4, generator=g, dtype=dtype), torch.randn(3, 2, generator=g, dtype=dtype)
    x_T, noises = al.cycle_sde_encode(model, SCH, x0, z, steps=20, generator=torch.Generator().manual_seed(3))
    assert noises.shape == (20, 3, 4)
    with torch.no_grad():
        again = al.sample(model, SCH, x_T, z, steps=20, sde=True, noises=noises)
    assert float((again - x0).abs().max()) < tol * max(1.0, float(x0.abs().max()))


def test_cycle_sde_noises_are_roughly_standard_normal_for_the_exact_model():
    """With the exact ε* of the Gaussian toy and data drawn from it, the encoded noises look N(0, 1)."""
    sch = SCH
    model = al.toy.GaussianEpsModel(sch, 0.5)
    g = torch.Generator().manual_seed(4)
    x0 = 0.5 * torch.randn(4000, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        _, noises = al.cycle_sde_encode(model, sch, x0, torch.zeros_like(x0), steps=10, generator=g)
    assert abs(float(noises.mean())) < 0.05
    assert 0.5 < float(noises.std()) < 1.5

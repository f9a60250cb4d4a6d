"""Bad input gives a clear exception naming the problem."""
import numpy as np
import pytest
import torch

import adjointlib as al
from conftest import TanhEpsModel

SCH = al.LinearVP()
MODEL = TanhEpsModel(4, 2)


def _x(b=2):
    return torch.randn(b, 4, dtype=torch.float64)


def test_wrong_z_batch_shape():
    with pytest.raises(ValueError, match="batch size"):
        al.sample(MODEL, SCH, _x(), torch.randn(3, 2, dtype=torch.float64), steps=3)


def test_dtype_mismatch():
    with pytest.raises(TypeError, match="dtype mismatch"):
        al.sample(MODEL, SCH, _x(), torch.randn(2, 2, dtype=torch.float32), steps=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a device mismatch")
def test_device_mismatch():
    with pytest.raises(ValueError, match="device mismatch"):
        al.sample(MODEL, SCH, _x(), torch.randn(2, 2, dtype=torch.float64, device="cuda"), steps=3)


def test_non_monotone_grid():
    with pytest.raises(ValueError, match="strictly decreasing"):
        al.sample(MODEL, SCH, _x(), None, steps=[0.9, 0.5, 0.6, 0.1])


def test_time_outside_schedule():
    with pytest.raises(ValueError, match="range"):
        al.sample(MODEL, SCH, _x(), None, steps=5, t_start=1.5)
    with pytest.raises(ValueError, match="range"):
        al.sample(MODEL, SCH, _x(), None, steps=[0.9, 0.5, 0.0])


def test_adjoint_grid_with_wrong_ends():
    # checked at call time now (the adjoint grid is resolved into the plan before any evaluation)
    x_T = _x().requires_grad_(True)
    with pytest.raises(ValueError, match="start and end"):
        al.sample(MODEL, SCH, x_T, None, steps=4, gradient=al.Adjoint(steps=[0.9, 0.5, 0.1]))


def test_nan_from_the_model():
    class NaNModel(torch.nn.Module):
        def forward(self, x, t, z=None):
            return torch.where(t[:, None] < 0.5, torch.full_like(x, float("nan")), x)

    with pytest.raises(FloatingPointError, match="NaN"):
        al.sample(NaNModel(), SCH, _x(), None, steps=5)


def test_model_output_shape():
    with pytest.raises(ValueError, match="model output has shape"):
        al.sample(lambda x, t, z: x[:, :2], SCH, _x(), None, steps=2)


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match="unknown prediction type"):
        al.as_epsilon_model(MODEL, SCH, "score")


def test_nan_input_and_integer_input():
    with pytest.raises(ValueError, match="NaN"):
        al.sample(MODEL, SCH, torch.full((2, 4), float("nan"), dtype=torch.float64), None, steps=2)
    with pytest.raises(TypeError, match="floating"):
        al.sample(MODEL, SCH, torch.ones(2, 4, dtype=torch.long), None, steps=2)


def test_sde_options():
    with pytest.raises(ValueError, match="cannot be recomputed"):
        al.sample(MODEL, SCH, _x(), None, steps=3, sampler="sde-dpm-solver-1", gradient=al.Adjoint(recompute=True))
    with pytest.raises(ValueError, match="order must be 1"):
        al.ExponentialIntegrator(order=2, sde=True)
    with pytest.raises(ValueError, match=r"noises must have shape"):
        al.sample(MODEL, SCH, _x(), None, steps=3, sampler="sde-dpm-solver-1",
                  noises=torch.randn(2, 2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="ODE sampler"):
        al.sample(MODEL, SCH, _x(), None, steps=3, noises=torch.randn(3, 2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="ODE sampler"):
        al.sample(MODEL, SCH, _x(), None, steps=3, generator=torch.Generator().manual_seed(0))


def test_bad_orders_and_steps():
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        al.ExponentialIntegrator(order=3)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        al.sample(MODEL, SCH, _x(), None, steps=3, gradient=al.Adjoint(order=3))
    with pytest.raises(ValueError, match="unknown sampler"):
        al.sample(MODEL, SCH, _x(), None, steps=3, sampler="dpm-solver-3")
    with pytest.raises(ValueError, match="positive int"):
        al.sample(MODEL, SCH, _x(), None, steps=0)
    with pytest.raises(TypeError, match="single number"):
        al.sample(MODEL, SCH, _x(), None, steps=3.0)
    x = _x()
    assert torch.equal(al.sample(MODEL, SCH, x, None, steps=np.int64(3)), al.sample(MODEL, SCH, x, None, steps=3))


def test_per_step_z_needs_one_per_step():
    with pytest.raises(ValueError, match="one z per step"):
        al.sample(MODEL, SCH, _x(), [torch.zeros(2, 2, dtype=torch.float64)] * 2, steps=3)


def test_per_step_z_with_misaligned_adjoint_grid():
    zs = [torch.zeros(2, 2, dtype=torch.float64, requires_grad=True) for _ in range(4)]
    # checked at call time now (the adjoint's cells are resolved into the plan)
    with pytest.raises(ValueError, match="crosses a sampling step boundary"):
        al.sample(MODEL, SCH, _x(), zs, steps=4, gradient=al.Adjoint(steps=3))

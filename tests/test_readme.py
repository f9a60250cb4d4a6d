"""The README's library example runs as printed and its stated figures hold (issue 14, item 5)."""
import contextlib
import io
import re
from pathlib import Path

import torch

import adjointlib as al

README = Path(__file__).resolve().parents[1] / "README.md"


def _example():
    text = README.read_text()
    return re.search(r"```python\n(import torch, adjointlib as al\n\nschedule = al\.LinearVP\(\).*?)```", text, re.S).group(1)


def test_readme_example_prints_a_gradient_within_two_percent():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(_example(), {})
    error = float(re.search(r"relative error: ([0-9.e+-]+)", out.getvalue()).group(1))
    assert error < 0.02 and "1.6e-02" in out.getvalue(), out.getvalue()


def test_readme_claims_about_twenty_steps():
    schedule = al.LinearVP()
    model = al.toy.GaussianEpsModel(schedule, data_std=0.5)
    errors = {}
    for steps, gradient in ((20, "adjoint"), (20, "backprop")):
        x_T = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
        z = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        x0 = al.sample(model, schedule, x_T, z, steps=steps, sampler="dpm-solver-2m", gradient=gradient)
        (g,) = torch.autograd.grad(x0.square().sum(), [x_T])
        exact, _, _ = al.toy.ode_gradients(schedule, x_T.detach(), z.detach(), 0.5, 2 * x0.detach(), schedule.t_max,
                                           schedule.t_min)
        errors[gradient] = float((g - exact).norm() / exact.norm())
    assert 4.0 < errors["adjoint"] < 4.2 and 0.013 < errors["backprop"] < 0.015, errors
    assert "4.1× off at N = 20" in README.read_text() and "1.4 % off" in README.read_text()


def test_readme_guided_latent_example_runs():
    """The chapter-11 example of the README (tiny pipeline, guidance, decoder in the loss) runs as printed and reaches
    x_T, z and w with finite gradients."""
    import pytest

    pytest.importorskip("transformers")
    block = re.search(r"```python\n(import torch, adjointlib as al\nfrom adjointlib import latent\n.*?)```", README.read_text(),
                      re.S).group(1)
    out, namespace = io.StringIO(), {}
    with contextlib.redirect_stdout(out):
        exec(block, namespace)
    assert "(1, 4, 8, 8) (1, 16, 32) dL/dw = " in out.getvalue(), out.getvalue()
    assert all(bool(torch.isfinite(namespace[k]).all()) for k in ("g_xT", "g_z", "g_w"))
    assert float(namespace["g_xT"].abs().max()) > 0 and float(namespace["g_z"].abs().max()) > 0

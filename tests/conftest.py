"""Shared fixtures: devices, a small smooth nonlinear ε-model, and slope fitting."""
import math

import pytest
import torch
from torch import nn

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


class TanhEpsModel(nn.Module):
    """ε(x, t, z) = 0.8 x + 0.3 tanh(A x + B z + c t/t_max) · w: smooth, nonlinear in x, z and θ = (A, B, c, w),
    with ∂ε/∂x close to 0.8 I so that the PF-ODE is well conditioned (like the true ε* ≈ x near t_max)."""

    def __init__(self, dim, z_dim, t_max=1.0, seed=0, dtype=torch.float64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(0.6 * torch.randn(dim, dim, generator=g, dtype=dtype))
        self.B = nn.Parameter(0.6 * torch.randn(dim, z_dim, generator=g, dtype=dtype))
        self.c = nn.Parameter(torch.randn(dim, generator=g, dtype=dtype))
        self.w = nn.Parameter(1.0 + 0.2 * torch.randn(dim, generator=g, dtype=dtype))
        self.t_max = t_max

    def forward(self, x, t, z=None):
        pre = x @ self.A.T + self.c * (t / self.t_max)[:, None]
        if z is not None:
            pre = pre + z @ self.B.T
        return 0.8 * x + 0.3 * torch.tanh(pre) * self.w


def fitted_slope(hs, errors):
    """Least-squares slope of log(error) against log(h)."""
    xs = [math.log(h) for h in hs]
    ys = [math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny networks (8×8 latents gain nothing from more; on a busy 2-core machine OpenMP's
    waiting threads made the guided-UNet convergence test 20× slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

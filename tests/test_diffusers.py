"""diffusers integration: UNet adapters, DiscreteVP.from_diffusers, and sample() end to end."""
import pytest
import torch

import adjointlib as al

diffusers = pytest.importorskip("diffusers")


def _tiny_unet(**kw):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, **kw).double()


def _scheduler(prediction_type="epsilon"):
    return diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                   prediction_type=prediction_type)


def test_unet_end_to_end_gradients_match_backprop_as_steps_grow():
    """AdjointDEIS-2M through a diffusers UNet: x_T, z and θ gradients approach autograd through the
    same DPM-Solver-2M sampler as N grows (the optimise-then-discretise gap shrinks like h², measured
    0.080 → 0.025 from N = 20 to 40)."""
    unet = _tiny_unet(class_embed_type="identity")
    model, schedule = al.DiffusersUNet.from_pipeline_parts(unet, _scheduler(), conditioning="class")
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    z = 0.1 * torch.randn(2, 32, generator=g, dtype=torch.float64)  # identity class embedding: time-embedding width
    params = [unet.conv_out.weight]

    def gradients(runner):
        x_T_, z_ = x_T.clone().requires_grad_(True), z.clone().requires_grad_(True)
        x0 = runner(x_T_, z_)
        return torch.cat([t.flatten() for t in torch.autograd.grad(x0.square().sum(), [x_T_, z_, *params])])

    gaps = []
    for n in (20, 40):
        adjoint = gradients(lambda a, b: al.sample(model, schedule, a, b, steps=n, sampler="dpm-solver-2m",
                                                   params=params))
        backprop = gradients(lambda a, b: al.solve(model, schedule, a, b, al.time_grid(schedule, n),
                                                   sampler="dpm-solver-2m", record="none")[0])
        gaps.append(float((adjoint - backprop).norm() / backprop.norm()))
    assert gaps[1] < gaps[0] / 2.5, gaps
    assert gaps[1] < 0.05, gaps


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_prediction_type_adapters_agree(prediction_type):
    """A UNet read as x₀- or v-prediction gives the ε that the conversion formulas imply."""
    unet = _tiny_unet()
    model, schedule = al.DiffusersUNet.from_pipeline_parts(unet, _scheduler(prediction_type))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([100.0, 700.0], dtype=torch.float64)
    raw = unet(x, t).sample
    alpha, sigma = schedule.alpha(t).view(-1, 1, 1, 1), schedule.sigma(t).view(-1, 1, 1, 1)
    expected = {"epsilon": raw, "sample": (x - alpha * raw) / sigma, "v_prediction": sigma * x + alpha * raw}
    assert torch.allclose(model(x, t, None), expected[prediction_type])


def test_learned_variance_output_is_cut_to_epsilon():
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=3, out_channels=6, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4)
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([10.0])
    out = al.DiffusersUNet(unet)(x, t)
    assert torch.equal(out, unet(x, t).sample[:, :3])  # the ε half, not the variance half


def test_unconditional_unet_rejects_z():
    with pytest.raises(ValueError, match="unconditional"):
        al.DiffusersUNet(_tiny_unet())(torch.randn(1, 3, 8, 8, dtype=torch.float64), torch.tensor([1.0]),
                                       torch.zeros(1, 4))


def test_clip_denoised_clips_only_out_of_range_predictions():
    """ClipDenoised: ε unchanged where x̂₀ ∈ [−1, 1]; elsewhere the implied x̂₀ is the clipped one."""
    schedule = al.DiscreteVP.from_diffusers(_scheduler())
    model = al.ClipDenoised(lambda x, t, z: torch.tanh(3 * x), schedule)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([10.0, 300.0, 700.0, 999.0], dtype=torch.float64)
    alpha, sigma = schedule.alpha(t).view(-1, 1, 1, 1), schedule.sigma(t).view(-1, 1, 1, 1)
    x0_raw = (x - sigma * torch.tanh(3 * x)) / alpha
    x0_clipped = (x - sigma * model(x, t, None)) / alpha
    inside = x0_raw.abs() <= 1
    assert 0 < inside.float().mean() < 1  # both cases occur
    assert torch.allclose(model(x, t, None)[inside], torch.tanh(3 * x)[inside], rtol=1e-12, atol=1e-12)
    assert torch.allclose(x0_clipped, x0_raw.clamp(-1, 1), atol=1e-12)
    with pytest.raises(ValueError, match="bound"):
        al.ClipDenoised(model, schedule, bound=0.0)


def test_clip_denoised_gradients_pass_gradcheck_through_a_unet():
    unet = _tiny_unet(class_embed_type="identity")
    eps_model, schedule = al.DiffusersUNet.from_pipeline_parts(unet, _scheduler(), conditioning="class")
    model = al.ClipDenoised(eps_model, schedule)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    z = (0.1 * torch.randn(1, 32, generator=g, dtype=torch.float64)).requires_grad_(True)
    t = torch.tensor([950.0], dtype=torch.float64)  # σ/α ≈ 50: some entries of x̂₀ are clipped
    with torch.no_grad():
        x0 = (x - schedule.sigma(t) * eps_model(x, t, z)) / schedule.alpha(t)
    assert (x0.abs() > 1).any() and (x0.abs() < 1).any()
    assert torch.autograd.gradcheck(lambda a, b: model(a, t, b), (x, z))

"""Latent text-to-image models (issue 15 item 2): the tiny pipeline, guided sampling equal to diffusers' own
StableDiffusionPipeline loop, the DDIM grid conditions, the checkpointed VAE decoder, gradients of an image loss
reaching x_T and the prompt embeddings, and errors that name the argument."""
import types

import pytest
import torch

import adjointlib as al
from adjointlib import latent

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def pipe64():
    pipe = latent.tiny_text_to_image(seed=0, dtype=F64)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tiny_pipeline_is_a_small_stable_diffusion():
    """Built without a download: the tokenizer makes whole-word tokens, the text encoder gives (b, L, D) embeddings,
    the UNet cross-attends to them (the prompt changes ε), the VAE up-samples 8×; the seed fixes every weight
    without touching the global RNG."""
    state = torch.random.get_rng_state()
    pipe, again, other = (latent.tiny_text_to_image(seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in ((pipe.unet, again.unet), (pipe.vae, again.vae), (pipe.text_encoder, again.text_encoder)):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(pipe.unet.conv_out.weight, other.unet.conv_out.weight)
    tokens = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer("a smiling cat")["input_ids"])
    assert tokens == ["<|startoftext|>", "a</w>", "smiling</w>", "cat</w>", "<|endoftext|>"]
    with torch.no_grad():
        z = latent.prompt_embeddings(pipe, ["a photo of a cat", "a red dog"])
        z_empty = latent.prompt_embeddings(pipe, "")
        assert z.shape == (2, 16, 32) and z.dtype == torch.float32 and z_empty.shape == (1, 16, 32)
        x, t = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0])
        eps_cat = pipe.unet(x, t, encoder_hidden_states=z[:1].expand(2, -1, -1)).sample
        eps_dog = pipe.unet(x, t, encoder_hidden_states=z[1:].expand(2, -1, -1)).sample
        assert (eps_cat - eps_dog).abs().max() > 1e-3  # cross-attention reads the prompt
        assert pipe.vae.decode(x).sample.shape == (2, 3, 64, 64)
    assert sum(p.numel() for p in pipe.unet.parameters()) < 60_000
    assert pipe.safety_checker is None and pipe.vae_scale_factor == 8
    assert isinstance(pipe.scheduler, diffusers.DDIMScheduler) and not pipe.scheduler.config.set_alpha_to_one


def _float64_tables(scheduler):
    """diffusers keeps ᾱ in float32 and computes DDIM's coefficients in float32 even for float64 latents; the same
    table values in float64 make its loop exact to float64 rounding, like ours (DiscreteVP reads the same values)."""
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.to(F64)
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.to(F64)


@pytest.mark.parametrize("steps, spacing, offset", [(10, "leading", 1), (7, "leading", 1), (10, "leading", 0),
                                                     (10, "trailing", 0)])
def test_guided_ddim_equals_the_stable_diffusion_pipeline(pipe64, steps, spacing, offset):
    """``adjointlib.sample(pipeline_model(pipe, w), ..., sampler="ddim", steps=ddim_timestep_grid(scheduler, N))``
    equals ``StableDiffusionPipeline.__call__(prompt_embeds=z, negative_prompt_embeds=z_u, guidance_scale=w,
    latents=x_T, num_inference_steps=N, eta=0, output_type="latent")`` with its DDIMScheduler: measured ≤ 6.7e-16
    relative (float64, ᾱ table in float64 on both sides; asserted < 1e-13).
    They coincide because (i) the pipeline's timesteps are spaced by Δ = 1000 // N ("leading" spacing, any N and
    steps_offset; "trailing" with N dividing 1000), which is the step DDIM takes from each t; (ii)
    ``set_alpha_to_one=False``, so its last step ends at ᾱ_0, a table time (our grid appends t = 0, or stops at 0 when
    steps_offset = 0, where the pipeline's extra step ᾱ_0 → ᾱ_0 is the identity); (iii) w > 1 (diffusers skips
    guidance for w <= 1), eta = 0, no clipping or guidance rescale; (iv) both guide ε in one batched call,
    unconditional half first, with the same arithmetic ε_u + w (ε_c − ε_u).  Checked with the default empty-prompt
    z_u and with a per-sample negative prompt."""
    original = pipe64.scheduler
    scheduler = diffusers.DDIMScheduler.from_config(original.config, timestep_spacing=spacing, steps_offset=offset)
    _float64_tables(scheduler)
    pipe64.scheduler = scheduler
    try:
        _compare_with_the_pipeline(pipe64, scheduler, steps, spacing, offset)
    finally:
        pipe64.scheduler = original


def _compare_with_the_pipeline(pipe64, scheduler, steps, spacing, offset):
    g = torch.Generator().manual_seed(steps + offset)
    x_T = torch.randn(2, 4, 8, 8, generator=g, dtype=F64)
    with torch.no_grad():
        z = latent.prompt_embeddings(pipe64, ["a photo of a cat", "a red dog"])
        negative = latent.prompt_embeddings(pipe64, ["", "blue"])
        grid = latent.ddim_timestep_grid(scheduler, steps)
        assert grid[-1] == 0 and len(grid) == steps + (offset > 0 or spacing == "trailing")
        for w, z_u in ((3.0, None), (7.5, negative)):
            model, schedule = latent.pipeline_model(pipe64, w, z_u)
            ours = al.sample(model, schedule, x_T, z, steps=grid, sampler="ddim")
            theirs = pipe64(prompt_embeds=z, negative_prompt_embeds=z_u, guidance_scale=w, latents=x_T,
                            num_inference_steps=steps, eta=0.0, output_type="latent").images
            assert float((ours - theirs).norm() / theirs.norm()) < 1e-13
            # the comparison can fail: the same number of steps on adjointlib's default grid (uniform in λ) is off by
            # 7.6e-3 to 1.2 (measured)
            other = al.sample(model, schedule, x_T, z, steps=len(grid) - 1, sampler="ddim")
            assert float((other - theirs).norm() / theirs.norm()) > 1e-6


def test_guided_ddim_equals_the_pipeline_in_float32():
    """The everyday case: float32 networks and diffusers' float32 ᾱ table (its DDIM coefficients rounded to float32,
    ours computed in float64 from the same table values): measured 3.8e-7 relative after N = 10 steps at w = 7.5
    (float32 rounding, 6e-8 per operation); asserted < 1e-5."""
    pipe = latent.tiny_text_to_image(seed=0)
    pipe.set_progress_bar_config(disable=True)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = latent.prompt_embeddings(pipe, "a portrait of an old person")
        model, schedule = latent.pipeline_model(pipe, 7.5)
        ours = al.sample(model, schedule, x_T, z, steps=latent.ddim_timestep_grid(pipe.scheduler, 10))
        theirs = pipe(prompt_embeds=z, guidance_scale=7.5, latents=x_T, num_inference_steps=10,
                      output_type="latent").images
    gap = float((ours - theirs).norm() / theirs.norm())
    assert ours.dtype == torch.float32 and gap < 1e-5


def test_ddim_grid_refuses_loops_it_cannot_reproduce(pipe64):
    config = pipe64.scheduler.config
    with pytest.raises(ValueError, match="set_alpha_to_one"):
        latent.ddim_timestep_grid(diffusers.DDIMScheduler.from_config(config, set_alpha_to_one=True), 10)
    with pytest.raises(ValueError, match="not spaced"):  # 1000 // 30 = 33, but trailing steps by 33.3
        latent.ddim_timestep_grid(diffusers.DDIMScheduler.from_config(config, timestep_spacing="trailing"), 30)
    with pytest.raises(ValueError, match="not spaced"):
        latent.ddim_timestep_grid(diffusers.DDIMScheduler.from_config(config, timestep_spacing="linspace"), 10)
    with pytest.raises(ValueError, match="clip_sample"):
        latent.ddim_timestep_grid(diffusers.DDIMScheduler.from_config(config, clip_sample=True), 10)
    with pytest.raises(TypeError, match="DDIMScheduler"):
        latent.ddim_timestep_grid(diffusers.DDPMScheduler.from_config(config), 10)
    with pytest.raises(TypeError, match="num_inference_steps"):
        latent.ddim_timestep_grid(pipe64.scheduler, 10.0)
    before = pipe64.scheduler.timesteps.clone()
    latent.ddim_timestep_grid(pipe64.scheduler, 25)
    assert torch.equal(pipe64.scheduler.timesteps, before)  # a copy is set, not the caller's scheduler


def _saved_numel(fn):
    """Elements of every tensor autograd saves for the backward pass while ``fn`` runs (``saved_tensors_hooks``)."""
    count = [0]

    def pack(tensor):
        count[0] += tensor.numel()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn()
    return out, count[0]


def test_checkpointed_decoder_keeps_no_activations_and_gives_the_same_gradients(pipe64):
    """LatentDecoder(checkpoint=True) equals the plain decoder in value and in the gradients w.r.t. the latents and
    the VAE's weights (to 1e-13; recomputation is the same arithmetic), while autograd keeps 256 saved elements (the
    input latent) instead of the plain decoder's 394,500 for one (1, 4, 8, 8) latent decoded to 64×64 (counted with
    ``saved_tensors_hooks``; asserted: more than 100,000 against less than 1 %)."""
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(1, 4, 8, 8, generator=g, dtype=F64)
    target = torch.randn(1, 3, 64, 64, generator=g, dtype=F64)
    results = {}
    for flag in (False, True):
        decoder = latent.LatentDecoder(pipe64.vae, checkpoint=flag)
        x = x_0.clone().requires_grad_(True)
        image, saved = _saved_numel(lambda: decoder(x))
        loss = (image - target).square().mean()
        grads = torch.autograd.grad(loss, [x, *pipe64.vae.decoder.parameters()])
        results[flag] = image.detach(), grads, saved
    (plain, plain_grads, plain_saved), (ckpt, ckpt_grads, ckpt_saved) = results[False], results[True]
    assert plain.shape == (1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(plain, pipe64.vae.decode(x_0 / pipe64.vae.config.scaling_factor).sample)
    assert torch.equal(ckpt, plain)
    for a, b in zip(ckpt_grads, plain_grads):
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)
    assert plain_saved > 100_000 and ckpt_saved < plain_saved / 100, (plain_saved, ckpt_saved)


def test_image_loss_gradients_reach_x_T_and_the_prompt_through_sample(pipe64):
    """loss(LatentDecoder(sample(...))) differentiates x_T, z and w by the adjoint: equal (1e-12) to the two-stage
    computation (∂L/∂x_0 through the decoder alone, then the adjoint's VJP of sample), non-zero, and with backprop in
    place of the adjoint equal to autograd through the plain decoder (1e-12)."""
    model, schedule = latent.pipeline_model(pipe64, 3.0)
    g = torch.Generator().manual_seed(1)
    x_T0 = torch.randn(1, 4, 8, 8, generator=g, dtype=F64)
    with torch.no_grad():
        z0 = latent.prompt_embeddings(pipe64, "a photo of a face")
    target = torch.randn(1, 3, 64, 64, generator=g, dtype=F64)

    def loss_of(image):
        return (image - target).square().mean()

    def gradients(gradient, checkpoint):
        x_T, z = x_T0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
        x_0 = al.sample(model, schedule, x_T, z, steps=6, sampler="ddim", gradient=gradient, params=[model.scale])
        image = latent.LatentDecoder(pipe64.vae, checkpoint=checkpoint)(x_0)
        return torch.autograd.grad(loss_of(image), [x_T, z, model.scale]), x_0.detach()

    composed, x_0 = gradients("adjoint", True)
    x0 = x_0.clone().requires_grad_(True)
    cotangent = torch.autograd.grad(loss_of(latent.LatentDecoder(pipe64.vae)(x0)), x0)[0]
    x_T, z = x_T0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    x_0b = al.sample(model, schedule, x_T, z, steps=6, sampler="ddim", params=[model.scale])
    staged = torch.autograd.grad(x_0b, [x_T, z, model.scale], grad_outputs=cotangent)
    for a, b in zip(composed, staged):
        assert torch.isfinite(a).all() and a.abs().max() > 0
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    checkpointed, _ = gradients("backprop", True)
    plain, _ = gradients("backprop", False)
    for a, b in zip(checkpointed, plain):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)


def test_the_module_docstring_recipe_runs_on_the_tiny_pipeline():
    """adjointlib.latent's recipe for Stable Diffusion weights, line for line, with the tiny pipeline in place of
    ``from_pretrained`` (float32, 8×8 latents, N = 10): backward fills x_T.grad, z.grad and model.scale.grad."""
    from diffusers import DDIMScheduler

    pipe = latent.tiny_text_to_image(seed=2)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    model, schedule = latent.pipeline_model(pipe, guidance_scale=7.5)
    with torch.no_grad():
        z = latent.prompt_embeddings(pipe, "a photo of a cat")
    z.requires_grad_(True)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2), requires_grad=True)
    x_0 = al.sample(model, schedule, x_T, z, steps=latent.ddim_timestep_grid(pipe.scheduler, 10), sampler="ddim",
                    params=[model.scale])
    loss = latent.LatentDecoder(pipe.vae)(x_0).square().mean()
    loss.backward()
    for grad in (x_T.grad, z.grad, model.scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0
    assert pipe.unet.conv_out.weight.grad is None  # not in params: the adjoint computed no UNet weight gradient


def test_latent_errors_name_the_argument(pipe64):
    vae = pipe64.vae
    with pytest.raises(TypeError, match="vae"):
        latent.LatentDecoder(object())
    with pytest.raises(TypeError, match="checkpoint"):
        latent.LatentDecoder(vae, checkpoint="yes")
    with pytest.raises(ValueError, match="scaling_factor"):
        latent.LatentDecoder(vae, scaling_factor=0.0)
    with pytest.raises(ValueError, match="scaling factor"):
        latent.LatentDecoder(types.SimpleNamespace(decode=lambda x: x, config=types.SimpleNamespace()))
    decoder = latent.LatentDecoder(vae)
    with pytest.raises(ValueError, match="latents must have shape"):
        decoder(torch.zeros(1, 3, 8, 8, dtype=F64))
    with pytest.raises(ValueError, match="latents must have shape"):
        decoder(torch.zeros(4, 8, 8, dtype=F64))
    with pytest.raises(TypeError, match="latents"):
        decoder(torch.zeros(1, 4, 8, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="prompt"):
        latent.prompt_embeddings(pipe64, 3)
    with pytest.raises(TypeError, match="prompt"):
        latent.prompt_embeddings(pipe64, [])
    no_text = types.SimpleNamespace(unet=pipe64.unet, scheduler=pipe64.scheduler, encode_prompt=pipe64.encode_prompt,
                                    tokenizer=None, text_encoder=None)
    with pytest.raises(TypeError, match="encode prompts"):
        latent.pipeline_model(no_text, 7.5)
    with pytest.raises(TypeError, match="unet"):
        latent.pipeline_model(types.SimpleNamespace(scheduler=pipe64.scheduler), 7.5)
    for key, value in (("addition_embed_type", "text_time"), ("time_cond_proj_dim", 256)):
        unet = types.SimpleNamespace(config=types.SimpleNamespace(**{key: value}))
        with pytest.raises(ValueError, match=key):
            latent.pipeline_model(types.SimpleNamespace(unet=unet, scheduler=pipe64.scheduler), 7.5)
    with pytest.raises(ValueError, match="scale"):
        latent.pipeline_model(pipe64, float("nan"))
    with pytest.raises(ValueError, match="text_width"):
        latent.tiny_text_to_image(text_width=6)
    with pytest.raises(ValueError, match="max_length"):
        latent.tiny_text_to_image(max_length=1)

"""Latent text-to-image models: a diffusers ``StableDiffusionPipeline`` as a guided ε-model, a checkpointed VAE
decoder for losses on images, and a tiny random pipeline built in code (no download) for tests and chapters.

The latent diffusion model (Rombach et al. 2022, *High-Resolution Image Synthesis with Latent Diffusion Models*)
samples latents x_0 of shape (b, 4, h, w) with a text-conditioned UNet ε_θ(x, z, t), z the prompt's CLIP text
embeddings (b, L, D), and decodes them with the VAE to images (b, 3, 8h, 8w) (Stable Diffusion 1.x/2.x).  Here:

- ``pipeline_model(pipe, guidance_scale)`` -> (``ClassifierFreeGuidance`` ε-model, ``DiscreteVP``): time unit the
  diffusers timestep (0..num_train_timesteps − 1), z the prompt embeddings from ``prompt_embeddings(pipe, prompt)``;
- ``ddim_timestep_grid(scheduler, N)``: the explicit grid on which ``adjointlib.sample(..., sampler="ddim")``
  reproduces the pipeline's own DDIM loop (``StableDiffusionPipeline.__call__`` with eta = 0);
- ``LatentDecoder(vae)``: x_0 -> image with the decoder's activations recomputed in the backward pass;
- ``tiny_text_to_image(seed)``: a random pipeline of the same architecture, small enough for a CPU test.

A reader with Stable Diffusion weights (a local folder, or a hub id where the machine can download)::

    from diffusers import DDIMScheduler, StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained("path/to/stable-diffusion-v1-5", torch_dtype=torch.float32)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)   # SD 1.5: set_alpha_to_one=False
    model, schedule = pipeline_model(pipe, guidance_scale=7.5)
    with torch.no_grad():
        z = prompt_embeddings(pipe, "a photo of a cat")       # (1, 77, 768)
    z.requires_grad_(True)
    x_T = torch.randn(1, 4, 64, 64, requires_grad=True)
    x_0 = adjointlib.sample(model, schedule, x_T, z, steps=ddim_timestep_grid(pipe.scheduler, 50), sampler="ddim",
                            params=[model.scale])          # default: every parameter requiring grad, the UNet's too
    loss = loss_on_images(LatentDecoder(pipe.vae)(x_0))   # loss.backward(): x_T.grad, z.grad, model.scale.grad

(that path cannot be tested here: no weights are downloaded; ``tests/test_latent.py`` runs the same code on the tiny
pipeline).  Pipelines whose UNet needs more than ``encoder_hidden_states`` (SD-XL's added text/time embeddings,
latent consistency models' guidance embedding) are refused by ``pipeline_model``.
"""
from __future__ import annotations

import json
import os
import tempfile

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .guidance import ClassifierFreeGuidance
from .models import DiffusersUNet

__all__ = ["LatentDecoder", "pipeline_model", "prompt_embeddings", "ddim_timestep_grid", "tiny_text_to_image",
           "TINY_VOCABULARY"]

# Whole words of the tiny tokenizer (each one token); any other text is split into single characters.
TINY_VOCABULARY = ("a", "an", "the", "of", "and", "with", "photo", "painting", "portrait", "face", "person", "cat",
                   "dog", "red", "green", "blue", "smiling", "old", "young", "in", "style")


class LatentDecoder(nn.Module):
    """Latents → images for losses: x = vae.decode(x_0 / s + shift).sample (Rombach et al. 2022, §3.1; diffusers'
    ``StableDiffusionPipeline`` decoding), s = ``vae.config.scaling_factor`` (0.18215 for SD 1.x/2.x) and shift =
    ``vae.config.shift_factor`` (None, i.e. 0, for SD 1.x/2.x).

    vae: a diffusers ``AutoencoderKL`` (or anything with ``decode(latents).sample`` and a ``config.scaling_factor``);
    registered as a submodule.  checkpoint: when True (default) and autograd is recording, the decoder runs under
    ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``: the forward pass keeps none of the decoder's
    activations and the backward pass recomputes them (one extra decoder forward), with gradients equal to the
    un-checkpointed decoder's (the decoder is deterministic; the RNG state is restored for the recomputation anyway).
    scaling_factor: overrides ``vae.config.scaling_factor``.
    forward(latents): latents (b, C, h, w), C = ``vae.config.latent_channels`` (4), in the sampler's units (what
    ``adjointlib.sample`` returns) → images (b, 3, f·h, f·w), f = 2^(len(block_out_channels) − 1) = 8 for Stable
    Diffusion, roughly in [−1, 1] and not clipped (the pipeline's ``image_processor.postprocess`` maps to [0, 1] with
    a clamp, whose gradient is zero outside the range: put losses on this output, or clamp knowingly).
    Raises (constructor):
        TypeError: ``vae`` has no ``decode`` method; ``checkpoint`` is not a bool.
        ValueError: no scaling factor (neither ``scaling_factor`` nor ``vae.config.scaling_factor``), or one that is not
            a positive finite number.
    """

    def __init__(self, vae, checkpoint: bool = True, scaling_factor: float | None = None):
        super().__init__()
        if not callable(getattr(vae, "decode", None)):
            raise TypeError(f"vae must have a decode(latents) method (a diffusers AutoencoderKL), got "
                            f"{type(vae).__name__}")
        if not isinstance(checkpoint, bool):
            raise TypeError(f"checkpoint must be True or False, got {checkpoint!r}")
        config = getattr(vae, "config", None)
        if scaling_factor is None:
            scaling_factor = getattr(config, "scaling_factor", None)
        if scaling_factor is None:
            raise ValueError("no scaling factor: vae.config has no scaling_factor; pass scaling_factor=")
        scaling_factor = float(scaling_factor)
        if not (scaling_factor > 0 and scaling_factor != float("inf")):
            raise ValueError(f"scaling_factor must be a positive finite number, got {scaling_factor}")
        shift = getattr(config, "shift_factor", None)
        self.vae, self.checkpoint = vae, checkpoint
        self.scaling_factor, self.shift_factor = scaling_factor, 0.0 if shift is None else float(shift)
        self.latent_channels = getattr(config, "latent_channels", None)

    def _decode(self, latents):
        return self.vae.decode(latents / self.scaling_factor + self.shift_factor).sample

    def forward(self, latents):
        """images = vae.decode(latents / scaling_factor + shift_factor).sample: (b, C, h, w) → (b, 3, f·h, f·w).

        Raises:
            TypeError: ``latents`` is not a floating tensor.
            ValueError: ``latents`` is not 4-D (b, C, h, w) or has another channel count than the VAE's latents.
        """
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
            raise TypeError(f"latents must be a floating tensor (b, C, h, w), got "
                            f"{getattr(latents, 'dtype', type(latents).__name__)}")
        if latents.dim() != 4 or (self.latent_channels is not None and latents.shape[1] != self.latent_channels):
            raise ValueError(f"latents must have shape (b, {self.latent_channels or 'C'}, h, w), got "
                             f"{tuple(latents.shape)}")
        if self.checkpoint and torch.is_grad_enabled():
            return checkpoint(self._decode, latents, use_reentrant=False)
        return self._decode(latents)


def _check_text_pipeline(pipe) -> None:
    """A Stable-Diffusion-1.x/2.x-like pipeline: a UNet conditioned on ``encoder_hidden_states`` alone, a scheduler
    with ``alphas_cumprod``.

    Raises:
        TypeError: ``pipe`` has no ``unet`` or ``scheduler``.
        ValueError: the UNet needs added conditions (SD-XL's text/time embeddings, a guidance embedding).
    """
    if getattr(pipe, "unet", None) is None or getattr(pipe, "scheduler", None) is None:
        raise TypeError(f"pipe must be a diffusers text-to-image pipeline with .unet and .scheduler (e.g. "
                        f"StableDiffusionPipeline), got {type(pipe).__name__}")
    config = pipe.unet.config
    if getattr(config, "addition_embed_type", None) is not None:
        raise ValueError(f"pipe's UNet needs added conditions (addition_embed_type={config.addition_embed_type!r}, "
                         "e.g. SD-XL): only UNets conditioned on encoder_hidden_states alone are supported")
    if getattr(config, "time_cond_proj_dim", None) is not None:
        raise ValueError("pipe's UNet takes a guidance-scale embedding (time_cond_proj_dim is set, e.g. a latent "
                         "consistency model): not classifier-free guidance, not supported")


def prompt_embeddings(pipe, prompt, *, clip_skip: int | None = None) -> torch.Tensor:
    """z = the text encoder's last hidden states for ``prompt``: ``pipe.encode_prompt`` (diffusers), (b, L, D).

    prompt: a string (b = 1) or a list of b strings; L = ``pipe.tokenizer.model_max_length`` (77 for CLIP, 16 for the
    tiny pipeline), D = the text encoder's width (768 for SD 1.x).  The returned tensor is on ``pipe.device`` in the
    text encoder's dtype; it carries autograd history to the text encoder's parameters when grad mode is on (wrap the
    call in ``torch.no_grad()`` for a plain tensor, then ``.requires_grad_()`` to differentiate w.r.t. z itself).
    ``prompt_embeddings(pipe, "")`` is diffusers' default unconditional embedding z_u.
    Raises:
        TypeError: ``prompt`` is neither a string nor a list of strings; ``pipe`` cannot encode prompts (no
            ``encode_prompt``, tokenizer or text encoder).
    """
    is_list = isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt)
    if not (isinstance(prompt, str) or is_list):
        raise TypeError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
    if not callable(getattr(pipe, "encode_prompt", None)) or getattr(pipe, "tokenizer", None) is None \
            or getattr(pipe, "text_encoder", None) is None:
        raise TypeError(f"pipe must encode prompts (encode_prompt, a tokenizer and a text encoder), got "
                        f"{type(pipe).__name__}; pass prompt embeddings instead")
    embeds, _ = pipe.encode_prompt(prompt, pipe.device, 1, False, clip_skip=clip_skip)
    return embeds


def pipeline_model(pipe, guidance_scale: float = 7.5, unconditional: torch.Tensor | None = None, *,
                   learn_unconditional: bool = False):
    """(guided ε-model, ``DiscreteVP``) of a diffusers text-to-image pipeline (Stable Diffusion 1.x/2.x layout).

    The ε-model is ``ClassifierFreeGuidance(DiffusersUNet.from_pipeline_parts(pipe.unet, pipe.scheduler,
    conditioning="encoder"), guidance_scale, unconditional)``: model(x, t, z) with x the latents (b, 4, h, w), t (b,)
    the diffusers timestep (the schedule's time unit, 0..num_train_timesteps − 1, fractional allowed), z the prompt
    embeddings (b, L, D) (``prompt_embeddings``); it computes ε_w = ε_u + w (ε_c − ε_u) in one UNet call on the
    doubled batch, as ``StableDiffusionPipeline.__call__`` does.  The scheduler's ``prediction_type`` is honoured
    (SD 2.x's v-prediction is converted per branch, which equals diffusers' guide-then-convert: affine adapters
    commute with guidance, ``adjointlib.guidance``).  The schedule is ``DiscreteVP.from_diffusers(pipe.scheduler)``.
    unconditional: z_u, (1, L, D) or (b, L, D); default the empty prompt's embedding (``prompt_embeddings(pipe,
    "")`` under no_grad), as diffusers uses without a negative prompt.  Pass a negative prompt's embedding instead,
    and ``learn_unconditional=True`` to differentiate it.  ``guided.scale`` is w (an nn.Parameter).
    Raises:
        TypeError: ``pipe`` has no unet/scheduler, or (unconditional=None) cannot encode prompts.
        ValueError: the UNet needs added conditions (SD-XL, latent consistency models).
        TypeError, ValueError: invalid ``guidance_scale`` or ``unconditional`` (``ClassifierFreeGuidance``).
    """
    _check_text_pipeline(pipe)
    eps_model, schedule = DiffusersUNet.from_pipeline_parts(pipe.unet, pipe.scheduler, conditioning="encoder")
    if unconditional is None:
        with torch.no_grad():
            unconditional = prompt_embeddings(pipe, "")
    return ClassifierFreeGuidance(eps_model, guidance_scale, unconditional,
                                  learn_unconditional=learn_unconditional), schedule


def ddim_timestep_grid(scheduler, num_inference_steps: int) -> torch.Tensor:
    """The explicit grid (N+1,) float64 of diffusers timesteps on which ``adjointlib.sample(..., sampler="ddim")``
    takes the same steps as diffusers' ``DDIMScheduler`` with eta = 0 (Song et al. 2021, eq. 12 with σ = 0).

    diffusers' DDIM loop visits ``scheduler.timesteps`` t_1 > ... > t_N and steps each t to t − Δ, Δ =
    num_train_timesteps // N, reading ᾱ at t − Δ, or ``final_alpha_cumprod`` when t − Δ < 0.  Our DDIM step
    (the exponential integrator x_t = (α_t/α_s) x_s − σ_t (e^h − 1) ε, paper §7.3) is the same map between the same
    two ᾱ values, so the loops coincide (to rounding) when (i) consecutive timesteps differ by exactly Δ
    (``timestep_spacing="leading"``, any N; "trailing" when N divides num_train_timesteps) and (ii) the final ᾱ is a
    table entry, i.e. ``set_alpha_to_one=False`` (final_alpha_cumprod = ᾱ_0: Stable Diffusion 1.x/2.x's configs),
    and without ``clip_sample``/``thresholding`` (nonlinear in x̂₀).  The grid is then t_1, ..., t_N followed by
    max(t_N − Δ, 0) (dropped when it equals t_N = 0: that last diffusers step maps ᾱ_0 to ᾱ_0, the identity).
    The scheduler is not modified (a copy is set to N steps).
    Raises:
        TypeError: ``scheduler`` is not a diffusers ``DDIMScheduler``; ``num_inference_steps`` is not an int.
        ValueError: ``set_alpha_to_one=True`` (ᾱ = 1 is no time of ``DiscreteVP``: rebuild it with
            ``DDIMScheduler.from_config(config, set_alpha_to_one=False)``), ``clip_sample`` or ``thresholding``
            set, or timesteps not uniformly spaced by Δ.
    """
    from diffusers import DDIMScheduler

    if not isinstance(scheduler, DDIMScheduler):
        raise TypeError(f"scheduler must be a diffusers DDIMScheduler (e.g. DDIMScheduler.from_config(pipe.scheduler."
                        f"config)), got {type(scheduler).__name__}")
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
        raise TypeError(f"num_inference_steps must be an int, got {num_inference_steps!r}")
    config = scheduler.config
    if config.set_alpha_to_one:
        raise ValueError("scheduler has set_alpha_to_one=True: its last step ends at alpha_cumprod = 1, no time of "
                         "DiscreteVP; use DDIMScheduler.from_config(scheduler.config, set_alpha_to_one=False)")
    if config.clip_sample or config.thresholding:
        raise ValueError("scheduler clips or thresholds the predicted x0 (clip_sample / thresholding): not the DDIM "
                         "ODE step; set them False (or wrap the model in adjointlib.ClipDenoised for clip_sample)")
    copy = DDIMScheduler.from_config(config)
    copy.set_timesteps(num_inference_steps)
    timesteps = [int(t) for t in copy.timesteps]
    delta = config.num_train_timesteps // num_inference_steps
    gaps = {a - b for a, b in zip(timesteps, timesteps[1:])}
    if gaps - {delta}:
        raise ValueError(f"scheduler's timesteps are not spaced by num_train_timesteps // N = {delta} "
                         f"(timestep_spacing={config.timestep_spacing!r}, N={num_inference_steps}): DDIM steps each t "
                         "to t - delta, not to the next timestep; use timestep_spacing='leading'")
    final = max(timesteps[-1] - delta, 0)
    grid = timesteps + ([final] if final < timesteps[-1] else [])
    return torch.tensor(grid, dtype=torch.float64)


def _bytes_to_unicode() -> dict:
    """GPT-2/CLIP's byte → printable-character table (Radford et al. 2019; ``CLIPTokenizer``'s byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _tiny_tokenizer(max_length: int):
    """A ``CLIPTokenizer`` from a byte-level vocabulary (every byte, alone and word-final) plus the merges that make
    each word of ``TINY_VOCABULARY`` one token; the files live in a temporary folder only while it loads."""
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    tokens, merges = chars + [c + "</w>" for c in chars], []
    for word in TINY_VOCABULARY:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        current = parts[0]
        for part in parts[1:]:
            merges.append(f"{current} {part}")
            current += part
            tokens.append(current)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(tokens))}
    with tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
        tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)
    return tokenizer, vocab


def tiny_text_to_image(seed: int = 0, dtype: torch.dtype = torch.float32, *, text_width: int = 32,
                       max_length: int = 16):
    """A tiny random latent text-to-image ``diffusers.StableDiffusionPipeline``, built in code without any download.

    Stable Diffusion 1.x's layout at toy size (Rombach et al. 2022): a ``CLIPTokenizer`` (byte-level BPE, whole-word
    tokens for ``TINY_VOCABULARY``, L = ``max_length`` tokens), a 2-layer ``transformers.CLIPTextModel`` of width
    D = ``text_width``, a ``UNet2DConditionModel`` with cross-attention on the text embeddings (channels (8, 16),
    ~52k parameters: ~10 ms per float64 call on a batch of 2 with 8×8 latents on one CPU core), an ``AutoencoderKL``
    with 4 latent channels and the down-sampling factor 8 (channels (4, 4, 8, 8)), and SD 1.x's ``DDIMScheduler``
    (scaled-linear β from 0.00085 to 0.012, 1000 steps, ``set_alpha_to_one=False``, ``steps_offset=1``, ε-prediction);
    ``safety_checker=None``, ``requires_safety_checker=False``.  Weights are random (seeded by ``seed``, without
    touching the global RNG state), so images are noise: the pipeline is for checking code, not for pictures.
    Latents (b, 4, h, w) decode to images (b, 3, 8h, 8w); the UNet's nominal size is 8×8 latents (64×64 images).
    dtype: every module's floating dtype (float64 for exact comparisons).  Needs ``transformers``
    (``pip install "adjointlib[diffusers]"``).
    Raises:
        ValueError: ``text_width`` not a positive multiple of 4 (attention heads) or ``max_length`` < 2.
    """
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    if not (isinstance(text_width, int) and text_width > 0 and text_width % 4 == 0):
        raise ValueError(f"text_width must be a positive multiple of 4, got {text_width!r}")
    if not (isinstance(max_length, int) and max_length >= 2):
        raise ValueError(f"max_length must be an int >= 2 (start and end tokens), got {max_length!r}")
    tokenizer, vocab = _tiny_tokenizer(max_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = diffusers.UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=text_width, attention_head_dim=4, norm_num_groups=4)
        vae = diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(4, 4, 8, 8), layers_per_block=1,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=2,
            sample_size=64)
        end = vocab["<|endoftext|>"]
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=text_width, intermediate_size=2 * text_width, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=max_length, projection_dim=text_width,
            bos_token_id=vocab["<|startoftext|>"], eos_token_id=end, pad_token_id=end))
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")
    for module in (unet, vae, text_encoder):
        nn.Module.to(module, dtype=dtype)  # nn.Module's: diffusers' own .to(dtype) logs a spurious float32 warning
        module.eval()
    return diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)

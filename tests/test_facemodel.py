"""The face diffusion model: training reduces the loss, resume continues bitwise, a warm start reproduces
its folder, save → load is exact, and the model works with adjointlib.sample end to end."""
import csv
import hashlib
import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import adjointlib as al  # noqa: E402
from adjointlib.facemodel import CONFIGS, FaceDiffusionModel, load_face_model  # noqa: E402
from adjointlib.facemodel.pretrained import save_face_model  # noqa: E402
from adjointlib.facemodel.train import Trainer  # noqa: E402

TINY = CONFIGS["tiny"]


def _faces(n=6, size=16, seed=0):
    """Smooth synthetic 'faces': blurred blobs, so a tiny model can fit them in a few steps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r**2))
        colour = rng.uniform(0.2, 1.0, 3)
        images.append((255 * blob[..., None] * colour).astype(np.uint8))
    return np.stack(images)


def _fixed_loss(model, images, seed=1):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    t = torch.randint(1000, (len(x0),), generator=g)
    with torch.no_grad():
        return float(model.training_loss(x0, t, torch.randn(x0.shape, generator=g)))


def test_tiny_training_reduces_loss_and_resumes(tmp_path):
    images = _faces()
    trainer = Trainer(TINY, images, tmp_path, device="cpu", warmup_steps=0)
    before = _fixed_loss(trainer.model, images)
    trainer.run(40, progress=False)
    after = _fixed_loss(trainer.model, images)
    assert after < 0.7 * before, (before, after)
    assert (tmp_path / "checkpoint.pt").is_file()
    with open(tmp_path / "loss_log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))  # one row per checkpoint (every 10 steps) here
    assert [(int(r["step"]), int(r["steps"])) for r in rows] == [(10, 10), (20, 10), (30, 10), (40, 10)]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    resumed = Trainer(TINY, images, tmp_path, device="cpu")
    assert resumed.step == 40 and resumed.losses == trainer.losses and resumed.settings["warmup_steps"] == 0
    for a, b in zip(resumed.model.parameters(), trainer.model.parameters()):
        assert torch.equal(a, b)
    resumed.run(45, progress=False)
    assert resumed.step == 45


def test_resume_refuses_another_configuration(tmp_path):
    Trainer(TINY, _faces(), tmp_path).run(10, progress=False)
    other = CONFIGS["tiny"].__class__(**{**CONFIGS["tiny"].to_dict(), "learning_rate": 1e-3})
    with pytest.raises(ValueError, match="another configuration"):
        Trainer(other, _faces(), tmp_path)


def test_interrupted_run_resumes_bitwise(tmp_path):
    """Stopping at a checkpoint and re-running gives the uninterrupted run's weights, EMA and loss log."""
    images = _faces()
    straight = Trainer(TINY, images, tmp_path / "a", warmup_steps=5)
    straight.run(20, progress=False)
    Trainer(TINY, images, tmp_path / "b", warmup_steps=5).run(10, progress=False)
    resumed = Trainer(TINY, images, tmp_path / "b")
    resumed.run(20, progress=False)
    for module in ("model", "ema"):
        for a, b in zip(getattr(resumed, module).parameters(), getattr(straight, module).parameters()):
            assert torch.equal(a, b), module
    assert resumed.losses == straight.losses
    with pytest.raises(ValueError, match="--warmup-steps 7"):
        Trainer(TINY, images, tmp_path / "b", warmup_steps=7)


def _exported(folder, config=TINY, seed=3):
    torch.manual_seed(seed)
    return save_face_model(FaceDiffusionModel(config), folder, dtype=torch.float16,
                           model_card={"train_steps": 7})


def test_warm_start_reproduces_the_folder_and_counts_its_steps(tmp_path):
    folder = _exported(tmp_path / "m")
    trainer = Trainer(TINY, _faces(), tmp_path / "run", init_from=folder)
    source = load_face_model(folder)
    for module in (trainer.model, trainer.ema):
        for (name, a), b in zip(module.named_parameters(), source.parameters()):
            assert a.dtype == torch.float32 and torch.equal(a, b), name
    start = trainer.settings["init_from"]
    digest = hashlib.sha256((folder / "encoder.safetensors").read_bytes()).hexdigest()
    assert start["weights_sha256"]["encoder.safetensors"] == digest and start["train_steps"] == 7
    assert "unet/diffusion_pytorch_model.safetensors" in start["weights_sha256"]
    assert trainer.settings["warmup_steps"] == 100 and trainer.steps_before == 7
    trainer.run(2, progress=False)
    card = json.loads((trainer.export() / "face_model.json").read_text())
    assert card["train_steps"] == 9 and card["run_steps"] == 2
    assert card["training"]["init_from"]["weights_sha256"] == start["weights_sha256"]

    assert Trainer(TINY, _faces(), tmp_path / "run", init_from=folder).step == 2  # resumed, not re-applied
    with pytest.raises(ValueError, match="--init-from"):
        Trainer(TINY, _faces(), tmp_path / "run", init_from=_exported(tmp_path / "other", seed=4))


def test_warm_start_refuses_another_architecture(tmp_path):
    wide = TINY.__class__(**{**TINY.to_dict(), "block_out_channels": (16, 16)})
    folder = _exported(tmp_path / "m", config=wide)
    with pytest.raises(ValueError, match=r"--init-from .* --config tiny: block_out_channels .*z_dim 64 there, 32"):
        Trainer(TINY, _faces(), tmp_path / "run", init_from=folder)
    with pytest.raises(ValueError, match="--init-from"):
        Trainer(TINY, _faces(), tmp_path / "run", init_from=tmp_path)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_bf16_autocast_runs_on_cpu(tmp_path):
    trainer = Trainer(TINY, _faces(), tmp_path, precision="bf16", log_every=1)
    trainer.run(2, progress=False)
    assert [step for step, _, _ in trainer.losses] == [1, 2]
    assert all(np.isfinite(loss) for _, loss, _ in trainer.losses)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["settings"]["precision"] == "bf16"
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_save_load_round_trip_is_exact(tmp_path):
    torch.manual_seed(0)
    model = FaceDiffusionModel(TINY).eval()
    save_face_model(model, tmp_path / "m")
    loaded = load_face_model(tmp_path / "m")
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([10.0, 900.0])
    with torch.no_grad():
        z = model.encode(x)
        assert torch.equal(loaded.encode(x), z)
        assert torch.equal(loaded.eps_model(x, t, z), model.eps_model(x, t, z))


def test_fp16_export_loads_close(tmp_path):
    torch.manual_seed(0)
    model = FaceDiffusionModel(TINY).eval()
    save_face_model(model, tmp_path / "m16", dtype=torch.float16)
    loaded = load_face_model(tmp_path / "m16")
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 900.0])
    with torch.no_grad():
        z = model.encode(x)
        assert torch.allclose(loaded.eps_model(x, t, z), model.eps_model(x, t, z), atol=5e-2)


def test_incomplete_folder_is_reported(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither"):
        load_face_model(tmp_path / "empty")


def test_unconditional_diffusers_pipeline_folder_loads(tmp_path):
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    unet.save_pretrained(tmp_path / "ddpm" / "unet")
    DDPMScheduler(num_train_timesteps=1000).save_pretrained(tmp_path / "ddpm" / "scheduler")
    model = load_face_model(tmp_path / "ddpm")
    assert model.encoder is None and model.encode(torch.zeros(1, 3, 16, 16)) is None
    x0 = al.sample(model.eps_model, model.schedule, torch.randn(1, 3, 16, 16), None, steps=3)
    assert x0.shape == (1, 3, 16, 16)


def test_discrete_schedule_from_model_works_with_sample_end_to_end():
    torch.manual_seed(0)
    model = FaceDiffusionModel(TINY).double()
    x_T = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    z = model.encode(torch.rand(2, 3, 16, 16, dtype=torch.float64) * 2 - 1).detach().requires_grad_(True)
    assert isinstance(model.schedule, al.DiscreteVP) and model.schedule.t_max == 999
    x0 = al.sample(model.eps_model, model.schedule, x_T, z, steps=5)
    g_x, g_z = torch.autograd.grad(x0.square().sum(), [x_T, z])
    assert torch.isfinite(g_x).all() and g_z.abs().sum() > 0


def test_training_pack_round_trip_and_train_from_it(tmp_path, monkeypatch):
    """A JPEG pack returns the images within JPEG error, refuses a truncated file, and trains the model."""
    import zipfile

    from adjointlib.facemodel import train
    from adjointlib.facemodel.pack import read_pack, write_pack

    images = _faces(n=5)
    path = write_pack(images, tmp_path / "pack.zip", quality=95)
    back = read_pack(path)
    assert back.shape == images.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - images.astype(int)).mean() < 2.0  # measured 1.48 grey levels at q95
    assert not list(tmp_path.glob("*.tmp"))

    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp_path / "cut.zip", "w") as dst:
        for name in src.namelist()[:-1]:  # drop the last image
            dst.writestr(name, src.read(name))
    with pytest.raises(ValueError, match="truncated"):
        read_pack(tmp_path / "cut.zip")
    with pytest.raises(ValueError, match="uint8"):
        write_pack(images.astype(np.float32), tmp_path / "bad.zip")

    monkeypatch.setattr(train, "save_face_model", lambda model, folder, **kw: folder)  # no export needed here
    train.main(["--config", "tiny", "--pack", str(path), "--out", str(tmp_path / "run"), "--steps", "3"])
    assert Trainer(TINY, images, tmp_path / "run").step == 3
    write_pack(_faces(n=2, size=8), tmp_path / "small.zip")
    with pytest.raises(SystemExit, match="16 px"):
        train.main(["--config", "tiny", "--pack", str(tmp_path / "small.zip"), "--out", str(tmp_path / "run2")])

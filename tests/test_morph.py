"""Face morphing (adjointlib.morph): the identity loss and its gradient, DiM's start, one optimisation
step reducing L*_ID, and the job's resume / crash safety.  A smooth toy ε-model behind the face model's
interface and a tiny FR network keep this fast and well conditioned (an untrained UNet is not: its DDIM
inversion does not converge); the real networks run in chapter 10 and scripts/run_morph_experiments.py."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("diffusers")

from adjointlib.facemodel import CONFIGS  # noqa: E402
from adjointlib.facemodel.networks import build_scheduler  # noqa: E402
from adjointlib.schedules import DiscreteVP  # noqa: E402
from adjointlib.faces import ARCFACE_TEMPLATE_112, FaceRecognizer  # noqa: E402
from adjointlib.morph import (  # noqa: E402
    PAIR_ORDERS, MorphSettings, dim_start, identity_loss, identity_reuse, merge_batches, method_settings,
    optimise_morph, read_records, run_morphs, select_pairs, slerp,
)
from adjointlib.morph import runner  # noqa: E402
from adjointlib import Adjoint, sample  # noqa: E402
from conftest import TanhEpsModel  # noqa: E402

SIZE = CONFIGS["tiny"].image_size


def toy_fr(dtype=torch.float32, seed=0):
    """A small random CNN behind the real FaceRecognizer interface (crop, normalise, cosine)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Tanh(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                        nn.Tanh(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16)).to(dtype).requires_grad_(False)
    return FaceRecognizer("toy", net, ARCFACE_TEMPLATE_112 * 16 / 112, 16, lambda x: x, "cosine").eval()


class ToyFaceModel(nn.Module):
    """FaceDiffusionModel's interface (config, encode, eps_model, schedule) around TanhEpsModel on
    flattened 3x16x16 images, with a linear semantic encoder; the DDPM schedule of the face models."""

    def __init__(self, dtype=torch.float32, seed=0):
        super().__init__()
        self.config = CONFIGS["tiny"]
        dim, z_dim = 3 * SIZE * SIZE, 4
        flat = TanhEpsModel(dim, z_dim, t_max=999.0, seed=seed, dtype=dtype)
        with torch.no_grad():
            flat.A.mul_(0.05)
        self.flat = flat
        self.encoder = nn.Linear(dim, z_dim).to(dtype)
        self.schedule = DiscreteVP.from_diffusers(build_scheduler(self.config))

    def encode(self, x0):
        return self.encoder(x0.flatten(1))

    def eps_model(self, x, t, z=None):
        return self.flat(x.flatten(1), t, z).view_as(x)


def tiny_model(dtype=torch.float32):
    return ToyFaceModel(dtype).requires_grad_(False)


def faces(n, seed):
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8


def test_identity_loss_is_twice_the_larger_distance_and_has_a_correct_gradient():
    system = toy_fr(torch.float64)
    morph = faces(3, 0).double()
    v_a, v_b = system(faces(3, 1).double()), system(faces(3, 2).double())
    loss = identity_loss(system, morph, v_a, v_b)
    v = system(morph)
    d_a, d_b = 1 - torch.cosine_similarity(v, v_a, dim=1), 1 - torch.cosine_similarity(v, v_b, dim=1)
    assert loss.shape == (3,)
    torch.testing.assert_close(loss, d_a + d_b + (d_a - d_b).abs())
    torch.testing.assert_close(loss, 2 * torch.maximum(d_a, d_b))
    small = morph[:1, :, ::2, ::2].clone().requires_grad_(True)  # 8x8 keeps gradcheck quick
    assert torch.autograd.gradcheck(lambda x: identity_loss(system, x, v_a[:1], v_b[:1]), (small,))
    with pytest.raises(ValueError, match="v_a, v_b"):
        identity_loss(system, morph, v_a[:2], v_b[:2])


def test_slerp_keeps_the_norm_of_orthogonal_noises_and_hits_its_ends():
    a, b = torch.zeros(2, 4), torch.zeros(2, 4)
    a[:, 0], b[:, 1] = 3.0, 3.0
    mid = slerp(a, b, 0.5)
    torch.testing.assert_close(mid.norm(dim=1), torch.full((2,), 3.0))
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    torch.testing.assert_close(slerp(a, a, 0.3), a)  # θ = 0 falls back to lerp


@pytest.mark.parametrize("sde", [False, True])
def test_dim_start_of_a_face_with_itself_reproduces_the_face(sde):
    model = tiny_model(torch.float64)  # float64: the inversion is exact up to round-off
    x = faces(2, 3).double()
    start = dim_start(model, x, x, steps=20, sde=sde, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        back = sample(model.eps_model, model.schedule, start.x_T, start.z, steps=20,
                      sampler="sde-dpm-solver-1" if sde else "ddim", noises=start.noises)
    torch.testing.assert_close(back, x, atol=1e-8, rtol=0)
    assert start.encode_nfe >= 20 and (start.noises is None) == (not sde)


def test_one_adjoint_step_reduces_the_identity_loss_and_the_gradient_converges_to_the_exact_one():
    model, system = tiny_model(), toy_fr()
    x_a, x_b = faces(2, 4), faces(2, 5)
    with torch.no_grad():
        v_a, v_b = system(x_a), system(x_b)
    start = dim_start(model, x_a, x_b, steps=20)
    settings = MorphSettings(steps=20, gradient_options={"steps": 20}, n_opt=1, lr=0.5)
    result = optimise_morph(model, system, start.x_T, start.z, v_a, v_b, settings)
    assert result.losses.shape == (2, 2)
    assert bool((result.losses[1] < result.losses[0]).all()), result.losses
    assert result.forwards == 20 + 20 + 20 and result.vjps == 20  # sample, VJP forwards, final sample
    # AdjointDEIS-1 approaches the exact discrete gradient (checkpointed backprop) at first order:
    # measured relative gaps 0.86 / 0.56 / 0.31 / 0.16 at N = M = 20 / 40 / 80 / 160 (cosines 0.76 ... 0.998).
    gaps = []
    for n in (40, 80):
        grads = {}
        for method in ("adjoint", "checkpoint"):
            x_T, z = start.x_T.clone().requires_grad_(True), start.z.clone().requires_grad_(True)
            options = {"steps": n} if method == "adjoint" else {}  # the adjoint grid M = N; checkpoint has none
            opts = MorphSettings(steps=n, gradient=method, gradient_options=options).sample_options()
            identity_loss(system, sample(model.eps_model, model.schedule, x_T, z, **opts), v_a, v_b).sum().backward()
            grads[method] = torch.cat([x_T.grad.flatten(), z.grad.flatten()])
        gaps.append(float((grads["adjoint"] - grads["checkpoint"]).norm() / grads["checkpoint"].norm()))
    assert 0.4 < gaps[1] / gaps[0] < 0.7, gaps


def test_method_presets_and_bad_settings():
    assert method_settings("adjointdeis1_ode", lr=0.01).lr == 0.01
    assert method_settings("dim").n_opt == 0
    recomputed = method_settings("adjointdeis1_ode", {"recompute": True}).sample_options()["gradient"]
    assert recomputed == Adjoint(recompute=True)
    assert method_settings("adjointdeis1_ode", {"steps": 4}).sample_options() == dict(
        steps=20, sampler="ddim", gradient=Adjoint(steps=4), params=())
    assert method_settings("adjointdeis1_sde").sde and not method_settings("adjointdeis1_ode").sde
    with pytest.raises(ValueError, match="no option"):  # an option the gradient method does not have
        method_settings("checkpoint", {"steps": 4})
    with pytest.raises(ValueError, match="cannot differentiate"):
        MorphSettings(sampler="reversible-ddim")  # the adjoint refuses a reversible sampler
    with pytest.raises(ValueError, match="unknown sampler"):
        MorphSettings(sampler="magic")
    with pytest.raises(ValueError, match="unknown gradient method"):
        MorphSettings(gradient="magic")
    with pytest.raises(ValueError, match="unknown morph method"):
        method_settings("magic")
    with pytest.raises(ValueError, match="optimiser"):
        MorphSettings(optimiser="lbfgs")
    with pytest.raises(ValueError, match="lr"):
        MorphSettings(lr=0.0)
    with pytest.raises(ValueError, match="noises"):
        optimise_morph(tiny_model(), toy_fr(), faces(1, 0), None, torch.zeros(1, 16), torch.zeros(1, 16),
                       MorphSettings(sampler="sde-dpm-solver-1", n_opt=1))


def test_bf16_autocast_optimises_and_is_refused_for_the_reversible_method():
    settings = MorphSettings(steps=20, gradient_options={"steps": 4}, n_opt=2, lr=0.1, precision="bf16")
    x_a, x_b = faces(2, 1), faces(2, 2)
    model, fr = tiny_model(), toy_fr()
    start = dim_start(model, x_a, x_b, steps=20)
    with torch.no_grad():
        v_a, v_b = fr(x_a), fr(x_b)
    fp32 = optimise_morph(model, fr, start.x_T, start.z, v_a, v_b,
                          MorphSettings(steps=20, gradient_options={"steps": 4}, n_opt=2))
    bf16 = optimise_morph(model, fr, start.x_T, start.z, v_a, v_b, settings)
    assert bf16.x0.dtype == torch.float32 and torch.isfinite(bf16.losses).all()
    assert 0 < float((bf16.losses - fp32.losses).abs().max()) < 0.05  # bf16 rounding: changed, but slightly
    with pytest.raises(ValueError, match="reversible"):
        MorphSettings(sampler="reversible-ddim", gradient="reversible", precision="bf16")
    with pytest.raises(ValueError, match="precision"):
        MorphSettings(precision="fp8")


def test_select_pairs_stratified_random_or_most_similar_and_prefix_stable():
    pairs = [{"pair": i, "gender": "female" if i < 5 else "male", "id_a": f"{i:03d}", "id_b": f"{i + 1:03d}"}
             for i in range(10)]
    assert [p["pair"] for p in select_pairs(pairs, 4, order="similar")] == [0, 5, 1, 6]
    for order in PAIR_ORDERS:
        assert select_pairs(pairs, 8, order=order)[:4] == select_pairs(pairs, 4, order=order)
    random4 = [p["pair"] for p in select_pairs(pairs, 4, seed=3)]
    assert [p < 5 for p in random4] == [True, False, True, False]  # stratified: one gender, then the other
    assert random4 == [p["pair"] for p in select_pairs(pairs, 4, seed=3)]  # seeded
    assert {tuple(p["pair"] for p in select_pairs(pairs, 4, seed=s)) for s in range(20)} != {tuple(random4)}
    assert sorted(p["pair"] for p in select_pairs(pairs)) == list(range(10))
    with pytest.raises(ValueError, match="even"):
        select_pairs(pairs, 3)
    with pytest.raises(ValueError, match="per gender"):
        select_pairs(pairs, 12)
    with pytest.raises(ValueError, match="order"):
        select_pairs(pairs, 4, order="best")


def test_identity_reuse_counts_people_in_several_pairs():
    pairs = [{"id_a": "001", "id_b": "002"}, {"id_a": "001", "id_b": "003"}, {"id_a": "004", "id_b": "005"}]
    assert identity_reuse(pairs) == {"n_pairs": 3, "n_identities": 5, "max_uses": 2, "uses": {1: 4, 2: 1},
                                     "pairs_sharing": 2}


class FakeJob:
    """MorphJob's interface on synthetic faces and the toy FR network (no FRLL, no real FR weights)."""

    def __init__(self):
        self.model, self.loss_system, self.size = tiny_model(), toy_fr(), SIZE
        self.device = torch.device("cpu")

    def contributors(self, pairs):
        x_a = torch.stack([faces(1, int(p["id_a"]))[0] for p in pairs])
        x_b = torch.stack([faces(1, int(p["id_b"]))[0] for p in pairs])
        with torch.no_grad():
            return x_a, x_b, self.loss_system(x_a), self.loss_system(x_b)

    def scores(self, images, pairs):
        return {"toy": np.tile([[0.5, 0.7]], (len(pairs), 1))}

    def thresholds(self):
        return {"toy": 0.6}


PAIRS = [{"pair": i, "id_a": f"{10 + i:03d}", "id_b": f"{20 + i:03d}", "gender": "female"} for i in range(4)]
FAST = MorphSettings(steps=20, gradient_options={"steps": 4}, n_opt=1, lr=0.1)
FAST_2 = MorphSettings(steps=20, gradient_options={"steps": 4}, n_opt=2, lr=0.1)


def test_resume_does_only_the_missing_batches(tmp_path, monkeypatch):
    job, calls = FakeJob(), []
    real = runner.optimise_morph

    def failing_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "optimise_morph", failing_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, progress=False)
    assert [r["pair"] for r in merge_batches(tmp_path)] == [0, 1]
    first = (tmp_path / "morphs" / "000_010_020.png").read_bytes()
    calls.clear()
    monkeypatch.setattr(runner, "optimise_morph", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    records = run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, progress=False)
    assert len(calls) == 1 and [r["pair"] for r in records] == [0, 1, 2, 3] == [r["pair"] for r in read_records(tmp_path)]
    assert (tmp_path / "morphs" / "000_010_020.png").read_bytes() == first
    assert all(len(r["loss"]) == 2 and r["nfe_vjp"] == 4 for r in records)
    assert run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, progress=False) == records and len(calls) == 1
    assert run_morphs(job, PAIRS[:1], FAST, tmp_path, batch_size=2, progress=False) == records and len(calls) == 1
    rows = runner.mmpmr_rows(records, job.thresholds())
    assert rows[0]["mmpmr"] == 0.0 and rows[0]["n_morphs"] == 4  # min(0.5, 0.7) is below 0.6
    assert rows[0]["mmpmr_low"] == 0.0 and 0.6 < rows[0]["mmpmr_high"] < 0.61  # Clopper-Pearson 0/4


def test_a_partial_last_batch_is_made_again_when_the_selection_grows(tmp_path):
    job = FakeJob()
    run_morphs(job, PAIRS[:3], FAST, tmp_path, batch_size=2, progress=False)
    assert [r["pair"] for r in runner._read_jsonl(tmp_path / "batches" / "0001.jsonl")] == [2]
    records = run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, progress=False)
    assert [r["pair"] for r in runner._read_jsonl(tmp_path / "batches" / "0001.jsonl")] == [2, 3]
    assert [r["pair"] for r in records] == [0, 1, 2, 3]


def test_interrupted_write_leaves_the_finished_batches_intact(tmp_path, monkeypatch):
    job = FakeJob()
    run_morphs(job, PAIRS[:2], FAST, tmp_path, batch_size=2, progress=False)
    before = (tmp_path / "batches" / "0000.jsonl").read_text()

    def crash_after_partial_write(path, data):
        path.with_name(path.name + ".tmp").write_bytes(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(runner, "_write_atomic", crash_after_partial_write)
    with pytest.raises(OSError):
        run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, progress=False)
    assert (tmp_path / "batches" / "0000.jsonl").read_text() == before
    assert not (tmp_path / "batches" / "0001.jsonl").exists()
    monkeypatch.undo()
    assert len(run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, progress=False)) == 4


def test_a_morph_does_not_depend_on_its_batch_mates(tmp_path):
    """Per-pair SDE noises and per-sample inversion: a pair alone equals the same pair in a batch (the toy
    ε-model is a matrix product, so only its batch-size-dependent round-off may differ)."""
    job = FakeJob()
    settings = MorphSettings(steps=20, gradient_options={"steps": 4}, n_opt=2, lr=0.1, sampler="sde-dpm-solver-1")
    alone = run_morphs(job, PAIRS[2:3], settings, tmp_path / "alone", batch_size=1, progress=False)
    together = run_morphs(job, PAIRS, settings, tmp_path / "together", batch_size=4, progress=False)
    assert np.allclose(alone[0]["loss"], together[2]["loss"], atol=2e-6)
    a = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "alone" / alone[0]["image"]), dtype=int)
    b = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "together" / together[2]["image"]), dtype=int)
    assert np.abs(a - b).max() <= 1


def test_sharded_ranks_merge_to_the_one_process_result(tmp_path):
    job = FakeJob()
    whole = run_morphs(job, PAIRS, FAST, tmp_path / "one", batch_size=1, progress=False)
    for rank in (1, 0):  # ranks in any order, each its own batches
        assert run_morphs(job, PAIRS, FAST, tmp_path / "two", batch_size=1, rank=rank, world_size=2,
                          progress=False) == []
        if rank == 1:
            assert sorted(p.name for p in (tmp_path / "two" / "batches").iterdir()) == ["0001.jsonl", "0003.jsonl"]
    merged = merge_batches(tmp_path / "two")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in merged]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in whole]


def test_a_folder_refuses_other_settings(tmp_path):
    job = FakeJob()
    run_morphs(job, PAIRS[:2], FAST, tmp_path, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="other settings.*settings"):
        run_morphs(job, PAIRS, MorphSettings(steps=20, gradient_options={"steps": 4}, n_opt=1, lr=0.2), tmp_path,
                   batch_size=2, progress=False)
    with pytest.raises(ValueError, match="threads"):
        threads = torch.get_num_threads()
        torch.set_num_threads(threads + 1)
        try:
            run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, progress=False)
        finally:
            torch.set_num_threads(threads)
    with torch.no_grad():  # the same settings with retrained weights: refused too
        next(job.model.parameters()).add_(1e-3)
    with pytest.raises(ValueError, match="model_sha256"):
        run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, progress=False)
    (tmp_path / "morphs.jsonl").write_text('{"pair": 0}\n{broken\n')
    with pytest.raises(ValueError, match="line 2"):
        read_records(tmp_path)


def test_command_line_runs_resumes_and_prints_the_table(tmp_path, monkeypatch, capsys):
    from adjointlib.morph import __main__ as cli

    job = FakeJob()  # one toy job: a new one's weights would depend on the global RNG state (test order)
    monkeypatch.setattr(cli, "load_face_model", lambda path: None)
    monkeypatch.setattr(cli, "MorphJob", lambda model, device: job)
    argv = ["--out", str(tmp_path), "--pairs", "2", "--order", "similar", "--n-opt", "1", "--adjoint-steps", "4",
            "--batch-size", "2"]
    rows = cli.main(argv)
    assert [r["pair"] for r in read_records(tmp_path)] == [0, 250]  # the most similar female and male pair
    assert rows[0]["n_morphs"] == 2 and "MMPMR at FMR 0.1 %" in capsys.readouterr().out
    assert json.loads((tmp_path / "mmpmr.json").read_text())["rows"] == rows
    assert cli.main(argv) == rows  # nothing left to do: the same table
    with pytest.raises(ValueError, match="other settings"):
        cli.main(argv + ["--lr", "0.5"])


def test_torchrun_two_gloo_ranks_merge_to_the_one_process_result(tmp_path):
    """The real command line under torchrun (2 CPU processes, gloo): each rank makes its batches, rank 0
    merges; the merged folder equals a one-process run's (the toy job stands in for the face model)."""
    import os
    import subprocess
    import sys

    script = str(Path(__file__).with_name("torchrun_toy_morph.py"))
    argv = ["--pairs", "4", "--order", "similar", "--n-opt", "1", "--adjoint-steps", "4", "--batch-size", "1",
            "--threads", "1"]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", script,
                    "--out", str(tmp_path / "two"), *argv], check=True, env=env, capture_output=True, timeout=600)
    subprocess.run([sys.executable, script, "--out", str(tmp_path / "one"), *argv], check=True, env=env,
                   capture_output=True, timeout=600)
    strip = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert len(read_records(tmp_path / "two")) == 4
    assert strip(read_records(tmp_path / "two")) == strip(read_records(tmp_path / "one"))
    assert sorted(p.name for p in (tmp_path / "two" / "batches").iterdir()) == [f"{k:04d}.jsonl" for k in range(4)]


# --- the main job as a user meets it (issue 14 item 9) -------------------------------------------------------------

def _optimised_batches(monkeypatch):
    """Record the pairs of each optimise_morph call of the runner (the batches actually optimised)."""
    sizes, real = [], runner.optimise_morph

    def counting(model, system, x_T, *args, **kwargs):
        sizes.append(x_T.shape[0])
        return real(model, system, x_T, *args, **kwargs)

    monkeypatch.setattr(runner, "optimise_morph", counting)
    return sizes


def test_resume_is_per_pair_and_a_partly_done_batch_makes_only_its_missing_pairs(tmp_path, monkeypatch):
    """Interrupted between two pairs' records: the finished pair is kept, the others are made as a smaller batch
    that says so (made_with), and they equal the pairs of an uninterrupted run up to round-off."""
    job = FakeJob()
    fresh = run_morphs(job, PAIRS, FAST, tmp_path / "fresh", batch_size=4, progress=False)
    assert all("made_with" not in r for r in fresh)  # a run made in its planned batches is marked nowhere
    sizes = _optimised_batches(monkeypatch)
    real_save, saved = runner._save_png, []

    def interrupted_after_one_pair(path, image):
        if len(saved) == 1:
            raise KeyboardInterrupt
        saved.append(path)
        real_save(path, image)

    monkeypatch.setattr(runner, "_save_png", interrupted_after_one_pair)
    with pytest.raises(KeyboardInterrupt):
        run_morphs(job, PAIRS, FAST, tmp_path / "resumed", batch_size=4, progress=False)
    kept = (tmp_path / "resumed" / "batches" / "0000.jsonl").read_text()
    assert [json.loads(line)["pair"] for line in kept.splitlines()] == [0]  # the finished pair is on disk
    monkeypatch.setattr(runner, "_save_png", real_save)
    records = run_morphs(job, PAIRS, FAST, tmp_path / "resumed", batch_size=4, progress=False)
    assert sizes == [4, 3]  # the interrupted batch, then only its three missing pairs
    assert [r["pair"] for r in records] == [0, 1, 2, 3] == [r["pair"] for r in read_records(tmp_path / "resumed")]
    assert (tmp_path / "resumed" / "batches" / "0000.jsonl").read_text().startswith(kept)  # pair 0 untouched
    assert "made_with" not in records[0] and all(r["made_with"] == [1, 2, 3] for r in records[1:])
    for made, planned in zip(records, fresh):  # batch composition changes round-off only
        assert np.allclose(made["loss"], planned["loss"], atol=2e-6) and made["scores"] == planned["scores"]
    assert run_morphs(job, PAIRS, FAST, tmp_path / "resumed", batch_size=4, progress=False) == records
    assert sizes == [4, 3]  # nothing left to do

    sizes.clear()  # a grown selection: the partial last batch keeps its pair and makes only the new one
    run_morphs(job, PAIRS[:3], FAST, tmp_path / "grown", batch_size=2, progress=False)
    before = (tmp_path / "grown" / "batches" / "0001.jsonl").read_text()
    records = run_morphs(job, PAIRS, FAST, tmp_path / "grown", batch_size=2, progress=False)
    assert sizes == [2, 1, 1] and (tmp_path / "grown" / "batches" / "0001.jsonl").read_text().startswith(before)
    assert [r.get("made_with") for r in records] == [None, None, None, [3]]


def test_progress_bars_show_the_optimisation_steps_with_an_eta_and_stay_silent_under_tqdm_disable(tmp_path, capsys):
    """A bar over the pairs and, inside each batch, one over the optimisation steps with its ETA and mean loss;
    by default on, and off when TQDM_DISABLE=1 (as on CI; tqdm reads it when imported, hence the subprocesses)."""
    import os
    import subprocess
    import sys

    run_morphs(FakeJob(), PAIRS[:2], FAST_2, tmp_path / "shown", batch_size=2, progress=True)
    shown = capsys.readouterr().err
    assert "morphs custom" in shown and "2/2" in shown and "pair" in shown, shown
    assert "optimising 2 morphs" in shown and "step" in shown and "mean loss" in shown and "<" in shown, shown
    run_morphs(FakeJob(), PAIRS[:2], FAST_2, tmp_path / "quiet", batch_size=2, progress=False)
    assert capsys.readouterr().err == ""
    probe = "from adjointlib.morph.runner import progress_enabled; print(progress_enabled(None))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    default = [subprocess.run([sys.executable, "-c", probe], env={**env, **extra}, capture_output=True, text=True,
                              check=True, timeout=120).stdout.strip() for extra in ({}, {"TQDM_DISABLE": "1"})]
    assert default == ["True", "False"]


def _fails_with_one_line(capsys, argv, code=2):
    from adjointlib.morph import __main__ as cli

    with pytest.raises(SystemExit) as exit_:
        cli.cli(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == code and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("python -m adjointlib.morph: error: "), err
    return line


def test_user_mistakes_end_in_one_error_line_with_status_2(tmp_path, monkeypatch, capsys):
    from adjointlib.morph import __main__ as cli

    out = str(tmp_path / "out")
    assert "even number of at least 2" in _fails_with_one_line(capsys, ["--out", out, "--pairs", "0"])
    assert "got 3" in _fails_with_one_line(capsys, ["--out", out, "--pairs", "3"])
    line = _fails_with_one_line(capsys, ["--out", out, "--pairs", "10000"])
    assert "--pairs: 10000 is more than the list has; at most 500 (250 female, 250 male pairs)" in line
    (tmp_path / "file").write_text("")
    assert "is a file" in _fails_with_one_line(capsys, ["--out", str(tmp_path / "file"), "--pairs", "2"])
    assert "which is a file" in _fails_with_one_line(capsys, ["--out", str(tmp_path / "file" / "x"), "--pairs", "2"])
    assert "--batch-size: must be at least 1" in _fails_with_one_line(capsys, ["--out", out, "--batch-size", "0"])
    assert "bf16" in _fails_with_one_line(capsys, ["--out", out, "--method", "reversible", "--precision", "bf16"])
    if not torch.cuda.is_available():
        assert "no CUDA device" in _fails_with_one_line(capsys, ["--out", out, "--device", "cuda"])
    assert "--pairs-file" in _fails_with_one_line(capsys, ["--out", out, "--pairs-file", str(tmp_path / "no.csv")])
    assert "no face model folder" in _fails_with_one_line(capsys, ["--out", out, "--model", str(tmp_path / "none")])
    # a data variable that is set but names nothing: said so, not "set the variable"
    monkeypatch.setenv("ADJOINTLIB_SHARED", str(tmp_path / "no_such_folder"))
    line = _fails_with_one_line(capsys, ["--out", out, "--pairs", "2"])
    assert f"$ADJOINTLIB_SHARED is set to {tmp_path / 'no_such_folder'}, which does not exist" in line
    # set to a folder without the weights: the loader's message in one line, noting that the variable is set
    monkeypatch.setenv("ADJOINTLIB_SHARED", str(tmp_path))
    monkeypatch.setattr(cli, "load_face_model", lambda path: tiny_model())
    line = _fails_with_one_line(capsys, ["--out", out, "--pairs", "2"])
    assert "not found" in line and f"$ADJOINTLIB_SHARED is already set, to {tmp_path}" in line
    assert not (tmp_path / "out").exists()  # nothing written by a refused command

    monkeypatch.setattr(cli, "MorphJob", lambda model, device: FakeJob())  # budget spent before any pair: no table
    monkeypatch.setattr(cli, "load_face_model", lambda path: None)
    monkeypatch.delenv("ADJOINTLIB_SHARED")
    assert cli.cli(["--out", out, "--pairs", "2", "--order", "similar", "--budget-s", "1e-9"]) == 0
    assert "no pair finished yet" in capsys.readouterr().out and not (tmp_path / "out" / "mmpmr.json").exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_morphs", interrupted)  # Ctrl-C: one line, status 130
    with pytest.raises(SystemExit) as exit_:
        cli.cli(["--out", out, "--pairs", "2"])
    err = capsys.readouterr().err
    assert exit_.value.code == 130 and "run the same command again" in err and "Traceback" not in err

    def bug(model, device):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "MorphJob", bug)  # a bug keeps its traceback
    with pytest.raises(RuntimeError, match="a bug"):
        cli.cli(["--out", out, "--pairs", "2"])


def test_help_gives_every_default(capsys):
    from adjointlib.morph import __main__ as cli

    with pytest.raises(SystemExit) as exit_:
        cli.cli(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    for shown in ("--batch-size BATCH_SIZE pairs optimised together", "(default: 8)", "(default: adjointdeis1_ode)",
                  "(default: random)", "(default: the method's, 0.1)", "(default: the method's, 50; 0 for dim)",
                  "(default: cpu)", "TQDM_DISABLE=1"):
        assert shown in text, shown
    parser = cli.build_parser()
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest not in ("help", "out"):
            assert "default" in formatter._get_help_string(action), action.dest


def test_a_refused_folder_names_each_differing_setting_with_both_values(tmp_path, monkeypatch, capsys):
    from adjointlib.morph import __main__ as cli

    job = FakeJob()
    monkeypatch.setattr(cli, "load_face_model", lambda path: None)
    monkeypatch.setattr(cli, "MorphJob", lambda model, device: job)
    argv = ["--out", str(tmp_path), "--pairs", "2", "--order", "similar", "--n-opt", "1", "--adjoint-steps", "4",
            "--batch-size", "2"]
    cli.main(argv)
    capsys.readouterr()
    line = _fails_with_one_line(capsys, argv + ["--lr", "0.5", "--batch-size", "1"])
    assert "other settings: batch_size was 2, now 1; settings.lr was 0.1, now 0.5. Resume with the same" in line
    with pytest.raises(runner.FolderError) as refused:  # under torchrun every rank refuses, not only rank 0
        run_morphs(job, PAIRS, FAST, tmp_path, batch_size=2, rank=1, world_size=2, progress=False)
    assert ("method", "adjointdeis1_ode", "custom") in refused.value.differences
    assert ("settings.gradient_options.steps", 4, 4) not in refused.value.differences

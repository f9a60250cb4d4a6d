"""FR networks: architecture, the READMEs' verification vectors, differentiability, registry."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from adjointlib.faces.crops import ARCFACE_TEMPLATE_112, images_to_tensor
from adjointlib.faces.dlib_resnet import DlibResNet, load_dlib_resnet
from adjointlib.faces.mobilefacenet import MobileFaceNet, load_mobilefacenet
from adjointlib.faces.paths import frll_dir, model_file
from adjointlib.faces.registry import FaceRecognizer, available_fr_systems, get_fr_system, register_fr_system


def _shared_reason():
    try:
        frll_dir()
        model_file("mobilefacenet", "mobilefacenet.pt")
        model_file("dlib_resnet", "dlib_face_recognition_resnet_model_v1.pth")
    except FileNotFoundError as err:
        return str(err)
    return None


needs_shared = pytest.mark.skipif(_shared_reason() is not None, reason=f"shared data absent: {_shared_reason()}")


def _png(model, name):
    from PIL import Image

    return np.asarray(Image.open(model_file(model, name)).convert("RGB"))


def test_architectures_have_the_documented_shapes_and_parameter_counts():
    mfn, dlib = MobileFaceNet().eval(), DlibResNet().eval()
    with torch.no_grad():
        assert mfn(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
        assert dlib(torch.zeros(2, 3, 150, 150)).shape == (2, 128)
    assert len(mfn.state_dict()) == 307
    assert sum(p.numel() for p in mfn.parameters()) == 999_936
    assert len(dlib.state_dict()) == 118
    assert sum(t.numel() for t in dlib.state_dict().values()) == 5_614_595
    with pytest.raises(ValueError, match="112"):
        mfn(torch.zeros(1, 3, 96, 96))
    with pytest.raises(ValueError, match="150"):
        dlib(torch.zeros(1, 3, 112, 112))


@needs_shared
def test_mobilefacenet_reproduces_the_verification_vector():
    ref = json.loads(model_file("mobilefacenet", "verify_001_03.json").read_text())
    system = get_fr_system("mobilefacenet")
    with torch.no_grad():
        emb = system.embed_crops(images_to_tensor(_png("mobilefacenet", "verify_001_03_112.png")))[0]
    np.testing.assert_allclose(emb.numpy(), ref["embedding_raw_128"], atol=1e-4)
    assert float(emb.norm()) == pytest.approx(ref["embedding_norm"], abs=1e-3)


@needs_shared
def test_dlib_resnet_reproduces_the_verification_vector():
    ref = json.loads(model_file("dlib_resnet", "verify_001_03.json").read_text())
    system = get_fr_system("dlib_resnet")
    with torch.no_grad():
        desc = system.embed_crops(images_to_tensor(_png("dlib_resnet", "verify_001_03_chip150.png")))[0]
    np.testing.assert_allclose(desc.numpy(), ref["descriptor"], atol=2e-6)
    np.testing.assert_allclose(desc.numpy(), ref["descriptor_dlib_cpp"], atol=2e-6)
    assert float(desc.norm()) == pytest.approx(ref["descriptor_norm"], abs=1e-5)


@needs_shared
def test_reference_pair_scores_from_the_readmes():
    from adjointlib.faces.crops import arcface_crop_cv2, dlib_chip_exact
    from adjointlib.faces.frll import load_frll_image, load_frll_landmarks_5pt

    keys = [("001", "neutral"), ("001", "smiling"), ("002", "neutral")]
    images = {k: load_frll_image(*k) for k in keys}
    yunet, sp5 = load_frll_landmarks_5pt(), load_frll_landmarks_5pt(source="dlib_sp5")
    mfn, dlib = get_fr_system("mobilefacenet"), get_fr_system("dlib_resnet")
    with torch.no_grad():
        e = mfn.embed_crops(images_to_tensor(np.stack([arcface_crop_cv2(images[k], yunet[k]) for k in keys])))
        d = dlib.embed_crops(images_to_tensor(np.stack([dlib_chip_exact(images[k], sp5[k]) for k in keys])))
    assert float(mfn.similarity(e[0], e[1])) == pytest.approx(0.87748, abs=1e-3)
    assert float(mfn.similarity(e[0], e[2])) == pytest.approx(-0.01157, abs=1e-3)
    assert float(dlib.distance(d[0], d[1])) == pytest.approx(0.26705, abs=1e-5)
    assert float(dlib.distance(d[0], d[2])) == pytest.approx(0.78676, abs=1e-5)


@needs_shared
def test_canonical_pipeline_is_close_to_the_direct_crops_and_differentiable():
    from adjointlib.faces.crops import arcface_crop_cv2, canonical_crop
    from adjointlib.faces.frll import load_frll_image, load_frll_landmarks_5pt

    image, lm = load_frll_image("001", "neutral"), load_frll_landmarks_5pt()[("001", "neutral")]
    mfn = get_fr_system("mobilefacenet")
    x = images_to_tensor(canonical_crop(image, lm, 64)).requires_grad_(True)
    with torch.no_grad():
        direct = mfn.embed_crops(images_to_tensor(arcface_crop_cv2(image, lm)))
    cos = mfn.similarity(mfn(x), direct).sum()
    assert float(cos.detach()) > 0.9  # zero border outside the canonical square costs a little
    (grad,) = torch.autograd.grad(cos, x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(not p.requires_grad for p in mfn.parameters())


def test_loaders_fail_clearly_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("ADJOINTLIB_SHARED", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="ADJOINTLIB_SHARED"):
        load_mobilefacenet()
    with pytest.raises(FileNotFoundError, match="ADJOINTLIB_SHARED"):
        load_dlib_resnet()
    with pytest.raises(FileNotFoundError, match="not found"):
        load_mobilefacenet(tmp_path / "missing.pt")


def test_registry_accepts_a_new_fr_system_and_validates():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3 * 16 * 16, 8)

        def forward(self, x):
            return self.fc(x.flatten(1))

    def factory(scale=1.0):
        return FaceRecognizer("tiny", Tiny(), ARCFACE_TEMPLATE_112 * 16 / 112, 16, lambda x: scale * x, "cosine")

    register_fr_system("tiny_test_system", factory, overwrite=True)
    assert "tiny_test_system" in available_fr_systems()
    assert {"mobilefacenet", "dlib_resnet"} <= set(available_fr_systems())
    system = get_fr_system("tiny_test_system", scale=2.0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    e = system(x)
    assert e.shape == (3, 8)
    s = system.similarity_matrix(e, e)
    torch.testing.assert_close(torch.diagonal(s), torch.ones(3))
    torch.testing.assert_close(system.distance(e, e), torch.zeros(3), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="already registered"):
        register_fr_system("tiny_test_system", factory)
    with pytest.raises(KeyError, match="available"):
        get_fr_system("no_such_system")
    register_fr_system("bad_test_system", lambda: nn.Identity(), overwrite=True)
    with pytest.raises(TypeError, match="FaceRecognizer"):
        get_fr_system("bad_test_system")
    with pytest.raises(ValueError, match="metric"):
        FaceRecognizer("x", Tiny(), ARCFACE_TEMPLATE_112, 16, lambda x: x, "manhattan")
    with pytest.raises(ValueError, match="canonical crops"):
        system(torch.zeros(1, 1, 32, 32))

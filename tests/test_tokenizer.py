"""tokenizer.py: SSIM equals scikit-image's, PSNR its formula, the tokenizer keeps its shapes and
its checkpoint arguments rebuild it, and batched tokenizing equals one pass."""
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.metrics import structural_similarity

import tokenizer as tok


@settings(max_examples=20)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(11, 20), st.integers(11, 20),
       st.sampled_from([0.0, 0.05, 0.3, 1.0]))
def test_ssim_equals_scikit_image(seed, channels, h, w, noise):
    rng = np.random.default_rng(seed)
    x = rng.random((2, channels, h, w))
    y = np.clip(x + noise * rng.standard_normal(x.shape), 0, 1)
    want = np.mean([structural_similarity(x[i], y[i], channel_axis=0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False, data_range=1.0) for i in range(2)])
    assert tok.ssim(torch.tensor(x), torch.tensor(y)) == pytest.approx(want, rel=1e-9, abs=1e-12)


@given(st.integers(0, 2**32 - 1), st.floats(1e-4, 0.5))
def test_psnr_is_ten_log10_of_one_over_mse(seed, noise):
    rng = np.random.default_rng(seed)
    x = rng.random((3, 1, 8, 8))
    y = x + noise * rng.choice([-1.0, 1.0], x.shape)  # every pixel off by exactly `noise`
    assert tok.psnr(torch.tensor(x), torch.tensor(y)) == pytest.approx(-10 * np.log10(noise**2), rel=1e-9)


@pytest.mark.parametrize("kind", ["vq", "ibq"])
def test_shapes_and_rebuild_from_model_args(kind):
    args = dict(channels=3, width=16, quantizer=kind, codebook_size=32, codebook_dim=8, entropy_weight=0.1,
                ema=kind == "vq")
    torch.manual_seed(0)
    model = tok.build(**args).eval()
    x = torch.rand(5, 3, 16, 12) * 2 - 1
    x_hat, q_loss, idx = model(x)
    z, tokens = model.encode(x)
    assert x_hat.shape == x.shape and q_loss.ndim == 0 and idx.shape == (5, 4, 3) and z.shape == (5, 8, 4, 3)
    assert torch.equal(tokens, idx)
    assert torch.equal(model.decode(model.quantizer.decode(idx)), x_hat)
    again = tok.build(**args)
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.eval()(x)[0], x_hat)


def test_tokenize_in_batches_equals_one_pass():
    torch.manual_seed(0)
    model = tok.build(channels=1, width=8, quantizer="ibq", codebook_size=16, codebook_dim=4).eval()
    images = torch.rand(7, 1, 8, 8)
    z, idx = tok.tokenize(model, images, batch=3)
    z1, idx1 = model.encode(images * 2 - 1)
    torch.testing.assert_close(z, z1)
    assert torch.equal(idx, idx1)
    ev = tok.evaluate(model, images, images)
    assert ev.counts.sum() == idx.numel() and ev.utilization == pytest.approx((ev.counts > 0).mean())
    assert -1 <= ev.ssim <= 1 and ev.recon.shape == images.shape and 0 <= ev.recon.min() <= ev.recon.max() <= 1


def test_export_writes_the_weights_and_arguments_as_safetensors(tmp_path):
    from safetensors import safe_open
    args = dict(channels=1, width=8, quantizer="vq", codebook_size=16, codebook_dim=4)
    model = tok.build(**args)
    torch.save(dict(model=model.state_dict(), model_args=args), tmp_path / "t.pt")
    tok.export(tmp_path / "t.pt", tmp_path / "t.safetensors")
    with safe_open(tmp_path / "t.safetensors", "pt") as f:
        assert json.loads(f.metadata()["model_args"]) == args
        assert set(f.keys()) == set(model.state_dict())
        assert torch.equal(f.get_tensor("quantizer.codebook"), model.quantizer.codebook.detach())
    assert not (tmp_path / "t.safetensors.tmp").exists()
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="^checkpoint: "):
        tok.export(tmp_path / "bad.pt", tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()

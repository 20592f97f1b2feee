"""evaluate.py: the Frechet distance equals the formula with scipy's matrix square root, the judge
scores a classifier's own labels, log.csv round-trips, and report.md is written from metrics alone."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import evaluate


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), shift=st.floats(-3, 3))
def test_frechet_distance_matches_scipy_sqrtm(seed, shift):
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 5))
    b = rng.standard_normal((150, 5)) * 2 + shift
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * sqrtm(s_a @ s_b).real)
    assert np.isclose(evaluate.frechet_distance(a, b), expected, rtol=1e-6, atol=1e-8)
    assert abs(evaluate.frechet_distance(a, a)) < 1e-8


def test_judge_recognises_easy_classes():
    """Two classes that a classifier cannot miss (dark and bright images): samples equal to the
    validation images score class accuracy 1 and a Frechet distance near 0."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = (0.1 + 0.8 * y[:, None, None, None] + 0.05 * torch.rand(200, 1, 8, 8, generator=g)).clamp(0, 1)
    data = SimpleNamespace(train_x=x[:150], train_y=y[:150], val_x=x[150:], val_y=y[150:], n_classes=2)
    m = evaluate.judge_samples(data, data.val_x, data.val_y, steps=60, seed=0)
    assert m["classifier_accuracy"] == 1.0 and m["class_accuracy"] == 1.0
    assert m["frechet_distance"] == pytest.approx(0.0, abs=1e-3)  # rounding of float32 features
    wrong = evaluate.judge_samples(data, data.val_x, 1 - data.val_y, steps=60, seed=0)
    assert wrong["class_accuracy"] == 0.0


def test_log_text_replaces_one_stage_and_reads_back(tmp_path):
    row = lambda s: dict(step=s, loss=0.5 / s, lr=1e-3, utilization="", val="")  # noqa: E731
    path = tmp_path / "log.csv"
    path.write_text(evaluate.log_text([], "ar", [row(1), row(2)]))
    path.write_text(evaluate.log_text(evaluate.read_log(path), "tokenizer", [row(1)]))
    path.write_text(evaluate.log_text(evaluate.read_log(path), "ar", [row(1)]))
    rows = evaluate.read_log(path)
    assert [(r["stage"], int(r["step"])) for r in rows] == [("tokenizer", 1), ("ar", 1)]
    assert float(rows[0]["loss"]) == 0.5
    path.write_bytes(b"\xff\xfe garbage")
    with pytest.raises(ValueError, match="log.csv"):
        evaluate.read_log(path)
    assert evaluate.read_log(tmp_path / "none.csv") == []


def test_report_is_written_from_metrics_alone(tmp_path):
    t = dict(quantizer="ibq", codebook_size=64, psnr=21.5, ssim=0.8, utilization=0.9, perplexity=50.0)
    rows = [dict(name=n, quantizer=q, ema=e, entropy_weight=w, codebook_size=k, steps=10, batch_size=8, utilization=u,
                 perplexity=10.0, psnr=20.0, seconds=1.0)
            for n, q, e, w, u in (("vq", "vq", False, 0.0, 0.2), ("ibq_entropy", "ibq", False, 0.05, 0.95))
            for k in (16, 64)]
    (tmp_path / "metrics.json").write_text(json.dumps(dict(tokenizer=t, compare={"vq": t, "ibq": t}, scale=rows)))
    evaluate.write(tmp_path, ["header"])
    report = (tmp_path / "report.md").read_text()
    assert "## Tokenizer" in report and "21.50 dB" in report and "## The IBQ claim at scale" in report
    assert "ibq_entropy: utilization 95.0 % / 95.0 %" in report

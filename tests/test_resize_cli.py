"""The command line of resize.py on synthetic checkpoints with the upstream key names and nesting (taming VQGAN's
Lightning checkpoint, LlamaGen's {"model", "args"}, SEED-Voken's Lightning checkpoint with LitEma buffers, ours, a
.safetensors, a .npy): index -> extend -> search round trips, files that load back with the same values, the
one-block search equal to the full search, and bad input (exit 2, one line, nothing written at --out)."""
import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from safetensors.torch import save_file

import resize

ROOT = Path(__file__).resolve().parents[1]
K, D = 64, 8


def codebook(seed=0):
    return torch.tensor(np.random.default_rng(seed).normal(size=(K, D)), dtype=torch.float32)


def write_checkpoint(folder, family):
    """A checkpoint laid out as the family's public code saves it; returns (path, expected rule)."""
    cb, conv = codebook(), torch.zeros(4, 3, 3, 3)
    path = folder / f"{family}.ckpt"
    if family == "taming":  # Lightning: state_dict of VQModel (encoder.down.*, quantize.embedding)
        torch.save({"state_dict": {"quantize.embedding.weight": cb, "encoder.down.0.block.0.conv1.weight": conv},
                    "epoch": 3, "global_step": 100}, path)
        return path, "distance"
    if family == "llamagen":  # vq_train.py: {"model": state_dict, "args": Namespace}; codebook_used buffer
        torch.save({"model": {"quantize.embedding.weight": cb, "quantize.codebook_used": torch.zeros(65536),
                              "encoder.conv_blocks.0.res.0.conv1.weight": conv},
                    "args": argparse.Namespace(codebook_size=K), "steps": 7}, path)
        return path, "cosine"
    if family == "seed-voken":  # Lightning, with LitEma's model_ema.* buffers
        torch.save({"state_dict": {"quantize.embedding.weight": cb, "model_ema.decay": torch.tensor(0.999),
                                   "model_ema.quantizeembeddingweight": cb + 1}}, path)
        return path, "dot"
    if family == "ours":  # train_ar.py's tokenizer.pt
        torch.save({"model": {"quantizer.codebook": cb}, "model_args": {"quantizer": "ibq"}, "step": 1}, path)
        return path, "dot"
    if family == "safetensors":
        path = folder / "codebook.safetensors"
        save_file({"quantize.embedding.weight": cb}, path)
        return path, "distance"
    path = folder / "codebook.npy"
    np.save(path, cb.numpy())
    return path, "distance"


FAMILIES = ["taming", "llamagen", "seed-voken", "ours", "safetensors", "npy"]


def run(*args):
    """main() in this process: the exit status (0 when it returns)."""
    try:
        resize.main([str(a) for a in args])
    except SystemExit as e:
        return e.code
    return 0


def data(folder, seed=1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, K, (6, 8, 8))
    latents = (codebook().numpy()[rng.integers(0, K, 40)] + rng.normal(0, 0.1, (40, D))).astype(np.float32)
    images = np.repeat(np.arange(4), 10)
    np.savez(folder / "tokens.npz", tokens=tokens)
    np.save(folder / "latents.npy", latents)
    np.save(folder / "images.npy", images)
    return tokens, latents, images


@pytest.mark.parametrize("family", FAMILIES)
def test_index_extend_search_round_trip(tmp_path, family, capsys):
    ckpt, rule = write_checkpoint(tmp_path, family)
    tokens, latents, images = data(tmp_path)
    cb = codebook().numpy()
    cb = cb / np.linalg.norm(cb, axis=1, keepdims=True) if rule == "cosine" else cb
    assert run("index", "--codebook", ckpt, "--tokens", tmp_path / "tokens.npz", "--blocks", 4,
               "--out", tmp_path / "index.safetensors") == 0
    assert f"rule {rule}" in capsys.readouterr().err
    index = resize.load_index(tmp_path / "index.safetensors")
    expect = resize.block_index(cb, 4, cooc=resize.cooccurrence(tokens, K))
    for a, b in zip(index, expect):
        np.testing.assert_array_equal(a, b)
    assert run("extend", "--codebook", ckpt, "--index", tmp_path / "index.safetensors", "-k", 3,
               "--out", tmp_path / "ext.safetensors") == 0
    (key, ext), = load_file(tmp_path / "ext.safetensors").items()
    assert key == {"npy": "codebook", "ours": "quantizer.codebook"}.get(family, "quantize.embedding.weight")
    search_rule = "dot" if rule == "dot" else "distance"
    np.testing.assert_array_equal(ext, resize.extend(cb, 3, perm=index.perm, rule=search_rule))
    assert run("search", "--codebook", ckpt, "--index", tmp_path / "index.safetensors", "--latents",
               tmp_path / "latents.npy", "--images", tmp_path / "images.npy", "--agreement",
               "--out", tmp_path / "t.npy") == 0
    assert "agreement with the full search" in capsys.readouterr().out
    z = latents / np.linalg.norm(latents, axis=1, keepdims=True) if rule == "cosine" else latents
    found = resize.block_search(z, cb, index, images=images, rule=search_rule)
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), found.idx)


@pytest.mark.parametrize("family", ["taming", "seed-voken", "llamagen"])
def test_search_with_one_block_equals_the_full_search(tmp_path, family):
    ckpt, rule = write_checkpoint(tmp_path, family)
    _, latents, _ = data(tmp_path)
    cb = codebook().numpy()
    assert run("index", "--codebook", ckpt, "--tokens", tmp_path / "tokens.npz", "--blocks", 1, "--method", "lsh",
               "--out", tmp_path / "one.safetensors") == 0
    assert run("search", "--codebook", ckpt, "--index", tmp_path / "one.safetensors", "--latents",
               tmp_path / "latents.npy", "--images", tmp_path / "images.npy", "--out", tmp_path / "t.npy") == 0
    unit = (lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)) if rule == "cosine" else (lambda x: x)
    nearest = ((unit(latents)[:, None] - unit(cb)[None]) ** 2).sum(-1).argmin(1)
    full = np.argmax(latents @ cb.T, 1) if rule == "dot" else nearest
    np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), full)


def test_rule_and_key_override_the_guess(tmp_path, capsys):
    ckpt, _ = write_checkpoint(tmp_path, "seed-voken")
    data(tmp_path)
    assert run("extend", "--codebook", f"{ckpt}:model_ema.quantizeembeddingweight", "--rule", "distance", "--index",
               write_index(tmp_path), "-k", 2, "--out", tmp_path / "ext.safetensors") == 0
    assert "rule distance" in capsys.readouterr().err
    (key, ext), = load_file(tmp_path / "ext.safetensors").items()
    np.testing.assert_array_equal(ext[:K], codebook().numpy() + 1)


def write_index(folder):
    resize.save_index(resize.block_index(codebook().numpy(), 4, method="lsh"), folder / "lsh.safetensors")
    return folder / "lsh.safetensors"


def bad_cases(folder):
    ckpt, _ = write_checkpoint(folder, "taming")
    data(folder)
    np.save(folder / "flat.npy", np.zeros(K, np.float32))
    np.save(folder / "big.npy", np.full((2, 4, 4), K))
    (folder / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")
    index = write_index(folder)
    out = folder / "out.safetensors"
    extend = ["extend", "--index", index, "-k", 2, "--out", out]
    return out, {
        "missing file": (["--codebook", folder / "none.ckpt"] + extend, "none.ckpt"),
        "missing key": (["--codebook", f"{ckpt}:decoder.weight"] + extend, "quantize.embedding.weight"),
        "not 2-D": (["--codebook", folder / "flat.npy"] + extend, "(K, d)"),
        "corrupt": (["--codebook", folder / "corrupt.ckpt"] + extend, "error"),
        "tokens out of range": (["index", "--codebook", ckpt, "--tokens", folder / "big.npy", "--out", out],
                                "--tokens"),
        "index of another codebook": (["search", "--codebook", folder / "flat.npy", "--index", index,
                                       "--latents", folder / "latents.npy", "--images", folder / "images.npy",
                                       "--out", out], "(K, d)"),
    }


@pytest.mark.parametrize("case", ["missing file", "missing key", "not 2-D", "corrupt", "tokens out of range",
                                  "index of another codebook"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, case, capsys):
    out, cases = bad_cases(tmp_path)
    args, words = cases[case]
    if args[0] not in ("index", "search"):
        args = [args[-7]] + args[:-7] + args[-6:]  # the subcommand first
    assert run(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("resize.py ") and words in err[-1] and not any("Traceback" in line for line in err)
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_the_command_line_exits_2_without_a_traceback(tmp_path):
    """As a user runs it: a subprocess, a key that is not there; the message lists the keys that are."""
    ckpt, _ = write_checkpoint(tmp_path, "llamagen")
    proc = subprocess.run([sys.executable, str(ROOT / "resize.py"), "extend", "--codebook", f"{ckpt}:nope", "--index",
                           str(write_index(tmp_path)), "-k", "2", "--out", str(tmp_path / "o.safetensors")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "quantize.codebook_used" in proc.stderr
    assert not (tmp_path / "o.safetensors").exists()

"""train_ar.py on bad input: exit status 2 and one line on stderr, never a traceback; a run folder is
never overwritten by surprise nor left holding artefacts of two configurations; a failed write
leaves the old checkpoint and no temporary. Each case is a fixed bug of the issue that found it."""
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train_ar

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "train_ar.py")
TINY = ["--quick", "--steps", "4", "--ar-steps", "4", "--classifier-steps", "4"]


def run(*args, cwd, timeout=120, preexec_fn=None):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def assert_one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    bar = re.compile(r"\|.*\[.*(it/s|s/it)\]")  # tqdm's progress bars share stderr
    lines = [line for line in r.stderr.replace("\r", "\n").splitlines() if line.strip() and not bar.search(line)]
    assert len(lines) == 1 and lines[0].startswith("train_ar.py: error: "), r.stderr[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def main(capsys):
    """train_ar.main in this process (no interpreter start-up): its result as a finished process,
    the torch settings it changes put back afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()

    def call(*args):
        try:
            train_ar.main(list(args))
            code = 0
        except SystemExit as e:
            code = e.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    yield call
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A finished tokenizer + ar run with --codebook-size 32: the 'other run' of the folder cases."""
    out = tmp_path_factory.mktemp("other") / "run"
    for stage in ("tokenizer", "ar"):
        r = run(stage, *TINY, "--codebook-size", "32", "--out", str(out), cwd=out.parent)
        assert r.returncode == 0, r.stderr[-3000:]
    return out


@pytest.mark.parametrize("args, words", [
    (["--seed", str(2**63)], ["--seed"]), (["--lr", "1e6"], ["--lr"]), (["--temperature", "1e-45"], ["--temperature"]),
    (["--codebook-size", "1"], ["--codebook-size"]), (["--top-p", "1.5"], ["--top-p"]),
    (["--quantizer", "fsq"], ["--quantizer"]),
    (["bogus"], ["command"]), (["--n-head", "3"], ["--n-embd"]), (["--width", "12"], ["--width"]),
    (["scale", "--scale-sizes", "64,1"], ["--scale-sizes"]), (["scale", "--scale-sizes", "a,b"], ["--scale-sizes"]),
    (["--resume"], ["--resume"])])
def test_bad_option_is_one_line_and_writes_nothing(main, tmp_path, args, words):
    r = main(*args, "--out", str(tmp_path / "x"))
    assert_one_line_error(r, *words)
    assert not (tmp_path / "x").exists()


def copy_run(run_folder, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run_folder, out)
    return out


def write_npz(path, images, labels=None):
    np.savez(path, images=images, **({} if labels is None else dict(labels=labels)))
    return str(path)


@pytest.mark.parametrize("images, labels, words", [
    (np.zeros((20, 4, 4), np.uint8), None, ["multiples of 4 and >= 8"]),  # tokens 1x1: no co-occurrence for resize
    (np.zeros((20, 10, 8), np.uint8), None, ["multiples of 4"]),
    (np.full((20, 8, 8), 2.0), None, ["[0, 1]"]), (np.full((20, 8, 8), np.nan), None, ["[0, 1]"]),
    (np.zeros((20, 8, 8, 2)), None, ["(N, H, W)"]), (np.zeros((20, 8, 8)), np.arange(19), ["labels"]),
    (np.zeros((20, 8, 8)), -np.ones(20, np.int64), ["labels"]), (np.zeros((20, 8, 8)), np.zeros(20), ["labels"])])
def test_bad_data_is_refused_before_training(main, tmp_path, images, labels, words):
    r = main("all", *TINY, "--data", write_npz(tmp_path / "d.npz", images, labels), "--out", str(tmp_path / "x"))
    assert_one_line_error(r, "--data", *words)
    assert not list((tmp_path / "x").glob("*.pt"))


def test_missing_or_corrupt_data_file(main, tmp_path):
    assert_one_line_error(main("tokenizer", *TINY, "--data", str(tmp_path / "nope.npz"), "--out", str(tmp_path / "x")),
                          "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert_one_line_error(main("tokenizer", *TINY, "--data", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "x")),
                          "bad.npz")


def test_non_square_labelled_images_run_every_stage(main, tmp_path):
    """Fixed bug: the judge's classifier assumed square images and failed in the sample stage."""
    rng = np.random.default_rng(0)
    data = write_npz(tmp_path / "d.npz", rng.random((60, 16, 8)), rng.integers(0, 3, 60))
    r = main("all", *TINY, "--codebook-size", "16", "--data", data, "--out", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path / "x" / "metrics.json").read_text())["samples"]["class_accuracy"] is not None


def test_out_naming_a_file(main, tmp_path):
    (tmp_path / "f").write_text("mine")
    assert_one_line_error(main("tokenizer", *TINY, "--out", str(tmp_path / "f")), "--out")
    assert (tmp_path / "f").read_text() == "mine"


def test_a_stage_in_a_folder_of_another_run_uses_its_config_or_refuses(main, run_folder, tmp_path):
    """Fixed bug: `tokenizer --quick` in a K = 128 folder retrained a K = 64 tokenizer beside its ar.pt."""
    before = {p.name: p.read_bytes() for p in run_folder.iterdir()}
    for args, word in ((["tokenizer", "--quick"], "--codebook-size"),
                       (["ar", "--codebook-size", "64"], "--codebook-size"),
                       (["all", *TINY], "--codebook-size")):
        assert_one_line_error(main(*args, "--out", str(run_folder)), str(run_folder), word)
    assert {p.name: p.read_bytes() for p in run_folder.iterdir()} == before
    r = main("sample", "--out", str(run_folder))  # no option: the folder's own configuration
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(np.load(run_folder / "samples.npz")["labels"]) == 10 * train_ar.QUICK["samples_per_class"]


def test_force_starts_afresh_without_old_artefacts(main, run_folder, tmp_path):
    fresh = copy_run(run_folder, tmp_path)
    r = main("tokenizer", *TINY, "--codebook-size", "16", "--force", "--out", str(fresh))
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (fresh / "ar.pt").exists()  # the other run's generator does not stay beside this tokenizer
    assert json.loads((fresh / "config.json").read_text())["codebook_size"] == 16


@pytest.mark.parametrize("damage, words", [
    (lambda ck: ck["model"].pop(next(iter(ck["model"]))), ["does not hold"]),
    (lambda ck: ck["model_args"].update(codebook_size=7), ["does not hold"]),
    (lambda ck: ck["model_args"].pop("width"), ["does not hold"]),
    (lambda ck: next(v for v in ck["model"].values() if v.is_floating_point()).fill_(float("nan")), ["NaN"])])
def test_a_checkpoint_that_loads_but_is_wrong(main, run_folder, tmp_path, damage, words):
    out = copy_run(run_folder, tmp_path)
    ck = torch.load(out / "tokenizer.pt", weights_only=True)
    damage(ck)
    torch.save(ck, out / "tokenizer.pt")
    assert_one_line_error(main("ar", "--out", str(out)), "tokenizer.pt", *words)


def test_truncated_checkpoint_and_stray_files(main, run_folder, tmp_path):
    out = copy_run(run_folder, tmp_path)
    good = (out / "ar.pt").read_bytes()
    (out / "stray.pt").write_bytes(b"garbage")  # fixed bug: the curves figure loaded every *.pt it found
    (out / "ar.pt").write_bytes(good[: len(good) // 2])
    assert_one_line_error(main("sample", "--out", str(out)), "ar.pt")
    assert (out / "ar.pt").read_bytes() == good[: len(good) // 2]
    (out / "ar.pt").write_bytes(good)
    assert main("sample", "--out", str(out)).returncode == 0


@pytest.mark.parametrize("name, text, words", [
    ("metrics.json", '{"tokenizer": ', ["metrics.json"]), ("metrics.json", "[1, 2]", ["metrics.json"]),
    ("config.json", "[1]", ["config.json"]), ("config.json", None, ["config.json", "codebook-size"]),
    ("log.csv", b"\xff\xfe\x00garbage", ["log.csv"])])
def test_damaged_run_files_are_one_line_errors(main, run_folder, tmp_path, name, text, words):
    out = copy_run(run_folder, tmp_path)
    if text is None:  # a config.json whose values are not valid options
        config = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps(dict(config, codebook_size=-3)))
    else:
        (out / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    assert_one_line_error(main("sample", "--out", str(out)), *words)


def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_failed_checkpoint_write_keeps_the_old_and_no_temporary(run_folder, tmp_path):
    out = copy_run(run_folder, tmp_path)
    old = (out / "tokenizer.pt").read_bytes()
    r = run("tokenizer", "--out", str(out), cwd=tmp_path, preexec_fn=limit_file_size)  # trains again, then cannot save
    assert_one_line_error(r, "cannot write")
    assert (out / "tokenizer.pt").read_bytes() == old and not list(out.glob("*.tmp"))


def test_divergence_names_the_step(tmp_path, capsys):
    """Fixed bug: a diverging run ended in a traceback about NaN deep in the quantizer."""
    cfg = train_ar.Config(out=str(tmp_path), steps=5, ckpt_every=100)
    env = train_ar.Env(0, 1, torch.device("cpu"), tmp_path)
    model = torch.nn.Linear(2, 1)

    def loss_fn(m, b, step):
        return m(torch.ones(1, 2)).sum() * (float("nan") if step == 2 else 1.0)

    with pytest.raises(SystemExit) as e:
        train_ar.train("probe", model, {}, loss_fn, 16, cfg.steps, 0.1, cfg, env, batch_size=4)
    assert e.value.code == 2
    assert "probe: training diverged at step 3" in capsys.readouterr().err

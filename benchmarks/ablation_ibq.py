"""Why does plain VQ reconstruct better than IBQ at K = 1024? The tokenizer of train_ar.py trained
with one change of the recipe at a time, on the default data (MNIST), each into a run folder of its
own, and a markdown table of validation PSNR, SSIM, utilization and perplexity.

    python benchmarks/ablation_ibq.py [--steps N] [--out runs/ablation] [--quick]

Every row is `python train_ar.py tokenizer` with the options shown, so any row can be run again by
hand; the rows' metrics come from the run folders' metrics.json.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [
    ("VQ (the papers' baseline)", ["--quantizer", "vq", "--entropy-weight", "0"]),
    ("VQ + EMA + dead-code restarts", ["--quantizer", "vq", "--ema", "--entropy-weight", "0"]),
    ("IBQ, entropy weight 0", ["--entropy-weight", "0"]),
    ("IBQ, entropy weight 0.05 (the public recipe)", []),
    ("IBQ, entropy weight 0.1 (our earlier default)", ["--entropy-weight", "0.1"]),
    ("IBQ, temperature 0.1", ["--temperature", "0.1"]),
    ("IBQ, learning rate / 2", ["--lr", "1e-3"]),
    ("IBQ, twice the steps", "steps"),
    ("IBQ, codebook init scale 0.1", ["--init-scale", "0.1"]),
    ("IBQ, d = 8", ["--codebook-dim", "8"]),
    ("IBQ, k-means init", ["--kmeans-init"]),
]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="tokenizer steps (default: train_ar.py's)")
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--quick", action="store_true", help="train_ar.py's --quick sizes (a smoke run)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    import train_ar
    steps = args.steps or (train_ar.QUICK["steps"] if args.quick else train_ar.Config.steps)
    print("| variant | options | PSNR (dB) | SSIM | utilization | perplexity | seconds |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for i, (name, options) in enumerate(VARIANTS):
        options = ["--steps", str(2 * steps)] if options == "steps" else options + ["--steps", str(steps)]
        out = Path(args.out) / f"{i:02d}"
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(ROOT / "train_ar.py"), "tokenizer", *options, "--out", str(out),
                            "--force", *(["--quick"] if args.quick else [])], capture_output=True, text=True)
        if r.returncode:
            print(f"| {name} | failed: {r.stderr.strip().splitlines()[-1]} | | | | | |", flush=True)
            continue
        t = json.loads((out / "metrics.json").read_text())["tokenizer"]
        print(f"| {name} | `{' '.join(options)}` | {t['psnr']:.2f} | {t['ssim']:.3f} | {t['utilization']:.3f} | "
              f"{t['perplexity']:.0f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()

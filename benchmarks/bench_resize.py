"""Stage times of a HyperHill shrink at the IBQ scale (K = 16384 codes of d = 256 -> 4096), beside
the shrinks a user would pick instead (fixed runs as in the paper, usage-weighted k-means, random).

Tokens are synthetic but spatially coherent (blocks of one code with scattered neighbours), so the
co-occurrence graph has the sparsity of a real token map. Prints a markdown table.
Run through the lock:  flock /tmp/bench.lock python benchmarks/bench_resize.py [--quick]
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hilbert  # noqa: E402
import resize  # noqa: E402
import vq  # noqa: E402


def synthetic(k, d, images, side, seed=0):
    rng = np.random.default_rng(seed)
    codebook = rng.standard_normal((k, d)).astype(np.float32)
    coarse = rng.integers(0, k, (images, side // 4, side // 4))
    tokens = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)  # (B, side, side): blocks of 4 x 4
    noisy = rng.random(tokens.shape) < 0.3
    tokens = np.where(noisy, (tokens + rng.integers(-8, 9, tokens.shape)) % k, tokens)
    return codebook, tokens.astype(np.int64)


def timed(rows, name, fn):
    t = time.perf_counter()
    out = fn()
    rows.append((name, time.perf_counter() - t))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="K = 1024, d = 32, 64k tokens")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    k, d, images, side = (1024, 32, 64, 32) if args.quick else (16384, 256, 1024, 32)
    size = k // 4
    codebook, tokens = synthetic(k, d, images, side)
    usage = np.bincount(tokens.reshape(-1), minlength=k).astype(np.float64)

    rows = []
    cooc = timed(rows, f"co-occurrence of {tokens.size:,} tokens", lambda: resize.cooccurrence(tokens, k))
    emb = timed(rows, f"Poincare embedding fit ({cooc[1].shape[0]:,} edges, dim 10, 2 + 10 epochs of 8 k draws)",
                lambda: resize.embedding(cooc, k))
    perm = timed(rows, "enhance + Hilbert order (6 axes x 10 bits)",
                 lambda: hilbert.order(resize.enhance(codebook, emb), bits=10, dims=6))
    x, w = codebook[perm], usage[perm].astype(np.float64)
    starts = timed(rows, f"optimal segmentation (runs <= {4 * math.ceil(k / size)})",
                   lambda: resize.optimal_runs(x, w, size, max_run=4 * math.ceil(k / size)))
    timed(rows, "merge runs + mapping", lambda: resize.merge_runs(codebook, w[np.argsort(perm)], perm, starts))
    stages = sum(t for _, t in rows)

    peers = []
    whole = timed(peers, "hyperhill (whole shrink call)",
                  lambda: resize.shrink(codebook, size, usage=usage, cooc=cooc))
    timed(peers, "hyperhill, fixed runs (the paper)",
          lambda: resize.shrink(codebook, size, usage=usage, cooc=cooc, segmentation="fixed"))
    timed(peers, "hilbert ablation (no embedding)",
          lambda: resize.shrink(codebook, size, method="hilbert", usage=usage))
    timed(peers, "random subset + nearest mapping", lambda: resize.shrink(codebook, size, method="random"))
    iters = 25 if args.quick else 3
    timed(peers, f"usage-weighted k-means ({iters} iterations) + mapping",
          lambda: vq.nearest(codebook, vq.kmeans(codebook, size, iters=iters, weights=usage)))
    assert whole[0].shape == (size, d)

    print(f"\nShrink K = {k}, d = {d} -> {size}; {args.threads} threads\n")
    print("| stage | seconds |\n| --- | ---: |")
    for name, t in rows:
        print(f"| {name} | {t:.2f} |")
    print(f"| **sum of stages** | **{stages:.2f}** |\n")
    print("| whole shrink | seconds | ratio to hyperhill |\n| --- | ---: | ---: |")
    for name, t in peers:
        print(f"| {name} | {t:.2f} | {t / peers[0][1]:.2f} |")


if __name__ == "__main__":
    main()

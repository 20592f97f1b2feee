"""hilbert.encode / decode against the `hilbertcurve` package, same run, as speed-up ratios.

hilbertcurve is scalar Python (15-70 µs a point), so it is timed on `--ref-points` points and its
time scaled per point to the size of our run; our functions are timed on all `--points` points.
Correctness is compared on the reference points (as Python ints, also for n·bits > 64).

Last, HyperHill's setting (Alg. 3): `order(x, bits=24, bounds=(-1, 1))` of K = 16384 codes of
n = 288 dimensions (6912-bit indices), against hilbertcurve's indices of the same cells (timed on
`--ref-codes` codes and scaled; its sort of Python ints is not counted).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hilbertcurve.hilbertcurve import HilbertCurve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hilbert  # noqa: E402

CASES = [(2, 16), (3, 16), (8, 8), (64, 4)]
TARGET = {(2, 16): None, (3, 16): 100, (8, 8): 100, (64, 4): 50}


def best(f, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--ref-points", type=int, default=10_000)
    ap.add_argument("--ref-codes", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2,000 points, 500 reference")
    args = ap.parse_args()
    N, M = (2000, 500) if args.quick else (args.points, args.ref_points)
    R = 50 if args.quick else args.ref_codes
    # One thread, as hilbertcurve and NumPy use: on a shared 2-core machine two OpenMP threads that
    # wait for each other at each of the many small operations make torch timings swing 100-fold.
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{N} points (hilbertcurve timed on {M}, scaled per point); best of 3 runs for "
          "hilbertcurve, of 5 for ours\n")
    print("| n | bits | hilbertcurve enc s | numpy enc s | torch enc s | enc speed-up (np / torch) "
          "| hilbertcurve dec s | numpy dec s | torch dec s | dec speed-up (np / torch) | target | equal |")
    print("|" + " --- |" * 12)
    for n, bits in CASES:
        c = rng.integers(0, 2**bits, (N, n))
        hc = HilbertCurve(bits, n)
        ref_c = c[:M].tolist()
        t_re, h = best(lambda: hc.distances_from_points(ref_c), 3)
        t_rd, pts = best(lambda: hc.points_from_distances(h), 3)
        t_re, t_rd = t_re * N / M, t_rd * N / M
        t_ne, w = best(lambda: hilbert.encode(c, bits), 5)
        t_nd, back = best(lambda: hilbert.decode(w, n, bits), 5)
        ct = torch.from_numpy(c)
        t_te, wt = best(lambda: hilbert.encode(ct, bits), 5)
        t_td, _ = best(lambda: hilbert.decode(wt, n, bits), 5)
        ours = [sum(int(v) << (32 * (w.shape[1] - 1 - k)) for k, v in enumerate(r)) for r in w[:M]]
        equal = (ours == [int(v) for v in h] and np.array_equal(np.asarray(pts), c[:M])
                 and np.array_equal(back, c) and np.array_equal(wt.numpy(), w))
        print(f"| {n} | {bits} | {t_re:.2f} | {t_ne:.3f} | {t_te:.3f} | {t_re / t_ne:.0f}× / {t_re / t_te:.0f}× "
              f"| {t_rd:.2f} | {t_nd:.3f} | {t_td:.3f} | {t_rd / t_nd:.0f}× / {t_rd / t_td:.0f}× "
              f"| {TARGET[(n, bits)] or '-'}× | {equal} |")
    hyperhill(2048 if args.quick else 16384, R)


def hyperhill(K, R):
    """order in HyperHill's setting, NumPy and torch, against hilbertcurve's indices."""
    x = np.tanh(np.random.default_rng(1).normal(0, 0.5, (K, 288))).astype(np.float32)  # codes in (-1, 1)
    t_np, perm = best(lambda: hilbert.order(x, bits=24, bounds=(-1.0, 1.0)), 3)
    t_t, perm_t = best(lambda: hilbert.order(torch.from_numpy(x), bits=24, bounds=(-1.0, 1.0)), 3)
    cells = hilbert.to_grid(x[:R], 24, bounds=(-1.0, 1.0)).tolist()
    t_ref, h = best(lambda: HilbertCurve(24, 288).distances_from_points(cells), 1)
    t_ref *= K / R
    # a fixed grid does not depend on the other codes: the first R codes keep hilbertcurve's order
    equal = (np.array_equal(perm[perm < R], sorted(range(R), key=lambda i: h[i]))
             and np.array_equal(perm_t.numpy(), perm))
    print(f"\nHyperHill's order (Alg. 3), K = {K} codes of n = 288 dims at 24 bits, bounds (-1, 1): "
          f"numpy {t_np:.2f} s, torch {t_t:.2f} s; hilbertcurve's indices {t_ref:.1f} s "
          f"({t_ref / t_np:.0f}× / {t_ref / t_t:.0f}×); order equal: {equal}")


if __name__ == "__main__":
    main()

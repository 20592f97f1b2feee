"""IBQ forward + backward, float32: ibq.py (NumPy and torch, the same code) against the public
dense torch formulation (and, without the entropy loss, a torch scaled_dot_product_attention variant).

Two tables: a tokenizer's shape (d = 32, N = 4096 vectors = 64 images of 8×8 latents, K = 16384 and
2^16, N(0, 1) features and codes as the module's init; with and without the entropy loss, weight
0.05 and T = 0.01 as the public configs) and the paper's (d = 256, K up to 2^18, values 0.1·N(0, 1),
no entropy loss). Each variant runs in a fresh subprocess, so its peak memory is honest: peak RSS
(VmHWM) minus the RSS after the inputs are made. The variants of one row run in turn, `--repeat`
times, so each ratio compares runs made under the same load; ranges over the repeats are printed.
A dense run whose estimated memory exceeds --max-gib is not started.
Run through `flock /tmp/bench.lock python benchmarks/bench_ibq.py [--quick] [--table tokenizer]`.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ENTROPY_WEIGHT, TEMPERATURE = 0.05, 0.01
# N×K float32 matrices at the peak of autograd (measured at N = 4096, K = 16384: 5, 9 and 4; one spare)
DENSE_MATRICES = {("dense torch", False): 6, ("dense torch", True): 10, ("torch sdpa", False): 5}
TABLES = {  # (N, K, d, entropy, scale of the N(0, 1) inputs)
    "tokenizer": [(4096, 2**14, 32, True, 1.0), (4096, 2**14, 32, False, 1.0), (4096, 2**16, 32, True, 1.0)],
    "paper": [(n, k, 256, False, 0.1) for k in (2**14, 2**16, 2**18) for n in (1024, 4096)],
}
QUICK = {"tokenizer": [(1024, 2**12, 32, True, 1.0)], "paper": [(256, 2**12, 256, False, 0.1)]}


def rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def dense(z, e, g, entropy):
    """The public formulation under autograd (SEED-Voken's IndexPropagationQuantize and
    compute_entropy_loss), on (N, d) rows: every matrix below is N×K."""
    import torch
    import torch.nn.functional as F
    logits = z @ e.T
    soft = torch.softmax(logits, dim=1)
    hard = F.one_hot(logits.argmax(1), e.shape[0]).to(z.dtype)
    z_q = (hard - soft.detach() + soft) @ e
    z_q2 = hard @ e
    loss = ((z_q - z) ** 2).mean() + ((z_q2.detach() - z) ** 2).mean() + 0.25 * ((z_q2 - z.detach()) ** 2).mean()
    if entropy:
        probs = torch.softmax(logits / TEMPERATURE, -1)
        log_probs = torch.log_softmax(logits / TEMPERATURE + 1e-5, -1)
        avg_probs = probs.mean(0)
        avg_entropy = -(avg_probs * torch.log(avg_probs + 1e-5)).sum()
        sample_entropy = -(probs * log_probs).sum(-1).mean()
        loss = loss + ENTROPY_WEIGHT * (sample_entropy - avg_entropy)
    ((z_q * g).sum() + loss).backward()


def sdpa(z, e, g, entropy):
    """z_q = E[idx] + sdpa(z, E, sg(E)) − sg(the same): V detached, else dE gains a wrong Sᵀ G."""
    import torch
    import torch.nn.functional as F
    with torch.no_grad():
        idx = torch.cat([(zb @ e.T).argmax(1) for zb in z.split(256)])
    hard = e[idx]
    soft = F.scaled_dot_product_attention(z[None], e[None], e.detach()[None], scale=1.0)[0]
    z_q = hard + soft - soft.detach()
    loss = ((z_q - z) ** 2).mean() + ((hard.detach() - z) ** 2).mean() + 0.25 * ((hard - z.detach()) ** 2).mean()
    ((z_q * g).sum() + loss).backward()


def worker(variant, n, k, d, entropy, scale, threads):
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ibq
    rng = np.random.default_rng(0)
    z, e, g = (rng.standard_normal(s, dtype=np.float32) * np.float32(scale) for s in [(n, d), (k, d), (n, d)])
    if variant != "ibq numpy":
        z, e, g = (torch.from_numpy(a) for a in (z, e, g))
    if variant not in ("ibq numpy", "ibq torch"):
        z.requires_grad_(True)
        e.requires_grad_(True)
    weight = ENTROPY_WEIGHT if entropy else 0.0

    def step(z, e, g):
        if not variant.startswith("ibq"):
            (dense if variant == "dense torch" else sdpa)(z, e, g, entropy)
            return 0.0
        t = time.perf_counter()
        cache = ibq.ibq_forward(z, e, entropy_weight=weight, temperature=TEMPERATURE).cache
        forward = time.perf_counter() - t
        ibq.ibq_backward(cache, g)
        return forward

    small = [x[:16].clone().detach().requires_grad_(x.requires_grad) if hasattr(x, "clone") else x[:16].copy()
             for x in (z, e, g)]
    step(*small)  # warm-up on copies: library initialisation is not the algorithm's cost
    del small
    base = rss_kib("VmRSS")
    t = time.perf_counter()
    forward = step(z, e, g)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "forward": forward, "extra_gib": (rss_kib("VmHWM") - base) / 2**20}))


def run(variant, row, threads):
    n, k, d, entropy, scale = row
    env = {**os.environ, **{v: str(threads) for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--worker", variant,
                          *map(str, (n, k, d, int(entropy), scale))], capture_output=True, text=True, env=env)
    if out.returncode:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def span(values, fmt):
    lo, hi = min(values), max(values)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else fmt.format(lo) + "–" + fmt.format(hi)


def table(rows, repeat, threads, max_gib):
    variants = ["ibq numpy", "ibq torch", "dense torch", "torch sdpa"]
    print("| N | K | d | entropy | " + " | ".join(variants) + " | numpy / dense: time | torch / dense: time, memory |")
    print("| ---: | ---: | ---: | --- |" + " ---: |" * (len(variants) + 2))
    for row in rows:
        n, k, d, entropy, _ = row
        res = {v: [] for v in variants}
        for _ in range(repeat):
            for v in variants:
                need = DENSE_MATRICES.get((v, entropy), 0) * n * k * 4 / 2**30
                if (v, entropy) == ("torch sdpa", True) or need > max_gib:
                    continue
                r = run(v, row, threads)
                if r is not None:
                    res[v].append(r)
        cells = []
        for v in variants:
            need = DENSE_MATRICES.get((v, entropy), 0) * n * k * 4 / 2**30
            if (v, entropy) == ("torch sdpa", True):
                cells.append("—")
            elif need > max_gib:
                cells.append(f"does not fit (~{need:.0f} GiB)")
            elif not res[v]:
                cells.append("failed")
            else:
                cells.append(span([r["seconds"] for r in res[v]], "{:.2f}") + " s, "
                             + span([r["extra_gib"] for r in res[v]], "{:.2f}") + " GiB")
        ratios = []
        for ours in ("ibq numpy", "ibq torch"):
            pairs = list(zip(res[ours], res["dense torch"]))  # runs of the same round
            if not pairs:
                ratios.append("—")
                continue
            text = span([a["seconds"] / b["seconds"] for a, b in pairs], "{:.2f}")
            if ours == "ibq torch":
                text += ", " + span([a["extra_gib"] / b["extra_gib"] for a, b in pairs], "{:.3f}")
            ratios.append(text)
        flag = "yes" if entropy else "no"
        print(f"| {n} | {k} | {d} | {flag} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |", flush=True)
    for v in ("ibq numpy", "ibq torch"):  # where ibq's time goes, last row
        if res[v]:
            print(f"\n{v}, last row: forward {span([r['forward'] for r in res[v]], '{:.2f}')} s of "
                  f"{span([r['seconds'] for r in res[v]], '{:.2f}')} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke sizes")
    p.add_argument("--table", choices=[*TABLES, "all"], default="all")
    p.add_argument("--repeat", type=int, default=3, help="runs of each variant per row")
    p.add_argument("--max-gib", type=float, default=8.0, help="skip dense runs estimated above this")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="for NumPy's BLAS and torch alike")
    p.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        v, n, k, d, entropy, scale = args.worker
        worker(v, int(n), int(k), int(d), bool(int(entropy)), float(scale), args.threads)
        return
    for name in (TABLES if args.table == "all" else [args.table]):
        print(f"\n{name}: forward + backward, float32, {args.threads} threads, {args.repeat} runs each "
              "(ranges); time in s, peak extra memory in GiB\n")
        table((QUICK if args.quick else TABLES)[name], args.repeat, args.threads, args.max_gib)


if __name__ == "__main__":
    main()

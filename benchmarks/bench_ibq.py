"""IBQ forward + backward, float32, d = 256: ibq.py (NumPy and torch, the same code) against the
public dense torch formulation and a torch scaled_dot_product_attention variant.

Each variant runs in a fresh subprocess, so its peak memory is honest: peak RSS (VmHWM) minus the
RSS after the inputs are made. A dense run whose estimated memory exceeds --max-gib is not started.
Run through `flock /tmp/bench.lock python benchmarks/bench_ibq.py [--quick]`.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

D = 256
# N×K float32 matrices alive at the peak of autograd: logits, soft, hard, one-hot, their gradients
DENSE_MATRICES = {"dense torch": 6, "torch sdpa": 4}


def rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def dense(z, e, g):
    """The public formulation under autograd: three N×K matrices and their gradients."""
    import torch
    import torch.nn.functional as F
    logits = z @ e.T
    soft = torch.softmax(logits, dim=1)
    hard = F.one_hot(logits.argmax(1), e.shape[0]).to(z.dtype)
    z_q = (hard - soft.detach() + soft) @ e
    z_q2 = hard @ e
    loss = ((z_q - z) ** 2).mean() + ((z_q2.detach() - z) ** 2).mean() + 0.25 * ((z_q2 - z.detach()) ** 2).mean()
    ((z_q * g).sum() + loss).backward()


def sdpa(z, e, g):
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


def worker(variant, n, k, threads):
    import numpy as np
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ibq
    rng = np.random.default_rng(0)
    z, e, g = (rng.standard_normal(s, dtype=np.float32) * 0.1 for s in [(n, D), (k, D), (n, D)])
    if variant != "ibq numpy":
        z, e, g = (torch.from_numpy(a) for a in (z, e, g))
    if variant not in ("ibq numpy", "ibq torch"):
        z.requires_grad_(True)
        e.requires_grad_(True)

    def step(z, e, g):
        if variant.startswith("ibq"):
            _, _, _, cache = ibq.ibq_forward(z, e)
            ibq.ibq_backward(cache, g)
        else:
            (dense if variant == "dense torch" else sdpa)(z, e, g)

    small = [x[:16].clone().detach().requires_grad_(x.requires_grad) if hasattr(x, "clone") else x[:16].copy()
             for x in (z, e, g)]
    step(*small)  # warm-up on copies: library initialisation is not the algorithm's cost
    del small
    base = rss_kib("VmRSS")
    t = time.perf_counter()
    step(z, e, g)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "extra_gib": (rss_kib("VmHWM") - base) / 2**20}))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke sizes")
    p.add_argument("--max-gib", type=float, default=10.0, help="skip dense runs estimated above this")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]), args.threads)
        return
    sizes = [(256, 2**12), (512, 2**13)] if args.quick else [(n, k) for k in (2**14, 2**16, 2**18) for n in (1024, 4096)]
    variants = ["ibq numpy", "ibq torch", "dense torch", "torch sdpa"]
    print(f"forward + backward, float32, d = {D}, {args.threads} threads; time in s, peak extra memory in GiB\n")
    print("| N | K | " + " | ".join(variants) + " | ibq torch / dense: time, memory |")
    print("| ---: | ---: |" + " ---: |" * (len(variants) + 1))
    for n, k in sizes:
        cells, res = [], {}
        for v in variants:
            need = DENSE_MATRICES.get(v, 0) * n * k * 4 / 2**30
            if need > args.max_gib:
                cells.append(f"does not fit (~{need:.0f} GiB)")
                continue
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--worker", v, str(n), str(k)],
                                 capture_output=True, text=True)
            if out.returncode:
                cells.append("failed")
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            res[v] = json.loads(out.stdout.strip().splitlines()[-1])
            cells.append(f"{res[v]['seconds']:.2f} s, {res[v]['extra_gib']:.2f} GiB")
        ratio = "—"
        if "ibq torch" in res and "dense torch" in res:
            a, b = res["ibq torch"], res["dense torch"]
            ratio = f"{a['seconds'] / b['seconds']:.2f}, {a['extra_gib'] / b['extra_gib']:.2f}"
        print(f"| {n} | {k} | " + " | ".join(cells) + f" | {ratio} |", flush=True)


if __name__ == "__main__":
    main()

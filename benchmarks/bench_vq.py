"""vq.nearest against faiss IndexFlatL2 and torch (cdist + argmin): time, peak extra memory, agreement.

Each variant runs in a fresh subprocess, so its peak extra memory is honest whoever allocates it:
the growth of the process's peak RSS (ru_maxrss) over its baseline after the inputs exist, which
sees BLAS, faiss and torch buffers that tracemalloc misses; NumPy's own allocations are also
reported by tracemalloc. float32, d = 256, 2 threads everywhere.
    flock /tmp/bench.lock python benchmarks/bench_vq.py [--quick]
"""
import argparse
import json
import os
import subprocess
import sys
import time

THREADS = 2


def run_variant(name, n, k, d, repeats):
    """In a child process: time one variant, return its indices' path and its memory figures."""
    import resource
    import tracemalloc

    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, d), dtype=np.float32)
    e = rng.standard_normal((k, d), dtype=np.float32)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    if name == "vq.nearest":
        import vq
        fn = lambda: vq.nearest(z, e)
    elif name == "faiss IndexFlatL2":
        import faiss
        faiss.omp_set_num_threads(THREADS)
        def fn():
            index = faiss.IndexFlatL2(d)  # adding the codes is part of the job (a copy of them)
            index.add(e)
            return index.search(z, 1)[1][:, 0]
    else:
        zt, et = torch.from_numpy(z), torch.from_numpy(e)
        rows = max(1, 2**26 // (4 * k))  # blocks of 64 MiB, as vq.nearest's budget; a whole N x K would not fit
        fn = lambda: torch.cat([torch.cdist(zt[i:i + rows], et).argmin(1) for i in range(0, n, rows)]).numpy()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    idx = np.asarray(fn())
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    path = f"/tmp/bench_vq_{os.getpid()}.npy"
    np.save(path, idx.astype(np.int64))
    return dict(time=min(times), rss_mib=peak / 1024, traced_mib=traced / 2**20, idx=path)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        name, n, k, d = args.child
        print(json.dumps(run_variant(name, int(n), int(k), int(d), repeats=1 if int(k) > 100000 else 3)))
        return
    import numpy as np
    sizes = [(1024, 1024, 256), (512, 16384, 256)] if args.quick else [(16384, 16384, 256), (4096, 262144, 256)]
    names = ["faiss IndexFlatL2", "vq.nearest", "torch cdist+argmin"]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), OPENBLAS_NUM_THREADS=str(THREADS),
               MKL_NUM_THREADS=str(THREADS))
    print("| N | K | method | time (s) | time / faiss | peak extra RSS (MiB) | tracemalloc peak (MiB) | "
          "indices equal to faiss |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for n, k, d in sizes:
        res = {}
        for name in names:
            out = subprocess.run([sys.executable, __file__, "--child", name, str(n), str(k), str(d)],
                                 capture_output=True, text=True, env=env, check=True)
            res[name] = json.loads(out.stdout.strip().splitlines()[-1])
        ref = np.load(res[names[0]]["idx"])
        for name in names:
            r = res[name]
            agree = float(np.mean(np.load(r["idx"]) == ref))
            print(f"| {n} | {k} | {name} | {r['time']:.3f} | {r['time'] / res[names[0]]['time']:.2f} | "
                  f"{r['rss_mib']:.0f} | {r['traced_mib']:.0f} | {agree:.5f} |", flush=True)
        for name in names:
            os.remove(res[name]["idx"])


if __name__ == "__main__":
    main()

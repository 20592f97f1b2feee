"""hyperbolic.fit against gensim's PoincareModel, side by side, scored by hyperbolic.reconstruction.

Graph: the transitive closure of a random recursive tree of 1180 nodes (the size of the WordNet
mammal closure), (descendant, ancestor) pairs, the same list for both, one draw a pair an epoch.
gensim takes them as ordered relations as for WordNet (it cannot take both directions: the root
would have fewer than 10 non-neighbours and gensim refuses); hyperbolic.fit takes them as
undirected edges, each draw in a random orientation. Both are scored as undirected graphs. Settings mapping (gensim name -> ours):
size=10 -> dim=10; negative=10 -> negatives=10; alpha=0.1 -> lr=0.1; burn_in=10, burn_in_alpha=0.01
-> burn_in=10 (at lr/10 = 0.01); epochs 50 -> epochs=50, samples_per_epoch=len(edges);
batch_size=10 -> batch_size=2048 (ours sums the gradients of a batch as gensim does); init
U(-1e-3, 1e-3), epsilon 1e-5 -> same. gensim keeps its defaults where we have no equivalent:
regularization_coeff=1.0, negatives drawn in proportion to node count (degree) in every epoch;
ours: degree^0.75 during burn-in, uniform after (the paper).
Scale run: a 16384-node weighted co-occurrence-like graph (~0.9M edges, Zipf-like node use),
ours only (gensim would take hours), with fit's default epoch size.

    flock /tmp/bench.lock python benchmarks/bench_hyperbolic.py [--quick]
"""
import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import hyperbolic as hb  # noqa: E402


def gensim_fit(edges, dim, epochs, burn_in, seed):
    from gensim.models.poincare import PoincareModel

    model = PoincareModel([(str(u), str(v)) for u, v in edges], size=dim, negative=10, alpha=0.1,
                          burn_in=burn_in, burn_in_alpha=0.01, seed=seed)
    model.train(epochs=epochs, batch_size=10)
    return np.stack([model.kv[str(i)] for i in range(int(edges.max()) + 1)])


def cooccurrence_graph(n, pairs, seed=0):
    rng = np.random.default_rng(seed)
    p = 1 / np.arange(1, n + 1) ** 0.8
    a, b = rng.choice(n, pairs, p=p / p.sum()), rng.choice(n, pairs, p=p / p.sum())
    keys, counts = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_counts=True)
    keep = keys // n != keys % n
    return np.stack([keys[keep] // n, keys[keep] % n], axis=1), counts[keep].astype(np.float64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small smoke size")
    args = ap.parse_args()
    nodes, epochs, burn_in = (300, 5, 2) if args.quick else (1180, 50, 10)
    closure, _ = hb.random_tree_closure(nodes, seed=0)
    edges = closure
    print(f"machine: {platform.machine()} CPU, {platform.processor() or ''}".strip())
    print(f"closure of a random {nodes}-node tree: {len(closure)} pairs")

    rows = []
    t = time.perf_counter()
    z = gensim_fit(edges, 10, epochs, burn_in, seed=0)
    rows.append(("gensim PoincareModel", time.perf_counter() - t, *hb.reconstruction(z, edges)))
    t = time.perf_counter()
    z = hb.fit(edges, nodes, dim=10, epochs=epochs, burn_in=burn_in, samples_per_epoch=len(edges),
               seed=0, progress=False)
    rows.append(("hyperbolic.fit (NumPy)", time.perf_counter() - t, *hb.reconstruction(z, edges)))
    print(f"\n{epochs} epochs after {burn_in} burn-in epochs, dim 10, 10 negatives\n")
    print("| implementation | seconds | speed-up | mean rank | MAP |\n| --- | --- | --- | --- | --- |")
    for name, sec, mr, mAP in rows:
        print(f"| {name} | {sec:.1f} | {rows[0][1] / sec:.1f}x | {mr:.2f} | {mAP:.3f} |")

    n, pairs = (2048, 50_000) if args.quick else (16384, 1_200_000)
    e, w = cooccurrence_graph(n, pairs)
    t = time.perf_counter()
    z = hb.fit(e, n, dim=10, epochs=20, weights=np.log1p(w), seed=0, progress=False)
    sec = time.perf_counter() - t
    t = time.perf_counter()
    mr, mAP = hb.reconstruction(z, e)
    sec_eval = time.perf_counter() - t
    print(f"\nscale run: {n} nodes, {len(e)} weighted edges, 20 epochs + 10 burn-in "
          f"(default epoch size {min(len(e), 2**14)} draws)\n")
    print("| fit seconds | reconstruction seconds | mean rank | MAP |\n| --- | --- | --- | --- |")
    print(f"| {sec:.1f} | {sec_eval:.1f} | {mr:.1f} | {mAP:.3f} |")


if __name__ == "__main__":
    main()

"""Ours, not the paper's: a smaller or larger vocabulary for a trained VQ codebook, without retraining.

HyperHill (Li et al., "Resizing codebook of vector quantization without retraining", Multimedia Systems
29:1499-1512, 2023, doi:10.1007/s00530-023-01065-2; resize.py) never changes the vocabulary: its smaller codebook
is a smaller search over the same codes (`resize.block_search`, sec. 3.3.1), its larger one EXT (`resize.extend`,
eq. 13). An autoregressive model over the tokens may want fewer or more token ids; this file makes them. It reuses
the paper's order of the codes (Alg. 3: the Hilbert order of the enhanced codebook, through `resize.block_index`),
along which neighbours are alike both as vectors and in the contexts they occur in.

- `shrink_vocabulary`: `size` codes and an old -> new `mapping` (old token maps are translated, the decoder kept).
  "hyperhill" / "hilbert" merge runs of neighbours along the order (with / without the hyperbolic part), the cuts
  chosen by an optimal 1-D segmentation (`optimal_runs`: the least usage-weighted squared error, derived); a run
  becomes its members' usage-weighted mean. Baselines: "random" and "usage" keep a random or the most used subset
  (every other code maps to its best kept one), "kmeans" merges usage-weighted k-means clusters.
- `grow_vocabulary`: `size` >= K codes, the old K first (old ids stay valid). "hyperhill" / "hilbert" insert codes
  where they remove the most usage-weighted error, evenly into the gaps between neighbours along the order: with
  j - 1 evenly spaced codes a gap (a, b) keeps an error of about (u_a + u_b)|a - b|^2 / j^2 (derived), so its j-th
  code is worth (u_a + u_b)|a - b|^2 (1/j^2 - 1/(j + 1)^2), and the `size` - K of greatest worth go in. Baselines:
  "random" (random codes plus noise) and "split" (the most used codes plus noise: Linde, Buzo & Gray 1980).
- rule="dot", for codebooks that pick argmax z.e (IBQ): a mean or a point of a segment is shorter than the codes
  it comes from and would rarely win, so merged codes take their members' mean norm and inserted ones lie on the arc
  between their neighbours' directions, of interpolated norm (resize's arc for EXT).

`python vocabulary.py` compares merging along the order with random subsets on resize.py's photo patches."""
from typing import NamedTuple

import numpy as np
from array_api_compat import array_namespace, device

import arrays
import resize
import vq
from arrays import check_array, check_choice, check_matrix, check_number, check_permutation, namespace, to_host

SHRINK_METHODS = ("hyperhill", "hilbert", "random", "usage", "kmeans")
GROW_METHODS = ("hyperhill", "hilbert", "random", "split")
RULES = resize.RULES  # "distance" (the nearest code) or "dot" (argmax z.e)


class Shrunk(NamedTuple):  # a smaller vocabulary
    codebook: object  # (size, d): the new codes
    mapping: object  # int64 (K,): old id -> new id, onto every new id


def shrink_vocabulary(codebook, size, *, method="hyperhill", usage=None, cooc=None, order=None, rule="distance",
                      seed=0, **settings):
    """`size` codes and the old -> new mapping (`Shrunk`) by `method` (above). usage: how often each old code was
    used (K,), the merges' weights (default: all alike); order: a permutation to merge along (default: the method's,
    with resize.block_index's cooc and settings)."""
    xp = namespace(codebook=codebook, usage=usage, order=order)
    check_matrix(codebook, "codebook")
    check_choice(method, "method", SHRINK_METHODS)
    check_choice(rule, "rule", RULES)
    k = codebook.shape[0]
    size = check_number(size, "size", low=1, high=k, integer=True)
    seed = check_number(seed, "seed", low=0, integer=True)
    w = _usage_weights(usage, k, xp, device(codebook))
    if order is not None:
        check_permutation(order, k, "order")
    if method in ("random", "usage"):
        return _subset(codebook, size, method, w, rule, seed)
    if method == "kmeans":
        group = _clusters(codebook, size, w, seed)
    else:
        perm = _order(codebook, order, method, cooc, seed, settings)
        starts = optimal_runs(to_host(xp.take(codebook, perm, axis=0)), to_host(xp.take(w, perm)), size,
                              4 * -(-k // size))  # runs at most 4 x the mean length: the cost is size x K x max_run
        group = np.repeat(np.arange(size), np.diff(starts))[np.argsort(to_host(perm))]  # old id -> its run
    return Shrunk(_merge(codebook, w, group, size, rule), xp.asarray(group, device=device(codebook)))


def optimal_runs(x, weights, size, max_run):
    """The starts (0 = starts[0] < ... < starts[size] = n) of the `size` runs of consecutive rows of x (n, d), each at
    most `max_run` long, of least weighted squared error about their weighted means (NumPy). Derived: with C(i, j)
    the cost of the run x[i:j], D_m(j) = min over l of D_{m-1}(j - l) + C(j - l, j), in O(size n max_run). No divide
    and conquer: C of points along a curve in d dimensions breaks the quadrangle inequality."""
    n, w, max_run = x.shape[0], weights.astype(np.float64), min(max_run, x.shape[0] - size + 1)
    x = x.astype(np.float64) - (w[:, None] * x).sum(axis=0) / max(w.sum(), 1e-300)  # centred: less cancellation
    cost = _run_costs(x, w, max_run)  # cost[j, max_run - l]: C(j - l, j)
    prev, lengths = np.r_[0.0, np.full(n, np.inf)], []  # D_0: only the empty prefix costs nothing
    for m in range(1, size + 1):
        lo, hi = max(m, n - (size - m) * max_run), min(m * max_run, n - (size - m))  # the ends the m-th run can have
        window = np.lib.stride_tricks.sliding_window_view(np.r_[np.full(max_run, np.inf), prev], max_run)
        total = window[lo:hi + 1] + cost[lo:hi + 1]  # [j - lo, i]: D_{m-1}(j - l) + C(j - l, j), l = max_run - i
        best = np.argmin(total, axis=1)
        prev = np.full(n + 1, np.inf)
        prev[lo:hi + 1] = total[np.arange(hi + 1 - lo), best]
        lengths.append((lo, max_run - best))
    starts = [n]
    for lo, length in reversed(lengths):  # back from the end, one run at a time
        starts.append(starts[-1] - int(length[starts[-1] - lo]))
    return np.asarray(starts[::-1], dtype=np.int64)


def _run_costs(x, w, max_run):  # (n + 1, max_run): [j, max_run - l] = S2 - |S1|^2 / S0 of the run x[j - l:j]
    p0, p1, p2 = (np.concatenate([np.zeros((1,) + v.shape[1:]), np.cumsum(v, axis=0)])
                  for v in (w, w[:, None] * x, w * (x * x).sum(axis=1)))  # prefix sums of w, w x and w |x|^2
    cost = np.full((x.shape[0] + 1, max_run), np.inf)
    for length in range(1, max_run + 1):
        s0, s1, s2 = p0[length:] - p0[:-length], p1[length:] - p1[:-length], p2[length:] - p2[:-length]
        c = np.where(s0 > 0, s2 - (s1 * s1).sum(axis=1) / np.where(s0 > 0, s0, 1.0), 0.0)
        cost[length:, max_run - length] = np.maximum(c, 0.0)  # >= 0 despite rounding
    return cost


def _subset(codebook, size, method, w, rule, seed):  # keep `size` codes; every other one maps to its best kept code
    xp, k, dev = array_namespace(codebook), codebook.shape[0], device(codebook)
    if method == "random":
        keep = np.sort(np.random.default_rng(seed).choice(k, size, replace=False))
    else:
        keep = np.sort(np.argsort(-to_host(w), kind="stable")[:size])
    new = xp.take(codebook, xp.asarray(keep, device=dev), axis=0)
    one_block = resize.block_index(new, 1, method="lsh")  # so that block_search is the full search by the rule
    group = to_host(resize.block_search(codebook, new, one_block, images=xp.zeros((k,), dtype=xp.int64, device=dev),
                                        rule=rule).idx).copy()
    group[keep] = np.arange(size)  # a kept code keeps its meaning, even where a duplicate of it comes first
    return Shrunk(new, xp.asarray(group, device=dev))


def _clusters(codebook, size, w, seed):
    """Usage-weighted k-means groups, every one used. The bug fixed: dead codes (usage 0) made k-means++ repeat
    points and the mapping miss most new ids; now they weigh a little, so they can still seed a centre, and an empty
    cluster takes the farthest code of a cluster of two or more."""
    centres = vq.kmeans(codebook, size, seed=seed, weights=w + 1e-6 * float(array_namespace(w).mean(w)))
    group = to_host(vq.nearest(codebook, centres)).copy()
    far = ((to_host(codebook) - to_host(centres)[group]) ** 2).sum(axis=1)
    counts = np.bincount(group, minlength=size)
    for j in np.flatnonzero(counts == 0):
        i = int(np.argmax(np.where(counts[group] > 1, far, -1.0)))
        counts[group[i]] -= 1
        counts[j], group[i], far[i] = 1, j, 0.0
    return group


def _merge(codebook, w, group, size, rule):
    """Each group's usage-weighted mean (a group nobody used: the plain mean), summed as offsets from its lowest id,
    so that a group of one is that code exactly; for "dot" of its members' mean norm."""
    xp, k, dev = array_namespace(codebook), codebook.shape[0], device(codebook)
    first = np.full(size, k)
    np.minimum.at(first, group, np.arange(k))  # each group's lowest id
    g, first, x = xp.asarray(group, device=dev), xp.asarray(first, device=dev), xp.astype(codebook, xp.float64)
    used = xp.take(arrays.scatter_add(g, w[:, None], size)[:, 0], g) > 0  # (K,): the code's group has usage
    w = xp.where(used, w, 1.0)[:, None]  # (K, 1)
    mass, anchor = arrays.scatter_add(g, w, size), xp.take(x, first, axis=0)  # (size, 1), (size, d)
    merged = anchor + arrays.scatter_add(g, w * (x - xp.take(anchor, g, axis=0)), size) / mass
    if rule == "dot":
        norm = arrays.scatter_add(g, w * xp.linalg.vector_norm(x, axis=1)[:, None], size) / mass
        length = xp.linalg.vector_norm(merged, axis=1, keepdims=True)
        merged = xp.where(length > 0, merged * norm / xp.where(length > 0, length, 1.0), merged)
    return xp.astype(merged, codebook.dtype)


def grow_vocabulary(codebook, size, *, method="hyperhill", usage=None, cooc=None, order=None, rule="distance",
                    noise=0.1, seed=0, **settings):
    """`size` >= K codes, the old K first (`method`, above; at most 2 ceil(extra / (K - 1)) + 4 new codes a gap).
    "random" / "split" add `noise` x the codes' spread (std per axis) x N(0, 1) to the codes they copy."""
    xp = namespace(codebook=codebook, usage=usage, order=order)
    check_matrix(codebook, "codebook")
    check_choice(method, "method", GROW_METHODS)
    check_choice(rule, "rule", RULES)
    k = codebook.shape[0]
    if k < 2:  # the bug fixed: split gave one code an infinite radius (no other code), so inf codes
        raise ValueError("codebook: growing needs at least 2 codes (their spread places the new ones)")
    extra = check_number(size, "size", low=k, integer=True) - k
    noise = check_number(noise, "noise", low=0.0)
    seed = check_number(seed, "seed", low=0, integer=True)
    w = _usage_weights(usage, k, xp, device(codebook))
    if order is not None:
        check_permutation(order, k, "order")
    if extra == 0:
        return codebook
    if method in ("hyperhill", "hilbert"):
        new = _inserted(codebook, extra, w, _order(codebook, order, method, cooc, seed, settings), rule)
    else:
        new = _copies(codebook, extra, method, w, noise, seed)
    return xp.concat([codebook, xp.astype(new, codebook.dtype)], axis=0)


def _inserted(codebook, extra, w, perm, rule):  # `extra` codes in the gaps along perm, by worth (above)
    xp, k, dev = array_namespace(codebook), codebook.shape[0], device(codebook)
    perm, u = to_host(perm), to_host(w)
    a = xp.take(codebook, xp.asarray(perm[:-1], device=dev), axis=0)  # (K - 1, d): the gaps' ends
    b = xp.take(codebook, xp.asarray(perm[1:], device=dev), axis=0)
    error = (u[perm[:-1]] + u[perm[1:]]) * to_host(xp.sum((a - b) ** 2, axis=1)).astype(np.float64)  # (K - 1,)
    most = min(extra, 2 * -(-extra // (k - 1)) + 4)  # candidates a gap: never a (K, extra) table
    j = np.arange(1, most + 1)
    worth = error[:, None] * (1.0 / j**2 - 1.0 / (j + 1) ** 2)  # (K - 1, most), falling in j: a gap's first ones win
    gaps, count = np.unique(np.argsort(-worth, axis=None, kind="stable")[:extra] // most, return_counts=True)
    t = xp.asarray(np.concatenate([np.arange(1, c + 1) / (c + 1) for c in count]), dtype=a.dtype, device=dev)
    at = xp.asarray(np.repeat(gaps, count), device=dev)  # each new code's gap, evenly spaced in it
    # resize's own points between neighbours (EXT's segment; for "dot" our arc), unchecked: the inputs are checked
    return resize._interpolate(xp.take(a, at, axis=0), xp.take(b, at, axis=0), t, rule)


def _copies(codebook, extra, method, w, noise, seed):  # random or the most used codes (LBG's split), plus noise
    xp, (k, d), dev = array_namespace(codebook), codebook.shape, device(codebook)
    rng = np.random.default_rng(seed)
    if method == "random":
        pick = rng.integers(0, k, extra)
    else:  # the busiest first, round and round
        pick = np.argsort(-to_host(w), kind="stable")[np.arange(extra) % k]
    gauss = xp.asarray(rng.standard_normal((extra, d)), dtype=codebook.dtype, device=dev)
    return xp.take(codebook, xp.asarray(pick, device=dev), axis=0) + noise * xp.std(codebook, axis=0) * gauss


def _usage_weights(usage, k, xp, dev):  # usage as float64 weights (K,); all alike if None
    if usage is None:  # on the codebook's device (the bug fixed: on the default one, a CUDA codebook failed)
        return xp.ones((k,), dtype=xp.float64, device=dev)
    check_array(usage, "usage", kind=("integral", "real floating"), shape=(k,))
    u = xp.astype(usage, xp.float64)
    if not bool(xp.all(xp.isfinite(u))) or bool(xp.any(u < 0)) or not float(xp.sum(u)) > 0:
        raise ValueError("usage: must be finite, >= 0 and not all zero")
    return u


def _order(codebook, order, method, cooc, seed, settings):
    """The permutation to merge or insert along: `order`, else the method's order from resize.block_index (one block:
    only its order is wanted), on 6 principal axes unless settings say otherwise: merging wants finer locality than
    the search's 2."""
    xp = array_namespace(codebook)
    if order is not None:
        return xp.astype(order, xp.int64)
    return resize.block_index(codebook, 1, method=method, cooc=cooc, seed=seed, **{"dims": 6, **settings}).perm


def demo(k=512, sizes=(256, 128, 64)):
    """On resize.py's photo patches and codebook: merging along the HyperHill order against random subsets (and the
    other baselines), then growing to 2K codes; held-out PSNR and the share of the new codes in use."""
    x, z = resize.demo_patches(), resize.demo_patches(held_out=True)
    cb = vq.kmeans(x[np.random.default_rng(0).choice(len(x), 30000)], k, iters=20)
    tokens = vq.nearest(x, cb).reshape(-1, 16, 16)
    cooc, usage = resize.cooccurrence(tokens, k), vq.usage(tokens, k)

    def scores(new):  # held-out PSNR, the share of the codes in use
        idx = vq.nearest(z, new)
        psnr, used = -10 * np.log10(np.mean((z - new[idx]) ** 2)), np.mean(vq.usage(idx, len(new)) > 0)
        return f"{psnr:.2f} dB / {100 * used:.0f} %"
    print(f"K = {k} codes, {len(z) // 256} held-out images; the original: {scores(cb)}\n")
    print("| shrink_vocabulary | " + " | ".join(f"{s} codes" for s in sizes) + " |\n|" + " --- |" * (len(sizes) + 1))
    for method in SHRINK_METHODS:
        cells = [scores(shrink_vocabulary(cb, s, method=method, usage=usage, cooc=cooc).codebook) for s in sizes]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print(f"\n| grow_vocabulary | {2 * k} codes |\n| --- | --- |")
    for method in GROW_METHODS:
        print(f"| {method} | {scores(grow_vocabulary(cb, 2 * k, method=method, usage=usage, cooc=cooc))} |")


if __name__ == "__main__":
    demo()

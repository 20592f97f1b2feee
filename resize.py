"""Resizing a trained VQ codebook without retraining: HyperHill and its baselines.

Li et al., "Resizing codebook of vector quantization without retraining", Multimedia Systems 2023
(HyperHill). A trained VQ model's codebook size K is chosen by hand; a smaller codebook makes
quantization cheaper, a larger one lowers the reconstruction error, and retraining encoder, codebook
and decoder costs too much. HyperHill resizes the codebook alone, in five steps:

1. count which codes occur next to each other in the token maps of the training images
   (`cooccurrence`: the code co-occurrence graph);
2. embed that graph in the Poincare ball (Nickel & Kiela 2017, `hyperbolic.fit`), so codes used in
   the same contexts land close together;
3. append the embedding, mapped to the tangent space at 0, to the codes (`enhance`: the "enhanced
   codebook");
4. order the enhanced codes along a Hilbert curve (`hilbert.order`, Skilling 2004), so neighbours
   along the order are close both as vectors and in context;
5. shrink by merging runs of neighbours into their usage-weighted mean, or grow by inserting codes
   between neighbours (`shrink`, `grow`). The decoder is never retrained; after a shrink, old token
   ids are translated by `mapping`; after a grow, old ids stay valid because the old rows come first.

The authors did not publish code; this file is a reference implementation. Where it departs from the
paper it says so: (a) the paper merges fixed-size runs; by default we choose the cuts by an optimal
1-D segmentation (dynamic programming) that minimises the usage-weighted squared error of the merged
codes, and keep `segmentation="fixed"` for the paper's rule; (b) the paper does not specify the
insertion rule of its grow step; ours is in `grow`.

Baselines (`method=`): "hilbert" (the same pipeline on the raw codes, no hyperbolic part: the
ablation), "random" (a uniformly random subset; for grow, random old codes plus small Gaussian
noise), "usage" (keep the most used codes), "kmeans" (usage-weighted k-means on the codes, `vq.kmeans`),
"split" (grow only: perturb the most used codes, as in Linde, Buzo & Gray 1980).

Run `python resize.py` for the paper's experiment in miniature on images that ship with
scikit-image / scikit-learn.
"""
import math

import numpy as np
from array_api_compat import array_namespace, device, is_cupy_array, is_torch_array

import hilbert
import hyperbolic
import vq

SHRINK_METHODS = ("hyperhill", "hilbert", "random", "usage", "kmeans")
GROW_METHODS = ("hyperhill", "hilbert", "random", "split")


# ---------------------------------------------------------------------------------------------
# Step 1: the code co-occurrence graph
# ---------------------------------------------------------------------------------------------
def cooccurrence(tokens, k, *, window=1):
    """Co-occurrence graph of the codes in token maps `tokens` (B, H, W), ints in [0, k).

    Every unordered pair of distinct positions of one image within Chebyshev distance `window` that
    holds two different codes a < b adds 1 to the pair (a, b). Returned sparsely, so k = 2^18 works:
    `pairs` int64 (M, 2), unique, sorted, pairs[:, 0] < pairs[:, 1]; `counts` int64 (M,) > 0.
    """
    xp = array_namespace(tokens)
    if not xp.isdtype(tokens.dtype, "integral"):
        raise TypeError(f"tokens must be an integer array, got dtype {tokens.dtype}")
    if tokens.ndim != 3:
        raise ValueError(f"tokens must have shape (B, H, W), got {tuple(tokens.shape)}")
    _check_int("k", k, low=1)
    if k > 3_037_000_499:  # a * k + b must fit in int64
        raise ValueError(f"k = {k} is too large for int64 pair keys")
    _check_int("window", window, low=1)
    t = xp.astype(tokens, xp.int64)
    if t.size and (int(xp.min(t)) < 0 or int(xp.max(t)) >= k):
        raise ValueError(f"tokens must lie in [0, k = {k}), got [{int(xp.min(t))}, {int(xp.max(t))}]")
    B, H, W = t.shape
    keys = []
    # Half of the (2w+1)^2 offsets: each unordered pair of positions is seen once.
    for dy in range(window + 1):
        for dx in range(-window, window + 1):
            if (dy == 0 and dx <= 0) or dy >= H or abs(dx) >= W:
                continue
            x0, x1 = max(0, -dx), W - max(0, dx)
            a = t[:, : H - dy, x0:x1]  # (B, H - dy, W - |dx|)
            b = t[:, dy:, x0 + dx : x1 + dx]  # the same positions shifted by (dy, dx)
            lo, hi = xp.reshape(xp.minimum(a, b), (-1,)), xp.reshape(xp.maximum(a, b), (-1,))
            keep = lo != hi
            keys.append(lo[keep] * k + hi[keep])  # a pair (a, b) as one int64 key a * k + b
    if not keys or sum(key.shape[0] for key in keys) == 0:
        empty = xp.zeros((0,), dtype=xp.int64, device=device(tokens))
        return xp.reshape(empty, (0, 2)), empty
    values, counts = xp.unique_counts(xp.concat(keys))
    sort = xp.argsort(values)  # the standard leaves the order of unique values unspecified
    values, counts = values[sort], xp.astype(counts[sort], xp.int64)
    return xp.stack([values // k, values % k], axis=1), counts


# ---------------------------------------------------------------------------------------------
# Steps 2-4: the enhanced codebook and its Hilbert order
# ---------------------------------------------------------------------------------------------
def enhance(codebook, embedding, *, weight=1.0):
    """The enhanced codebook (k, d + m): each code beside its Poincare embedding.

    The embedding (k, m) is first mapped to the tangent space at the origin (`logmap0`), where it is
    Euclidean and can sit beside the codes. Codes and embedding live on unrelated scales (pixels vs.
    hyperbolic radii), so the embedding is then multiplied by the one factor s that makes its share of
    the total variance `weight` times the codes' share: with V_c = total variance of the codes (sum
    over columns) and V_e that of the tangent vectors, s^2 V_e = weight * V_c. `weight = 1` lets
    context and appearance count equally in the Hilbert order; `weight = 0` is the raw codebook.
    """
    xp = array_namespace(codebook, embedding)
    _check_codebook(codebook)
    if embedding.ndim != 2 or embedding.shape[0] != codebook.shape[0]:
        raise ValueError(f"embedding must have shape ({codebook.shape[0]}, m), got {tuple(embedding.shape)}")
    if not xp.isdtype(embedding.dtype, "real floating") or not bool(xp.all(xp.isfinite(embedding))):
        raise ValueError("embedding must be a finite real floating array")
    if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be a finite number >= 0, got {weight!r}")
    tangent = xp.astype(hyperbolic.logmap0(embedding), codebook.dtype)
    var_codes = float(xp.sum(_variance(codebook, xp)))
    var_tangent = float(xp.sum(_variance(tangent, xp)))
    s = math.sqrt(weight * var_codes / var_tangent) if var_tangent > 0 else 0.0
    return xp.concat([codebook, tangent * s], axis=1)


def _variance(x, xp):
    return xp.mean((x - xp.mean(x, axis=0)) ** 2, axis=0)


def embedding(cooc, k, *, dim=10, epochs=10, seed=0):
    """Poincare embedding (k, dim) of the co-occurrence graph `cooc` = (pairs, counts) (step 2).

    Edges are drawn in proportion to log(1 + count): a few very busy pairs must not drown the
    graph of the rare codes. An epoch draws 8 edges a code (at most all edges), after 2 burn-in
    epochs: a rough embedding is enough to sort codes by context and keeps K = 16384 within seconds.
    """
    pairs, counts = cooc
    if pairs.shape[0] == 0:
        raise ValueError("cooc has no pairs: no two different codes are ever neighbours")
    xp = array_namespace(pairs, counts)
    weights = xp.log1p(xp.astype(counts, xp.float64))
    return hyperbolic.fit(pairs, k, dim=dim, epochs=epochs, burn_in=2, weights=weights, seed=seed, batch_size=1024,
                          samples_per_epoch=min(pairs.shape[0], 8 * k), progress=False)


def curve_order(codebook, *, cooc=None, hyperbolic_part=True, dim=10, epochs=10,
                weight=1.0, bits=10, dims=6, seed=0):
    """Permutation of the codes along the Hilbert curve of the (enhanced) codebook (steps 2-4).

    `hyperbolic_part=False` orders the raw codes: the "hilbert" ablation. `dim`, `epochs`:
    `embedding`; `weight`: `enhance`; `bits`, `dims`: `hilbert.order` (projection of the
    codes to their top `dims` principal axes, each cut into 2^bits cells: in many dimensions a
    Hilbert curve of coarse cells keeps little locality, few well-resolved axes keep much more).
    """
    x = codebook
    if hyperbolic_part:
        if cooc is None:
            raise ValueError("cooc (the (pairs, counts) of cooccurrence) is required by method 'hyperhill'; "
                             "use method='hilbert' to order the codes without it")
        emb = embedding(cooc, codebook.shape[0], dim=dim, epochs=epochs, seed=seed)
        x = enhance(codebook, emb, weight=weight)
    return hilbert.order(x, bits=bits, dims=min(dims, x.shape[1]) if dims else None)


# ---------------------------------------------------------------------------------------------
# Step 5a: shrink by merging runs along the order
# ---------------------------------------------------------------------------------------------
def run_costs(x, weights, max_run):
    """Cost table C (n + 1, max_run + 1): C[j, l] = usage-weighted squared error of the run
    x[j - l : j] around its weighted mean (inf where j < l), from prefix sums in float64.

    For one run: sum_i w_i |x_i - m|^2 = S2 - |S1|^2 / S0 with S0 = sum w, S1 = sum w x, S2 = sum w |x|^2.
    """
    xp = array_namespace(x, weights)
    n = x.shape[0]
    w = xp.astype(weights, xp.float64)
    x = xp.astype(x, xp.float64)
    x = x - xp.sum(w[:, None] * x, axis=0) / max(float(xp.sum(w)), 1e-300)  # centred: less cancellation
    p0 = xp.cumulative_sum(w, axis=0, include_initial=True)  # (n + 1,)
    p1 = xp.cumulative_sum(w[:, None] * x, axis=0, include_initial=True)  # (n + 1, d)
    p2 = xp.cumulative_sum(w * xp.sum(x * x, axis=1), axis=0, include_initial=True)  # (n + 1,)
    table = np.full((n + 1, max_run + 1), np.inf)
    for length in range(1, min(max_run, n) + 1):
        s0, s2 = p0[length:] - p0[:-length], p2[length:] - p2[:-length]
        s1 = p1[length:, :] - p1[:-length, :]
        sq = xp.sum(s1 * s1, axis=1)
        cost = xp.where(s0 > 0, s2 - sq / xp.where(s0 > 0, s0, 1.0), 0.0)
        table[length:, length] = np.maximum(_host(cost), 0.0)
    return table


def optimal_runs(x, weights, size, *, max_run=None):
    """Cut the sequence x (n, d) into `size` contiguous runs of at most `max_run` codes that minimise
    the total usage-weighted squared error of the codes around their run's weighted mean.

    Returns the run starts, int64 (size + 1,) with starts[0] = 0 and starts[-1] = n.
    Dynamic programming over (runs used, codes covered): D_m[j] = min_l D_{m-1}[j - l] + C[j, l].
    `max_run=None` is the unrestricted optimum, O(size * n^2); a bound L costs O(size * n * L).
    Why a bound and not the divide-and-conquer speed-up: that needs the quadrangle inequality,
    which this cost breaks on a sequence that is not sorted (codes 0, 10, 0 of unit weight:
    C[0,2) + C[1,3) = 100 > C[0,3) + C[1,2) = 66.7), so it could return a wrong answer.
    The recursion is sequential over m, and small (n * L numbers a step): it runs in NumPy on the host.
    """
    n = x.shape[0]
    _check_int("size", size, low=1, high=n)
    if max_run is None:
        max_run = n - size + 1
    _check_int("max_run", max_run, low=1)
    max_run = min(max_run, n - size + 1)
    if size * max_run < n:
        raise ValueError(f"max_run = {max_run} is too small to cover {n} codes with {size} runs")
    cost = run_costs(x, weights, max_run)[:, ::-1][:, :-1]  # column i: run length max_run - i
    prev = np.full(n + 1, np.inf)
    prev[0] = 0.0
    choices = []  # per step m: (lo, run length ending at j for j in [lo, hi])
    for m in range(1, size + 1):
        lo, hi = max(m, n - (size - m) * max_run), min(m * max_run, n - (size - m))
        padded = np.concatenate([np.full(max_run, np.inf), prev])
        window = np.lib.stride_tricks.sliding_window_view(padded, max_run)  # window[j, i] = prev[j - L + i]
        total = window[lo : hi + 1] + cost[lo : hi + 1]
        best = np.argmin(total, axis=1)
        prev = np.full(n + 1, np.inf)
        prev[lo : hi + 1] = total[np.arange(hi + 1 - lo), best]
        choices.append((lo, (max_run - best).astype(np.int64)))
    starts = [n]
    for lo, lengths in reversed(choices):
        starts.append(starts[-1] - int(lengths[starts[-1] - lo]))
    return np.asarray(starts[::-1], dtype=np.int64)


def merge_runs(codebook, weights, perm, starts):
    """Merge runs of the ordered codes: new code r = usage-weighted mean of codebook[perm[starts[r]:
    starts[r+1]]] (plain mean where a run is unused); mapping old index -> its run."""
    xp = array_namespace(codebook, weights, perm)
    n, size = codebook.shape[0], starts.shape[0] - 1
    starts = xp.asarray(starts, device=device(codebook))
    run = xp.searchsorted(starts[1:], xp.arange(n, device=device(codebook)), side="right")  # (n,)
    run = xp.astype(run, xp.int64)
    x = xp.astype(xp.take(codebook, perm, axis=0), xp.float64)
    w = xp.take(xp.astype(weights, xp.float64), perm)
    p0 = xp.cumulative_sum(w, include_initial=True)
    used = (xp.take(p0, starts[1:]) - xp.take(p0, starts[:-1])) > 0  # (size,)
    w = xp.where(xp.take(used, run), w, 1.0)
    first = xp.take(x, xp.take(starts[:-1], run), axis=0)  # (n, d): each code's run's first code
    # Sums relative to the run's first code: a run of one code comes back bit for bit.
    p1 = xp.cumulative_sum(w[:, None] * (x - first), axis=0, include_initial=True)  # (n + 1, d)
    p0 = xp.cumulative_sum(w, include_initial=True)
    sums = xp.take(p1, starts[1:], axis=0) - xp.take(p1, starts[:-1], axis=0)  # (size, d)
    mass = xp.take(p0, starts[1:]) - xp.take(p0, starts[:-1])
    merged = xp.take(x, starts[:-1], axis=0) + sums / mass[:, None]
    mapping = xp.take(run, xp.argsort(perm))
    return xp.astype(merged, codebook.dtype), mapping


def shrink(codebook, size, *, method="hyperhill", usage=None, cooc=None, seed=0, segmentation="optimal",
           max_run=None, order=None, dim=10, epochs=10, weight=1.0, bits=10, dims=6):
    """Shrink `codebook` (k, d) to `size` codes; returns (new_codebook (size, d), mapping int64 (k,)).

    `mapping[i]` is the new index of old code i (every new index is hit for codes that are distinct).
    hyperhill / hilbert: merge runs along the Hilbert order (`curve_order`); `segmentation="optimal"`
    picks the cuts with `optimal_runs` (runs of at most `max_run` codes, default 4 k / size),
    `"fixed"` cuts into runs of equal length, as in the paper. Subset methods (random, usage) and
    kmeans map each old code to its nearest new code. `usage` (k,) weights every method (uniform
    if None); `cooc` is required by hyperhill. `order`: a permutation from `curve_order` to reuse
    (for several sizes of one codebook); the other keywords go to `curve_order`.
    """
    xp = array_namespace(codebook)
    k = _check_codebook(codebook)
    _check_int("size", size, low=1, high=k)
    _check_method(method, SHRINK_METHODS)
    w = _check_usage(usage, k, xp, codebook)
    if cooc is not None:
        _check_cooc(cooc, k)
    if method in ("hyperhill", "hilbert"):
        perm = _order(codebook, order, method, cooc, dim=dim, epochs=epochs, weight=weight, bits=bits,
                      dims=dims, seed=seed)
        if segmentation == "optimal":
            if max_run is None:
                max_run = 4 * math.ceil(k / size)
            starts = optimal_runs(xp.take(codebook, perm, axis=0), xp.take(w, perm), size, max_run=max_run)
        elif segmentation == "fixed":
            starts = np.round(np.linspace(0, k, size + 1)).astype(np.int64)
        else:
            raise ValueError(f"segmentation must be 'optimal' or 'fixed', got {segmentation!r}")
        return merge_runs(codebook, w, perm, starts)
    if method == "kmeans":
        # k-means with one cluster a code is the identity only up to the rounding of its means.
        new = codebook if size == k else vq.kmeans(codebook, size, seed=seed, weights=w)
    else:
        if method == "random":
            keep = np.random.default_rng(seed).choice(k, size, replace=False)
        else:  # "usage": the most used, ties to the lowest index
            keep = np.argsort(-_host(w), kind="stable")[:size]
        new = xp.take(codebook, xp.asarray(np.sort(keep), device=device(codebook)), axis=0)
    return new, vq.nearest(codebook, new)


# ---------------------------------------------------------------------------------------------
# Step 5b: grow by inserting codes between neighbours along the order
# ---------------------------------------------------------------------------------------------
def grow(codebook, size, *, method="hyperhill", usage=None, cooc=None, seed=0, noise=0.1, order=None,
         dim=10, epochs=10, weight=1.0, bits=10, dims=6):
    """Grow `codebook` (k, d) to `size` codes; the first k rows are the old codebook.

    hyperhill / hilbert: new codes between consecutive codes a, b along the Hilbert order. A gap's
    priority is (u_a + u_b) |x_a - x_b|^2, the usage mass that could fall between them times the
    squared gap: the error a code there can remove. A gap that gets n new codes splits into n + 1
    pieces, so its j-th code is worth priority * (1/j^2 - 1/(j+1)^2); the (size - k) best (gap, j)
    are taken, and the n codes of a gap placed at equal steps from a to b.
    random: random old codes plus Gaussian noise of `noise` times the codebook's per-axis std.
    split (Linde-Buzo-Gray): the most used codes, each moved by `noise` times the distance to its
    nearest other code in a random direction.
    """
    xp = array_namespace(codebook)
    k = _check_codebook(codebook)
    _check_int("size", size, low=k)
    _check_method(method, GROW_METHODS)
    w = _check_usage(usage, k, xp, codebook)
    if cooc is not None:
        _check_cooc(cooc, k)
    extra = size - k
    if extra == 0:
        return codebook
    rng = np.random.default_rng(seed)
    dev = device(codebook)
    if method in ("hyperhill", "hilbert"):
        if k < 2:
            raise ValueError("codebook needs at least 2 codes to grow by insertion")
        perm = _order(codebook, order, method, cooc, dim=dim, epochs=epochs, weight=weight, bits=bits,
                      dims=dims, seed=seed)
        a, b = xp.take(codebook, perm[:-1], axis=0), xp.take(codebook, perm[1:], axis=0)  # (k - 1, d)
        priority = _host((xp.take(w, perm[:-1]) + xp.take(w, perm[1:])) * xp.sum((a - b) ** 2, axis=1))
        most = min(extra, 2 * math.ceil(extra / (k - 1)) + 4)  # enough candidates, never (k, extra)
        j = np.arange(1, most + 1)[None, :]  # candidate: the j-th code in a gap
        gain = priority[:, None] * (1.0 / j**2 - 1.0 / (j + 1) ** 2)  # (k - 1, most)
        best = np.argsort(-gain, axis=None, kind="stable")[:extra]
        n_in_gap = np.bincount(best // most, minlength=k - 1)  # new codes per gap
        gap = np.repeat(np.arange(k - 1), n_in_gap)
        step = np.concatenate([np.arange(1, c + 1) / (c + 1) for c in n_in_gap if c])  # along a -> b
        gap, t = xp.asarray(gap, device=dev), xp.asarray(step, dtype=codebook.dtype, device=dev)
        new = xp.take(a, gap, axis=0) + t[:, None] * (xp.take(b, gap, axis=0) - xp.take(a, gap, axis=0))
    elif method == "random":
        pick = xp.asarray(rng.integers(0, k, extra), device=dev)
        std = xp.std(codebook, axis=0)
        gauss = xp.asarray(rng.standard_normal((extra, codebook.shape[1])), dtype=codebook.dtype, device=dev)
        new = xp.take(codebook, pick, axis=0) + noise * std * gauss
    else:  # "split"
        busiest = np.argsort(-_host(w), kind="stable")
        pick = xp.asarray(busiest[np.arange(extra) % k], device=dev)
        centre = xp.take(codebook, pick, axis=0)
        radius = _nearest_other_distance(centre, codebook, pick)
        direction = xp.asarray(rng.standard_normal((extra, codebook.shape[1])), dtype=codebook.dtype, device=dev)
        direction = direction / xp.linalg.vector_norm(direction, axis=1, keepdims=True)
        new = centre + noise * radius[:, None] * direction
    return xp.concat([codebook, xp.astype(new, codebook.dtype)], axis=0)


def _order(codebook, order, method, cooc, **options):
    """The caller's `order` (checked to be a permutation of the k codes) or `curve_order`'s."""
    if order is None:
        return curve_order(codebook, cooc=cooc, hyperbolic_part=method == "hyperhill", **options)
    xp = array_namespace(codebook, order)
    k = codebook.shape[0]
    if tuple(order.shape) != (k,) or not xp.isdtype(order.dtype, "integral") or not bool(
            xp.all(xp.sort(order) == xp.arange(k, dtype=order.dtype, device=device(order)))):
        raise ValueError(f"order must be a permutation of the {k} codes (int, shape ({k},))")
    return xp.astype(order, xp.int64)


def _nearest_other_distance(points, codebook, own):
    """Distance from each of `points` (= codebook[own]) to the nearest other code, in blocks."""
    xp = array_namespace(points, codebook)
    out = []
    for s in range(0, points.shape[0], 1024):
        e = min(s + 1024, points.shape[0])  # the standard leaves out-of-bounds slice stops unspecified
        p = points[s:e, :]
        d2 = xp.sum(p**2, axis=1)[:, None] - 2 * p @ codebook.T + xp.sum(codebook**2, axis=1)[None, :]
        d2 = xp.where(xp.arange(codebook.shape[0], device=device(p))[None, :] == own[s:e, None], xp.inf, d2)
        out.append(xp.sqrt(xp.clip(xp.min(d2, axis=1), 0.0, None)))
    return xp.concat(out)


# ---------------------------------------------------------------------------------------------
# Checks: bad input raises and names the argument
# ---------------------------------------------------------------------------------------------
def _host(x):
    """A NumPy copy of an array of any backend (for the sequential parts that run on the host)."""
    if is_torch_array(x):
        return x.detach().cpu().numpy()
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def _check_int(name, value, low=None, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must lie in [{low}, {high if high is not None else 'inf'}], got {value}")


def _check_method(method, allowed):
    if method not in allowed:
        raise ValueError(f"method must be one of {allowed}, got {method!r}")


def _check_codebook(codebook):
    vq.check_matrix(codebook, "codebook")  # blockwise finiteness check: no whole-codebook temporary
    return codebook.shape[0]


def _check_usage(usage, k, xp, codebook):
    """Usage counts as float64 weights (uniform if None)."""
    if usage is None:
        return xp.ones((k,), dtype=xp.float64, device=device(codebook))
    if tuple(usage.shape) != (k,):
        raise ValueError(f"usage must have shape ({k},), got {tuple(usage.shape)}")
    u = xp.astype(usage, xp.float64)
    if not bool(xp.all(xp.isfinite(u))) or bool(xp.any(u < 0)):
        raise ValueError("usage must be finite and >= 0")
    if not float(xp.sum(u)) > 0:
        raise ValueError("usage must not be all zero")
    return u


def _check_cooc(cooc, k):
    if not isinstance(cooc, (tuple, list)) or len(cooc) != 2:
        raise TypeError("cooc must be the (pairs, counts) returned by cooccurrence")
    pairs, counts = cooc
    xp = array_namespace(pairs, counts)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not xp.isdtype(pairs.dtype, "integral"):
        raise ValueError(f"cooc pairs must be integer (M, 2), got {pairs.dtype} {tuple(pairs.shape)}")
    if tuple(counts.shape) != (pairs.shape[0],):
        raise ValueError(f"cooc counts must have shape ({pairs.shape[0]},), got {tuple(counts.shape)}")
    if pairs.shape[0] and (int(xp.min(pairs)) < 0 or int(xp.max(pairs)) >= k):
        raise ValueError(f"cooc pairs must lie in [0, k = {k})")
    if pairs.shape[0] and bool(xp.any(xp.astype(counts, xp.float64) < 0)):
        raise ValueError("cooc counts must be >= 0")


# ---------------------------------------------------------------------------------------------
# Demo: the paper's experiment in miniature
# ---------------------------------------------------------------------------------------------
def image_patches(image, p=4):
    """Non-overlapping p x p x 3 patches of an RGB image in [0, 1]: (H/p, W/p, 3 p^2)."""
    h, w = image.shape[0] // p * p, image.shape[1] // p * p
    x = image[:h, :w, :3].astype(np.float32) / 255.0
    x = x.reshape(h // p, p, w // p, p, 3).transpose(0, 2, 1, 3, 4)  # (H/p, W/p, p, p, 3)
    return x.reshape(h // p, w // p, 3 * p * p)


def demo_images():
    """Training images (their patches build codebook, usage and co-occurrence) and a held-out one."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    train = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry(), china]
    return train, flower


def main(argv=None):
    import argparse
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=1024, help="size of the trained codebook")
    parser.add_argument("--out", default="resize.png", help="where to write the figure")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    train, held_out = demo_images()
    grids = [image_patches(im) for im in train]
    # Token maps need equal shapes for cooccurrence: one call per image, counts added up.
    x = np.concatenate([g.reshape(-1, g.shape[-1]) for g in grids])  # (N, 48)
    y = image_patches(held_out).reshape(-1, x.shape[1])
    sample = np.random.default_rng(0).choice(x.shape[0], min(x.shape[0], 30_000), replace=False)
    codebook = vq.kmeans(x[sample], args.k, iters=20, seed=0)
    tokens = [vq.nearest(g.reshape(-1, g.shape[-1]), codebook).reshape(g.shape[:2]) for g in grids]
    usage = vq.usage(np.concatenate([t.reshape(-1) for t in tokens]), args.k)
    keys = np.concatenate([np.repeat(p[:, 0] * args.k + p[:, 1], c) for p, c in
                           (cooccurrence(t[None], args.k) for t in tokens)])
    key, counts = np.unique(keys, return_counts=True)
    cooc = (np.stack([key // args.k, key % args.k], axis=1), counts.astype(np.int64))
    print(f"{len(train)} images, {x.shape[0]} patches of dim {x.shape[1]}, held-out {y.shape[0]}; "
          f"k = {args.k}, {len(key)} co-occurring pairs ({time.perf_counter() - t0:.1f} s)")

    def distortion(cb, z):
        return float(np.mean((z - cb[vq.nearest(z, cb)]) ** 2))

    base = distortion(codebook, x), distortion(codebook, y)
    rows = [("original", args.k, *base, 0.0)]
    orders = {}  # steps 1-4 once per codebook: every size reuses the order
    for method in ("hyperhill", "hilbert"):
        t = time.perf_counter()
        orders[method] = curve_order(codebook, cooc=cooc, hyperbolic_part=method == "hyperhill")
        print(f"{method} order: {time.perf_counter() - t:.1f} s")

    def run(name, size, fn, method, **kw):
        t = time.perf_counter()
        if method in orders:
            kw["order"] = orders[method]
        new = fn(codebook, size, method=method, usage=usage, cooc=cooc, **kw)
        new = new[0] if isinstance(new, tuple) else new
        rows.append((name, size, distortion(new, x), distortion(new, y), time.perf_counter() - t))

    for size in (args.k // 2, args.k // 4, args.k // 8):
        for method in SHRINK_METHODS:
            run(method, size, shrink, method)
        run("hyperhill-fixed", size, shrink, "hyperhill", segmentation="fixed")
    for method in GROW_METHODS:
        run(method, 2 * args.k, grow, method)

    print("\nDistortion = MSE of the patches re-quantized to the nearest new code (pixels in [0, 1]);")
    print("Δ/random = (MSE - original's) / (random's MSE - original's): a shrink's excess distortion, or a")
    print("grow's gain, relative to random's. Held-out: an image not used for codebook, usage or cooc.\n")
    print("| method | size | MSE (train) | PSNR dB | Δ/random | MSE (held-out) | PSNR dB | time s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    random_delta = {r[1]: r[2] - base[0] for r in rows if r[0] == "random"}
    for name, size, d_train, d_held, sec in rows:
        ratio = (d_train - base[0]) / random_delta[size] if random_delta.get(size) else float("nan")
        print(f"| {name} | {size} | {d_train:.6f} | {-10 * math.log10(d_train):.2f} | {ratio:.2f} | "
              f"{d_held:.6f} | {-10 * math.log10(d_held):.2f} | {sec:.1f} |")

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in SHRINK_METHODS + ("hyperhill-fixed", "split"):
        pts = sorted((r[1], r[2]) for r in rows if r[0] in (name, "original"))
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set(xscale="log", yscale="log", xlabel="codebook size", ylabel="distortion (MSE, train patches)",
           title=f"Resizing a {args.k}-code codebook of 4x4x3 patches")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nwrote {args.out} ({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()

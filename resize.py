"""HyperHill: resizing a trained VQ codebook without retraining, with the paper's baselines.

Li et al., "Resizing codebook of vector quantization without retraining", Multimedia Systems 29:1499-1512 (2023),
doi:10.1007/s00530-023-01065-2 (no code published). Sec. 3, step by step: the code pairs of neighbouring latents
(Alg. 1, `cooccurrence`); their Poincare embedding (eqs. 6-9, `hyperbolic.fit`); the enhanced codebook (eq. 10,
`enhance`); the original codes in its Hilbert order, in B equal blocks (Alg. 3, `block_index`); a smaller codebook
as a smaller search, vocabulary and decoder unchanged (sec. 3.3.1, `block_search`); a larger one, HyperHill-EXT
(sec. 3.3.2, eq. 13, `extend`). Baselines (sec. 4.1.3), same search: "kmeans", "lsh", "hilbert" (w/o HE, Table 6).
Where we depart, the function says so; our defaults `OURS` differ from `PAPER` (`python resize.py` measures both).
Ours, beyond the paper: a CLI (`python resize.py --help`); vocabularies of other sizes live in vocabulary.py."""
import argparse
import json
import math
import os
import sys
import time
from typing import NamedTuple

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
from array_api_compat import array_namespace, device

import arrays
import hilbert
import hyperbolic
import vq
from arrays import check_array, check_choice, check_indices, check_matrix, check_number, namespace, to_host

METHODS = ("hyperhill", "hilbert", "lsh", "kmeans")  # block_index's orders: the paper's, w/o HE, two baselines
RULES = ("distance", "dot")  # a query's code: the nearest (VQGAN) or the one of highest dot product (IBQ)
KEYS = ("quantize.embedding.weight", "quantizer.codebook")  # --codebook's keys: taming, LlamaGen, SEED-Voken; ours
# block_index's settings. hyperbolic.fit: dim, epochs (of `draws` x K edges; None: each pair once), lr, negatives,
# burn_in, weighted (pairs drawn by log(1 + count), else the set); enhance: weight, unseen; hilbert.order: bits, dims,
# bounds. Ours: a fit of seconds, not hours, and the curve on 2 principal axes, where it keeps neighbours together.
OURS = dict(dim=10, epochs=10, lr=0.1, negatives=10, burn_in=2, draws=8, weighted=True, weight=0.3, unseen="zero",
            bits=10, dims=2, bounds=None)
PAPER = dict(dim=32, epochs=500, lr=0.3, negatives=50, burn_in=0, draws=None, weighted=False, weight=None,
             unseen="uniform", bits=24, dims=None, bounds=(-1.0, 1.0))  # sec. 4.1.1, eq. 10, Alg. 3


class Cooccurrence(NamedTuple):  # the code co-occurrence graph of Alg. 1, sparse
    pairs: object  # int64 (M, 2): a < b in each row, rows sorted
    counts: object  # int64 (M,) > 0: how often each pair was seen


class BlockIndex(NamedTuple):  # the codes in order, cut into blocks: block b is perm[starts[b]:starts[b + 1]]
    perm: object  # int64 (K,): the order of the codes
    starts: object  # int64 (B + 1,): 0 = starts[0] < ... < starts[B] = K
    centers: object  # (B, d): each block's mean, which routes the queries

    def search(self, z, codebook, *, images, rule="distance", **options):
        return block_search(z, codebook, self, images=images, rule=rule, **options)


class BlockSearch(NamedTuple):  # what block_search found
    idx: object  # int64 (N,): each query's code, an id of the original codebook
    searched: object  # float64 (images,): per image, the mean share of the codebook its queries were scored on


def cooccurrence(tokens, k, *, window=1):
    """Alg. 1: every pair of positions of one token map (B, H, W) within Chebyshev distance `window` that holds two
    different codes a < b adds 1 to (a, b). Sparse, so k = 2^18 works."""
    k = check_number(k, "k", low=1, high=3_037_000_499, integer=True)  # a k + b fits in int64
    window = check_number(window, "window", low=1, integer=True)
    xp = check_indices(tokens, k, "tokens", ndim=3, empty_ok=True)
    t, (_, h, w) = xp.astype(tokens, xp.int64), tokens.shape
    keys = [xp.zeros((0,), dtype=xp.int64, device=device(t))]
    # the offsets (dy, dx) after (0, 0): half of the (2 window + 1)^2, so each pair of positions once
    for dy, dx in [(dy, dx) for dy in range(min(window + 1, h)) for dx in range(-window, window + 1) if
                   (dy, dx) > (0, 0) and abs(dx) < w]:
        a = t[:, :h - dy, max(0, -dx):w - max(0, dx)]  # (B, H - dy, W - |dx|)
        b = t[:, dy:, max(0, dx):w + min(0, dx)]  # the same positions shifted by (dy, dx)
        lo, hi = xp.reshape(xp.minimum(a, b), (-1,)), xp.reshape(xp.maximum(a, b), (-1,))
        keys.append(lo[lo != hi] * k + hi[lo != hi])  # the pair (a, b) as the key a k + b
    values, counts = xp.unique_counts(xp.concat(keys))
    order = xp.argsort(values)  # the standard leaves the order of unique values unspecified
    values = values[order]
    return Cooccurrence(xp.stack([values // k, values % k], axis=1), xp.astype(counts[order], xp.int64))


def enhance(codebook, embedding, *, weight=0.3, seen=None, unseen="zero", seed=0):
    """Eq. 10: the codes (k, d) beside their embedding (k, m), as is (weight=None: the paper) or (ours) logmap0'd and
    scaled to `weight` x the codes' total variance, as codes and hyperbolic radii have unrelated scales. Codes outside
    `seen` bool (k,) get `unseen`: "uniform" U(-1, 1) (the paper; drawn with `seed`) or "zero"."""
    xp = namespace(codebook=codebook, embedding=embedding, seen=seen)
    check_matrix(codebook, "codebook")
    check_matrix(embedding, "embedding", rows=codebook.shape[0], products=False)
    weight = None if weight is None else check_number(weight, "weight", low=0.0)
    check_choice(unseen, "unseen", ("zero", "uniform"))
    seed = check_number(seed, "seed", low=0, integer=True)
    if weight is not None and not bool(xp.all(xp.sum(embedding * embedding, axis=1) < 1)):  # logmap0 needs |x| < 1
        raise ValueError("embedding: has points on or outside the unit ball")
    if seen is not None:
        check_array(seen, "seen", kind="bool", shape=(codebook.shape[0],))
    return _enhance(codebook, embedding, weight, seen, unseen, seed, xp)


def _enhance(codebook, embedding, weight, seen, unseen, seed, xp):
    theta = xp.astype(embedding if weight is None else hyperbolic.logmap0(embedding), codebook.dtype)
    if weight is not None:
        var_codes, var_theta = (float(xp.sum(xp.var(x, axis=0))) for x in (codebook, theta))
        theta = theta * (math.sqrt(weight * var_codes / var_theta) if var_theta > 0 else 0.0)
    if seen is not None:
        fill = np.random.default_rng(seed).uniform(-1, 1, tuple(theta.shape)) if unseen == "uniform" else 0.0
        theta = xp.where(seen[:, None], theta, xp.asarray(fill, dtype=theta.dtype, device=device(theta)))
    return xp.concat([codebook, theta], axis=1)


def block_index(codebook, blocks=8, *, method="hyperhill", cooc=None, seed=0, progress=False, **settings):
    """Alg. 3: the codes' order by `method`, cut into `blocks` equal contiguous blocks. "hyperhill" (the Hilbert order
    of `enhance(codebook, Poincare embedding of cooc)`) needs `cooc`; the others ignore it. `settings` override OURS;
    with PAPER's, the unseen codes are those in no pair of cooc, and dims=None means all axes."""
    check_matrix(codebook, "codebook")
    check_choice(method, "method", METHODS)
    k = codebook.shape[0]
    blocks = check_number(blocks, "blocks", low=1, high=k, integer=True)
    seed = check_number(seed, "seed", low=0, integer=True)
    if set(settings) - set(OURS):
        raise TypeError(f"settings: unknown {sorted(set(settings) - set(OURS))}; known: {sorted(OURS)}")
    if cooc is not None and (not isinstance(cooc, tuple) or len(cooc) != 2):
        raise TypeError("cooc: expected the (pairs, counts) of cooccurrence")
    if cooc is not None:
        check_indices(cooc[0], k, "cooc", ndim=2, empty_ok=True)
        check_indices(cooc[1], 2**62, "cooc", ndim=1, empty_ok=True)
        if cooc[0].shape[1] != 2 or cooc[1].shape[0] != cooc[0].shape[0]:
            raise ValueError(f"cooc: expected pairs (M, 2) and counts (M,) >= 0, got pairs {tuple(cooc[0].shape)}")
    if method == "hyperhill" and (cooc is None or cooc[0].shape[0] == 0):
        raise ValueError("cooc: method 'hyperhill' needs a co-occurrence graph with pairs; 'hilbert' orders without")
    perm = _order(codebook, blocks, method, cooc, seed, progress, {**OURS, **settings})
    xp, starts = array_namespace(codebook), [b * k // blocks for b in range(blocks + 1)]
    x = xp.astype(xp.take(codebook, perm, axis=0), arrays.working_dtype(xp, codebook.dtype))  # float16: in float32
    centers = xp.stack([xp.mean(x[starts[b]:starts[b + 1], :], axis=0) for b in range(blocks)])
    starts = xp.asarray(starts, dtype=xp.int64, device=device(codebook))
    return BlockIndex(perm, starts, xp.astype(centers, codebook.dtype))


def _order(codebook, blocks, method, cooc, seed, progress, s):  # the permutation of `method`, int64 (K,)
    xp, dev, k = array_namespace(codebook), device(codebook), codebook.shape[0]
    if method == "lsh":  # the sum of the dot products with 16 vectors is the dot product with their sum
        r = np.random.default_rng(seed).uniform(-1, 1, (16, codebook.shape[1])).sum(axis=0)
        return xp.argsort(codebook @ xp.asarray(r, dtype=codebook.dtype, device=dev), stable=True)
    if method == "kmeans":
        return xp.asarray(_balanced_kmeans(codebook, blocks, seed), device=dev)
    x = codebook
    if method == "hyperhill":  # steps 2 and 3: the codes beside the Poincare embedding of cooc
        pairs, counts = cooc
        weights = xp.log1p(xp.astype(counts, xp.float64)) if s["weighted"] else None
        draws = pairs.shape[0] if s["draws"] is None else s["draws"] * k
        fit = {name: s[name] for name in ("dim", "epochs", "lr", "negatives", "burn_in")}
        theta = hyperbolic.fit(pairs, k, weights=weights, samples_per_epoch=draws, seed=seed, progress=progress, **fit)
        degree = arrays.scatter_add(xp.reshape(pairs, (-1,)), xp.ones((2 * pairs.shape[0], 1), device=dev), k)
        x = _enhance(codebook, theta, s["weight"], degree[:, 0] > 0, s["unseen"], seed, xp)  # seen: in a pair
    dims = None if s["dims"] is None else min(s["dims"], x.shape[1])
    return xp.astype(hilbert.order(x, bits=s["bits"], dims=dims, bounds=s["bounds"]), xp.int64)


def _balanced_kmeans(codebook, blocks, seed):  # NumPy: k-means centres given K/B codes each, nearest pairs first
    k, x = codebook.shape[0], to_host(codebook).astype(np.float64)
    d2 = ((x[:, None, :] - to_host(vq.kmeans(codebook, blocks, seed=seed))[None, :, :]) ** 2).sum(axis=2)  # (K, B)
    room, owner = np.diff(np.arange(blocks + 1) * k // blocks), np.full(k, -1)  # room: what each block still takes
    for flat in np.argsort(d2, axis=None, kind="stable"):
        code, block = divmod(int(flat), blocks)
        if owner[code] < 0 and room[block] > 0:  # else the code is placed already, or the block is full
            owner[code], room[block] = block, room[block] - 1
    return np.lexsort((d2[np.arange(k), owner], owner)).astype(np.int64)  # block by block, nearest codes first


def block_search(z, codebook, index, *, images, rule="distance", probes=1, exact=False, max_block_bytes=2**26):
    """Sec. 3.3.1: each query of z (N, d) picks the block whose centre is nearest (rule="distance") or scores highest
    (ours, "dot": argmax z.e); each image (`images` int (N,) in [0, N)) is quantized by exact search among the union of
    its queries' blocks: a few ranges of the order, not the paper's copies of all 2^B unions; ties: the lowest id.
    Ours: `probes` blocks a query; `exact` adds the blocks whose bound can match a query's best (the full search)."""
    if not isinstance(index, tuple) or len(index) != 3:
        raise TypeError(f"index: expected a BlockIndex (perm, starts, centers), got {type(index).__name__}")
    xp = namespace(z=z, codebook=codebook, images=images, perm=index[0], starts=index[1], centers=index[2])
    budget = check_number(max_block_bytes, "max_block_bytes", low=1, integer=True)
    check_matrix(codebook, "codebook", max_block_bytes=budget)
    check_matrix(z, "z", cols=codebook.shape[1], max_block_bytes=budget)
    if z.dtype != codebook.dtype:
        raise TypeError(f"codebook: dtype {codebook.dtype} differs from z's {z.dtype}")
    k = codebook.shape[0]
    arrays.check_permutation(index[0], k, "index.perm")
    check_array(index[1], "index.starts", kind="integral", ndim=1)
    starts = [int(s) for s in to_host(index[1])]
    if len(starts) < 2 or starts[0] != 0 or starts[-1] != k or any(a >= b for a, b in zip(starts, starts[1:])):
        raise ValueError(f"index.starts: expected 0 = starts[0] < ... < starts[-1] = {k}, got {starts}")
    check_matrix(index[2], "index.centers", rows=len(starts) - 1, cols=codebook.shape[1])
    check_array(images, "images", kind="integral", shape=(z.shape[0],))
    check_indices(images, z.shape[0], "images")
    check_choice(rule, "rule", RULES)
    probes = check_number(probes, "probes", low=1, high=len(starts) - 1, integer=True)
    if not isinstance(exact, bool):
        raise TypeError(f"exact: expected True or False, got {exact!r}")
    perm, centers = xp.astype(index[0], xp.int64), xp.astype(index[2], codebook.dtype)
    return _search(z, codebook, perm, starts, centers, xp.astype(images, xp.int64), rule, probes, exact, budget)


def _search(z, codebook, perm, starts, centers, images, rule, probes, exact, budget):
    xp, dev, (n, _), k = array_namespace(z, codebook), device(z), z.shape, codebook.shape[0]
    # Scores of z - m, e - m, m the centres' mean rounded: rounding errors follow the codes' spread, not their offset,
    # and integer data stays exact. "dot" moves only the codes: q.(e - m) = q.e - q.m, one offset for each query.
    c = xp.astype(centers, arrays.working_dtype(xp, z.dtype))
    shift = xp.round(xp.mean(c, axis=0))
    q, c = xp.astype(z, shift.dtype) - (shift if rule == "distance" else 0.0), c - shift
    route = q @ c.T - (0.5 * xp.sum(c * c, axis=1)[None, :] if rule == "distance" else 0.0)  # (N, B), as in _best
    top = xp.argsort(-route, axis=1, stable=True)[:, :probes]  # each query's best blocks, ties to the lower block
    picked = xp.any(xp.arange(c.shape[0], device=dev)[None, :, None] == top[:, None, :], axis=2)  # (N, B)
    n_images = int(xp.max(images)) + 1
    union = arrays.scatter_add(images, xp.astype(picked, q.dtype), n_images) > 0  # (images, B)
    need = xp.take(union, images, axis=0)  # (N, B): the blocks each query is scored on
    ids = [xp.sort(perm[starts[b]:starts[b + 1]]) for b in range(len(starts) - 1)]  # ascending: ties to the lowest
    best = _scan(q, codebook, ids, need, shift, rule, xp.full((n,), -xp.inf, dtype=q.dtype, device=dev),
                 xp.full((n,), k, dtype=xp.int64, device=dev), budget)
    if exact:
        more = _may_beat(q, codebook, ids, c, route, best[0], rule, shift) & ~need
        best, need = _scan(q, codebook, ids, more, shift, rule, *best, budget), need | more
    share = xp.asarray([(starts[b + 1] - starts[b]) / k for b in range(len(ids))], dtype=xp.float64, device=dev)
    own = xp.sum(xp.astype(need, xp.float64) * share[None, :], axis=1)  # (N,): each query's searched share
    total = arrays.scatter_add(images, xp.stack([own, xp.ones_like(own)], axis=1), n_images)  # (images, 2): sum, count
    return BlockSearch(best[1], total[:, 0] / xp.where(total[:, 1] > 0, total[:, 1], 1.0))


def _scan(q, codebook, ids, need, shift, rule, best, best_id, budget):  # (best, best_id) after the blocks of `need`
    xp = array_namespace(q, codebook)
    for b, block in enumerate(ids):  # one product a block, over the queries that need it
        rows = xp.nonzero(need[:, b])[0]
        if rows.shape[0] == 0:
            continue
        top, arg = _best(xp.take(q, rows, axis=0), codebook, block, shift, rule, budget)
        row_of = xp.clip(xp.cumulative_sum(xp.astype(need[:, b], xp.int64)) - 1, 0, None)  # query -> its row in rows
        top, arg = xp.take(top, row_of), xp.take(arg, row_of)
        better = need[:, b] & ((top > best) | ((top == best) & (arg < best_id)))  # a tie: the lower id
        best, best_id = xp.where(better, top, best), xp.where(better, arg, best_id)
    return best, best_id


def _best(q, codebook, ids, shift, rule, budget):  # (best score, its id) of each row of q among codebook[ids]
    xp, (n, d), dev = array_namespace(q, codebook), q.shape, device(q)
    rows = min(n, 1024)
    cols = max(1, budget // ((4 if q.dtype == xp.float32 else 8) * (rows + d)))  # (rows, cols) scores, (cols, d) codes
    best, best_id = xp.full((n,), -xp.inf, dtype=q.dtype, device=dev), xp.zeros((n,), dtype=ids.dtype, device=dev)
    for cs in arrays.blocks(ids.shape[0], cols):
        e = xp.astype(xp.take(codebook, ids[cs], axis=0), q.dtype) - shift  # (cols, d)
        half = 0.5 * xp.sum(e * e, axis=1)[None, :] if rule == "distance" else 0.0
        top, arg = [], []
        for rs in arrays.blocks(n, rows):  # one (rows, cols) block at a time
            s = q[rs, :] @ e.T - half  # larger is better: q.e - |e|^2 / 2 = (|q|^2 - |q - e|^2) / 2, or q.e
            arg.append(xp.argmax(s, axis=1))  # the first maximum: ids ascend, so the lowest id of a tie
            top.append(xp.take(xp.reshape(s, (-1,)), xp.arange(s.shape[0], device=dev) * s.shape[1] + arg[-1]))
        top, arg = xp.concat(top), xp.take(ids[cs], xp.concat(arg))
        better = top > best  # strictly: on a tie the lower ids of earlier columns keep the code
        best, best_id = xp.where(better, top, best), xp.where(better, arg, best_id)
    return best, best_id


def _may_beat(q, codebook, ids, c, route, best, rule, shift):
    """(N, B): the blocks that may hold a code as good as the query's best (derived): with r_b the radius of block b
    about its centre c_b, |q - e| >= |q - c_b| - r_b ("distance"), q.e <= q.c_b + |q| r_b ("dot"), up to rounding."""
    xp = array_namespace(q, codebook)
    radius = xp.stack([xp.max(xp.linalg.vector_norm(xp.astype(xp.take(codebook, block, axis=0), q.dtype) - shift
                                                    - c[b, :], axis=1)) for b, block in enumerate(ids)])[None, :]
    tol, qq = 1e3 * float(xp.finfo(q.dtype).eps), xp.sum(q * q, axis=1)[:, None]  # (N, 1)
    if rule == "distance":  # |q - c|^2 = |q|^2 - 2 route, |q - best|^2 = |q|^2 - 2 best
        lower = xp.clip(xp.sqrt(xp.clip(qq - 2 * route, 0.0, None)) - radius, 0.0, None)
        return lower**2 <= qq - 2 * best[:, None] + tol * (qq + xp.sum(c * c, axis=1)[None, :] + radius**2)
    upper = route + xp.sqrt(qq) * radius
    return upper >= best[:, None] - tol * xp.sqrt(qq) * (xp.linalg.vector_norm(c, axis=1)[None, :] + radius)


def extend(codebook, k, *, perm, rule="distance"):
    """HyperHill-EXT (eq. 13): k(K - 1) + 1 codes, the old K first (old ids stay valid), then, gap by gap along perm,
    e_i + (j/k)(e_{i+1} - e_i) for j = 1..k-1. rule="dot" (ours, derived): z.(t a + (1 - t) b) <= max(z.a, z.b), no
    point of a segment wins an argmax z.e, so the new codes go on the arc between a and b, of norm (1 - t)|a| + t|b|."""
    xp = namespace(codebook=codebook, perm=perm)
    check_matrix(codebook, "codebook")
    arrays.check_permutation(perm, codebook.shape[0], "perm")
    k = check_number(k, "k", low=1, integer=True)
    check_choice(rule, "rule", RULES)
    (n, d), dt, parts = codebook.shape, arrays.working_dtype(xp, codebook.dtype), [codebook]
    for s in arrays.blocks((n - 1) * (k - 1), max(1, 2**20 // d)):  # 2^20 values of new codes at a time
        j = xp.arange(s.start, s.stop, dtype=xp.int64, device=device(codebook))  # new code j is in gap j // (k - 1)
        a = xp.astype(xp.take(codebook, xp.take(perm, j // (k - 1)), axis=0), dt)  # perm[gap]
        b = xp.astype(xp.take(codebook, xp.take(perm, j // (k - 1) + 1), axis=0), dt)  # perm[gap + 1]
        parts.append(xp.astype(_interpolate(a, b, xp.astype(j % (k - 1) + 1, dt) / k, rule), codebook.dtype))
    return xp.concat(parts, axis=0) if len(parts) > 1 else codebook


def _interpolate(a, b, t, rule):  # t (n,) of the way from a (n, d) to b: the segment, or for "dot" the arc, below
    xp, line = array_namespace(a, b, t), a + t[:, None] * (b - a)
    if rule == "distance":
        return line
    na, nb = xp.linalg.vector_norm(a, axis=1), xp.linalg.vector_norm(b, axis=1)
    ua, ub = a / xp.where(na > 0, na, 1.0)[:, None], b / xp.where(nb > 0, nb, 1.0)[:, None]
    omega = xp.acos(xp.clip(xp.sum(ua * ub, axis=1), -1.0, 1.0))  # the angle between a and b
    ok = (na > 0) & (nb > 0) & (xp.sin(omega) > 1e-6)  # else a zero code, or a parallel pair
    sin = xp.where(ok, xp.sin(omega), 1.0)[:, None]
    arc = (xp.sin((1 - t) * omega)[:, None] * ua + xp.sin(t * omega)[:, None] * ub) / sin  # unit vectors (slerp)
    return xp.where(ok[:, None], ((1 - t) * na + t * nb)[:, None] * arc, line)


def save_index(index, path, **settings):  # a BlockIndex as safetensors, its settings as JSON metadata, atomically
    tensors = {name: np.ascontiguousarray(to_host(a)) for name, a in zip(BlockIndex._fields, index)}
    _write(path, lambda f: f.write(safetensors.numpy.save(tensors, metadata={"settings": json.dumps(settings)})))


def load_index(path):  # the BlockIndex (NumPy) that save_index wrote
    tensors = safetensors.numpy.load_file(path)
    if set(tensors) != set(BlockIndex._fields):
        raise ValueError(f"{path}: not a block index (it holds {sorted(tensors)})")
    return BlockIndex(*(tensors[name] for name in BlockIndex._fields))


def _write(path, save):  # save(f) into a temporary file beside path, then a rename: never half a file at `path`
    tmp = f"{os.path.abspath(path)}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            save(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _codebook(args):  # (codebook float32 (K, d), its key, rule) of --codebook CKPT[:KEY] and --rule
    path, key = args.codebook, None
    if not os.path.exists(path) and ":" in path:
        path, key = path.rsplit(":", 1)
    if path.endswith(".npy"):
        top = np.load(path, allow_pickle=False)
    elif path.endswith(".safetensors"):
        top = safetensors.torch.load_file(path)  # torch: bfloat16 too
    else:
        with torch.serialization.safe_globals([argparse.Namespace]):  # LlamaGen's checkpoints hold their args
            top = torch.load(path, "cpu", weights_only=True)
    flat, wanted = _flat(top), [key] if key else list(KEYS)
    found = [(name, want) for want in wanted for name in flat if name == want or name.endswith("." + want)]
    if not found and "" not in flat:  # "": the array of a .npy
        raise ValueError(f"--codebook: no key {' or '.join(wanted)} in {path}; it holds {', '.join(sorted(flat)[:12])}")
    # the first wanted key, then the live weights (not an EMA copy), then the shortest name
    name, key = min(found, key=lambda f: (wanted.index(f[1]), "ema" in f[0], len(f[0]))) if found else ("", "codebook")
    check_matrix(flat[name], f"--codebook {path}:{name} (a (K, d) codebook)", products=False)
    names = " ".join(flat)  # the family, by the names its public code gives the tensors, tells the rule
    ours = isinstance(top, dict) and any(isinstance(v, dict) and v.get("quantizer") == "ibq" for v in top.values())
    guess = "dot" if "model_ema." in names or ours else "distance"  # SEED-Voken (LitEma's model_ema.*), our IBQ
    guess = "cosine" if "codebook_used" in names or "encoder.conv_blocks." in names else guess  # LlamaGen
    cb, rule = flat[name].astype(np.float32), args.rule or guess
    print(f"codebook {path}:{name} {cb.shape[0]} x {cb.shape[1]}: rule {rule}", file=sys.stderr)
    if rule == "cosine":  # LlamaGen quantizes F.normalize(z) against F.normalize(codes): the nearest, unit rows
        cb = cb / np.maximum(np.linalg.norm(cb, axis=1, keepdims=True), 1e-12)
    return cb, key, rule


def _flat(node, prefix=""):  # {"a.b.c": array (NumPy)} of nested dicts; a lone array is {"": it}
    if isinstance(node, dict):
        return {name: v for key, child in node.items() for name, v in _flat(child, f"{prefix}{key}.").items()}
    if isinstance(node, torch.Tensor):
        node = (node.float() if node.is_floating_point() else node).numpy()
    return {prefix[:-1]: node} if isinstance(node, np.ndarray) else {}


def _array(path, name):  # a .npy, or the only (or the 'tokens') array of a .npz
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):
        return data
    if len(data.files) != 1 and "tokens" not in data.files:
        raise ValueError(f"{name}: {path} holds {data.files}: expected one array, or 'tokens'")
    return data["tokens" if "tokens" in data.files else data.files[0]]


def _cmd_index(args):
    cb, _, rule = _codebook(args)
    tokens, k = _array(args.tokens, "--tokens"), len(cb)
    check_indices(tokens, k, "--tokens", ndim=3)
    parts = [cooccurrence(tokens[s:s + 256], k) for s in range(0, len(tokens), 256)]  # bounded memory, then summed
    keys, where = np.unique(np.concatenate([p[:, 0] * k + p[:, 1] for p, _ in parts]), return_inverse=True)
    counts = np.bincount(where, np.concatenate([c for _, c in parts])).astype(np.int64)
    cooc = Cooccurrence(np.stack([keys // k, keys % k], axis=1), counts)
    index = block_index(cb, args.blocks, method=args.method, cooc=cooc, progress=True, **(PAPER if args.paper else {}))
    save_index(index, args.out, method=args.method, blocks=args.blocks, rule=rule, paper=args.paper)
    print(f"wrote {args.out}: the block index of {len(cb)} codes, from {tokens.size:,} tokens")


def _cmd_extend(args):
    cb, key, rule = _codebook(args)
    ext = extend(cb, args.k, perm=load_index(args.index).perm, rule="dot" if rule == "dot" else "distance")
    _write(args.out, lambda f: f.write(safetensors.numpy.save({key: ext}, metadata={"k": str(args.k), "rule": rule})))
    print(f"wrote {args.out}: {key} {ext.shape[0]} x {ext.shape[1]}; resize the embedding to {len(ext)} codes first")


def _cmd_search(args):
    cb, _, rule = _codebook(args)
    z = _array(args.latents, "--latents").astype(np.float32)
    check_array(z, "--latents", ndim=2)
    if rule == "cosine":  # the nearest unit code to the unit latent
        z, rule = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12), "distance"
    t0 = time.perf_counter()
    found = block_search(z, cb, load_index(args.index), images=_array(args.images, "--images"), rule=rule)
    print(f"{len(z):,} queries in {time.perf_counter() - t0:.2f} s: searched {100 * found.searched.mean():.1f} %")
    if args.agreement:  # one block: the full search
        full = block_search(z, cb, block_index(cb, 1, method="lsh"), images=np.zeros(len(z), np.int64), rule=rule)
        print(f"agreement with the full search {100 * np.mean(full.idx == found.idx):.2f} %")
    if args.out:
        _write(args.out, lambda f: np.save(f, found.idx))


def main(argv=None):  # python resize.py index|extend|search ... (see --help); no command: the demo
    parser = argparse.ArgumentParser(prog="resize.py", description=__doc__.split("\n")[0] + " No command: the demo.")
    sub = parser.add_subparsers(dest="command")
    index, ext, search = (sub.add_parser(name, help=text, description=text) for name, text in (
        ("index", "a block index of a checkpoint's codebook, from token maps"),
        ("extend", "the HyperHill-EXT codebook (eq. 13), under the same key"),
        ("search", "tokens by the block search, with the searched share")))
    for command in (index, ext, search):
        command.add_argument("--codebook", required=True, metavar="CKPT[:KEY]", help="a .pt/.ckpt (Lightning's too), "
                             f".safetensors or .npy; KEY default: {', then '.join(KEYS)}")
        command.add_argument("--rule", choices=RULES + ("cosine",), help="distance (VQGAN), dot (IBQ), cosine "
                             "(LlamaGen: codes and latents l2-normalised, then nearest); default: from the checkpoint")
        command.add_argument("--out", required=command is not search)
        if command is not index:
            command.add_argument("--index", required=True, help="the block index that `index` wrote")
    index.add_argument("--tokens", required=True, help=".npy/.npz of int (B, H, W) token maps")
    index.add_argument("--blocks", type=int, default=8)
    index.add_argument("--method", choices=METHODS, default="hyperhill")
    index.add_argument("--paper", action="store_true", help="the paper's settings (PAPER), not ours")
    ext.add_argument("-k", type=int, required=True, help="k - 1 new codes between neighbours")
    search.add_argument("--latents", required=True, help=".npy float (N, d)")
    search.add_argument("--images", required=True, help=".npy int (N,)")
    search.add_argument("--agreement", action="store_true", help="also the share equal to the full search")
    args = parser.parse_args(argv)
    if args.command is None:
        return demo()
    try:  # a one-line message, no traceback; _write leaves nothing half-written at --out
        {"index": _cmd_index, "extend": _cmd_extend, "search": _cmd_search}[args.command](args)
    except Exception as e:
        print(f"resize.py {args.command}: error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        sys.exit(2)


def demo_patches(held_out=False):
    """4 x 4 RGB patches (N, 48) in [0, 1] of 7 training (or 2 held-out) photos, in tiles of 16 x 16: 256 an image."""
    from skimage import data as ski
    from sklearn.datasets import load_sample_images
    china, flower = load_sample_images().images
    photos = (flower, ski.chelsea()) if held_out else (ski.astronaut(), ski.coffee(), ski.rocket(), china, ski.retina(),
                                                       ski.immunohistochemistry(), ski.hubble_deep_field())
    tiles = [im[:im.shape[0] // 64 * 64, :im.shape[1] // 64 * 64, :3].reshape(im.shape[0] // 64, 16, 4,
             im.shape[1] // 64, 16, 4, 3) for im in photos]  # (tile, patch, pixel) rows, the same columns, RGB
    return np.concatenate([t.transpose(0, 3, 1, 4, 2, 5, 6).reshape(-1, 48) for t in tiles]) / np.float32(255)


def demo(k=512, paper_epochs=10, out="resize.png"):
    """Tables 3, 5, 6 and 7 in miniature on `demo_patches`, and the figure of Table 7: EXT's held-out PSNR."""
    import matplotlib.pyplot as plt
    plt.switch_backend("Agg")
    t0, x, z = time.perf_counter(), demo_patches(), demo_patches(held_out=True)
    cb = vq.kmeans(x[np.random.default_rng(0).choice(len(x), 30000)], k, iters=20)
    tokens, images = vq.nearest(x, cb).reshape(-1, 16, 16), np.repeat(np.arange(len(z) // 256), 256)
    cooc, (full, t_full) = cooccurrence(tokens, k), _timed(lambda: vq.nearest(z, cb))

    def psnr(idx, codes=cb):  # of the held-out latents quantized to codes[idx]
        return -10 * math.log10(np.mean((z - codes[idx]) ** 2))
    print(f"{len(tokens)} training and {len(z) // 256} held-out images of 256 latents (d = 48); K = {k}, "
          f"{len(cooc.counts)} pairs; full search {1e3 * t_full:.0f} ms, {psnr(full):.2f} dB")
    setups = {"hyperhill (ours)": ("hyperhill", {}), "w/o HE (ours)": ("hilbert", {}), "lsh": ("lsh", {}),
              f"hyperhill (PAPER, {paper_epochs} epochs)": ("hyperhill", dict(PAPER, epochs=paper_epochs)),
              "kmeans": ("kmeans", {})}
    sizes = [j * (k - 1) + 1 for j in (2, 4, 8, 16)]
    _row("Tables 3, 6, 7: B = 8", "searched %", "time %", "agreement %", "PSNR dB", "build s",
         *(f"EXT {n}" for n in sizes), header=True)
    for name, (method, settings) in setups.items():
        index, build = _timed(lambda: block_index(cb, 8, method=method, cooc=cooc, **settings), repeat=1)
        (idx, searched), sec = _timed(lambda: block_search(z, cb, index, images=images))
        ext = [psnr(vq.nearest(z, e), e) for e in (extend(cb, j, perm=index.perm) for j in (2, 4, 8, 16))]
        _row(name, f"{100 * searched.mean():.1f}", f"{100 * sec / t_full:.0f}", f"{100 * np.mean(idx == full):.1f}",
             f"{psnr(idx):.2f}", f"{build:.1f}", *(f"{p:.2f}" for p in ext))
        plt.plot([k] + sizes, [psnr(full)] + ext, marker="o", label=name)
    sweep = [block_search(z, cb, block_index(cb, b, cooc=cooc), images=images) for b in (1, 4, 6, 8, 10)]
    _row("Table 5: hyperhill (ours), B", 1, 4, 6, 8, 10, header=True)
    _row("searched %", *(f"{100 * f.searched.mean():.1f}" for f in sweep))
    _row("PSNR dB", *(f"{psnr(f.idx):.2f}" for f in sweep))
    plt.gca().set(xscale="log", xlabel="codebook size (HyperHill-EXT, k = 1 ... 16)", ylabel="held-out PSNR dB")
    plt.legend(fontsize=7)
    plt.savefig(out, dpi=110)
    print(f"\nwrote {out} ({time.perf_counter() - t0:.0f} s)")


def _row(*cells, header=False):  # a markdown table row; a header starts a table, after a blank line
    line = "| " + " | ".join(map(str, cells)) + " |"
    print(f"\n{line}\n|" + " --- |" * len(cells) if header else line)


def _timed(f, repeat=3):  # the result and the best of `repeat` wall times (the CPU may be shared)
    runs = [(time.perf_counter(), f(), time.perf_counter()) for _ in range(repeat)]
    return runs[-1][1], min(b - a for a, _, b in runs)


if __name__ == "__main__":
    main()

"""Vector quantization: nearest code, straight-through gradient, k-means and EMA codebooks.

The quantizer of VQ-VAE (van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation
Learning", NeurIPS 2017, arXiv 1711.00937) as used by VQGAN (Esser, Rombach, Ommer, "Taming
Transformers for High-Resolution Image Synthesis", CVPR 2021, arXiv 2012.09841):

- sec. 3.1, eq. (1)-(2): z_q = e_k with k = argmin_j ||z - e_j||^2          -> `nearest`, `vq_forward`
- sec. 3.2, eq. (3): loss = ||sg[z] - e||^2 + beta ||z - sg[e]||^2, gradient of z_q copied
  straight through to z; here as means over all entries, as in VQGAN's `VectorQuantizer2`
                                                                               -> `vq_forward`/`vq_backward`
- appendix A.1: the codebook as an exponential moving average of the assigned vectors (with the
  Laplace smoothing of Sonnet's `VectorQuantizerEMA`)                          -> `ema_update`
- k-means++ (Arthur & Vassilvitskii, SODA 2007) + Lloyd, for codebook initialisation -> `kmeans`
- usage counts, utilization and perplexity, the codebook statistics users ask for -> `usage`, `perplexity`

Reference code it agrees with: VQGAN's taming/modules/vqvae/quantize.py (VectorQuantizer2, legacy
loss form), Sonnet's vqvae.py (VectorQuantizerEMA), vector-quantize-pytorch (empty k-means clusters
keep their centre; dead codes re-seeded with count and sum reset together).

Every function is array-API code (NumPy, array_api_strict, torch, CuPy). Distances are computed in
blocks of at most `max_block_bytes`, never as an N x K matrix: the score z.e - ||e||^2/2 (the
argmax of which is the argmin of ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2) comes out of ONE matrix
product of z augmented with a column of -1 and the codes augmented with ||e||^2/2, so the product
dominates the cost and the argmax is the only other pass over the block.
`python vq.py` fits codebooks to scikit-learn's digits and prints their usage.
"""
import argparse
import math
from typing import NamedTuple

import numpy as np
import torch
from array_api_compat import array_namespace, device, is_array_api_obj, is_numpy_namespace, is_torch_namespace


# ---------------------------------------------------------------- input checks (ibq.py uses them too)

def check_number(value, name, *, low=None, high=None, integer=False, low_open=False):
    """A real Python/NumPy number in [low, high] (or (low, high] with low_open); returns it."""
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise TypeError(f"{name}: expected {'an integer' if integer else 'a real number'}, got {value!r}")
    if not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) \
            or (high is not None and value > high):
        raise ValueError(f"{name}: {value!r} is outside {'(' if low_open else '['}{low}, {high}]")
    return value


def check_float(x, name):
    """x is an array with a real floating dtype."""
    if not is_array_api_obj(x):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    if not array_namespace(x).isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name}: expected a real floating dtype, got {x.dtype}")


def check_finite(x, name, *, max_block_bytes=2**26):
    """No NaN or inf in x, checked in row blocks so a huge codebook needs no whole-size temporary."""
    xp = array_namespace(x)
    row = math.prod(x.shape[1:]) or 1
    rows = max(1, max_block_bytes // row)
    for i in range(0, x.shape[0], rows):
        if not bool(xp.all(xp.isfinite(x[i:min(i + rows, x.shape[0]), ...]))):
            raise ValueError(f"{name}: contains NaN or inf")


def check_matrix(x, name, *, cols=None, max_block_bytes=2**26):
    """x is a finite, non-empty, real floating array of shape (n, cols)."""
    check_float(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array (n, d), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: is empty, shape {tuple(x.shape)}")
    if cols is not None and x.shape[1] != cols:
        raise ValueError(f"{name}: expected {cols} columns, got shape {tuple(x.shape)}")
    check_finite(x, name, max_block_bytes=max_block_bytes)


def check_indices(idx, k, name):
    """idx is a non-empty integer array with values in [0, k)."""
    if not is_array_api_obj(idx):
        raise TypeError(f"{name}: expected an array, got {type(idx).__name__}")
    xp = array_namespace(idx)
    if not xp.isdtype(idx.dtype, "integral"):
        raise TypeError(f"{name}: expected an integer dtype, got {idx.dtype}")
    if idx.size == 0:
        raise ValueError(f"{name}: is empty")
    if bool(xp.any(idx < 0)) or bool(xp.any(idx >= k)):
        raise ValueError(f"{name}: values must lie in [0, {k})")


def compute_dtype(xp, dtype):
    """float16/bfloat16 accumulate in float32; float32 and float64 stay as they are."""
    return dtype if dtype in (xp.float32, xp.float64) else xp.float32


# ---------------------------------------------------------------- nearest code, in blocks

def block_shape(n, k, d, itemsize, max_block_bytes):
    """(rows, cols) of the score block: rows of z by cols codes, with their (d+1)-wide augmented
    copies, in at most max_block_bytes (never below one row by one code).

    Blocks are long in K: the argmax runs along contiguous rows and each augmented code block is
    made once. Rows stop at 256, where the BLAS already runs at full speed and the block still
    sits in cache; they halve while the budget would make the block narrower than 4 x rows."""
    units = max_block_bytes // itemsize
    rows = min(n, 256)
    while True:
        cols = min(k, (units - rows * (d + 1)) // (rows + d + 1))
        if rows == 1 or cols >= min(k, 4 * rows):
            return rows, max(1, cols)
        rows //= 2


def nearest(z, codebook, *, max_block_bytes=2**26):
    """Index (int64, (N,)) of the code nearest to each row of z (N, d) among codebook (K, d), in
    squared Euclidean distance (eq. 1); exactly equal scores go to the lowest index."""
    check_number(max_block_bytes, "max_block_bytes", low=0, low_open=True, integer=True)
    check_matrix(z, "z", max_block_bytes=max_block_bytes)
    check_matrix(codebook, "codebook", cols=z.shape[1], max_block_bytes=max_block_bytes)
    xp = array_namespace(z, codebook)
    if z.dtype != codebook.dtype:
        raise TypeError(f"codebook: dtype {codebook.dtype} differs from z's {z.dtype}")
    dt = compute_dtype(xp, z.dtype)
    (n, d), k = z.shape, codebook.shape[0]
    rows, cols = block_shape(n, k, d, 4 if dt == xp.float32 else 8, max_block_bytes)
    best, best_idx = [None] * len(range(0, n, rows)), [None] * len(range(0, n, rows))
    for k0 in range(0, k, cols):
        e = xp.astype(codebook[k0:min(k0 + cols, k), :], dt, copy=False)  # a view when no cast is needed
        e_aug = xp.concat([e, 0.5 * xp.vecdot(e, e)[:, None]], axis=1)  # (cols, d+1): [e, ||e||^2/2]
        for j, i in enumerate(range(0, n, rows)):
            zb = xp.astype(z[i:min(i + rows, n), :], dt, copy=False)
            z_aug = xp.concat([zb, -xp.ones((zb.shape[0], 1), dtype=dt, device=device(z))], axis=1)
            s = z_aug @ e_aug.T  # (rows, cols): z.e - ||e||^2/2, larger is nearer
            a = xp.argmax(s, axis=1)  # first maximum: the lowest index among ties
            top = xp.take(xp.reshape(s, (-1,)), xp.arange(s.shape[0], device=device(z)) * s.shape[1] + a)
            if best[j] is None:
                best[j], best_idx[j] = top, a
            else:  # strictly better only: on a tie the earlier (lower) block keeps the code
                better = top > best[j]
                best[j], best_idx[j] = xp.where(better, top, best[j]), xp.where(better, a + k0, best_idx[j])
            del s  # free this block before the next is made: one block alive at a time, not two
        del e_aug
    return xp.astype(xp.concat(best_idx), xp.int64)


# ---------------------------------------------------------------- sums over assigned codes

def scatter_rows(idx, values, k, *, max_block_bytes=2**26):
    """out[j] = sum of values[i] over i with idx[i] == j; (k, d) from idx (N,) and values (N, d).

    The array API has no scatter-add, so NumPy (np.add.at) and torch (index_add_) take their own
    fast path; elsewhere a one-hot block (N, cols) times values is exact and portable."""
    xp = array_namespace(idx, values)
    shape = (k, values.shape[1])
    if is_numpy_namespace(xp):
        out = np.zeros(shape, dtype=values.dtype)
        np.add.at(out, idx, values)
        return out
    if is_torch_namespace(xp):
        return torch.zeros(shape, dtype=values.dtype, device=values.device).index_add_(0, idx, values)
    cols = max(1, max_block_bytes // (values.shape[0] * 8))
    parts = []
    for k0 in range(0, k, cols):
        codes = xp.arange(k0, min(k, k0 + cols), dtype=idx.dtype, device=device(idx))
        onehot = xp.astype(idx[:, None] == codes[None, :], values.dtype)  # (N, cols)
        parts.append(onehot.T @ values)
    return xp.concat(parts, axis=0)


def usage(idx, k):
    """How often each of the k codes occurs in idx (any shape): int64 (k,)."""
    check_number(k, "k", low=1, integer=True)
    check_indices(idx, k, "idx")
    xp = array_namespace(idx)
    flat = xp.reshape(xp.astype(idx, xp.int64), (-1,))
    if is_numpy_namespace(xp):
        return np.bincount(flat, minlength=k).astype(np.int64)
    if is_torch_namespace(xp):
        return torch.bincount(flat, minlength=k)
    ones = xp.ones((flat.shape[0], 1), dtype=xp.float64, device=device(idx))  # exact below 2**53
    return xp.astype(scatter_rows(flat, ones, k)[:, 0], xp.int64)


def perplexity(counts):
    """exp of the entropy of the code distribution counts / sum(counts): K when all codes are
    equally used, 1 when one code takes everything."""
    if not is_array_api_obj(counts):
        raise TypeError(f"counts: expected an array, got {type(counts).__name__}")
    xp = array_namespace(counts)
    if counts.ndim != 1 or counts.shape[0] == 0:
        raise ValueError(f"counts: expected a non-empty 1-d array, got shape {tuple(counts.shape)}")
    if xp.isdtype(counts.dtype, "complex floating") or xp.isdtype(counts.dtype, "bool"):
        raise TypeError(f"counts: expected a real dtype, got {counts.dtype}")
    c = xp.astype(counts, xp.float64 if xp.isdtype(counts.dtype, "integral") else counts.dtype)
    if not bool(xp.all(xp.isfinite(c))) or bool(xp.any(c < 0)) or not float(xp.sum(c)) > 0:
        raise ValueError("counts: must be finite, non-negative and not all zero")
    p = c / xp.sum(c)
    return float(xp.exp(-xp.sum(p * xp.log(xp.where(p > 0, p, 1.0)))))


# ---------------------------------------------------------------- forward / backward

class VQCache(NamedTuple):
    """What vq_backward needs: the residual z - z_q (N, d), the indices (N,), K, beta, z's dtype."""
    residual: object
    idx: object
    k: int
    beta: float
    dtype: object


def vq_forward(z, codebook, *, beta=0.25, max_block_bytes=2**26):
    """z_q = codebook[idx] (eq. 2) and loss = mean((z_q - sg z)^2) + beta mean((sg z_q - z)^2)
    (eq. 3: codebook loss + commitment loss). Returns (z_q, loss, idx, cache)."""
    check_number(beta, "beta", low=0.0)
    idx = nearest(z, codebook, max_block_bytes=max_block_bytes)
    xp = array_namespace(z, codebook)
    dt = compute_dtype(xp, z.dtype)
    z_q = xp.take(codebook, idx, axis=0)  # (N, d)
    r = xp.astype(z, dt) - xp.astype(z_q, dt)
    loss = (1.0 + beta) * xp.mean(r * r)  # both terms have the value mean((z - z_q)^2)
    return z_q, xp.astype(loss, z.dtype), idx, VQCache(r, idx, codebook.shape[0], beta, z.dtype)


def vq_backward(cache, grad_zq, grad_loss=1.0):
    """(grad_z, grad_codebook) of vq_forward: grad_zq goes straight through to z (the gradient of
    z + sg(z_q - z)), plus the loss's gradients: 2 beta (z - z_q) / (N d) to z and
    2 (z_q - z) / (N d), summed per code, to the codebook.

    grad_zq is not checked for NaN/inf: mixed-precision loss scaling relies on them passing."""
    r = cache.residual
    check_float(grad_zq, "grad_zq")
    if tuple(grad_zq.shape) != tuple(r.shape):
        raise ValueError(f"grad_zq: expected shape {tuple(r.shape)}, got {tuple(grad_zq.shape)}")
    xp = array_namespace(r, grad_zq)
    scale = grad_loss * (2.0 / (r.shape[0] * r.shape[1]))
    grad_z = xp.astype(grad_zq, r.dtype) + (scale * cache.beta) * r
    grad_codebook = scatter_rows(cache.idx, -scale * r, cache.k)
    return xp.astype(grad_z, cache.dtype), xp.astype(grad_codebook, cache.dtype)


# ---------------------------------------------------------------- k-means

def _pick(xp, p, rng):
    """A row index drawn with probability proportional to p (N,), from a host uniform draw."""
    c = xp.cumulative_sum(p)
    u = xp.asarray([rng.random() * float(c[-1])], dtype=c.dtype, device=device(p))
    return min(int(xp.searchsorted(c, u, side="right")[0]), p.shape[0] - 1)


def _sq_dist(x, c):
    d = x - c
    return array_namespace(x).sum(d * d, axis=-1)


def kmeans(x, k, *, iters=25, seed=0, weights=None, max_block_bytes=2**26):
    """k centres (k, d) of the rows of x (N, d): k-means++ seeding, then Lloyd iterations.

    weights (N,) >= 0 weigh the points (e.g. code usage); an empty cluster keeps its centre.
    Deterministic for a seed on a given backend; returns the best centres seen, so never worse
    (in weighted inertia) than the k-means++ initialisation (iters=0)."""
    check_matrix(x, "x")
    check_number(k, "k", low=1, high=x.shape[0], integer=True)
    check_number(iters, "iters", low=0, integer=True)
    check_number(seed, "seed", low=0, integer=True)
    xp = array_namespace(x)
    dtype, dt = x.dtype, compute_dtype(xp, x.dtype)
    x = xp.astype(x, dt)
    if weights is None:
        w = xp.ones(x.shape[0], dtype=dt, device=device(x))
    else:
        check_float(weights, "weights")
        if tuple(weights.shape) != (x.shape[0],):
            raise ValueError(f"weights: expected shape ({x.shape[0]},), got {tuple(weights.shape)}")
        w = xp.astype(weights, dt)
        if not bool(xp.all(xp.isfinite(w))) or bool(xp.any(w < 0)) or not float(xp.sum(w)) > 0:
            raise ValueError("weights: must be finite, non-negative and not all zero")
    rng = np.random.default_rng(seed)
    # k-means++: each next seed drawn with probability w * D^2 (D: distance to the nearest seed);
    # when D^2 is zero everywhere (fewer distinct points than k) the seeds repeat points.
    chosen = [_pick(xp, w, rng)]
    d2 = _sq_dist(x, x[chosen[0], :])
    for _ in range(1, k):
        p = w * d2
        chosen.append(_pick(xp, p if float(xp.sum(p)) > 0 else w, rng))
        d2 = xp.minimum(d2, _sq_dist(x, x[chosen[-1], :]))
    centers = xp.take(x, xp.asarray(chosen, device=device(x)), axis=0)  # (k, d)
    best, best_inertia, prev = centers, math.inf, None
    for it in range(iters + 1):
        idx = nearest(x, centers, max_block_bytes=max_block_bytes)
        inertia = float(xp.sum(w * _sq_dist(x, xp.take(centers, idx, axis=0))))
        if inertia < best_inertia:
            best, best_inertia = centers, inertia
        if it == iters or (prev is not None and bool(xp.all(idx == prev))):
            break  # out of iterations, or converged: the next centres would be these
        mass = scatter_rows(idx, w[:, None], k)  # (k, 1)
        sums = scatter_rows(idx, w[:, None] * x, k)  # (k, d)
        centers = xp.where(mass > 0, sums / xp.where(mass > 0, mass, 1.0), centers)
        prev = idx
    return xp.astype(best, dtype)


# ---------------------------------------------------------------- EMA codebook

class EMAState(NamedTuple):
    """EMA codebook state: codebook (K, d) = sum_z / smoothed count; count (K,) the EMA of
    assignment counts; sum_z (K, d) the EMA of the sums of the assigned vectors."""
    codebook: object
    count: object
    sum_z: object


def ema_state(codebook):
    """Initial state: each code counts as one observation of itself, so an unused code decays
    slowly towards zero instead of being divided by a zero count."""
    xp = array_namespace(codebook)
    return EMAState(codebook, xp.ones(codebook.shape[0], dtype=codebook.dtype, device=device(codebook)), codebook)


def ema_update(state, z, idx, *, decay=0.99, eps=1e-5, dead_below=0.0, seed=0, all_reduce=None):
    """One EMA step (VQ-VAE appendix A.1) from a batch z (N, d) assigned to codes idx (N,).

    count <- decay count + (1 - decay) n_j,  sum_z <- decay sum_z + (1 - decay) sum_{idx=j} z,
    codebook = sum_z / ((count + eps) / (sum(count) + K eps) * sum(count))  (Laplace smoothing).
    Codes whose count falls below dead_below are re-seeded with batch vectors (drawn with `seed`),
    their count reset to 1 and sum_z to the vector, together. all_reduce, if given, sums an array
    over processes (the batch counts and sums), so that every process computes the same state."""
    codebook, count, sum_z = state
    check_matrix(codebook, "state.codebook")
    k, d = codebook.shape
    check_matrix(z, "z", cols=d)
    check_indices(idx, k, "idx")
    if tuple(idx.shape) != (z.shape[0],):
        raise ValueError(f"idx: expected shape ({z.shape[0]},), got {tuple(idx.shape)}")
    if tuple(count.shape) != (k,) or tuple(sum_z.shape) != (k, d):
        raise ValueError(f"state: count must be ({k},) and sum_z ({k}, {d})")
    check_number(decay, "decay", low=0.0, high=1.0)
    check_number(eps, "eps", low=0.0)
    check_number(dead_below, "dead_below", low=0.0)
    xp = array_namespace(codebook, z, idx)
    z = xp.astype(z, codebook.dtype)
    n_j = usage(idx, k)
    s_j = scatter_rows(idx, z, k)
    n_j = xp.astype(n_j, codebook.dtype)
    if all_reduce is not None:
        n_j, s_j = all_reduce(n_j), all_reduce(s_j)
    count = decay * count + (1 - decay) * n_j
    sum_z = decay * sum_z + (1 - decay) * s_j
    total = xp.sum(count)
    smoothed = (count + eps) / (total + k * eps) * total
    # with eps = 0 an unused code has nothing to divide by: it keeps its vector
    new = xp.where(smoothed[:, None] > 0, sum_z / xp.where(smoothed > 0, smoothed, 1.0)[:, None], codebook)
    dead = count < dead_below
    if bool(xp.any(dead)):
        perm = xp.asarray(np.random.default_rng(seed).permutation(z.shape[0]), device=device(z))
        rank = xp.cumulative_sum(xp.astype(dead, xp.int64)) - 1  # j-th dead code takes perm[j]
        fresh = xp.take(z, xp.take(perm, rank % z.shape[0]), axis=0)  # (K, d)
        new = xp.where(dead[:, None], fresh, new)
        sum_z = xp.where(dead[:, None], fresh, sum_z)
        count = xp.where(dead, xp.ones_like(count), count)
    return EMAState(new, count, sum_z)


# ---------------------------------------------------------------- the torch module

class _VQFunction(torch.autograd.Function):
    """torch autograd around vq_forward / vq_backward."""

    @staticmethod
    def forward(ctx, z, codebook, beta, max_block_bytes):
        z_q, loss, idx, cache = vq_forward(z, codebook, beta=beta, max_block_bytes=max_block_bytes)
        ctx.cache = cache
        ctx.mark_non_differentiable(idx)
        return z_q, loss, idx

    @staticmethod
    def backward(ctx, grad_zq, grad_loss, grad_idx):
        grad_z, grad_codebook = vq_backward(ctx.cache, grad_zq, grad_loss)
        return grad_z, grad_codebook, None, None


def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _all_reduce(t):
    torch.distributed.all_reduce(t)
    return t


class VectorQuantizer(torch.nn.Module):
    """VQ-VAE / VQGAN quantizer: forward(z) -> (z_q, loss, idx) with z (B, d, H, W) or (N, d).

    codebook: nn.Parameter (K, d), trained by gradient (ema=False) or by EMA (ema=True, no
    gradient). kmeans_init: k-means on the first training batch (which needs >= K vectors).
    Usage counts accumulate while training (`counts`, `reset_usage()`, `utilization()`,
    `perplexity()`). Under torch.distributed the counts and the EMA statistics are all-reduced and
    the k-means init and re-seeded codes are broadcast from rank 0, so every process keeps the same
    codebook (a gradient codebook stays in sync through DDP's gradient all-reduce).

    Subclassing hook: `quantize(z_flat) -> (z_q_flat, loss, idx)` maps (N, d) vectors to their
    quantized values, loss and int64 indices; forward does the layout, k-means init, statistics
    and EMA around it. A subclass (ibq.IndexBackpropQuantizer) overrides only `quantize`."""

    def __init__(self, codebook_size, dim, *, beta=0.25, ema=False, decay=0.99, eps=1e-5,
                 dead_below=0.0, kmeans_init=False, kmeans_iters=10, max_block_bytes=2**26):
        super().__init__()
        check_number(codebook_size, "codebook_size", low=1, integer=True)
        check_number(dim, "dim", low=1, integer=True)
        check_number(beta, "beta", low=0.0)
        check_number(max_block_bytes, "max_block_bytes", low=0, low_open=True, integer=True)
        self.beta, self.ema, self.decay, self.eps, self.dead_below = beta, ema, decay, eps, dead_below
        self.kmeans_iters, self.max_block_bytes = kmeans_iters, max_block_bytes
        # VQGAN's initialisation: uniform in (-1/K, 1/K)
        init = torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        self.codebook = torch.nn.Parameter(init, requires_grad=not ema)
        self.register_buffer("counts", torch.zeros(codebook_size, dtype=torch.int64))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        if ema:
            self.register_buffer("ema_count", torch.ones(codebook_size))
            self.register_buffer("ema_sum", init.clone())
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.int64))

    def quantize(self, z_flat):
        """(N, d) -> (z_q (N, d), loss, idx (N,)): the hook that subclasses override."""
        return _VQFunction.apply(z_flat, self.codebook, self.beta, self.max_block_bytes)

    def forward(self, z):
        k, d = self.codebook.shape
        if z.ndim == 4 and z.shape[1] == d:
            z_flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B*H*W, d)
        elif z.ndim == 2 and z.shape[1] == d:
            z_flat = z
        else:
            raise ValueError(f"z: expected shape (B, {d}, H, W) or (N, {d}), got {tuple(z.shape)}")
        z_flat = z_flat.to(self.codebook.dtype)
        if self.training and not bool(self.initialized):
            self._kmeans_init(z_flat.detach())
        z_q, loss, idx = self.quantize(z_flat)
        if self.training:
            with torch.no_grad():
                self._update_statistics(z_flat.detach(), idx)
        if z.ndim == 4:
            b, _, h, w = z.shape
            return z_q.reshape(b, h, w, d).permute(0, 3, 1, 2), loss, idx.reshape(b, h, w)
        return z_q, loss, idx

    @torch.no_grad()
    def _kmeans_init(self, z_flat):
        k = self.codebook.shape[0]
        if z_flat.shape[0] < k:
            raise ValueError(f"z: kmeans_init needs at least {k} vectors in the first batch, got {z_flat.shape[0]}")
        if not _distributed() or torch.distributed.get_rank() == 0:
            self.codebook.copy_(kmeans(z_flat, k, iters=self.kmeans_iters, max_block_bytes=self.max_block_bytes))
        if _distributed():
            torch.distributed.broadcast(self.codebook.data, src=0)
        if self.ema:
            self.ema_sum.copy_(self.codebook)
            self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    def _update_statistics(self, z_flat, idx):
        counts = usage(idx, self.codebook.shape[0])
        self.counts += _all_reduce(counts) if _distributed() else counts
        if not self.ema:
            return
        state = ema_update(EMAState(self.codebook.detach(), self.ema_count, self.ema_sum), z_flat, idx,
                           decay=self.decay, eps=self.eps, dead_below=self.dead_below,
                           seed=int(self.ema_steps), all_reduce=_all_reduce if _distributed() else None)
        self.codebook.copy_(state.codebook)
        self.ema_count.copy_(state.count)
        self.ema_sum.copy_(state.sum_z)
        self.ema_steps += 1
        if _distributed() and self.dead_below > 0:  # re-seeded codes come from each rank's own batch
            torch.distributed.broadcast(self.codebook.data, src=0)
            torch.distributed.broadcast(self.ema_sum, src=0)

    def decode(self, idx):
        """Indices (B, H, W) -> (B, d, H, W), or (N,) -> (N, d): the z_q of forward."""
        check_indices(idx, self.codebook.shape[0], "idx")
        if idx.ndim not in (1, 3):
            raise ValueError(f"idx: expected shape (B, H, W) or (N,), got {tuple(idx.shape)}")
        z_q = self.codebook[idx]  # (..., d)
        return z_q.permute(0, 3, 1, 2) if idx.ndim == 3 else z_q

    def reset_usage(self):
        self.counts.zero_()

    def utilization(self):
        """Share of codes used at least once since the last reset_usage()."""
        return float((self.counts > 0).double().mean())

    def perplexity(self):
        return perplexity(self.counts)

    def extra_repr(self):
        k, d = self.codebook.shape
        return f"codebook_size={k}, dim={d}, beta={self.beta}, ema={self.ema}"


# ---------------------------------------------------------------- demo: codebooks for handwritten digits

def _train(x, quantizer, epochs, batch=256, lr=0.02):
    """Fit a quantizer to x (N, 64) directly (the encoder is the identity): the loss moves the
    codebook by gradient, or forward moves it by EMA."""
    params = [p for p in quantizer.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if params else None
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for b in torch.randperm(len(x), generator=g).split(batch):
            _, loss, _ = quantizer(x[b])
            if opt:
                opt.zero_grad()
                loss.backward()
                opt.step()
    quantizer.reset_usage()
    quantizer(x)  # one counting pass over all digits with the final codebook
    return quantizer


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codes", type=int, default=64)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--out", default="vq_codes.png")
    args = p.parse_args()
    torch.manual_seed(0)
    x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # (1797, 64): 8x8 images in [0, 1]
    k = args.codes
    runs = {
        "gradient VQ": VectorQuantizer(k, 64),
        "EMA VQ": VectorQuantizer(k, 64, ema=True, decay=0.9),
        "EMA VQ + dead-code re-seeding": VectorQuantizer(k, 64, ema=True, decay=0.9, dead_below=0.5),
        "k-means init + gradient VQ": VectorQuantizer(k, 64, kmeans_init=True),
    }
    print(f"{len(x)} digits (8x8), codebook of {k} codes, {args.epochs} epochs\n")
    print(f"| quantizer | utilization | perplexity | mean squared error |\n| --- | ---: | ---: | ---: |")
    for name, q in runs.items():
        _train(x, q.train(), args.epochs)
        with torch.no_grad():
            mse = float(((q.eval()(x)[0] - x) ** 2).mean())
        print(f"| {name} | {q.utilization():.2f} | {q.perplexity():.1f} | {mse:.4f} |")
    centers = torch.as_tensor(kmeans(x, k, iters=50))
    idx = nearest(x, centers)
    print(f"| k-means alone (50 iters) | {float((usage(idx, k) > 0).double().mean()):.2f} | "
          f"{perplexity(usage(idx, k)):.1f} | {float(((centers[idx] - x) ** 2).mean()):.4f} |")
    fig, axes = plt.subplots(1, len(runs), figsize=(3 * len(runs), 3.4))
    rows = -(-k // 8)
    for ax, (name, q) in zip(axes, runs.items()):
        order = torch.argsort(q.counts, descending=True)  # most used first; dead codes at the end
        tiles = torch.zeros(rows * 8, 8, 8)
        tiles[:k] = q.codebook.detach()[order].reshape(k, 8, 8).clamp(0, 1)
        grid = tiles.reshape(rows, 8, 8, 8).permute(0, 2, 1, 3).reshape(rows * 8, 64)  # (rows*8, 8*8)
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{name}\nutilization {q.utilization():.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\ncodes written to {args.out}")


if __name__ == "__main__":
    main()

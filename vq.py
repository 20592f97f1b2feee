"""Vector quantization: nearest code, straight-through gradient, k-means and EMA codebooks.

The quantizer of VQ-VAE (van den Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation
Learning", NeurIPS 2017, arXiv 1711.00937) as used by VQGAN (Esser, Rombach, Ommer, "Taming
Transformers for High-Resolution Image Synthesis", CVPR 2021, arXiv 2012.09841):

- sec. 3.1, eq. (1)-(2): z_q = e_k with k = argmin_j ||z - e_j||^2          -> `nearest`, `vq_forward`
- sec. 3.2, eq. (3): loss = ||sg[z] - e||^2 + beta ||z - sg[e]||^2, gradient of z_q copied
  straight through to z; here as means over all entries           -> `vq_forward`/`vq_backward`
  beta on the commitment term, as eq. (3) and taming's VectorQuantizer2 (legacy=False); taming's
  legacy=True and the public IBQ code put it on the codebook term (so does ibq.py).
- appendix A.1: the codebook as an exponential moving average of the assigned vectors, with the
  Laplace smoothing of Sonnet's `VectorQuantizerEMA`                           -> `ema_update`
- k-means++ (Arthur & Vassilvitskii, SODA 2007) + Lloyd, for codebook initialisation -> `kmeans`
- usage counts, utilization and perplexity, the statistics users ask for -> `usage`, `perplexity`

Reference code: VQGAN's taming/modules/vqvae/quantize.py (VectorQuantizer2), Sonnet's vqvae.py
(VectorQuantizerEMA), vector-quantize-pytorch (empty k-means clusters keep their centre; dead codes
re-seeded with count and sum reset together; codebook maths in float32).

Array-API code (NumPy, array_api_strict, torch, CuPy); distances in blocks of at most
`max_block_bytes`, never an N x K matrix. Derived: s = z.e - ||e||^2/2 has its argmax at the argmin
of ||z - e||^2 and is ONE matrix product ([z, -1] times [e, ||e||^2/2]). Distances do not change
when z and e move by a common m, but the rounding of s grows with ||m||^2 (an offset of 1000 on
every coordinate gave 98 % wrong codes in float32), so s is computed for z - m and e - m, m the
codebook's midrange rounded to a power of two of its spread (small integers stay exact: ties stay ties).
`python vq.py` fits codebooks to scikit-learn's digits and prints their usage."""
import argparse
from typing import NamedTuple

import numpy as np
import torch
from array_api_compat import array_namespace, device

from arrays import (blocks, check_array, check_finite, check_indices, check_matrix, check_number, is_array, namespace,
                    scatter_add, size, working_dtype)

# ---------------------------------------------------------------- nearest code (in blocks), usage statistics
def block_shape(n, k, d, itemsize, max_block_bytes):
    """(rows, cols) of the score block and its (d+1)-wide augmented copies in max_block_bytes (>= 1 x 1):
    long in K (each code block made once); rows stop at 256, where the BLAS runs at full speed and the
    block sits in cache, and halve while the block would be narrower than 4 x rows."""
    units = max_block_bytes // itemsize
    rows = min(n, 256)
    while True:
        cols = min(k, (units - rows * (d + 1)) // (rows + d + 1))
        if rows == 1 or cols >= min(k, 4 * rows):
            return rows, max(1, cols)
        rows //= 2

def _check_pair(z, codebook, max_block_bytes):
    """z (N, d), codebook (K, d): one library, device and dtype; finite; products that cannot overflow."""
    max_block_bytes = check_number(max_block_bytes, "max_block_bytes", low=1, integer=True)
    namespace(z=z, codebook=codebook)
    check_matrix(z, "z", max_block_bytes=max_block_bytes)
    check_matrix(codebook, "codebook", cols=z.shape[1], max_block_bytes=max_block_bytes)
    if z.dtype != codebook.dtype:
        raise TypeError(f"codebook: dtype {codebook.dtype} differs from z's {z.dtype}")
    return max_block_bytes

def nearest(z, codebook, *, max_block_bytes=2**26):
    """Index (int64, (N,)) of the code nearest to each row of z (N, d) among codebook (K, d), in
    squared Euclidean distance (eq. 1); exactly equal scores go to the lowest index."""
    return _nearest(z, codebook, _check_pair(z, codebook, max_block_bytes))

def _centre(codebook, cols, dt, xp):
    """m (d,): the codebook's midrange, rounded to a multiple of the power of two below its spread
    (centred codes stay within the spread; integer codes give an integer m); read in blocks."""
    lo = hi = None
    for ks in blocks(codebook.shape[0], cols):
        e = xp.astype(codebook[ks, :], dt, copy=False)
        lo = xp.min(e, axis=0) if lo is None else xp.minimum(lo, xp.min(e, axis=0))
        hi = xp.max(e, axis=0) if hi is None else xp.maximum(hi, xp.max(e, axis=0))
    mid, spread = (lo + hi) / 2, hi - lo
    step = 2.0 ** xp.floor(xp.log2(xp.where(spread > 0, spread, 1.0)))
    return xp.where(spread > 0, xp.round(mid / step) * step, mid)

def _nearest(z, codebook, max_block_bytes):
    xp = array_namespace(z, codebook)
    dt, dev = working_dtype(xp, z.dtype), device(z)
    (n, d), k = z.shape, codebook.shape[0]
    rows, cols = block_shape(n, k, d, 4 if dt == xp.float32 else 8, max_block_bytes)
    m = _centre(codebook, cols, dt, xp)
    row_blocks = blocks(n, rows)
    best = [xp.full(rs.stop - rs.start, -xp.inf, dtype=dt, device=dev) for rs in row_blocks]
    best_idx = [xp.zeros(rs.stop - rs.start, dtype=xp.int64, device=dev) for rs in row_blocks]
    for ks in blocks(k, cols):
        e = xp.astype(codebook[ks, :], dt, copy=False) - m
        e = xp.concat([e, 0.5 * xp.vecdot(e, e)[:, None]], axis=1)  # (cols, d+1): [e - m, ||e - m||^2/2]
        for j, rs in enumerate(row_blocks):
            zb = xp.astype(z[rs, :], dt, copy=False) - m
            z_aug = xp.concat([zb, -xp.ones((zb.shape[0], 1), dtype=dt, device=dev)], axis=1)
            s = z_aug @ e.T  # (rows, cols): the centred score, larger is nearer
            a = xp.argmax(s, axis=1)  # first maximum: the lowest index among ties
            top = xp.take(xp.reshape(s, (-1,)), xp.arange(s.shape[0], device=dev) * s.shape[1] + a)
            better = top > best[j]  # strictly: on a tie the earlier (lower) block keeps the code
            best[j], best_idx[j] = xp.where(better, top, best[j]), xp.where(better, a + ks.start, best_idx[j])
            del s  # free this block before the next is made: one block alive at a time, not two
        del e
    return xp.astype(xp.concat(best_idx), xp.int64)

def usage(idx, k):
    """How often each of the k codes occurs in idx (any shape, non-empty): int64 (k,)."""
    k = check_number(k, "k", low=1, integer=True)
    check_indices(idx, k, "idx")
    return _usage(idx, k)

def _usage(idx, k):
    xp = array_namespace(idx)
    flat = xp.reshape(xp.astype(idx, xp.int64), (-1,))
    ones = xp.ones((flat.shape[0], 1), dtype=xp.float64, device=device(idx))  # exact below 2**53
    return xp.astype(scatter_add(flat, ones, k)[:, 0], xp.int64)

def perplexity(counts):
    """exp of the entropy of counts / sum(counts): K when all K codes are used alike, 1 for one code."""
    xp = namespace(counts=counts)
    check_array(counts, "counts", kind="integral" if xp.isdtype(counts.dtype, "integral") else "real floating", ndim=1)
    c = xp.astype(counts, xp.float64)
    check_finite(c, "counts")
    if bool(xp.any(c < 0)) or not float(xp.max(c)) > 0:
        raise ValueError("counts: must be non-negative and not all zero")
    p = (c / xp.max(c)) / xp.sum(c / xp.max(c))  # scaled first: a sum of huge float counts overflows
    return float(xp.exp(-xp.sum(p * xp.log(xp.where(p > 0, p, 1.0)))))

# ---------------------------------------------------------------- forward / backward
class VQCache(NamedTuple):
    """What vq_backward needs: the residual z - z_q (N, d), the indices (N,), K, beta, z's dtype."""
    residual: object
    idx: object
    k: int
    beta: float
    dtype: object

class Quantized(NamedTuple):
    """vq_forward's result: z_q (N, d), the loss (0-d), idx int64 (N,), the cache for the backward."""
    z_q: object
    loss: object
    idx: object
    cache: object

class Gradients(NamedTuple):
    grad_z: object
    grad_codebook: object

def _vq_loss(r, beta):
    """(1 + beta) mean(r^2), both terms of eq. (3) being mean((z - z_q)^2); the sum overflows undivided."""
    return (1.0 + beta) * array_namespace(r).sum(r * (r / size(r)))

def vq_forward(z, codebook, *, beta=0.25, max_block_bytes=2**26):
    """z_q = codebook[idx] (eq. 2) and loss = mean((z_q - sg z)^2) + beta mean((sg z_q - z)^2)
    (eq. 3: codebook loss + commitment loss), as a Quantized (z_q, loss, idx, cache)."""
    beta = check_number(beta, "beta", low=0.0)
    return _vq_forward(z, codebook, beta, _check_pair(z, codebook, max_block_bytes))

def _vq_forward(z, codebook, beta, max_block_bytes):
    idx = _nearest(z, codebook, max_block_bytes)
    xp = array_namespace(z, codebook)
    dt = working_dtype(xp, z.dtype)
    z_q = xp.take(codebook, idx, axis=0)  # (N, d)
    r = xp.astype(z, dt) - xp.astype(z_q, dt)
    loss = xp.astype(_vq_loss(r, beta), z.dtype)
    return Quantized(z_q, loss, idx, VQCache(r, idx, codebook.shape[0], beta, z.dtype))

def vq_backward(cache, grad_zq, grad_loss=1.0):
    """(grad_z, grad_codebook) of vq_forward: grad_zq goes straight through to z (the gradient of
    z + sg(z_q - z)), plus the loss's gradients: 2 beta (z - z_q) / (N d) to z and
    2 (z_q - z) / (N d), summed per code, to the codebook. grad_loss: a number or a 0-d array.
    Array gradients are not checked for NaN/inf: mixed-precision loss scaling relies on inf passing."""
    if not isinstance(cache, VQCache):
        raise TypeError(f"cache: expected the VQCache of vq_forward, got {type(cache).__name__}")
    namespace(**{"cache.residual": cache.residual, "grad_zq": grad_zq,
                 "grad_loss": grad_loss if is_array(grad_loss) else None})
    check_array(grad_zq, "grad_zq", shape=tuple(cache.residual.shape))
    if is_array(grad_loss):
        check_array(grad_loss, "grad_loss", shape=())
    else:
        grad_loss = check_number(grad_loss, "grad_loss")
    return _vq_backward(cache, grad_zq, grad_loss)

def _vq_backward(cache, grad_zq, grad_loss):
    r = cache.residual
    xp = array_namespace(r, grad_zq)
    scale = grad_loss * (2.0 / size(r))
    grad_z = xp.astype(grad_zq, r.dtype) + (scale * cache.beta) * r
    grad_codebook = scatter_add(cache.idx, -scale * r, cache.k)
    return Gradients(xp.astype(grad_z, cache.dtype), xp.astype(grad_codebook, cache.dtype))

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
    """k centres (k, d) of the rows of x (N, d): k-means++ seeding, then Lloyd iterations. weights (N,)
    >= 0 weigh the points (e.g. code usage); an empty cluster keeps its centre. Deterministic for a
    seed on a backend; the best centres seen, never worse (in weighted inertia) than iters=0's."""
    namespace(x=x, weights=weights)
    xp = check_matrix(x, "x", max_block_bytes=max_block_bytes)
    k = check_number(k, "k", low=1, high=x.shape[0], integer=True)
    iters, seed, max_block_bytes = (check_number(v, name, low=low, integer=True) for name, v, low in
                                    (("iters", iters, 0), ("seed", seed, 0), ("max_block_bytes", max_block_bytes, 1)))
    if weights is not None:
        check_array(weights, "weights", shape=(x.shape[0],))
        check_finite(weights, "weights")
        if bool(xp.any(weights < 0)) or not float(xp.max(weights)) > 0:
            raise ValueError("weights: must be non-negative and not all zero")
    dtype, dt = x.dtype, working_dtype(xp, x.dtype)
    x = xp.astype(x, dt)
    # k-means is equivariant to scaling x by a power of two (exactly, in floating point) and
    # invariant to scaling w: with |x| <= 1 and w <= 1 the sums of w D^2 over N points cannot overflow
    scale = 2.0 ** float(xp.ceil(xp.log2(xp.maximum(xp.max(xp.abs(x)), xp.finfo(dt).smallest_normal))))
    x = x / scale
    w = xp.ones(x.shape[0], dtype=dt, device=device(x)) if weights is None else xp.astype(weights, dt)
    w = w / xp.max(w)
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
    best, best_inertia, prev = centers, float("inf"), None
    for it in range(iters + 1):
        idx = _nearest(x, centers, max_block_bytes)
        inertia = float(xp.sum(w * _sq_dist(x, xp.take(centers, idx, axis=0))))
        if inertia < best_inertia:
            best, best_inertia = centers, inertia
        if it == iters or (prev is not None and bool(xp.all(idx == prev))):
            break  # out of iterations, or converged: the next centres would be these
        mass = scatter_add(idx, w[:, None], k)  # (k, 1)
        sums = scatter_add(idx, w[:, None] * x, k)  # (k, d)
        centers = xp.where(mass > 0, sums / xp.where(mass > 0, mass, 1.0), centers)
        prev = idx
    return xp.astype(best * scale, dtype)

# ---------------------------------------------------------------- EMA codebook
class EMAState(NamedTuple):
    """codebook (K, d) = sum_z / smoothed count; count (K,), sum_z (K, d): EMAs of counts and sums."""
    codebook: object
    count: object
    sum_z: object

def ema_state(codebook):
    """Initial state: each code counts as one observation of itself (an unused code decays slowly)."""
    xp = check_matrix(codebook, "codebook")
    return EMAState(codebook, xp.ones(codebook.shape[0], dtype=codebook.dtype, device=device(codebook)), codebook)

def ema_update(state, z, idx, *, decay=0.99, eps=1e-5, dead_below=0.0, seed=0, all_reduce=None):
    """One EMA step (VQ-VAE appendix A.1) from a batch z (N, d) assigned to codes idx (N,):
    count <- decay count + (1 - decay) n_j,  sum_z <- decay sum_z + (1 - decay) sum_{idx=j} z,
    codebook = sum_z / ((count + eps) / (sum(count) + K eps) * sum(count))  (Laplace smoothing).
    Codes whose count falls below dead_below are re-seeded with batch vectors (drawn with `seed`),
    count and sum_z reset together. all_reduce, if given, sums the batch counts and sums over
    processes, so that all compute the same state. state: one dtype, finite, count >= 0."""
    if not isinstance(state, tuple) or len(state) != 3:
        raise TypeError(f"state: expected an EMAState (codebook, count, sum_z), got {type(state).__name__}")
    codebook, count, sum_z = state
    xp = namespace(**{"state.codebook": codebook, "state.count": count, "state.sum_z": sum_z, "z": z, "idx": idx})
    check_matrix(codebook, "state.codebook")
    k, d = codebook.shape
    for name, a, shape in (("state.count", count, (k,)), ("state.sum_z", sum_z, (k, d))):
        check_array(a, name, shape=shape)
        if a.dtype != codebook.dtype:
            raise TypeError(f"{name}: dtype {a.dtype} differs from state.codebook's {codebook.dtype}")
        check_finite(a, name)
    if bool(xp.any(count < 0)):
        raise ValueError("state.count: has negative counts")
    check_matrix(z, "z", cols=d)
    check_array(idx, "idx", kind="integral", shape=(z.shape[0],))
    check_indices(idx, k, "idx")
    decay, seed = check_number(decay, "decay", low=0.0, high=1.0), check_number(seed, "seed", low=0, integer=True)
    eps, dead_below = check_number(eps, "eps", low=0.0), check_number(dead_below, "dead_below", low=0.0)
    return _ema_update(EMAState(*state), z, idx, decay, eps, dead_below, seed, all_reduce or (lambda a: a))

def _ema_update(state, z, idx, decay, eps, dead_below, seed, all_reduce):
    (codebook, count, sum_z), k = state, state.codebook.shape[0]
    xp = array_namespace(codebook, z, idx)
    z = xp.astype(z, codebook.dtype)
    n_j, s_j = all_reduce(xp.astype(_usage(idx, k), codebook.dtype)), all_reduce(scatter_add(idx, z, k))
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
    """torch autograd around the unchecked vq forward / backward (the module checks z's shape)."""

    @staticmethod
    def forward(ctx, z, codebook, beta, max_block_bytes):
        z_q, loss, idx, ctx.cache = _vq_forward(z, codebook, beta, max_block_bytes)
        ctx.mark_non_differentiable(idx)
        return z_q, loss, idx

    @staticmethod
    def backward(ctx, grad_zq, grad_loss, grad_idx):
        with torch.autocast(device_type=grad_zq.device.type, enabled=False):  # in float32, as the forward
            return (*_vq_backward(ctx.cache, grad_zq, grad_loss), None, None)

def _distributed():
    return torch.distributed.is_available() and torch.distributed.is_initialized()

def _all_reduce(t):
    """t summed over the processes (t itself outside torch.distributed)."""
    if _distributed():
        torch.distributed.all_reduce(t)
    return t

class VectorQuantizer(torch.nn.Module):
    """VQ-VAE / VQGAN quantizer: forward(z) -> (z_q, loss, idx) with z (B, d, H, W) or (N, d); z_q in
    z's layout and dtype, idx (B, H, W) or (N,). codebook: nn.Parameter (K, d), trained by gradient
    (ema=False) or by EMA (ema=True). kmeans_init: k-means on the first training batch (>= K vectors).
    Usage counts accumulate while training (`counts`, `reset_usage()`, `utilization()`,
    `perplexity()`). Under torch.distributed the counts and EMA statistics are all-reduced, the
    k-means init and re-seeded codes broadcast from rank 0: every process keeps the same codebook.
    The codebook maths runs in the codebook's dtype with autocast off, whatever the caller's autocast
    says. Hooks for subclasses (ibq.py): `quantize`, `rule` and `quantization_loss`."""

    rule = "distance"  # how the block search picks blocks and codes (nearest code, as quantize)

    def __init__(self, codebook_size, dim, *, beta=0.25, ema=False, decay=0.99, eps=1e-5,
                 dead_below=0.0, kmeans_init=False, kmeans_iters=10, max_block_bytes=2**26):
        super().__init__()
        k, d = (check_number(v, name, low=1, integer=True) for name, v in (("codebook_size", codebook_size), ("dim", dim)))
        self.beta, self.eps, self.dead_below = (check_number(v, name, low=0.0) for name, v in
                                                (("beta", beta), ("eps", eps), ("dead_below", dead_below)))
        self.decay = check_number(decay, "decay", low=0.0, high=1.0)
        self.kmeans_iters = check_number(kmeans_iters, "kmeans_iters", low=0, integer=True)
        self.max_block_bytes = check_number(max_block_bytes, "max_block_bytes", low=1, integer=True)
        self.ema, self.block_index, self.last_searched = ema, None, None
        init = torch.empty(k, d).uniform_(-1.0 / k, 1.0 / k)  # VQGAN's initialisation
        self.codebook = torch.nn.Parameter(init, requires_grad=not ema)
        self.register_buffer("counts", torch.zeros(k, dtype=torch.int64))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        if ema:
            state = ema_state(init)
            self.register_buffer("ema_count", state.count)
            self.register_buffer("ema_sum", state.sum_z.clone())
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.int64))

    def quantize(self, z_flat):
        """(N, d) -> (z_q (N, d), loss, idx (N,)): the hook that subclasses override."""
        return _VQFunction.apply(z_flat, self.codebook, self.beta, self.max_block_bytes)

    def quantization_loss(self, z_flat, z_q):
        """The loss value quantize reports for these codes (used by the block search)."""
        return _vq_loss(z_flat - z_q, self.beta)

    def use_blocks(self, index):
        """In eval mode, quantize each image by exact search among the blocks of `index` that its vectors
        pick (resize.block_index: any object with `search(z, codebook, *, images, rule) -> (idx, searched)`);
        None: the full search again. An image is an item of a (B, d, H, W) batch, or a row of (N, d) z.
        The loss keeps its value, no gradient flows, `last_searched` holds each image's searched share."""
        if index is not None and not callable(getattr(index, "search", None)):
            raise TypeError(f"index: expected a block index with a search method or None, got {type(index).__name__}")
        self.block_index, self.last_searched = index, None
        return self

    def forward(self, z):
        k, d = self.codebook.shape
        namespace(codebook=self.codebook, z=z)  # a torch tensor on the codebook's device
        check_array(z, "z")
        if z.ndim not in (2, 4) or z.shape[1] != d:
            raise ValueError(f"z: expected shape (B, {d}, H, W) or (N, {d}), got {tuple(z.shape)}")
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, d) if z.ndim == 4 else z  # (B*H*W, d)
        with torch.autocast(device_type=z.device.type, enabled=False):
            z_flat = z_flat.to(self.codebook.dtype)
            if self.block_index is not None:
                z_q, loss, idx = self._search_blocks(z_flat, z)
            else:
                if self.training and not bool(self.initialized):
                    self._kmeans_init(z_flat.detach())
                z_q, loss, idx = self.quantize(z_flat)
                if self.training:
                    self._update_statistics(z_flat.detach(), idx)
        z_q = z_q.to(z.dtype)  # the dtype the next layer expects
        if z.ndim == 4:
            b, _, h, w = z.shape
            return z_q.reshape(b, h, w, d).permute(0, 3, 1, 2), loss, idx.reshape(b, h, w)
        return z_q, loss, idx

    @torch.no_grad()
    def _search_blocks(self, z_flat, z):
        if self.training:
            raise ValueError("use_blocks: the block search is for inference: call eval(), or use_blocks(None) to train")
        n_pos = z.shape[2] * z.shape[3] if z.ndim == 4 else 1
        images = torch.arange(z_flat.shape[0] // n_pos, device=z.device).repeat_interleave(n_pos)  # (N,)
        idx, self.last_searched = self.block_index.search(z_flat, self.codebook, images=images, rule=self.rule)
        z_q = self.codebook[idx]
        return z_q, self.quantization_loss(z_flat, z_q), idx

    @torch.no_grad()
    def _kmeans_init(self, z_flat):
        k = self.codebook.shape[0]
        if z_flat.shape[0] < k:
            raise ValueError(f"z: kmeans_init needs at least {k} vectors in the first batch, got {z_flat.shape[0]}")
        self.codebook.copy_(kmeans(z_flat, k, iters=self.kmeans_iters, max_block_bytes=self.max_block_bytes))
        if _distributed():  # each process saw its own batch: all take rank 0's centres
            torch.distributed.broadcast(self.codebook.data, src=0)
        if self.ema:
            for buffer, value in zip((self.ema_count, self.ema_sum), ema_state(self.codebook.detach())[1:]):
                buffer.copy_(value)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update_statistics(self, z_flat, idx):
        self.counts += _all_reduce(_usage(idx, self.codebook.shape[0]))
        if not self.ema:
            return
        state = _ema_update(EMAState(self.codebook.detach(), self.ema_count, self.ema_sum), z_flat, idx,
                            self.decay, self.eps, self.dead_below, int(self.ema_steps), _all_reduce)
        for buffer, value in zip((self.codebook, self.ema_count, self.ema_sum), state):
            buffer.copy_(value)
        self.ema_steps += 1
        if _distributed() and self.dead_below > 0:  # re-seeded codes come from each rank's own batch
            torch.distributed.broadcast(self.codebook.data, src=0)
            torch.distributed.broadcast(self.ema_sum, src=0)

    def decode(self, idx):
        """Indices (B, H, W) -> (B, d, H, W), or (N,) -> (N, d): the z_q of forward."""
        namespace(codebook=self.codebook, idx=idx)
        check_indices(idx, self.codebook.shape[0], "idx")
        if idx.ndim not in (1, 3):
            raise ValueError(f"idx: expected shape (B, H, W) or (N,), got {tuple(idx.shape)}")
        return self.codebook[idx].permute(0, 3, 1, 2) if idx.ndim == 3 else self.codebook[idx]  # (..., d) first

    def reset_usage(self):
        self.counts.zero_()

    def utilization(self):
        """Share of codes used at least once since the last reset_usage()."""
        return float((self.counts > 0).double().mean())

    def perplexity(self):
        return perplexity(self.counts)

# ---------------------------------------------------------------- demo: codebooks for handwritten digits
def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="vq_codes.png")
    out, k, epochs = p.parse_args().out, 64, 15
    torch.manual_seed(0)
    x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # (1797, 64): 8x8 images in [0, 1]
    runs = {"gradient VQ": VectorQuantizer(k, 64), "EMA VQ": VectorQuantizer(k, 64, ema=True, decay=0.9),
            "EMA VQ + dead-code re-seeding": VectorQuantizer(k, 64, ema=True, decay=0.9, dead_below=0.5),
            "k-means init + gradient VQ": VectorQuantizer(k, 64, kmeans_init=True)}
    print(f"{len(x)} digits (8x8), codebook of {k} codes, {epochs} epochs\n\n"
          "| quantizer | utilization | perplexity | mean squared error |\n| --- | ---: | ---: | ---: |")
    fig, axes = plt.subplots(1, len(runs), figsize=(3 * len(runs), 3.4))
    for ax, (name, q) in zip(axes, runs.items()):
        # the encoder is the identity: the loss moves the codebook by gradient, or forward by EMA
        opt = torch.optim.Adam([q.codebook], lr=0.02) if q.codebook.requires_grad else None
        for b in torch.cat([torch.randperm(len(x)) for _ in range(epochs)]).split(256):
            loss = q(x[b])[1]
            if opt:
                opt.zero_grad()
                loss.backward()
                opt.step()
        q.reset_usage()
        q(x)  # one counting pass over all digits with the final codebook
        with torch.no_grad():
            mse = float(((q.eval()(x)[0] - x) ** 2).mean())
        print(f"| {name} | {q.utilization():.2f} | {q.perplexity():.1f} | {mse:.4f} |")
        tiles = torch.zeros(-(-k // 8) * 8, 8, 8)  # 8 codes a row, the most used first
        tiles[:k] = q.codebook.detach()[torch.argsort(q.counts, descending=True)].reshape(k, 8, 8)
        ax.imshow(tiles.reshape(-1, 8, 8, 8).permute(0, 2, 1, 3).reshape(-1, 64), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{name}\nutilization {q.utilization():.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"\ncodes written to {out}")


if __name__ == "__main__":
    main()

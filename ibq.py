"""Index Backpropagation Quantization (IBQ), exact and without an N×K matrix.

Paper: F. Shi, Z. Luo, Y. Ge, Y. Yang, Y. Shan, L. Wang, "Taming Scalable Visual Tokenizer for
Autoregressive Image Generation" (v2: "Scalable Image Tokenization with Index Backpropagation
Quantization"), arXiv:2412.02692, 2024, sec. 3. Reference code: TencentARC/SEED-Voken,
src/IBQ/modules/vqvae/quantize.py (`IndexPropagationQuantize`, `compute_entropy_loss`); values and
gradients here equal torch autograd of that code in float64 (tests/test_ibq.py).

VQ picks the nearest code and copies the gradient straight through, so only picked codes learn and
the others drift away from the encoder's features. IBQ picks by dot product and puts the
straight-through estimator on the softmax over *all* codes, so every code gets a gradient.
[A]-[F] are this file's labels; the paper's own number is given where checked (eq. 10):

    [A] L = z Eᵀ,  S = softmax(L),  H = onehot(argmax L)                          paper, sec. 3
    [B] z_q = (H − sg(S) + S) E,  value H E = E[idx], gradient through S          paper, sec. 3
    [C] loss_Q = mean((z_q − z)²) + mean((sg(H E) − z)²) + β mean((H E − sg(z))²)  paper, eq. 10
    [D] loss_H = w_s mean_i H(P_i) − w_b H(a),  P = softmax(L / T),  a = mean_i P_i   public code

[C] β: VQ-VAE (arXiv 1711.00937, eq. 3) weights the commitment term (the one that moves z) by β, and
so does the IBQ paper's eq. 10; the public IBQ code, like taming's VectorQuantizer2 with
legacy=True, puts β on the codebook term (the one that moves E), and so does [C] (SEED-Voken
issues #50 and #60 note the mismatch). [D] is the public code's entropy loss (after MAGVIT-v2),
H(a) = −Σ_k a_k log(a_k + 1e-5); its log_softmax(L/T + 1e-5) equals log P. Derived here (neither
the paper nor its code writes them out): for G = ∂loss/∂z_q, [B] has an attention gradient
(queries z, keys E, values sg(E)), and [D] adds a term of the same shape:

    [E] dL = S ⊙ (G Eᵀ − δ),  δ_i = G_i · (S E)_i,   dz = dL E,   dE = dLᵀ z + Hᵀ G
    [F] dL += α P ⊙ (r − ρ),  r_ik = −w_s log P_ik + w_b c_k,  ρ_i = ⟨P_i, r_i⟩,
        c_k = −∂H(a)/∂a_k = log(a_k + 1e-5) + a_k / (a_k + 1e-5),  α = ∂loss/∂loss_H / (N T).

So it runs like flash attention, over tiles of at most 512 rows × 2^19 values (2 MiB of float32:
a tile and its temporaries stay in cache) within `max_block_bytes`. The forward makes one pass with
each row's running max, normalisers, S E and argmax (an online softmax); with the entropy loss a
second pass makes each tile of P once, with its final normaliser, for a, H(P_i) and ⟨P_i, c⟩ (c_k
needs only a_k, so a strip of P over all rows is kept until its a is complete). The backward
recomputes each tile's logits. Extra memory is O((N + K) d + max_block_bytes). The public code's
forward makes 7 dense N×K matrices (L; S; H; H − sg(S); H − sg(S) + S; the contiguous copies einsum
makes of that sum and of H), 13 with the entropy loss (L/T twice, softmax(L/T), L/T + 1e-5, its
log_softmax, P·log P), and autograd 3 more in the backward (12 with the entropy loss), counted with
a torch dispatch mode: at N = 1024, K = 2^18 each is 1 GiB in float32.

Departure, on torch's CPU backend only: exp(x) is taken as exp2(x log2 e), its argument clamped at
log2(smallest normal) + 1, since torch's CPU exp is 4× slower than its exp2 and both slow down 4-20×
for results below the smallest normal number. A term below 2^-125 (float32; 2^-1021 in float64)
counts as that number, and the product with log2 e costs a relative error of |x| eps (<= 1.5e-6 on
a float32 term above the clamp). NumPy, array_api_strict, CuPy and CUDA take exp as it is.
"""
import argparse
import math
from typing import NamedTuple

import array_api_extra as xpx
import torch
from array_api_compat import device, is_torch_namespace

import arrays
from vq import Gradients, Quantized, VectorQuantizer, vq_backward, vq_forward

EPS = 1e-5  # inside the batch entropy's log, as in the public code
LOG2E = 1 / math.log(2)
TEMPS = 6  # tile-sized temporaries alive at once (the backward's peak)
WIDE = 256  # codes per tile below which BLAS slows down: rows are split first
ROWS, TILE_CELLS = 512, 2**19  # tile size for cache (2 MiB of float32)


class Options(NamedTuple):
    """The quantizer's settings, checked once (`check_options`)."""
    beta: float
    entropy_weight: float
    temperature: float
    sample_weight: float
    batch_weight: float
    max_block_bytes: int


class Tiles(NamedTuple):
    rows: int
    codes: int


class Cache(NamedTuple):
    """What ibq_backward needs from ibq_forward: O((N + K) d) arrays, no N×K matrix."""
    z: object  # (N, d) in the working dtype
    codebook: object  # (K, d) as given
    idx: object  # (N,) int64
    m: object  # (N,) row max of L
    zs: object  # (N,) Σ_k exp(L − m): S = exp(L − m) / zs
    se: object  # (N, d) S E
    log_zp: object  # (N,) log Σ_k exp((L − m) / T); None without the entropy loss
    rho: object  # (N,) ρ of [F]; None without the entropy loss
    entropy_slope: object  # (K,) c of [F], −∂H(a)/∂a; None without the entropy loss
    options: Options
    tiles: Tiles


class RowStats(NamedTuple):
    """Per-row summaries of L over the codes seen so far, relative to the running max m."""
    m: object  # (n,) max_k L_ik
    idx: object  # (n,) int64, its lowest argmax
    zs: object  # (n,) Σ_k exp(L_ik − m_i)
    se: object  # (n, d) Σ_k exp(L_ik − m_i) e_k
    zp: object  # (n,) Σ_k exp((L_ik − m_i) / T); None without the entropy loss


class EntropyStats(NamedTuple):
    a: object  # (K,) mean_i P_i
    slope: object  # (K,) c = −∂H(a)/∂a
    h: object  # (N,) H(P_i)
    pc: object  # (N,) ⟨P_i, c⟩


def check_options(beta=0.25, entropy_weight=0.0, temperature=0.01, sample_weight=1.0, batch_weight=1.0,
                  max_block_bytes=2**26):
    """The settings as an Options, each checked (TypeError / ValueError naming it)."""
    return Options(arrays.check_number(beta, "beta", low=0.0),
                   arrays.check_number(entropy_weight, "entropy_weight", low=0.0),
                   arrays.check_number(temperature, "temperature", low=0.0, low_open=True),
                   arrays.check_number(sample_weight, "sample_weight", low=0.0),
                   arrays.check_number(batch_weight, "batch_weight", low=0.0),
                   arrays.check_number(max_block_bytes, "max_block_bytes", low=1, integer=True))


def tiles(n, k, d, itemsize, max_block_bytes):
    """Rows and codes per tile, the same in every pass, so that every pass sees the very same
    products (x = L − m <= 0 exactly). A tile holds up to TILE_CELLS values in at most ROWS rows
    (a few such temporaries stay in cache: 30 % faster than budget-sized tiles on both backends);
    TEMPS tiles, a strip of P over all n rows (the entropy pass keeps one) and the code block fit
    in max_block_bytes; all rows while that leaves WIDE codes; never below one row by one code."""
    cells = max(1, max_block_bytes // itemsize)
    rows = min(n, ROWS, max(1, cells // ((TEMPS + 1) * min(k, WIDE))))
    codes = min(k, max(1, TILE_CELLS // rows), max(1, cells // (n + TEMPS * rows + d)))
    return Tiles(rows, codes)


def code_block(codebook, ks, dtype, xp):
    """Rows ks of the codebook in the working dtype: only one block is ever converted at a time."""
    return xp.astype(codebook[ks, :], dtype, copy=False)  # (kb, d)


def exp_tile(x, xp, scale=1.0):
    """exp(scale · x) for a tile, x <= 0. On torch's CPU backend it is exp2(scale log2(e) x) with
    the argument clamped at log2(smallest normal) + 1: torch's CPU exp is 4× slower than its exp2,
    and both slow down further for results below the smallest normal number. The product with
    log2 e costs a relative error of |x| eps (<= 1.5e-6 on a float32 term above the clamp); a term
    below the clamp counts as 2^-125 (float32) or 2^-1021 (float64). Elsewhere xp.exp."""
    if is_torch_namespace(xp) and x.device.type == "cpu":
        return (x * (scale * LOG2E)).clamp_(min=exp2_floor(x.dtype, xp)).exp2_()
    return xp.exp(x * scale if scale != 1.0 else x)


def exp2_floor(dtype, xp):
    return math.log2(float(xp.finfo(dtype).smallest_normal)) + 1


def log_soft_probs(x, log_zp, inv_t, xp):
    """log P for one tile from x = L − m (the forward's row max); on torch's CPU backend clamped
    as exp_tile's argument, so that the terms P log P use the P that exp_tile gives."""
    lp = x * inv_t - log_zp[:, None]
    if is_torch_namespace(xp) and x.device.type == "cpu":
        lp.clamp_(min=exp2_floor(x.dtype, xp) / LOG2E)
    return lp


def row_stats(z, codebook, codes, inv_t, entropy, dtype, xp):
    """One pass over blocks of codes for rows z (n, d), as an online softmax: each block's
    logits are taken relative to the running max, and the sums so far rescaled when it rises."""
    n, k = z.shape[0], codebook.shape[0]
    dev = device(z)
    acc = RowStats(xp.full(n, -math.inf, dtype=dtype, device=dev), xp.zeros(n, dtype=xp.int64, device=dev),
                   xp.zeros(n, dtype=dtype, device=dev), xp.zeros(z.shape, dtype=dtype, device=dev),
                   xp.zeros(n, dtype=dtype, device=dev) if entropy else None)
    for ks in arrays.blocks(k, codes):
        e = code_block(codebook, ks, dtype, xp)
        logits = z @ e.T  # (n, kb)  [A]
        acc = update(acc, logits, e, ks.start, inv_t, xp)
    return acc


def update(acc, logits, e, start, inv_t, xp):
    """RowStats after one more block of codes (e, from index `start`) with these logits."""
    block_max = xp.max(logits, axis=1)
    m = xp.maximum(acc.m, block_max)
    idx = xp.where(block_max > acc.m, xp.argmax(logits, axis=1) + start, acc.idx)  # exact ties keep lower codes
    x = logits - m[:, None]  # <= 0
    shift = acc.m - m  # <= 0; −inf on the first block, whose sums start at zero
    zp = None
    if acc.zp is not None:
        zp = acc.zp * xp.exp(shift * inv_t) + xp.sum(exp_tile(x, xp, inv_t), axis=1)
    w = exp_tile(x, xp)  # S up to the row's normaliser
    rescale = xp.exp(shift)
    return RowStats(m, idx, acc.zs * rescale + xp.sum(w, axis=1), acc.se * rescale[:, None] + w @ e, zp)  # S E: [B]


def entropy_stats(z, codebook, m, log_zp, t, inv_t, dtype, xp):
    """a, c, H(P_i) and ⟨P_i, c⟩ of [D] and [F] in one pass that makes each tile of P once."""
    n, k = z.shape[0], codebook.shape[0]
    row_blocks = arrays.blocks(n, t.rows)
    h = [0.0] * len(row_blocks)
    pc = [0.0] * len(row_blocks)
    a, slope = [], []
    for ks in arrays.blocks(k, t.codes):
        e = code_block(codebook, ks, dtype, xp)
        strip = []  # P for all rows × this block of codes, until the block's a is complete
        a_blk = 0.0
        for j, r in enumerate(row_blocks):
            lp = log_soft_probs(z[r, :] @ e.T - m[r, None], log_zp[r], inv_t, xp)  # (nb, kb)
            p = exp_tile(lp, xp)
            a_blk = a_blk + xp.sum(p, axis=0)
            h[j] = h[j] - xp.sum(p * lp, axis=1)
            strip.append(p)
        a_blk = a_blk / n
        c = xp.log(a_blk + EPS) + a_blk / (a_blk + EPS)  # −∂H(a)/∂a_k: [F]
        for j, p in enumerate(strip):
            pc[j] = pc[j] + p @ c
        a.append(a_blk)
        slope.append(c)
    return EntropyStats(xp.concat(a), xp.concat(slope), xp.concat(h), xp.concat(pc))


def squared_error(r, xp):
    """mean(r²), divided before the sum, which would overflow near arrays.product_bound."""
    return xp.sum(r * (r / arrays.size(r)))


def ibq_forward(z, codebook, *, beta=0.25, entropy_weight=0.0, temperature=0.01, sample_weight=1.0,
                batch_weight=1.0, max_block_bytes=2**26):
    """IBQ forward, [A]-[D]. z (N, d), codebook (K, d), same float dtype and library.

    Returns a vq.Quantized (z_q, loss, idx, cache): z_q = codebook[idx] in value, z's dtype;
    loss = loss_Q + entropy_weight · loss_H, 0-d in the working dtype (float32 for half inputs,
    whose loss may exceed float16's range); idx int64 (N,) = argmax_k z·E_k, exact ties to the
    lowest index; cache for ibq_backward."""
    o = check_options(beta, entropy_weight, temperature, sample_weight, batch_weight, max_block_bytes)
    xp = arrays.namespace(z=z, codebook=codebook)
    arrays.check_array(z, "z", ndim=2)
    arrays.check_array(codebook, "codebook", shape=(None, z.shape[1]))
    if codebook.dtype != z.dtype:
        raise TypeError(f"codebook: dtype {codebook.dtype} differs from z's {z.dtype}")
    # products z·e (and, with the entropy loss, L / T) must stay finite in the working dtype
    bound = arrays.product_bound(xp, arrays.working_dtype(xp, z.dtype), z.shape[1])
    bound *= min(1.0, math.sqrt(o.temperature)) if o.entropy_weight != 0 else 1.0
    for name, x in (("z", z), ("codebook", codebook)):
        arrays.check_finite(x, name, bound=bound, max_block_bytes=o.max_block_bytes)
    return _forward(z, codebook, o)


def _forward(z, codebook, o):
    xp = arrays.namespace(z=z)
    (n, d), k = z.shape, codebook.shape[0]
    dtype = arrays.working_dtype(xp, z.dtype)
    t = tiles(n, k, d, 8 if dtype == xp.float64 else 4, o.max_block_bytes)
    inv_t = 1.0 / o.temperature
    zw = xp.astype(z, dtype, copy=False)
    entropy = o.entropy_weight != 0
    parts = [row_stats(zw[r, :], codebook, t.codes, inv_t, entropy, dtype, xp) for r in arrays.blocks(n, t.rows)]
    s = RowStats(*(None if p[0] is None else xp.concat(p) for p in zip(*parts)))

    e_idx = xp.astype(xp.take(codebook, s.idx, axis=0), dtype, copy=False)  # H E, (N, d)
    loss = (2 + o.beta) * squared_error(e_idx - zw, xp)  # [C]: its three terms have equal values
    log_zp = rho = slope = None
    if entropy:
        log_zp = xp.log(s.zp)
        ent = entropy_stats(zw, codebook, s.m, log_zp, t, inv_t, dtype, xp)
        batch_entropy = -xp.sum(ent.a * xp.log(ent.a + EPS))
        loss = loss + o.entropy_weight * (o.sample_weight * xp.mean(ent.h) - o.batch_weight * batch_entropy)  # [D]
        rho = o.sample_weight * ent.h + o.batch_weight * ent.pc  # ⟨P_i, r_i⟩
        slope = ent.slope
    cache = Cache(zw, codebook, s.idx, s.m, s.zs, s.se / s.zs[:, None], log_zp, rho, slope, o, t)
    return Quantized(xp.astype(e_idx, z.dtype, copy=False), loss, s.idx, cache)


def ibq_backward(cache, grad_zq, grad_loss=1.0):
    """Gradients (grad_z, grad_codebook), a vq.Gradients, of <grad_zq, z_q> + grad_loss · loss,
    [E]-[F], recomputing each tile's logits; equal to torch autograd of the public formulation.
    grad_loss: a number or a 0-d array. Not checked for NaN/inf: loss scaling relies on inf passing."""
    if not isinstance(cache, Cache):
        raise TypeError(f"cache: expected the Cache of ibq_forward, got {type(cache).__name__}")
    arrays.namespace(z=cache.z, grad_zq=grad_zq)
    arrays.check_array(grad_zq, "grad_zq", shape=tuple(cache.z.shape))
    if arrays.is_array(grad_loss):
        arrays.check_array(grad_loss, "grad_loss", shape=())
        grad_loss = float(grad_loss)
    else:
        grad_loss = arrays.check_number(grad_loss, "grad_loss")
    return _backward(cache, grad_zq, grad_loss)


def _backward(cache, grad_zq, grad_loss):
    z, codebook, idx, o, t = cache.z, cache.codebook, cache.idx, cache.options, cache.tiles
    xp = arrays.namespace(z=z)
    (n, d), k, dtype = z.shape, codebook.shape[0], z.dtype
    diff = xp.astype(xp.take(codebook, idx, axis=0), dtype, copy=False) - z  # H E − z, (N, d)
    scale = 2 * grad_loss / (n * d)
    g = xp.astype(grad_zq, dtype, copy=False) + scale * diff  # G: the first term of [C] goes through z_q
    delta = xp.sum(g * cache.se, axis=1)  # δ of [E]
    # S ⊙ (G Eᵀ − δ) = exp(L − m) ⊙ ([G, −δ] / zs) [E, 1]ᵀ: the row scale and δ ride in the product
    g_aug = xp.concat([g, -delta[:, None]], axis=1) / cache.zs[:, None]  # (N, d + 1)
    entropy = o.entropy_weight != 0
    inv_t = 1.0 / o.temperature
    if entropy:  # α (r − ρ) of [F] = α w_b c_k − α w_s log P_ik − α ρ_i
        alpha = grad_loss * o.entropy_weight / (n * o.temperature)
        code_term, row_term = alpha * o.batch_weight * cache.entropy_slope, alpha * cache.rho
        log_p_weight = alpha * o.sample_weight

    # Hᵀ G of [E], with the β term of [C], which reaches E through H only
    grad_e = arrays.scatter_add(idx, g + o.beta * scale * diff, k, max_block_bytes=o.max_block_bytes)
    row_blocks = arrays.blocks(n, t.rows)
    dz = [0.0] * len(row_blocks)
    for ks in arrays.blocks(k, t.codes):
        e = code_block(codebook, ks, dtype, xp)
        e_aug = xp.concat([e, xp.ones((e.shape[0], 1), dtype=dtype, device=device(e))], axis=1)  # (kb, d + 1)
        de_blk = 0.0
        for j, r in enumerate(row_blocks):
            # the forward's very product, so its rounding too: x <= 0 exactly; another shape may
            # round the top logit 1 ulp higher, and in float32 at T = 0.01 that ulp / T is a
            # visible error in the saturated rows' entropy gradient
            x = z[r, :] @ e.T - cache.m[r, None]  # (nb, kb)
            dl = exp_tile(x, xp) * (g_aug[r, :] @ e_aug.T)  # [E]
            if entropy:
                lp = log_soft_probs(x, cache.log_zp[r], inv_t, xp)
                p = exp_tile(lp, xp)
                # α P ⊙ (r − ρ); P log P is bounded where α w_s log P alone may overflow
                dl = dl + p * (code_term[None, ks] - row_term[r, None]) - log_p_weight * (p * lp)  # [F]
            dz[j] = dz[j] + dl @ e
            de_blk = de_blk + dl.T @ z[r, :]
        grad_e = xpx.at(grad_e)[ks, :].add(de_blk)  # in place where the namespace allows: one (K, d) array
    grad_z = xp.concat(dz) - 2 * scale * diff  # the first two terms of [C] pull z towards H E
    return Gradients(xp.astype(grad_z, codebook.dtype, copy=False), xp.astype(grad_e, codebook.dtype, copy=False))


# ---------------------------------------------------------------- the torch module

class _IBQFunction(torch.autograd.Function):
    """torch autograd around the unchecked forward / backward (the module checked the options)."""

    @staticmethod
    def forward(ctx, z, codebook, options):
        z_q, loss, idx, ctx.cache = _forward(z, codebook, options)
        ctx.mark_non_differentiable(idx)
        return z_q, loss, idx

    @staticmethod
    def backward(ctx, grad_zq, grad_loss, grad_idx):
        with torch.autocast(device_type=grad_zq.device.type, enabled=False):  # float32, as the forward
            return (*_backward(ctx.cache, grad_zq, float(grad_loss)), None)


class IndexBackpropQuantizer(VectorQuantizer):
    """IBQ quantizer: forward(z) -> (z_q, loss, idx) with z (B, d, H, W) or (N, d), as
    vq.VectorQuantizer (layout, float32 codebook maths under autocast, usage counts,
    utilization(), perplexity(), decode(idx), use_blocks(index)), with the codebook trained by
    gradient through the softmax over all codes.

    init: "normal" (N(0, 1), the public code's nn.Embedding) or "kmeans" (k-means on the first
    training batch). entropy_weight, temperature, sample_weight, batch_weight: [D]. The options are
    checked here, once; the training forward does not check the codebook again."""

    rule = "dot"  # IBQ picks argmax z·e: the block search scores blocks and codes by dot product

    def __init__(self, codebook_size, dim, *, beta=0.25, entropy_weight=0.0, temperature=0.01,
                 sample_weight=1.0, batch_weight=1.0, init="normal", kmeans_iters=10, max_block_bytes=2**26):
        options = check_options(beta, entropy_weight, temperature, sample_weight, batch_weight, max_block_bytes)
        arrays.check_choice(init, "init", ("normal", "kmeans"))
        super().__init__(codebook_size, dim, beta=beta, kmeans_init=init == "kmeans", kmeans_iters=kmeans_iters,
                         max_block_bytes=max_block_bytes)
        with torch.no_grad():
            self.codebook.normal_()
        self.options = options

    def quantize(self, z_flat):
        return _IBQFunction.apply(z_flat, self.codebook, self.options)

    def quantization_loss(self, z_flat, z_q):
        """loss_Q of [C] for these codes (the block search's loss: the entropy term of [D] would
        need the softmax over all codes, so it is left out there)."""
        return (2 + self.options.beta) * squared_error(z_flat - z_q, arrays.namespace(z=z_flat))

    def extra_repr(self):
        k, d = self.codebook.shape
        return f"codebook_size={k}, dim={d}, " + ", ".join(f"{k}={v}" for k, v in self.options._asdict().items())


# ---------------------------------------------------------------- demo: which codes learn

def codes_with_gradient(z, codebook, method):
    """Share of codebook rows with a non-zero gradient after one backward of loss + <1, z_q>."""
    forward, backward = (ibq_forward, ibq_backward) if method == "IBQ" else (vq_forward, vq_backward)
    z_q, _, _, cache = forward(z, codebook)
    _, grad_codebook = backward(cache, torch.ones_like(z_q))
    return float((grad_codebook.abs().sum(1) > 0).double().mean())


def train_autoencoder(x, quantizer, steps, batch=128, lr=3e-3, seed=0):
    """A linear encoder 64 -> d, the quantizer, an MLP decoder d -> 64, trained on reconstruction
    + quantizer loss; returns the utilization, perplexity and reconstruction MSE on all of x."""
    torch.manual_seed(seed)
    d = quantizer.codebook.shape[1]
    enc = torch.nn.Linear(64, d)
    dec = torch.nn.Sequential(torch.nn.Linear(d, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    params = [*enc.parameters(), *dec.parameters(), *quantizer.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = x[torch.randint(len(x), (batch,), generator=g)]
        z_q, q_loss, _ = quantizer(enc(b))
        loss = ((dec(z_q) - b) ** 2).mean() + q_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    quantizer.reset_usage()
    with torch.no_grad():
        z_q, _, _ = quantizer(enc(x))
        mse = float(((dec(z_q) - x) ** 2).mean())
    return quantizer.utilization(), quantizer.perplexity(), mse


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.datasets import load_digits

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--codes", type=int, default=256)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--entropy-weight", type=float, default=0.5)
    p.add_argument("--out", default="ibq_demo.png")
    args = p.parse_args()
    x = torch.tensor(load_digits().data / 16.0, dtype=torch.float32)  # (1797, 64): 8x8 digits in [0, 1]
    k, d = args.codes, args.dim
    torch.manual_seed(0)
    z, codebook = torch.randn(256, d), torch.randn(k, d)
    print(f"{len(x)} digits (8x8) -> linear encoder -> {k} codes of dimension {d} -> MLP decoder, "
          f"{args.steps} Adam steps\n")
    print("| quantizer | codes with a gradient after one step | utilization | perplexity | reconstruction MSE |")
    print("| --- | ---: | ---: | ---: | ---: |")
    vq = VectorQuantizer(k, d)
    with torch.no_grad():
        vq.codebook.normal_()  # the same N(0, 1) start as IBQ's
    runs = {"VQ": vq, "IBQ": IndexBackpropQuantizer(k, d),
            f"IBQ + entropy loss {args.entropy_weight}": IndexBackpropQuantizer(k, d,
                                                                                entropy_weight=args.entropy_weight)}
    results = {}
    for name, q in runs.items():
        share = codes_with_gradient(z, codebook, name.split()[0])
        results[name] = (share, *train_autoencoder(x, q.train(), args.steps))
        print(f"| {name} | {results[name][0]:.3f} | {results[name][1]:.3f} | {results[name][2]:.1f} | "
              f"{results[name][3]:.4f} |")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, col, title in [(axes[0], 0, "codes with a gradient\nafter one step"),
                           (axes[1], 1, "utilization\nafter training")]:
        ax.bar(["VQ", "IBQ", "IBQ+entropy"], [v[col] for v in results.values()],
               color=["tab:gray", "tab:blue", "tab:green"])
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nfigure written to {args.out}")


if __name__ == "__main__":
    main()

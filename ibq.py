"""Index Backpropagation Quantization (IBQ), exact and without an N×K matrix.

Paper: F. Shi, Z. Luo, Y. Ge, Y. Yang, Y. Shan, L. Wang, "Taming Scalable Visual Tokenizer for
Autoregressive Image Generation", 2024, arXiv:2412.02692, sec. 3 (index backpropagation
quantization and its training losses). Reference code: TencentARC/SEED-Voken, the IBQ quantizer
`IndexPropagationQuantize` and its `compute_entropy_loss`; values and gradients here equal torch
autograd of that formulation in float64 (tests/test_ibq.py).

VQ picks the nearest code and copies the gradient straight through, so only picked codes learn and
the others drift away from the encoder's features. IBQ picks by dot product and puts the
straight-through estimator on the softmax over *all* codes, so every code gets a gradient:

    L = z Eᵀ,   S = softmax(L),   H = onehot(argmax L)                                   (1)
    z_q = (H − sg(S) + S) E          value H E = E[idx]; gradient through S              (2)
    loss_Q = mean((z_q − z)²) + mean((sg(H E) − z)²) + β mean((H E − sg(z))²)            (3)
    loss_H = w_s mean_i H(P_i) − w_b H(a),  P = softmax(L / T),  a = mean_i P_i          (4)

with the public code's H(a) = −Σ_k a_k log(a_k + 1e-5). For G = ∂loss/∂z_q the gradient of (2)
is an attention gradient (queries z, keys E, values sg(E)):

    dL = S ⊙ (G Eᵀ − δ),  δ_i = G_i · (S E)_i,   dz = dL E,   dE = dLᵀ z + Hᵀ G         (5)

and (4) adds dL += α P ⊙ (r − ⟨P, r⟩) with r = −w_s log P + w_b c,
c_k = log(a_k + 1e-5) + a_k / (a_k + 1e-5), α = ∂loss/∂loss_H / (N T).                   (6)

So it runs like flash attention: the forward makes one pass over blocks of codes keeping each
row's running max, softmax normaliser, S E and argmax; the backward recomputes each block's
logits. Extra memory is O((N + K) d + max_block_bytes): the public code builds three dense N×K
matrices (at N = 1024, K = 2^18 that is 1 GiB each in float32, and their gradients besides).
Here the entropy term costs two more passes over the codes (for a, then for ⟨P_i, c⟩).
"""
from typing import NamedTuple

import argparse

import array_api_extra as xpx
import torch
from array_api_compat import array_namespace, device

from vq import VectorQuantizer, check_float, check_matrix, check_number, compute_dtype, scatter_rows, vq_backward, vq_forward

EPS = 1e-5  # inside the batch entropy's log, as in the public code
TILE_TEMPS = 6  # tile-sized temporaries alive at once in the backward


class Cache(NamedTuple):
    """What ibq_backward needs from ibq_forward: O((N + K) d) arrays, no N×K matrix."""
    z: object  # (N, d) in the working dtype
    codebook: object  # (K, d) as given
    idx: object  # (N,) int64
    m: object  # (N,) row max of L
    log_zs: object  # (N,) log Σ_k exp(L − m): S = exp(L − m − log_zs)
    se: object  # (N, d) S E
    log_zp: object  # (N,) log Σ_k exp((L − m) / T), entropy only (else None)
    rho: object  # (N,) ⟨P_i, r_i⟩ of (6), entropy only
    c: object  # (K,) c of (6), entropy only
    beta: float
    entropy_weight: float
    temperature: float
    sample_weight: float
    batch_weight: float
    max_block_bytes: int


def tiles(n, k, d, itemsize, max_block_bytes):
    """Rows and codes per tile: TILE_TEMPS tiles plus one codebook block fit in the budget.
    All rows at once when that leaves blocks of >= 256 codes (BLAS wants wide blocks)."""
    cells = max(1, max_block_bytes // itemsize)
    rows = min(n, max(1, cells // (TILE_TEMPS * min(k, 256))))
    codes = min(k, max(1, cells // (TILE_TEMPS * rows + d)))
    return rows, codes


def blocks(total, size):
    """Slices covering range(total) in steps of size (the array API refuses stops past the end)."""
    return [slice(i, min(i + size, total)) for i in range(0, total, size)]


def code_block(codebook, ks, dtype, xp):
    """Rows ks of the codebook in the working dtype: only one block is ever converted at a time."""
    return xp.astype(codebook[ks, :], dtype, copy=False)  # (kb, d)


def row_stats(z, codebook, codes, temperature, entropy, dtype, xp):
    """One pass over code blocks for rows z (n, d), flash-attention style. Returns the row max m,
    argmax, log Σ exp(L − m), S E, and with entropy log Σ exp((L − m)/T) and mean-free H(P_i)."""
    k = codebook.shape[0]
    acc = None
    for ks in blocks(k, codes):
        e = code_block(codebook, ks, dtype, xp)
        logits = z @ e.T  # (n, kb)  eq. (1)
        m = xp.max(logits, axis=1)
        x = logits - m[:, None]
        w = xp.exp(x)  # S up to the row's normaliser
        blk = [m, xp.argmax(logits, axis=1) + ks.start, xp.sum(w, axis=1), w @ e]  # S E: eq. (2)
        if entropy:
            u = x / temperature
            wp = xp.exp(u)
            blk += [xp.sum(wp, axis=1), xp.sum(wp * u, axis=1)]  # Σ e^u and Σ e^u u, u <= 0
        acc = blk if acc is None else merge(acc, blk, temperature, xp)
    m, idx, zs, se = acc[:4]
    out = [m, xp.astype(idx, xp.int64), xp.log(zs), se / zs[:, None]]
    if entropy:
        zp, up = acc[4:]
        out += [xp.log(zp), xp.log(zp) - up / zp]  # H(P_i) = log Σ e^u − Σ e^u u / Σ e^u
    return out


def merge(a, b, temperature, xp):
    """Combine the summaries of two code blocks, each relative to its own row max."""
    m = xp.maximum(a[0], b[0])
    idx = xp.where(b[0] > a[0], b[1], a[1])  # a holds the lower codes: exact ties keep them
    sa, sb = xp.exp(a[0] - m), xp.exp(b[0] - m)
    out = [m, idx, a[2] * sa + b[2] * sb, a[3] * sa[:, None] + b[3] * sb[:, None]]
    if len(a) > 4:
        # shifting u by s <= 0 turns Σ e^u u into e^s (Σ e^u u + s Σ e^u): finite even when e^s = 0
        ua, ub = (a[0] - m) / temperature, (b[0] - m) / temperature
        pa, pb = xp.exp(ua), xp.exp(ub)
        out += [a[4] * pa + b[4] * pb, (a[5] + ua * a[4]) * pa + (b[5] + ub * b[4]) * pb]
    return out


def soft_probs(z, e, m, log_zp, temperature):
    """log P for one tile: log softmax(L / T) from the forward's row statistics."""
    return (z @ e.T - m[:, None]) / temperature - log_zp[:, None]


def batch_probs(z, codebook, m, log_zp, temperature, rows, codes, dtype, xp):
    """a = mean_i softmax(L_i / T), the K-vector of eq. (4), one code block at a time."""
    n, k = z.shape[0], codebook.shape[0]
    a = []
    for ks in blocks(k, codes):
        e = code_block(codebook, ks, dtype, xp)
        a_blk = xp.zeros(e.shape[0], dtype=dtype, device=device(z))
        for r in blocks(n, rows):
            a_blk = a_blk + xp.sum(xp.exp(soft_probs(z[r, :], e, m[r], log_zp[r], temperature)), axis=0)
        a.append(a_blk / n)
    return xp.concat(a)


def expected_c(z, codebook, m, log_zp, c, temperature, rows, codes, dtype, xp):
    """⟨P_i, c⟩ for every row: needs the whole of a (hence c) first, so a pass of its own."""
    n, k = z.shape[0], codebook.shape[0]
    out = []
    for r in blocks(n, rows):
        acc = xp.zeros(z[r, :].shape[0], dtype=dtype, device=device(z))
        for ks in blocks(k, codes):
            p = xp.exp(soft_probs(z[r, :], code_block(codebook, ks, dtype, xp), m[r], log_zp[r], temperature))
            acc = acc + p @ c[ks]
        out.append(acc)
    return xp.concat(out)


def ibq_forward(z, codebook, *, beta=0.25, entropy_weight=0.0, temperature=0.01, sample_weight=1.0,
                batch_weight=1.0, max_block_bytes=2**26):
    """IBQ forward, eqs. (1)-(4). z (N, d), codebook (K, d), same float dtype.

    Returns (z_q, loss, idx, cache): z_q = codebook[idx] in value; loss = loss_Q +
    entropy_weight · loss_H (0-d, z's dtype); idx int64 (N,) = argmax_k z·E_k, exact ties to the
    lowest index; cache for ibq_backward.
    """
    check_number(max_block_bytes, "max_block_bytes", low=0, low_open=True, integer=True)
    for name, value in [("beta", beta), ("entropy_weight", entropy_weight),
                        ("sample_weight", sample_weight), ("batch_weight", batch_weight)]:
        check_number(value, name)
    check_number(temperature, "temperature", low=0.0, low_open=True)
    check_matrix(z, "z", max_block_bytes=max_block_bytes)
    check_matrix(codebook, "codebook", cols=z.shape[1], max_block_bytes=max_block_bytes)
    xp = array_namespace(z, codebook)
    if codebook.dtype != z.dtype:
        raise TypeError(f"codebook: dtype {codebook.dtype} differs from z's {z.dtype}")
    (n, d), k = z.shape, codebook.shape[0]
    dtype = compute_dtype(xp, z.dtype)
    rows, codes = tiles(n, k, d, 8 if dtype == xp.float64 else 4, max_block_bytes)

    zw = xp.astype(z, dtype, copy=False)
    entropy = entropy_weight != 0
    per_rows = [row_stats(zw[r, :], codebook, codes, temperature, entropy, dtype, xp) for r in blocks(n, rows)]
    m, idx, log_zs, se, *ent = [xp.concat(parts) for parts in zip(*per_rows)]

    e_idx = xp.astype(xp.take(codebook, idx, axis=0), dtype)  # H E, (N, d)
    loss = (2 + beta) * xp.mean((e_idx - zw) ** 2)  # eq. (3): the three terms have equal values
    log_zp = rho = c = None
    if entropy:
        log_zp, h = ent
        a = batch_probs(zw, codebook, m, log_zp, temperature, rows, codes, dtype, xp)
        batch_entropy = -xp.sum(a * xp.log(a + EPS))
        loss = loss + entropy_weight * (sample_weight * xp.mean(h) - batch_weight * batch_entropy)  # (4)
        c = xp.log(a + EPS) + a / (a + EPS)  # -∂H(a)/∂a_k
        rho = sample_weight * h + batch_weight * expected_c(zw, codebook, m, log_zp, c, temperature,
                                                            rows, codes, dtype, xp)
    cache = Cache(zw, codebook, idx, m, log_zs, se, log_zp, rho, c, float(beta), float(entropy_weight),
                  float(temperature), float(sample_weight), float(batch_weight), max_block_bytes)
    return xp.astype(e_idx, z.dtype), xp.astype(loss, z.dtype), idx, cache


def ibq_backward(cache, grad_zq, grad_loss=1.0):
    """Gradients (grad_z, grad_codebook) of <grad_zq, z_q> + grad_loss · loss, eqs. (5)-(6),
    recomputing each tile's logits; equal to torch autograd of the public formulation."""
    if not isinstance(cache, Cache):
        raise TypeError(f"cache: expected the Cache of ibq_forward, got {type(cache).__name__}")
    z, codebook, idx = cache.z, cache.codebook, cache.idx
    check_float(grad_zq, "grad_zq")  # not checked for NaN/inf: loss scaling relies on them passing
    if tuple(grad_zq.shape) != tuple(z.shape):
        raise ValueError(f"grad_zq: expected z's shape {tuple(z.shape)}, got {tuple(grad_zq.shape)}")
    grad_loss = float(grad_loss)  # a Python number or a 0-d array (torch autograd passes a tensor)
    xp = array_namespace(z, codebook)
    (n, d), k, dtype = z.shape, codebook.shape[0], z.dtype
    rows, codes = tiles(n, k, d, 8 if dtype == xp.float64 else 4, cache.max_block_bytes)

    diff = xp.astype(xp.take(codebook, idx, axis=0), dtype) - z  # H E − z, (N, d)
    scale = 2 * grad_loss / (n * d)
    g = xp.astype(grad_zq, dtype) + scale * diff  # G: the first term of (3) goes through z_q
    g_hard = g + cache.beta * scale * diff  # the β term of (3) reaches E through H only
    delta = xp.sum(g * cache.se, axis=1)  # δ of (5)
    row_blocks = blocks(n, rows)
    entropy = cache.entropy_weight != 0
    t = cache.temperature
    alpha = grad_loss * cache.entropy_weight / (n * t)

    grad_e = scatter_rows(idx, g_hard, k, max_block_bytes=cache.max_block_bytes)  # Hᵀ G of (5)
    dz = [xp.zeros((r.stop - r.start, d), dtype=dtype, device=device(z)) for r in row_blocks]
    for ks in blocks(k, codes):
        e = code_block(codebook, ks, dtype, xp)
        de = xp.zeros(e.shape, dtype=dtype, device=device(z))
        for j, r in enumerate(row_blocks):
            # the forward's very product, so its rounding too: x <= 0 and S <= 1 exactly. A product
            # of another shape (say [z; G] Eᵀ) may round the top logit 1 ulp higher, and in float32
            # at T = 0.01 that ulp / T is a visible error in the saturated rows' entropy gradient.
            x = z[r, :] @ e.T - cache.m[r, None]  # (nb, kb)
            dl = xp.exp(x - cache.log_zs[r, None]) * (g[r, :] @ e.T - delta[r, None])  # eq. (5)
            if entropy:
                log_p = x / t - cache.log_zp[r, None]
                r_minus_rho = (cache.batch_weight * cache.c[None, ks]
                               - cache.sample_weight * log_p - cache.rho[r, None])
                dl = dl + alpha * xp.exp(log_p) * r_minus_rho  # eq. (6)
            dz[j] = dz[j] + dl @ e
            de = de + dl.T @ z[r, :]
        grad_e = xpx.at(grad_e)[ks, :].add(de)
    grad_z = xp.concat(dz) - 2 * scale * diff  # the first two terms of (3) pull z towards H E
    return xp.astype(grad_z, codebook.dtype), xp.astype(grad_e, codebook.dtype)


# ---------------------------------------------------------------- the torch module

class _IBQFunction(torch.autograd.Function):
    """torch autograd around ibq_forward / ibq_backward."""

    @staticmethod
    def forward(ctx, z, codebook, options):
        z_q, loss, idx, cache = ibq_forward(z, codebook, **options)
        ctx.cache = cache
        ctx.mark_non_differentiable(idx)
        return z_q, loss, idx

    @staticmethod
    def backward(ctx, grad_zq, grad_loss, grad_idx):
        return (*ibq_backward(ctx.cache, grad_zq, grad_loss), None)


class IndexBackpropQuantizer(VectorQuantizer):
    """IBQ quantizer: forward(z) -> (z_q, loss, idx) with z (B, d, H, W) or (N, d), as
    vq.VectorQuantizer (layout, usage counts, utilization(), perplexity(), decode(idx)), with the
    codebook trained by gradient through the softmax over all codes.

    init: "normal" (N(0, 1), the public code's nn.Embedding) or "kmeans" (k-means on the first
    training batch). entropy_weight, temperature, sample_weight, batch_weight: eq. (4)."""

    def __init__(self, codebook_size, dim, *, beta=0.25, entropy_weight=0.0, temperature=0.01,
                 sample_weight=1.0, batch_weight=1.0, init="normal", kmeans_iters=10, max_block_bytes=2**26):
        if init not in ("normal", "kmeans"):
            raise ValueError(f"init: expected 'normal' or 'kmeans', got {init!r}")
        super().__init__(codebook_size, dim, beta=beta, kmeans_init=init == "kmeans", kmeans_iters=kmeans_iters,
                         max_block_bytes=max_block_bytes)
        with torch.no_grad():
            self.codebook.normal_()
        self.options = dict(beta=beta, entropy_weight=entropy_weight, temperature=temperature,
                            sample_weight=sample_weight, batch_weight=batch_weight, max_block_bytes=max_block_bytes)
        ibq_forward(torch.zeros(1, dim), torch.zeros(1, dim), **self.options)  # reject bad options now

    def quantize(self, z_flat):
        return _IBQFunction.apply(z_flat, self.codebook, self.options)

    def extra_repr(self):
        k, d = self.codebook.shape
        return f"codebook_size={k}, dim={d}, " + ", ".join(f"{k}={v}" for k, v in self.options.items())


# ---------------------------------------------------------------- demo: which codes learn

def codes_with_gradient(z, codebook, method):
    """Share of codebook rows with a non-zero gradient after one backward of loss + <1, z_q>."""
    forward, backward = (ibq_forward, ibq_backward) if method == "IBQ" else (vq_forward, vq_backward)
    z_q, _, _, cache = forward(z, codebook)
    _, grad_codebook = backward(cache, torch.ones_like(z_q))
    return float((grad_codebook.abs().sum(1) > 0).double().mean())


def train_autoencoder(x, quantizer, steps, batch=128, lr=3e-3, seed=0):
    """A linear encoder 64 -> d, the quantizer, an MLP decoder d -> 64, trained on reconstruction
    + quantizer loss; returns the utilization after each step's batch and the final one on all x."""
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
            f"IBQ + entropy loss {args.entropy_weight}": IndexBackpropQuantizer(k, d, entropy_weight=args.entropy_weight)}
    results = {}
    for name, q in runs.items():
        share = codes_with_gradient(z, codebook, name.split()[0])
        results[name] = (share, *train_autoencoder(x, q.train(), args.steps))
        print(f"| {name} | {results[name][0]:.3f} | {results[name][1]:.3f} | {results[name][2]:.1f} | "
              f"{results[name][3]:.4f} |")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, col, title in [(axes[0], 0, "codes with a gradient\nafter one step"), (axes[1], 1, "utilization\nafter training")]:
        ax.bar(["VQ", "IBQ", "IBQ+entropy"], [v[col] for v in results.values()], color=["tab:gray", "tab:blue", "tab:green"])
        ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"\nfigure written to {args.out}")


if __name__ == "__main__":
    main()

"""The Poincare ball of curvature -c and Poincare embeddings of (weighted) graphs.

Papers:
- M. Nickel, D. Kiela, "Poincare Embeddings for Learning Hierarchical Representations", NeurIPS 2017,
  arXiv:1705.08039 (NK). Sec. 3: distance (Eq. 1), Riemannian SGD (Eqs. 3-6: Riemannian gradient
  = Euclidean gradient * (1 - |x|^2)^2 / 4, retraction x + v, projection back inside the ball),
  gradient of the distance (Eq. 7); Sec. 4.1: the taxonomy loss (softmax of -d(u, v) against
  sampled non-neighbours) and the reconstruction metrics (mean rank, MAP).
- O. Ganea, G. Becigneul, T. Hofmann, "Hyperbolic Neural Networks", NeurIPS 2018, arXiv:1805.09112,
  Sec. 2: Mobius addition, exp/log maps, conformal factor, all for curvature -c.

Reference code it agrees with: `geoopt.PoincareBall(c)` for the maps (same projection radius
(1 - eps)/sqrt(c), eps 1e-5 in float64 and 4e-3 in float32; `mobius_add`, `expmap0`, `expmap`
project their result); gensim's `PoincareModel` for the embedding (same loss, burn-in and update).

Everything is array-API code: the arrays stay on the caller's backend and device. `fit` samples
edges and negatives on the host with a seeded NumPy Generator (reproducible for a seed) and does all
the arithmetic on the caller's backend, a whole mini-batch at a time with the distance gradient
written out (no autograd).
"""
import math

import numpy as np
from array_api_compat import array_namespace, device, is_cupy_namespace, is_numpy_namespace
from array_api_compat import is_torch_namespace

# ----------------------------------------------------------------------------- checks


def _check_c(c):
    if isinstance(c, bool) or not isinstance(c, (int, float)):
        raise TypeError(f"c must be a real number, got {type(c).__name__}")
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"c must be finite and > 0, got {c}")
    return float(c)


def _float(xp, x, name):
    """x in its working dtype: float32/float64 kept, other floats computed in float32."""
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must be a real floating array, got {x.dtype}")
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name} must have a last axis of size >= 1, got shape {x.shape}")
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} contains NaN or inf")
    return x if x.dtype in (xp.float32, xp.float64) else xp.astype(x, xp.float32)


def _sqnorm(xp, x):
    return xp.sum(x * x, axis=-1, keepdims=True)


def _point(xp, x, c, name):
    """Refuse points on or outside the boundary |x| = 1/sqrt(c)."""
    x = _float(xp, x, name)
    if not bool(xp.all(c * _sqnorm(xp, x) < 1)):
        raise ValueError(f"{name} has points on or outside the ball's boundary (|x| >= 1/sqrt(c))")
    return x


def _tiny(xp, dtype):
    return xp.finfo(dtype).smallest_normal ** 0.5  # a norm floor whose square is still a normal number


# ----------------------------------------------------------------------------- the ball


def project(x, c=1.0, eps=None):
    """x pulled inside the ball to norm at most (1 - eps)/sqrt(c); eps defaults as geoopt's."""
    xp = array_namespace(x)
    c = _check_c(c)
    x = _float(xp, x, "x")
    eps = (4e-3 if x.dtype == xp.float32 else 1e-5) if eps is None else eps
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps}")
    return _project(xp, x, c, eps)


def _project(xp, x, c, eps):
    maxnorm = (1 - eps) / math.sqrt(c)
    norm = xp.maximum(xp.sqrt(_sqnorm(xp, x)), _tiny(xp, x.dtype))
    return xp.where(norm > maxnorm, x / norm * maxnorm, x)


def _eps(xp, x):
    return 4e-3 if x.dtype == xp.float32 else 1e-5


def conformal_factor(x, c=1.0):
    """lambda_x = 2 / (1 - c |x|^2), the metric's scale at x (Ganea Sec. 2), shape x.shape[:-1]."""
    xp = array_namespace(x)
    c = _check_c(c)
    x = _point(xp, x, c, "x")
    return 2 / (1 - c * xp.sum(x * x, axis=-1))


def riemannian_gradient(x, grad, c=1.0):
    """The Euclidean gradient at x rescaled by 1/lambda_x^2 = (1 - c|x|^2)^2 / 4 (NK Eq. 4)."""
    xp = array_namespace(x, grad)
    c = _check_c(c)
    x, grad = _point(xp, x, c, "x"), _float(xp, grad, "grad")
    return grad * ((1 - c * _sqnorm(xp, x)) ** 2 / 4)


def _mobius_add(xp, x, y, c):
    xy = xp.sum(x * y, axis=-1, keepdims=True)
    x2, y2 = _sqnorm(xp, x), _sqnorm(xp, y)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y  # Ganea Eq. (3)
    den = 1 + 2 * c * xy + c**2 * x2 * y2  # > 0 for points inside the ball
    return num / den


def mobius_add(x, y, c=1.0):
    """x (+)_c y, projected back inside the ball as geoopt does."""
    xp = array_namespace(x, y)
    c = _check_c(c)
    x, y = _point(xp, x, c, "x"), _point(xp, y, c, "y")
    return _project(xp, _mobius_add(xp, x, y, c), c, _eps(xp, x))


def _expmap0(xp, v, c):
    norm = xp.maximum(xp.sqrt(_sqnorm(xp, v)), _tiny(xp, v.dtype))
    return xp.tanh(math.sqrt(c) * norm) * v / (math.sqrt(c) * norm)  # tanh saturates, never > 1


def expmap0(v, c=1.0):
    """exp_0(v) = tanh(sqrt(c)|v|) v / (sqrt(c)|v|) (Ganea Lemma 2), projected."""
    xp = array_namespace(v)
    c = _check_c(c)
    v = _float(xp, v, "v")
    return _project(xp, _expmap0(xp, v, c), c, _eps(xp, v))


def expmap(x, v, c=1.0):
    """exp_x(v) = x (+) tanh(sqrt(c) lambda_x |v| / 2) v / (sqrt(c)|v|) (Ganea Lemma 2), projected."""
    xp = array_namespace(x, v)
    c = _check_c(c)
    x, v = _point(xp, x, c, "x"), _float(xp, v, "v")
    lam = 2 / (1 - c * _sqnorm(xp, x))
    step = _expmap0(xp, lam / 2 * v, c)
    return _project(xp, _mobius_add(xp, x, step, c), c, _eps(xp, x))


def logmap0(x, c=1.0):
    """log_0(x) = artanh(sqrt(c)|x|) x / (sqrt(c)|x|) (Ganea Lemma 2)."""
    xp = array_namespace(x)
    c = _check_c(c)
    x = _point(xp, x, c, "x")
    norm = xp.maximum(xp.sqrt(_sqnorm(xp, x)), _tiny(xp, x.dtype))
    # Clamp artanh's argument: a point checked to be inside can still round onto the boundary
    # after the square root and the product with sqrt(c), and artanh(1) is inf.
    r = xp.minimum(math.sqrt(c) * norm, 1 - xp.finfo(x.dtype).eps)
    return xp.atanh(r) * x / (math.sqrt(c) * norm)


def _distance_q(xp, diff2, x2, y2, c):
    """q = cosh(sqrt(c) d) - 1 = 2c|x - y|^2 / ((1 - c|x|^2)(1 - c|y|^2)) (NK Eq. 1)."""
    return 2 * c * diff2 / ((1 - c * x2) * (1 - c * y2))


def _arcosh1p(xp, q):
    # arcosh(1 + q) = log1p(q + sqrt(q (q + 2))): no cancellation at q -> 0 (x close to y) and no
    # overflow near the boundary, so the arcosh argument needs no clamp at 1; q >= 0 by construction.
    return xp.log1p(q + xp.sqrt(q * (q + 2)))


def distance(x, y, c=1.0):
    """Geodesic distance d_c(x, y) = arcosh(1 + q) / sqrt(c), shape broadcast(x, y).shape[:-1]."""
    xp = array_namespace(x, y)
    c = _check_c(c)
    x, y = _point(xp, x, c, "x"), _point(xp, y, c, "y")
    diff2 = xp.sum((x - y) ** 2, axis=-1)
    q = _distance_q(xp, diff2, xp.sum(x * x, axis=-1), xp.sum(y * y, axis=-1), c)
    return _arcosh1p(xp, q) / math.sqrt(c)


def _distance_and_grad(xp, x, y, c):
    """d(x, y) and its Euclidean gradients in x and y (NK Eq. 7, for curvature -c)."""
    diff = x - y
    diff2 = xp.sum(diff * diff, axis=-1, keepdims=True)
    a, b = 1 - c * _sqnorm(xp, x), 1 - c * _sqnorm(xp, y)
    q = 2 * c * diff2 / (a * b)
    root = xp.sqrt(q * (q + 2))  # = sinh(sqrt(c) d)
    d = xp.log1p(q + root) / math.sqrt(c)
    # d is not differentiable at x = y (|x - y| is not); floor sinh so the gradient there is 0
    # instead of 0/0, and exact wherever root is above the floor.
    k = 4 * math.sqrt(c) / (a * b * xp.maximum(root, _tiny(xp, x.dtype)))
    gx = k * (diff + (c * diff2 / a) * x)
    gy = k * ((c * diff2 / b) * y - diff)
    return d[..., 0], gx, gy


def distance_grad(x, y, c=1.0):
    """(d, dd/dx, dd/dy): the distance and its analytic Euclidean gradients, as used by `fit`."""
    xp = array_namespace(x, y)
    c = _check_c(c)
    x, y = _point(xp, x, c, "x"), _point(xp, y, c, "y")
    x, y = xp.broadcast_arrays(x, y)
    return _distance_and_grad(xp, x, y, c)


# ----------------------------------------------------------------------------- graph embedding


def _scatter_add(xp, n, idx, vals):
    """sum of vals (M, dim) into rows idx of an (n, dim) zero array.

    The array API has no scatter-add; NumPy (np.add.at), torch (index_add_) and CuPy
    (cupyx.scatter_add) have one, and the portable exact fallback is a one-hot matrix product per chunk.
    """
    if is_numpy_namespace(xp):  # one bincount a column: several times faster than np.add.at
        return np.stack([np.bincount(idx, vals[:, j], minlength=n) for j in range(vals.shape[1])], axis=1)
    out = xp.zeros((n, vals.shape[1]), dtype=vals.dtype, device=device(vals))
    if is_torch_namespace(xp):
        return out.index_add_(0, idx, vals)
    if is_cupy_namespace(xp):
        import cupyx

        cupyx.scatter_add(out, idx, vals)
        return out
    nodes = xp.arange(n, device=device(vals))
    chunk = max(1, 2**22 // n)
    for s in range(0, idx.shape[0], chunk):
        t = min(s + chunk, idx.shape[0])
        onehot = xp.astype(nodes[:, None] == idx[None, s:t], vals.dtype)  # (n, chunk)
        out = out + onehot @ vals[s:t, :]
    return out


def _check_graph(edges, n_nodes, weights):
    """edges as a host int64 (M, 2) array, weights as float64 (M,) or None."""
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, (int, np.integer)) or n_nodes < 2:
        raise ValueError(f"n_nodes must be an int >= 2, got {n_nodes!r}")
    xp = array_namespace(edges)
    if not xp.isdtype(edges.dtype, "integral"):
        raise TypeError(f"edges must be an integer array, got {edges.dtype}")
    e = np.asarray(_host(edges), dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2 or e.shape[0] < 1:
        raise ValueError(f"edges must have shape (M >= 1, 2), got {e.shape}")
    if e.min() < 0 or e.max() >= n_nodes:
        raise ValueError(f"edges must hold node ids in [0, {n_nodes}), got [{e.min()}, {e.max()}]")
    if np.any(e[:, 0] == e[:, 1]):
        raise ValueError("edges must not hold self-loops (u, u)")
    if weights is None:
        return e, None
    w = np.asarray(_host(weights), dtype=np.float64)
    if w.shape != (e.shape[0],):
        raise ValueError(f"weights must have shape ({e.shape[0]},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, >= 0 and not all 0")
    return e, w


def _host(a):
    if hasattr(a, "get"):  # CuPy
        return a.get()
    if hasattr(a, "detach"):  # torch
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _neighbour_table(e, n):
    """u * n + v of both orientations of every edge: a bitset when n^2 bits fit in 64 MiB (one
    gather a lookup), else a sorted array (binary search)."""
    keys = np.concatenate([e[:, 0] * n + e[:, 1], e[:, 1] * n + e[:, 0]])
    if n * n <= 2**29:
        bits = np.zeros(n * n // 8 + 1, dtype=np.uint8)
        np.bitwise_or.at(bits, keys >> 3, (1 << (keys & 7)).astype(np.uint8))
        return bits
    return np.sort(keys)


def _is_neighbour(table, u, w, n):
    q = u * n + w
    if table.dtype == np.uint8:
        return ((table[q >> 3] >> (q & 7).astype(np.uint8)) & 1).astype(bool)
    pos = np.minimum(np.searchsorted(table, q), table.size - 1)
    return table[pos] == q


def _sample_negatives(rng, u, k, n, keys, cdf, rounds=8):
    """(B, k) negatives for nodes u and a mask of those that are real non-neighbours of u.

    Invalid draws (u itself or a neighbour) are redrawn `rounds` times; what is still invalid
    after that (nodes adjacent to nearly every node) is masked out of the softmax.
    """
    draw = (lambda size: rng.integers(0, n, size)) if cdf is None else (
        lambda size: np.minimum(np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right"), n - 1))
    neg = draw((u.size, k))
    for _ in range(rounds + 1):
        bad = (neg == u[:, None]) | _is_neighbour(keys, u[:, None], neg, n)
        if not bad.any():
            break
        neg[bad] = draw(int(bad.sum()))
    return neg, ~bad


def fit(edges, n_nodes, *, dim=10, epochs=50, lr=0.1, negatives=10, burn_in=10, weights=None,
        seed=0, batch_size=2048, samples_per_epoch=None, c=1.0, progress=True):
    """Poincare embedding (n_nodes, dim), float64, of an undirected graph (NK Sec. 3 and 4.1).

    edges: int (M, 2), an edge (u, v) is the relation u ~ v in both directions. An epoch draws
    `samples_per_epoch` edges (default: M, at most 2**14 so that a dense co-occurrence graph costs
    ~1 s an epoch on a CPU): each edge once in shuffled order when unweighted, in proportion to `weights` (e.g.
    co-occurrence counts) with replacement otherwise; each draw gets a random orientation (u, v).
    Loss per draw: -log softmax(-d(u, v), -d(u, v'_1), ..., -d(u, v'_negatives)) over non-neighbours
    v' of u. Negatives: during the `burn_in` epochs (at lr / 10) they are drawn in proportion to
    degree^0.75 (the authors' code: unigram sampling with dampening 0.75 during burn-in), afterwards
    uniformly, as the paper states: the reconstruction metric weighs every non-neighbour alike.
    Update: Riemannian SGD, x <- proj(x - lr (1 - c|x|^2)^2/4 * grad), gradients summed over the
    mini-batch as gensim sums the updates of its batch.
    """
    xp = array_namespace(edges)
    c = _check_c(c)
    e, w = _check_graph(edges, n_nodes, weights)
    for name, val, low in (("dim", dim, 1), ("negatives", negatives, 1), ("epochs", epochs, 0),
                           ("burn_in", burn_in, 0), ("batch_size", batch_size, 1)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < low:
            raise ValueError(f"{name} must be an int >= {low}, got {val!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    m = e.shape[0]
    samples = min(m, 2**14) if samples_per_epoch is None else int(samples_per_epoch)
    if samples < 1:
        raise ValueError(f"samples_per_epoch must be >= 1, got {samples_per_epoch!r}")

    rng = np.random.default_rng(seed)
    dev = device(edges)
    keys = _neighbour_table(e, n_nodes)
    strength = np.bincount(e.ravel(), weights=None if w is None else np.repeat(w, 2), minlength=n_nodes)
    burn_cdf = np.cumsum(strength**0.75)
    edge_cdf = None if w is None else np.cumsum(w)
    emb = xp.asarray(rng.uniform(-1e-3, 1e-3, (n_nodes, dim)), dtype=xp.float64, device=dev)  # NK Sec. 4
    eps = 1e-5

    from tqdm import tqdm

    for epoch in tqdm(range(burn_in + epochs), desc="poincare fit", disable=not progress):
        burning = epoch < burn_in
        step = lr / 10 if burning else lr
        if edge_cdf is None:
            order = rng.permutation(m)[:samples] if samples <= m else rng.integers(0, m, samples)
        else:
            order = np.minimum(np.searchsorted(edge_cdf, rng.random(samples) * edge_cdf[-1], side="right"), m - 1)
        flip = rng.integers(0, 2, samples).astype(bool)
        us = np.where(flip, e[order, 1], e[order, 0])
        vs = np.where(flip, e[order, 0], e[order, 1])
        for s in range(0, samples, batch_size):
            u, v = us[s:s + batch_size], vs[s:s + batch_size]
            neg, ok = _sample_negatives(rng, u, negatives, n_nodes, keys, burn_cdf if burning else None)
            emb = _sgd_step(xp, emb, u, np.concatenate([v[:, None], neg], axis=1),
                            np.concatenate([np.ones((u.size, 1), bool), ok], axis=1), step, c, eps, dev)
    return emb


def _sgd_step(xp, emb, u, vs, ok, lr, c, eps, dev):
    """One Riemannian SGD step on a mini-batch: u (B,), vs (B, 1 + K) with vs[:, 0] the positive."""
    b, k1 = vs.shape
    n, dim = emb.shape
    iu = xp.asarray(u, device=dev)
    iv = xp.asarray(vs.reshape(-1), device=dev)
    x = xp.take(emb, iu, axis=0)[:, None, :]  # (B, 1, dim)
    y = xp.reshape(xp.take(emb, iv, axis=0), (b, k1, dim))  # (B, 1 + K, dim)
    d, gx, gy = _distance_and_grad(xp, x, y, c)  # (B, 1+K), (B, 1+K, dim) twice
    mask = xp.asarray(ok, device=dev)
    logits = xp.where(mask, -d, -xp.inf)
    p = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
    p = p / xp.sum(p, axis=1, keepdims=True)  # softmax over {v} and the negatives (NK Sec. 4.1)
    onehot = xp.astype(xp.arange(k1, device=dev) == 0, xp.float64)
    dl_dd = (onehot - p)[..., None]  # dL/dd_j for L = -log p_0; 0 for masked negatives
    grad_u = xp.sum(dl_dd * gx, axis=1)  # (B, dim)
    grad_v = xp.reshape(dl_dd * gy, (b * k1, dim))
    grad = _scatter_add(xp, n, xp.concat([iu, iv]), xp.concat([grad_u, grad_v], axis=0))
    scale = (1 - c * _sqnorm(xp, emb)) ** 2 / 4  # NK Eq. 4: Riemannian = Euclidean / lambda^2
    return _project(xp, emb - lr * scale * grad, c, eps)  # NK Eq. 6: retraction x + v, then proj


# ----------------------------------------------------------------------------- evaluation


def reconstruction(embedding, edges, c=1.0, *, max_block_bytes=2**26):
    """(mean_rank, mean_average_precision) of the graph's reconstruction (NK Sec. 4.1).

    For each node u with neighbours (edges undirected), each neighbour v is ranked among the
    non-neighbours of u by distance: rank = 1 + #{non-neighbours w: d(u, w) < d(u, v)} (ties count
    for v, as gensim's evaluator). Mean rank averages over both orientations of every distinct edge;
    MAP averages, over nodes with neighbours, the mean precision at each neighbour's position.
    Rows are processed in blocks of nodes, so memory is O(block * n * dim), never n x n.
    """
    xp = array_namespace(embedding)
    c = _check_c(c)
    emb = _point(xp, embedding, c, "embedding")
    n = emb.shape[0]
    e, _ = _check_graph(edges, n, None) if n >= 2 else (None, None)
    if e is None:
        raise ValueError("embedding must hold at least 2 points")
    keys = np.sort(np.concatenate([e[:, 0] * n + e[:, 1], e[:, 1] * n + e[:, 0]]))  # u * n + v
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # each neighbour once
    dev = device(emb)
    rows = max(1, max_block_bytes // (8 * n * (emb.shape[1] + 6)))
    rank_sum, ap_sum, n_pos, n_src = 0.0, 0.0, 0, 0
    for a in range(0, n, rows):
        r = min(rows, n - a)
        x = emb[a:a + r, None, :]
        diff2 = xp.sum((x - emb[None, :, :]) ** 2, axis=-1)  # (r, n)
        q = _distance_q(xp, diff2, xp.sum(x * x, axis=-1), xp.sum(emb * emb, axis=-1)[None, :], c)
        d = _arcosh1p(xp, q)  # the ranking of d / sqrt(c)
        cols = xp.arange(n, device=dev)[None, :]
        d = xp.where(cols == xp.arange(a, a + r, device=dev)[:, None], xp.inf, d)  # u is no candidate
        lo, hi = np.searchsorted(keys, [a * n, (a + r) * n])
        pos = _indicator(xp, keys[lo:hi] - a * n, r * n, dev)
        pos = xp.reshape(pos, (r, n))
        # Sort by distance, then within runs of equal distances put neighbours first, so that
        # "non-neighbours strictly closer" is exact under ties.
        order = xp.argsort(d, axis=1)
        ds = xp.take_along_axis(d, order, axis=1)
        new_run = xp.concat([xp.ones((r, 1), dtype=xp.bool, device=dev), ds[:, 1:] != ds[:, :-1]], axis=1)
        run = xp.cumulative_sum(xp.astype(new_run, xp.int64), axis=1)
        ps = xp.take_along_axis(pos, order, axis=1)
        key2 = 2 * run + xp.astype(~ps, xp.int64)
        ps = xp.take_along_axis(ps, xp.argsort(key2, axis=1), axis=1)
        k = xp.cumulative_sum(xp.astype(ps, xp.int64), axis=1)  # neighbours up to and incl. here
        place = xp.arange(1, n + 1, device=dev)[None, :]  # 1-based position among all candidates
        psf = xp.astype(ps, xp.float64)
        rank_sum += float(xp.sum(psf * xp.astype(place - k + 1, xp.float64)))
        deg = xp.sum(psf, axis=1)
        ap = xp.sum(psf * xp.astype(k, xp.float64) / xp.astype(place, xp.float64), axis=1)
        has = deg > 0
        ap_sum += float(xp.sum(xp.where(has, ap / xp.where(has, deg, 1.0), 0.0)))
        n_pos += int(xp.sum(deg))
        n_src += int(xp.sum(xp.astype(has, xp.int64)))
    return rank_sum / n_pos, ap_sum / n_src


def _indicator(xp, where_true, size, dev):
    """A bool (size,) array, True at the sorted unique positions `where_true`, built with
    repeat (the array API has no scatter)."""
    m = where_true.size
    if m == 0:
        return xp.zeros(size, dtype=xp.bool, device=dev)
    gaps = np.diff(np.concatenate([[-1], where_true])) - 1
    counts = np.empty(2 * m + 1, dtype=np.int64)
    counts[0:-1:2], counts[1:-1:2], counts[-1] = gaps, 1, size - where_true[-1] - 1
    values = np.zeros(2 * m + 1, dtype=bool)
    values[1::2] = True
    return xp.repeat(xp.asarray(values, device=dev), xp.asarray(counts, device=dev))


# ----------------------------------------------------------------------------- demo


def random_tree_closure(n, seed=0):
    """(closure edges (M, 2) as (descendant, ancestor), parent (n,)) of a random recursive tree."""
    rng = np.random.default_rng(seed)
    parent = np.concatenate([[-1], [rng.integers(0, i) for i in range(1, n)]])
    pairs = []
    for node in range(1, n):
        a = parent[node]
        while a >= 0:
            pairs.append((node, a))
            a = parent[a]
    return np.asarray(pairs, dtype=np.int64), parent


def main():
    import argparse
    import time

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--out", default="hyperbolic.png")
    args = ap.parse_args()
    edges, parent = random_tree_closure(args.nodes)
    print(f"transitive closure of a random {args.nodes}-node tree: {len(edges)} edges")
    print("| dim | epochs | seconds | mean rank | MAP |\n| --- | --- | --- | --- | --- |")
    embs = {}
    for dim in (2, 10):
        t = time.perf_counter()
        embs[dim] = fit(edges, args.nodes, dim=dim, epochs=args.epochs, progress=False)
        sec = time.perf_counter() - t
        mr, mAP = reconstruction(embs[dim], edges)
        print(f"| {dim} | {args.epochs} | {sec:.1f} | {mr:.2f} | {mAP:.3f} |")
    z = np.asarray(embs[2])
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.add_patch(plt.Circle((0, 0), 1, fill=False, color="k"))
    for node in range(1, args.nodes):
        p = parent[node]
        ax.plot(z[[node, p], 0], z[[node, p], 1], color="0.7", lw=0.4, zorder=1)
    depth = np.zeros(args.nodes)
    for node in range(1, args.nodes):
        depth[node] = depth[parent[node]] + 1
    sc = ax.scatter(z[:, 0], z[:, 1], c=depth, s=6, cmap="viridis", zorder=2)
    fig.colorbar(sc, ax=ax, shrink=0.7, label="depth in the tree")
    ax.set_xlim(-1.02, 1.02), ax.set_ylim(-1.02, 1.02), ax.set_aspect("equal"), ax.axis("off")
    ax.set_title("2-D Poincare embedding of a random tree's transitive closure (tree edges drawn)")
    fig.savefig(args.out, dpi=120, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

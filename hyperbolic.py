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
written out (no autograd). The norms of vectors that may be huge (`project`, `expmap0`, `expmap`) are
taken on x / max|x|, as hypot does, so that a huge vector maps to the boundary point in its direction.
"""
import math

import numpy as np
from array_api_compat import array_namespace, device

from arrays import check_array, check_finite, check_indices, check_number, namespace, scatter_add, to_host
from arrays import working_dtype

# ----------------------------------------------------------------------------- checks


def _check_c(c):
    return check_number(c, "c", low=0.0, low_open=True)


def _float(x, name):
    """x (..., dim), finite, in its working dtype (float32/float64 kept, other floats in float32)."""
    xp = check_array(x, name, empty_ok=True)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"{name}: expected a last axis of size >= 1, got shape {tuple(x.shape)}")
    check_finite(x, name)
    return xp.astype(x, working_dtype(xp, x.dtype), copy=False)


def _point(x, c, name):
    """x as _float, refused if a point lies on or outside the boundary |x| = 1/sqrt(c)."""
    x = _float(x, name)
    xp = array_namespace(x)
    if not bool(xp.all(c * _sqnorm(xp, x) < 1)):  # a square that overflows is outside too
        raise ValueError(f"{name}: has points on or outside the ball's boundary (|x| >= 1/sqrt(c))")
    return x


def _paired(x, y, name):
    """y beside x: the same last axis (a point's coordinates) and leading axes that broadcast; a
    width of 1 would otherwise broadcast silently into a different point."""
    lead = zip(x.shape[-2::-1], y.shape[-2::-1])
    if y.shape[-1] != x.shape[-1] or any(a != b and 1 not in (a, b) for a, b in lead):
        raise ValueError(f"{name}: shape {tuple(y.shape)} does not pair with {tuple(x.shape)}")
    return y


def _sqnorm(xp, x):
    return xp.sum(x * x, axis=-1, keepdims=True)


def _norm(xp, x):
    """|x| along the last axis, computed on x / max|x| as hypot does: no square overflows (|x| >~ 1e19
    in float32, 1e154 in float64) or underflows."""
    top = xp.max(xp.abs(x), axis=-1, keepdims=True)
    return top * xp.sqrt(_sqnorm(xp, x / xp.where(top > 0, top, 1.0)))


def _tiny(xp, dtype):
    return xp.finfo(dtype).smallest_normal ** 0.5  # a norm floor whose square is still a normal number


# ----------------------------------------------------------------------------- the ball


def project(x, c=1.0, eps=None):
    """x pulled inside the ball to norm at most (1 - eps)/sqrt(c); eps defaults as geoopt's."""
    namespace(x=x)
    c = _check_c(c)
    x = _float(x, "x")
    xp = array_namespace(x)
    eps = _eps(xp, x) if eps is None else check_number(eps, "eps", low=0.0, high=1.0, low_open=True, high_open=True)
    return _project(xp, x, c, eps)


def _project(xp, x, c, eps):
    maxnorm = (1 - eps) / math.sqrt(c)
    norm = xp.maximum(_norm(xp, x), _tiny(xp, x.dtype))
    return xp.where(norm > maxnorm, x / norm * maxnorm, x)


def _eps(xp, x):
    return 4e-3 if x.dtype == xp.float32 else 1e-5


def conformal_factor(x, c=1.0):
    """lambda_x = 2 / (1 - c |x|^2), the metric's scale at x (Ganea Sec. 2), shape x.shape[:-1]."""
    namespace(x=x)
    c = _check_c(c)
    x = _point(x, c, "x")
    return 2 / (1 - c * array_namespace(x).sum(x * x, axis=-1))


def riemannian_gradient(x, grad, c=1.0):
    """The Euclidean gradient at x rescaled by 1/lambda_x^2 = (1 - c|x|^2)^2 / 4 (NK Eq. 4)."""
    namespace(x=x, grad=grad)
    c = _check_c(c)
    x = _point(x, c, "x")
    grad = _paired(x, _float(grad, "grad"), "grad")
    return _riemannian_gradient(array_namespace(x, grad), x, grad, c)


def _riemannian_gradient(xp, x, grad, c):
    return grad * ((1 - c * _sqnorm(xp, x)) ** 2 / 4)


def _mobius_add(xp, x, y, c):
    xy = xp.sum(x * y, axis=-1, keepdims=True)
    x2, y2 = _sqnorm(xp, x), _sqnorm(xp, y)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y  # Ganea Eq. (3)
    den = 1 + 2 * c * xy + c**2 * x2 * y2  # > 0 for points inside the ball
    return num / den


def mobius_add(x, y, c=1.0):
    """x (+)_c y, projected back inside the ball as geoopt does."""
    xp = namespace(x=x, y=y)
    c = _check_c(c)
    x = _point(x, c, "x")
    y = _paired(x, _point(y, c, "y"), "y")
    return _project(xp, _mobius_add(xp, x, y, c), c, _eps(xp, x))


def _expmap0(xp, v, c, scale=1.0):
    """exp_0(scale * v) for scale >= 1 (lambda_x / 2 in expmap), |v| computed without overflow: a huge v
    gives the boundary point in v's direction, never the origin. tanh is 1 beyond 20, so its argument
    is clamped at 40 scale: scale * |v| cannot overflow."""
    norm = xp.maximum(_norm(xp, v), _tiny(xp, v.dtype))
    return xp.tanh(math.sqrt(c) * scale * xp.minimum(norm, 40 / math.sqrt(c))) * (v / norm) / math.sqrt(c)


def expmap0(v, c=1.0):
    """exp_0(v) = tanh(sqrt(c)|v|) v / (sqrt(c)|v|) (Ganea Lemma 2), projected."""
    namespace(v=v)
    c = _check_c(c)
    v = _float(v, "v")
    xp = array_namespace(v)
    return _project(xp, _expmap0(xp, v, c), c, _eps(xp, v))


def expmap(x, v, c=1.0):
    """exp_x(v) = x (+) tanh(sqrt(c) lambda_x |v| / 2) v / (sqrt(c)|v|) (Ganea Lemma 2), projected."""
    xp = namespace(x=x, v=v)
    c = _check_c(c)
    x = _point(x, c, "x")
    v = _paired(x, _float(v, "v"), "v")
    lam = 2 / (1 - c * _sqnorm(xp, x))
    return _project(xp, _mobius_add(xp, x, _expmap0(xp, v, c, lam / 2), c), c, _eps(xp, x))


def logmap0(x, c=1.0):
    """log_0(x) = artanh(sqrt(c)|x|) x / (sqrt(c)|x|) (Ganea Lemma 2)."""
    namespace(x=x)
    c = _check_c(c)
    x = _point(x, c, "x")
    xp = array_namespace(x)
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
    xp = namespace(x=x, y=y)
    c = _check_c(c)
    x = _point(x, c, "x")
    y = _paired(x, _point(y, c, "y"), "y")
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
    xp = namespace(x=x, y=y)
    c = _check_c(c)
    x = _point(x, c, "x")
    y = _paired(x, _point(y, c, "y"), "y")
    x, y = xp.broadcast_arrays(x, y)
    return _distance_and_grad(xp, x, y, c)


# ----------------------------------------------------------------------------- graph embedding


def _check_graph(edges, n_nodes, weights):
    """edges as a host int64 (M, 2) array without self-loops, weights as float64 (M,) or None."""
    n_nodes = check_number(n_nodes, "n_nodes", low=2, integer=True)
    namespace(edges=edges, weights=weights)
    check_array(edges, "edges", kind="integral", shape=(None, 2))
    check_indices(edges, n_nodes, "edges")
    e = to_host(edges).astype(np.int64)
    if np.any(e[:, 0] == e[:, 1]):
        raise ValueError("edges: must not hold self-loops (u, u)")
    if weights is None:
        return e, None
    check_array(weights, "weights", shape=(e.shape[0],))
    w = to_host(weights).astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
        raise ValueError("weights: must be finite, >= 0 and not all 0")
    return e, w


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
    xp = namespace(edges=edges)
    c = _check_c(c)
    e, w = _check_graph(edges, n_nodes, weights)
    dim, negatives, epochs, burn_in, batch_size, seed = (
        check_number(val, name, low=low, integer=True) for name, val, low in
        (("dim", dim, 1), ("negatives", negatives, 1), ("epochs", epochs, 0), ("burn_in", burn_in, 0),
         ("batch_size", batch_size, 1), ("seed", seed, 0)))
    lr = check_number(lr, "lr", low=0.0, low_open=True)
    m = e.shape[0]
    samples = min(m, 2**14) if samples_per_epoch is None else check_number(
        samples_per_epoch, "samples_per_epoch", low=1, integer=True)

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
    grad = scatter_add(xp.concat([iu, iv]), xp.concat([grad_u, grad_v], axis=0), n)
    # NK Eq. 4 (Riemannian gradient) and Eq. 6 (retraction x + v, then the projection)
    return _project(xp, emb - lr * _riemannian_gradient(xp, emb, grad, c), c, eps)


# ----------------------------------------------------------------------------- evaluation


def reconstruction(embedding, edges, c=1.0, *, max_block_bytes=2**26):
    """(mean_rank, mean_average_precision) of the graph's reconstruction (NK Sec. 4.1).

    For each node u with neighbours (edges undirected), each neighbour v is ranked among the
    non-neighbours of u by distance: rank = 1 + #{non-neighbours w: d(u, w) < d(u, v)} (ties count
    for v, as gensim's evaluator). Mean rank averages over both orientations of every distinct edge;
    MAP averages, over nodes with neighbours, the mean precision at each neighbour's position.
    Rows are processed in blocks of nodes, so memory is O(block * n * dim), never n x n.
    """
    xp = namespace(embedding=embedding, edges=edges)
    c = _check_c(c)
    max_block_bytes = check_number(max_block_bytes, "max_block_bytes", low=1, integer=True)
    emb = _point(embedding, c, "embedding")
    if emb.ndim != 2 or emb.shape[0] < 2:
        raise ValueError(f"embedding: expected at least 2 points (n, dim), got shape {tuple(emb.shape)}")
    n = emb.shape[0]
    e, _ = _check_graph(edges, n, None)
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

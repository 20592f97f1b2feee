"""hyperbolic.py against geoopt (the maps), torch autograd (gradients), brute force (the metrics)."""
import geoopt
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hyperbolic as hb
from conftest import asxp, assert_close, to_numpy

CS = [0.5, 1.0, 2.0]


def points(seed, n, dim, c, boundary_gap=None):
    """n points inside the ball of radius 1/sqrt(c); some at `boundary_gap` from the boundary."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, dim))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = rng.uniform(0, 1, (n, 1)) ** 0.5 * 0.99
    if boundary_gap is not None:
        r[: n // 2] = 1 - boundary_gap * np.sqrt(c)  # norm 1/sqrt(c) - boundary_gap
    return d * r / np.sqrt(c)


def ball(c):
    return geoopt.PoincareBall(c=torch.tensor(c, dtype=torch.float64))


seeds = st.integers(0, 2**31 - 1)


@settings(max_examples=10)
@given(seed=seeds, c=st.sampled_from(CS), dim=st.integers(1, 6))
def test_maps_equal_geoopt(xp, seed, c, dim):
    x, y = points(seed, 8, dim, c), points(seed + 1, 8, dim, c)
    v = np.random.default_rng(seed).normal(size=(8, dim)) * 3
    m, tx, ty, tv = ball(c), *(torch.tensor(a) for a in (x, y, v))
    X, Y, V = asxp(xp, x), asxp(xp, y), asxp(xp, v)
    assert_close(hb.mobius_add(X, Y, c), m.mobius_add(tx, ty), rtol=1e-10, atol=1e-12)
    assert_close(hb.expmap0(V, c), m.expmap0(tv), rtol=1e-10, atol=1e-12)
    assert_close(hb.logmap0(X, c), m.logmap0(tx), rtol=1e-10, atol=1e-12)
    assert_close(hb.expmap(X, V, c), m.expmap(tx, tv), rtol=1e-9, atol=1e-12)
    assert_close(hb.project(asxp(xp, v), c), m.projx(tv), rtol=1e-12)
    assert_close(hb.conformal_factor(X, c), m.lambda_x(tx), rtol=1e-12)
    assert_close(hb.distance(X, Y, c), m.dist(tx, ty), rtol=1e-9, atol=1e-12)


@settings(max_examples=15)
@given(seed=seeds, c=st.sampled_from(CS), dt=st.sampled_from(["float32", "float64"]), dim=st.integers(1, 6),
       power=st.sampled_from([-2, 0, 1, 10, 18, 25, 37, 100, 154, 200, 307]))
def test_huge_vectors_map_to_the_boundary_in_their_direction(xp, seed, c, dt, dim, power):
    """Bug fixed: |x|^2 overflowed for |x| >~ 1e19 in float32 (1e154 in float64), and project /
    expmap0 / expmap returned the origin instead of a boundary point. Oracle: the direction
    x / max|x| is exact in float64, so the boundary point is (x / max|x|) / |x / max|x|| (1 - eps)/sqrt(c);
    below the boundary project is the identity; expmap0, expmap agree with geoopt where it does not
    overflow, and expmap saturates (exp_x(v * 10^p) = exp_x(v * 10^3) once tanh is 1)."""
    if dt == "float32" and power > 37:
        power = 37  # float32 holds up to 3.4e38
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(8, dim)) * 10.0**power).astype(dt)
    x[0] = 0.0
    x64 = x.astype(np.float64)
    top = np.maximum(np.abs(x64).max(1, keepdims=True), 1e-300)
    u = x64 / top
    maxnorm = (1 - (4e-3 if dt == "float32" else 1e-5)) / np.sqrt(c)
    norm = top * np.linalg.norm(u, axis=1, keepdims=True)
    want = np.where(norm > maxnorm, u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-300) * maxnorm, x64)
    tol = dict(rtol=2e-6 if dt == "float32" else 1e-13, atol=1e-30)
    got = hb.project(asxp(xp, x), c)
    assert to_numpy(got).dtype == np.dtype(dt)
    assert_close(got, want, **tol)
    saturated = np.tanh(np.sqrt(c) * norm[:, 0]) > 1 - (4e-3 if dt == "float32" else 1e-5)
    assert_close(to_numpy(hb.expmap0(asxp(xp, x), c))[saturated], want[saturated], **tol)
    if power <= 1:
        assert_close(hb.expmap0(asxp(xp, x), c), ball(c).expmap0(torch.tensor(x64)), rtol=1e-5, atol=1e-7)
    p = points(seed, 8, dim, c).astype(dt)
    v = rng.normal(size=(8, dim))
    v[0] = 1.0  # no zero tangent: its direction is undefined
    ref = ball(c).expmap(torch.tensor(p.astype(np.float64)), torch.tensor(v * 1e3)).numpy()
    ref_norm = np.linalg.norm(ref, axis=1, keepdims=True)
    ref = np.where(ref_norm > maxnorm, ref / ref_norm * maxnorm, ref)  # float32 projects further in (eps 4e-3)
    assert_close(hb.expmap(asxp(xp, p), asxp(xp, (v * 10.0**max(power, 3)).astype(dt)), c), ref,
                 rtol=1e-4 if dt == "float32" else 1e-9, atol=1e-6 if dt == "float32" else 1e-12)


@settings(max_examples=10)
@given(seed=seeds, c=st.sampled_from(CS), gap=st.sampled_from([1e-7, 1e-5, 1e-3]))
def test_distance_near_boundary_equals_geoopt_where_geoopt_is_unclamped(xp, seed, c, gap):
    x, y = points(seed, 10, 3, c, gap), points(seed + 7, 10, 3, c, gap)
    tx, ty, m = torch.tensor(x), torch.tensor(y), ball(c)
    ref = m.dist(tx, ty).numpy()
    # geoopt clamps artanh's argument at 1 - 1e-7: compare only where it does not bind
    arg = np.sqrt(c) * m.mobius_add(-tx, ty, project=False).norm(dim=-1).numpy()
    ours = to_numpy(hb.distance(asxp(xp, x), asxp(xp, y), c))
    assert np.all(np.isfinite(ours))
    keep = arg < 1 - 2e-7
    np.testing.assert_allclose(ours[keep], ref[keep], rtol=1e-7)
    # where geoopt clamps, d(x, 0) has a closed form from the known gap
    o = asxp(xp, np.zeros((1, 3)))
    r = np.sqrt(c) * np.linalg.norm(x, axis=1)
    assert_close(hb.distance(asxp(xp, x), o, c), np.log((1 + r) / (1 - r)) / np.sqrt(c), rtol=1e-8)


@pytest.mark.parametrize("c", CS)
def test_float32_near_boundary_is_finite_and_close(xp, c):
    x = points(0, 16, 4, c, 1e-3).astype(np.float32)
    y = points(1, 16, 4, c, 1e-3).astype(np.float32)
    d = hb.distance(asxp(xp, x), asxp(xp, y), c)
    _, gx, gy = hb.distance_grad(asxp(xp, x), asxp(xp, y), c)
    assert to_numpy(d).dtype == np.float32
    assert all(np.all(np.isfinite(to_numpy(a))) for a in (d, gx, gy))
    ref = ball(c).dist(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64))
    assert_close(d, ref, rtol=2e-3, atol=1e-3)


@settings(max_examples=10)
@given(seed=seeds, c=st.sampled_from(CS), gap=st.sampled_from([None, 1e-7, 1e-4]))
def test_distance_gradient_equals_autograd(xp, seed, c, gap):
    x, y = points(seed, 10, 3, c, gap), points(seed + 3, 10, 3, c, None)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    ct = torch.tensor(c, dtype=torch.float64)
    alpha, beta = 1 - ct * (tx**2).sum(-1), 1 - ct * (ty**2).sum(-1)
    d = torch.acosh(1 + 2 * ct * ((tx - ty) ** 2).sum(-1) / (alpha * beta)) / ct.sqrt()
    d.sum().backward()
    dd, gx, gy = hb.distance_grad(asxp(xp, x), asxp(xp, y), c)
    assert_close(dd, d.detach(), rtol=1e-9)
    assert_close(gx, tx.grad, rtol=1e-6, atol=1e-9)
    assert_close(gy, ty.grad, rtol=1e-6, atol=1e-9)
    # Riemannian gradient = Euclidean gradient / lambda_x^2, as geoopt's egrad2rgrad
    rg = ball(c).egrad2rgrad(torch.tensor(x), tx.grad)
    assert_close(hb.riemannian_gradient(asxp(xp, x), gx, c), rg, rtol=1e-6, atol=1e-12)


@settings(max_examples=10)
@given(seed=seeds, c=st.sampled_from(CS), dim=st.integers(1, 5))
def test_ball_algebra(xp, seed, c, dim):
    x, y, z = (asxp(xp, points(seed + i, 6, dim, c)) for i in range(3))
    zero = asxp(xp, np.zeros((6, dim)))
    assert_close(hb.distance(x, x, c), np.zeros(6), atol=1e-7)
    assert_close(hb.distance(x, y, c), hb.distance(y, x, c), rtol=1e-10)
    dxz = to_numpy(hb.distance(x, z, c))
    assert np.all(dxz <= to_numpy(hb.distance(x, y, c)) + to_numpy(hb.distance(y, z, c)) + 1e-9)
    assert_close(hb.mobius_add(x, zero, c), x, rtol=1e-12, atol=1e-15)
    xy = hb.mobius_add(x, y, c)
    assert_close(hb.mobius_add(-x, xy, c), y, rtol=1e-6, atol=1e-9)  # left cancellation
    assert_close(hb.expmap0(hb.logmap0(x, c), c), x, rtol=1e-9, atol=1e-12)


def test_fit_small_tree_reaches_map(xp):
    edges, _ = hb.random_tree_closure(60, seed=1)
    emb = hb.fit(asxp(xp, edges), 60, dim=5, epochs=60, burn_in=5, batch_size=64, seed=0, progress=False)
    e = to_numpy(emb)
    assert e.shape == (60, 5) and np.all(np.linalg.norm(e, axis=1) < 1)
    mean_rank, mAP = hb.reconstruction(emb, asxp(xp, edges))
    assert mAP >= 0.9 and mean_rank >= 1


def test_fit_is_reproducible_and_weighted():
    edges, _ = hb.random_tree_closure(30, seed=2)
    w = np.arange(1, len(edges) + 1, dtype=np.float64)
    a = hb.fit(edges, 30, epochs=3, weights=w, seed=5, progress=False)
    b = hb.fit(edges, 30, epochs=3, weights=w, seed=5, progress=False)
    np.testing.assert_array_equal(a, b)


def brute_force_metrics(emb, edges):
    n = len(emb)
    adj = [set() for _ in range(n)]
    for u, v in edges:
        adj[u].add(v), adj[v].add(u)
    ranks, aps = [], []
    for u in range(n):
        if not adj[u]:
            continue
        d = to_numpy(hb.distance(emb[u][None, :], emb))
        neg = np.array([d[w] for w in range(n) if w != u and w not in adj[u]])
        pos = np.sort([d[v] for v in adj[u]])
        r = [1 + np.sum(neg < p) for p in pos]
        ranks += r
        aps.append(np.mean([(i + 1) / (r[i] - 1 + i + 1) for i in range(len(pos))]))
    return np.mean(ranks), np.mean(aps)


@settings(max_examples=10)
@given(seed=seeds, n=st.integers(3, 12), ties=st.booleans())
def test_reconstruction_equals_brute_force(xp, seed, n, ties):
    rng = np.random.default_rng(seed)
    emb = points(seed, n, 2, 1.0)
    if ties:
        emb = np.round(emb * 2) / 4  # many exactly equal distances
    pairs = np.array([(u, v) for u in range(n) for v in range(u + 1, n) if rng.random() < 0.4] or [(0, 1)])
    got = hb.reconstruction(asxp(xp, emb), asxp(xp, pairs), max_block_bytes=n * 8 * 8 * 3)
    want = brute_force_metrics(emb, pairs)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_bad_input_names_the_argument(xp):
    inside, out = asxp(xp, np.array([[0.1, 0.2]])), asxp(xp, np.array([[0.6, 0.8]]))
    for f, kw, name in [(hb.distance, dict(x=out, y=inside), "x"), (hb.distance, dict(x=inside, y=out), "y"),
                        (hb.mobius_add, dict(x=inside, y=out), "y"), (hb.logmap0, dict(x=out), "x"),
                        (hb.expmap, dict(x=out, v=inside), "x"), (hb.conformal_factor, dict(x=out), "x")]:
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            f(**kw)
    with pytest.raises(ValueError, match=r"^c\b"):
        hb.expmap0(inside, c=0.0)
    with pytest.raises(ValueError, match=r"^c\b"):
        hb.distance(inside, inside, c=-1.0)
    with pytest.raises(TypeError, match=r"^x\b"):
        hb.logmap0(asxp(xp, np.array([[0, 0]])))
    edges = asxp(xp, np.array([[0, 1], [1, 2]]))
    bad = [(dict(edges=asxp(xp, np.array([[0, 3]]))), "edges"), (dict(edges=asxp(xp, np.array([[1, 1]]))), "edges"),
           (dict(edges=asxp(xp, np.array([[-1, 1]]))), "edges"),
           (dict(weights=asxp(xp, np.array([1.0, -1.0]))), "weights"),
           (dict(weights=asxp(xp, np.array([1.0, np.nan]))), "weights"), (dict(dim=0), "dim"),
           (dict(negatives=0), "negatives")]
    for kw, name in bad:
        args = dict(edges=edges, n_nodes=3, progress=False, epochs=1, burn_in=0) | kw
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            hb.fit(args.pop("edges"), args.pop("n_nodes"), **args)
    with pytest.raises(TypeError, match=r"^edges\b"):
        hb.fit(asxp(xp, np.array([[0.0, 1.0]])), 3)
    # arguments checked by arrays.py: values, types, and arrays of another library (as TypeError)
    other = torch.tensor(np.array([[0.1, 0.2]])) if not isinstance(inside, torch.Tensor) else np.array([[0.1, 0.2]])
    for f, kw, error, name in [
            (hb.distance, dict(x=inside, y=other), TypeError, "y"),
            (hb.mobius_add, dict(x=other, y=inside), TypeError, "y"),
            (hb.project, dict(x=inside, eps=1.5), ValueError, "eps"),
            (hb.project, dict(x=[[0.1, 0.2]]), TypeError, "x"),
            (hb.project, dict(x=asxp(xp, np.array([[np.inf, 0.0]]))), ValueError, "x"),
            (hb.expmap0, dict(v=inside, c=True), TypeError, "c"),
            (hb.riemannian_gradient, dict(x=inside, grad=asxp(xp, np.array([[np.nan, 0.0]]))), ValueError, "grad"),
            (hb.reconstruction, dict(embedding=inside, edges=edges), ValueError, "embedding"),
            (hb.fit, dict(edges=edges, n_nodes=3.0), TypeError, "n_nodes"),
            (hb.fit, dict(edges=edges, n_nodes=3, lr=0.0), ValueError, "lr"),
            (hb.fit, dict(edges=edges, n_nodes=3, samples_per_epoch=0), ValueError, "samples_per_epoch"),
            (hb.fit, dict(edges=asxp(xp, np.array([[0, 1, 2]])), n_nodes=3), ValueError, "edges"),
            (hb.fit, dict(edges=edges, n_nodes=3, weights=torch.ones(2, dtype=torch.float64)
                          if not isinstance(inside, torch.Tensor) else np.ones(2)), TypeError, "weights")]:
        with pytest.raises(error, match=rf"^{name}\b"):
            f(**kw)


def test_numpy_scalars_are_valid_curvatures(xp):
    x, y = asxp(xp, points(0, 5, 3, 1.0)), asxp(xp, points(1, 5, 3, 1.0))
    for c in (np.float32(1.0), np.float64(1.0), np.int64(1)):
        assert_close(hb.distance(x, y, c), hb.distance(x, y, 1.0), rtol=1e-15)

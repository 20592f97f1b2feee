"""Properties of vq.py against brute force and torch autograd (float64), on every backend."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import vq
from conftest import asxp, to_numpy, assert_close, dtype_name



def brute_nearest(z, e):
    """Lowest index among the exact minima of ||z - e||^2 (float64; exact for small integers)."""
    d2 = ((z[:, None, :].astype(np.float64) - e[None, :, :]) ** 2).sum(-1)
    return np.argmin(d2, axis=1)


@st.composite
def tied_problem(draw):
    """Small-integer data (so every score is exact) with duplicated codes: exact ties."""
    n, k, d = draw(st.integers(1, 40)), draw(st.integers(1, 12)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    e = rng.integers(-2, 3, (k, d))
    e = np.concatenate([e, e[rng.integers(0, k, draw(st.integers(0, k)))]])  # duplicates
    e = e[rng.permutation(len(e))]
    z = rng.integers(-3, 4, (n, d))
    return z, e, draw(st.integers(1, 4 * (n + len(e)) * (d + 1) * 8)), draw(st.sampled_from(["float32", "float64"]))


@given(tied_problem())
def test_nearest_equals_brute_force_with_ties(xp, problem):
    z, e, budget, dt = problem
    idx = vq.nearest(asxp(xp, z, dt), asxp(xp, e, dt), max_block_bytes=budget)
    assert dtype_name(idx) == "int64"
    np.testing.assert_array_equal(to_numpy(idx), brute_nearest(z, e))


def test_nearest_blocks_split_n_and_k_every_way(xp):
    rng = np.random.default_rng(1)
    n, k, d = 50, 300, 3
    z, e = rng.integers(-3, 4, (n, d)), rng.integers(-2, 3, (k, d))
    budgets = {}
    for budget in np.unique(np.geomspace(8, 8 * 4 * n * k, 200).astype(int)):
        rows, cols = vq.block_shape(n, k, d, 8, int(budget))
        budgets.setdefault((rows < n, cols < k), int(budget))
    assert set(budgets) == {(False, False), (True, False), (False, True), (True, True)}
    for budget in budgets.values():
        idx = vq.nearest(asxp(xp, z, "float64"), asxp(xp, e, "float64"), max_block_bytes=budget)
        np.testing.assert_array_equal(to_numpy(idx), brute_nearest(z, e))


@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 64), st.integers(1, 2**22))
def test_block_shape_fits_budget(n, k, d, budget):
    rows, cols = vq.block_shape(n, k, d, 4, budget)
    assert 1 <= rows <= n and 1 <= cols <= k
    if budget >= 4 * (1 + 2 * (d + 1)):  # below one row by one code nothing fits
        assert 4 * (rows * cols + (rows + cols) * (d + 1)) <= budget


@settings(max_examples=10)
@given(st.integers(0, 2**32 - 1), st.sampled_from([1.0, 1e3]), st.sampled_from(["float32", "float64"]))
def test_nearest_finds_a_nearest_code_on_real_data(xp, seed, scale, dt):
    rng = np.random.default_rng(seed)
    offset = scale * rng.standard_normal(8)  # large common norms: the score cancellation case
    z, e = offset + rng.standard_normal((50, 8)), offset + rng.standard_normal((70, 8))
    idx = to_numpy(vq.nearest(asxp(xp, z, dt), asxp(xp, e, dt), max_block_bytes=2000))
    d2 = ((z.astype(dt).astype(np.float64)[:, None] - e.astype(dt)[None]) ** 2).sum(-1)
    tol = (1e-5 if dt == "float32" else 1e-12) * (scale**2 + 10) * 8
    assert np.all(d2[np.arange(50), idx] <= d2.min(1) + tol)


def autograd_oracle(z, e, beta, grad_zq, grad_loss):
    """torch autograd (float64) of z_q = z + sg(E[idx] - z), loss of DESIGN.md."""
    z = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    e = torch.tensor(e, dtype=torch.float64, requires_grad=True)
    idx = torch.cdist(z.detach(), e.detach()).argmin(1)
    e_idx = e[idx]
    z_q = z + (e_idx - z).detach()
    loss = ((e_idx - z.detach()) ** 2).mean() + beta * ((e_idx.detach() - z) ** 2).mean()
    torch.autograd.backward([z_q, loss], [torch.tensor(grad_zq), torch.tensor(grad_loss, dtype=torch.float64)])
    return z_q.detach().numpy(), loss.item(), idx.numpy(), z.grad.numpy(), e.grad.numpy()


@settings(max_examples=15)
@given(st.integers(1, 30), st.integers(1, 10), st.integers(1, 6), st.floats(0, 2), st.floats(-3, 3),
       st.integers(0, 2**32 - 1))
def test_forward_backward_equal_torch_autograd(xp, n, k, d, beta, grad_loss, seed):
    rng = np.random.default_rng(seed)
    z, e, g = rng.standard_normal((n, d)), rng.standard_normal((k, d)), rng.standard_normal((n, d))
    z_q_ref, loss_ref, idx_ref, gz_ref, ge_ref = autograd_oracle(z, e, beta, g, grad_loss)
    z_q, loss, idx, cache = vq.vq_forward(asxp(xp, z), asxp(xp, e), beta=beta, max_block_bytes=256)
    np.testing.assert_array_equal(to_numpy(idx), idx_ref)
    assert_close(z_q, z_q_ref)
    assert_close(loss, loss_ref, rtol=1e-12)
    gz, ge = vq.vq_backward(cache, asxp(xp, g), grad_loss)
    assert_close(gz, gz_ref, rtol=1e-12, atol=1e-15)
    assert_close(ge, ge_ref, rtol=1e-12, atol=1e-15)


def test_float32_in_float32_out(xp):
    rng = np.random.default_rng(0)
    z, e = asxp(xp, rng.standard_normal((20, 4)), "float32"), asxp(xp, rng.standard_normal((7, 4)), "float32")
    z_q, loss, idx, cache = vq.vq_forward(z, e)
    gz, ge = vq.vq_backward(cache, z_q)
    assert [dtype_name(a) for a in (z_q, loss, idx, gz, ge)] == ["float32"] * 2 + ["int64"] + ["float32"] * 2
    assert dtype_name(vq.kmeans(z, 3, iters=2)) == "float32"


def inertia(x, c, w):
    return float((w * ((x[:, None] - c[None]) ** 2).sum(-1).min(1)).sum())


@settings(max_examples=10)
@given(st.integers(2, 60), st.integers(1, 8), st.integers(0, 2**32 - 1), st.booleans())
def test_kmeans_deterministic_and_never_worse_than_init(xp, n, k, seed, weighted):
    k = min(k, n)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)) * rng.choice([1e-3, 1, 1e3])
    w = rng.integers(0, 4, n).astype(float) + 0.5 * (np.arange(n) == 0) if weighted else np.ones(n)
    kw = dict(seed=seed % 100, weights=asxp(xp, w) if weighted else None)
    init = to_numpy(vq.kmeans(asxp(xp, x), k, iters=0, **kw))
    a = to_numpy(vq.kmeans(asxp(xp, x), k, iters=5, **kw))
    np.testing.assert_array_equal(a, to_numpy(vq.kmeans(asxp(xp, x), k, iters=5, **kw)))
    assert inertia(x, a, w) <= inertia(x, init, w) * (1 + 1e-9)


@settings(max_examples=10)
@given(st.integers(5, 60), st.integers(2, 6), st.integers(0, 2**32 - 1))
def test_kmeans_one_step_is_the_lloyd_update(xp, n, k, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, 2)), rng.uniform(0.1, 2, n)
    init = to_numpy(vq.kmeans(asxp(xp, x), k, iters=0, weights=asxp(xp, w)))
    idx = brute_nearest(x, init)
    lloyd = init.copy()
    for j in range(k):  # weighted mean of each cluster; an empty cluster keeps its centre
        if np.any(idx == j):
            lloyd[j] = np.average(x[idx == j], axis=0, weights=w[idx == j])
    if inertia(x, lloyd, w) < inertia(x, init, w) * (1 - 1e-9):
        assert_close(vq.kmeans(asxp(xp, x), k, iters=1, weights=asxp(xp, w)), lloyd, rtol=1e-9, atol=1e-12)


def test_kmeans_zero_weight_equals_absent_point(xp):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((40, 3)), rng.uniform(0.5, 1, 40)
    w0 = w.copy()
    w0[::3] = 0
    keep = w0 > 0
    a = vq.kmeans(asxp(xp, x), 4, weights=asxp(xp, w0))
    b = vq.kmeans(asxp(xp, x[keep]), 4, weights=asxp(xp, w[keep]))
    assert_close(a, b, rtol=1e-12)


def test_kmeans_empty_cluster_keeps_its_centre(xp):
    x = np.repeat(np.array([[0.0, 0], [1, 0], [0, 5]]), 4, axis=0)  # 3 distinct points, k = 5
    c = to_numpy(vq.kmeans(asxp(xp, x), 5))
    assert {tuple(r) for r in c} == {(0.0, 0.0), (1.0, 0.0), (0.0, 5.0)}


@settings(max_examples=15)
@given(st.integers(1, 40), st.integers(1, 10), st.floats(0, 1), st.floats(0, 0.1), st.integers(0, 2**32 - 1))
def test_ema_update_matches_formula_and_conserves_counts(xp, n, k, decay, eps, seed):
    rng = np.random.default_rng(seed)
    e, z = rng.standard_normal((k, 3)), rng.standard_normal((n, 3))
    count, sum_z = rng.uniform(0, 3, k), rng.standard_normal((k, 3))
    idx = rng.integers(0, k, n)
    s = vq.ema_update(vq.EMAState(asxp(xp, e), asxp(xp, count), asxp(xp, sum_z)), asxp(xp, z), asxp(xp, idx),
                      decay=decay, eps=eps)
    n_j = np.bincount(idx, minlength=k)
    c = decay * count + (1 - decay) * n_j
    sz = decay * sum_z + (1 - decay) * np.stack([z[idx == j].sum(0) for j in range(k)])
    smooth = (c + eps) / (c.sum() + k * eps) * c.sum()
    assert_close(s.count, c, rtol=1e-12)
    assert np.isclose(to_numpy(s.count).sum(), decay * count.sum() + (1 - decay) * n, rtol=1e-12)
    assert_close(s.sum_z, sz, rtol=1e-12, atol=1e-14)
    ok = smooth > 0
    assert_close(to_numpy(s.codebook)[ok], sz[ok] / smooth[ok, None], rtol=1e-10, atol=1e-12)


def test_ema_with_decay_zero_gives_batch_means(xp):
    rng = np.random.default_rng(0)
    e, z, idx = rng.standard_normal((6, 2)), rng.standard_normal((30, 2)), rng.integers(0, 4, 30)  # 4, 5 unused
    s = vq.ema_update(vq.ema_state(asxp(xp, e)), asxp(xp, z), asxp(xp, idx), decay=0.0, eps=0.0)
    means = np.stack([z[idx == j].mean(0) for j in range(4)])
    assert_close(to_numpy(s.codebook)[:4], means, rtol=1e-12)
    assert_close(to_numpy(s.codebook)[4:], e[4:])
    np.testing.assert_array_equal(to_numpy(s.count), np.bincount(idx, minlength=6))


def test_dead_codes_reseeded_with_count_and_sum_together(xp):
    rng = np.random.default_rng(0)
    e, z = rng.standard_normal((5, 2)), rng.standard_normal((30, 2))
    idx = np.zeros(30, dtype=np.int64)  # only code 0 is used
    s = vq.ema_update(vq.ema_state(asxp(xp, e)), asxp(xp, z), asxp(xp, idx), decay=0.5, dead_below=0.9)
    cb, count, sum_z = (to_numpy(a) for a in s)
    assert np.all(count[1:] == 1) and count[0] > 1
    assert_close(sum_z[1:], cb[1:])
    rows = {tuple(r) for r in z}
    assert all(tuple(r) in rows for r in cb[1:]) and len({tuple(r) for r in cb[1:]}) == 4


@given(st.integers(1, 50), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_usage_and_perplexity(xp, n, k, seed):
    idx = np.random.default_rng(seed).integers(0, k, n)
    counts = vq.usage(asxp(xp, idx), k)
    assert dtype_name(counts) == "int64"
    np.testing.assert_array_equal(to_numpy(counts), np.bincount(idx, minlength=k))
    p = np.bincount(idx, minlength=k) / n
    assert np.isclose(vq.perplexity(counts), np.exp(-np.sum(p[p > 0] * np.log(p[p > 0]))))
    assert np.isclose(vq.perplexity(asxp(xp, np.ones(k))), k)


@pytest.mark.parametrize("layout", ["image", "flat"])
def test_module_gradients_equal_the_functions(layout):
    torch.manual_seed(0)
    m = vq.VectorQuantizer(8, 4, beta=0.3).double()
    z = torch.randn(2, 4, 3, 5, dtype=torch.float64) if layout == "image" else torch.randn(30, 4, dtype=torch.float64)
    z.requires_grad_(True)
    z_q, loss, idx = m(z)
    g = torch.randn_like(z_q)
    torch.autograd.backward([z_q, loss], [g, torch.tensor(0.7, dtype=torch.float64)])
    flat = (lambda t: t.permute(0, 2, 3, 1).reshape(-1, 4)) if layout == "image" else (lambda t: t)
    zq_f, loss_f, idx_f, cache = vq.vq_forward(flat(z.detach()), m.codebook.detach(), beta=0.3)
    gz, ge = vq.vq_backward(cache, flat(g), 0.7)
    assert torch.equal(idx.reshape(-1), idx_f) and torch.equal(flat(z_q.detach()), zq_f)
    assert_close(loss, loss_f) and assert_close(flat(z.grad), gz) and assert_close(m.codebook.grad, ge)
    assert torch.equal(m.decode(idx), z_q.detach())
    assert m.utilization() == len(set(idx_f.tolist())) / 8
    assert np.isclose(m.perplexity(), vq.perplexity(vq.usage(idx_f, 8)))
    m.eval()
    m(z)
    assert int(m.counts.sum()) == idx_f.numel()  # eval does not count
    m.reset_usage()
    assert int(m.counts.sum()) == 0


def test_ema_module_and_kmeans_init_follow_the_functions():
    torch.manual_seed(0)
    z = torch.randn(64, 3, dtype=torch.float64)
    m = vq.VectorQuantizer(8, 3, ema=True, decay=0.9, kmeans_init=True, kmeans_iters=4).double()
    assert not m.codebook.requires_grad
    _, _, idx = m(z)
    init = vq.kmeans(z, 8, iters=4)
    state = vq.ema_update(vq.ema_state(init), z, vq.nearest(z, init), decay=0.9)
    assert torch.equal(idx, vq.nearest(z, init))
    assert_close(m.codebook, state.codebook, rtol=1e-12)
    assert_close(m.ema_count, state.count)


def call(fn, **kw):
    return lambda: fn(**kw)


A = np.ones((4, 3))
BAD = [
    (call(vq.nearest, z=np.ones(3), codebook=A), ValueError, "z"),
    (call(vq.nearest, z=A, codebook=np.ones((4, 2))), ValueError, "codebook"),
    (call(vq.nearest, z=A.astype(int), codebook=A), TypeError, "z"),
    (call(vq.nearest, z=A, codebook=A.astype(complex)), TypeError, "codebook"),
    (call(vq.nearest, z=np.full((4, 3), np.nan), codebook=A), ValueError, "z"),
    (call(vq.nearest, z=A, codebook=np.full((4, 3), np.inf)), ValueError, "codebook"),
    (call(vq.nearest, z=np.ones((0, 3)), codebook=A), ValueError, "z"),
    (call(vq.nearest, z=A, codebook=A, max_block_bytes=0), ValueError, "max_block_bytes"),
    (call(vq.nearest, z=A, codebook=A, max_block_bytes=1.5), TypeError, "max_block_bytes"),
    (call(vq.vq_forward, z=A, codebook=A, beta=-0.1), ValueError, "beta"),
    (call(vq.vq_forward, z=A, codebook=A, beta=float("nan")), ValueError, "beta"),
    (call(vq.kmeans, x=A, k=5), ValueError, "k"),
    (call(vq.kmeans, x=A, k=0), ValueError, "k"),
    (call(vq.kmeans, x=A, k=2, weights=-np.ones(4)), ValueError, "weights"),
    (call(vq.kmeans, x=A, k=2, weights=np.ones(3)), ValueError, "weights"),
    (call(vq.usage, idx=np.array([0, 5]), k=3), ValueError, "idx"),
    (call(vq.usage, idx=np.array([0.0]), k=3), TypeError, "idx"),
    (call(vq.perplexity, counts=np.zeros(3)), ValueError, "counts"),
    (call(vq.ema_update, state=vq.ema_state(A), z=A, idx=np.array([0, 1])), ValueError, "idx"),
    (call(vq.ema_update, state=vq.ema_state(A), z=A, idx=np.zeros(4, int), decay=2.0), ValueError, "decay"),
    (call(vq.VectorQuantizer(4, 3), z=torch.ones(2, 2, 3)), ValueError, "z"),
    (call(vq.VectorQuantizer(4, 3).decode, idx=torch.tensor([[0, 4]])), ValueError, "idx"),
    (call(vq.VectorQuantizer, codebook_size=0, dim=3), ValueError, "codebook_size"),
]


@pytest.mark.parametrize("fn, error, name", BAD)
def test_bad_input_raises_naming_the_argument(fn, error, name):
    with pytest.raises(error, match=rf"^{name}\b"):
        fn()


def test_vq_backward_rejects_wrong_grad_shape():
    *_, cache = vq.vq_forward(A, A)
    with pytest.raises(ValueError, match="^grad_zq"):
        vq.vq_backward(cache, np.ones((4, 2)))

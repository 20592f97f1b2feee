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
    """Small-integer data (so every score is exact) with duplicated codes: exact ties; all of it
    shifted by a common integer offset, which must not break the ties (the centring stays exact)."""
    n, k, d = draw(st.integers(1, 40)), draw(st.integers(1, 12)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    e = rng.integers(-2, 3, (k, d))
    e = np.concatenate([e, e[rng.integers(0, k, draw(st.integers(0, k)))]])  # duplicates
    e = e[rng.permutation(len(e))]
    z = rng.integers(-3, 4, (n, d))
    offset = draw(st.sampled_from([0, 100, 1000, 10000])) * rng.choice([-1, 1], d)
    return (z + offset, e + offset, draw(st.integers(1, 4 * (n + len(e)) * (d + 1) * 8)),
            draw(st.sampled_from(["float32", "float64"])))


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


@settings(max_examples=40)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 1e2, 1e3, 1e4]), st.sampled_from(["float32", "float64"]),
       st.booleans(), st.integers(1, 12), st.integers(1, 600))
def test_nearest_is_exact_up_to_the_rounding_of_the_centred_problem(xp, seed, offset, dt, huge, d, budget):
    """Bug fixed: the float32 score z.e - ||e||^2/2 lost the digits that tell codes apart when codes
    and latents share an offset (39 % wrong codes at +100 on every coordinate, 98 % at +1000).
    Distances do not change under a common shift, so the error may only depend on the centred
    problem: for the codebook's midrange c, spans R_e = 2 max|e - c| and R_z = max|z - c| + R_e, a
    score is off by at most ~(d + 3) d eps (R_z R_e + R_e^2), a distance gap by 4 times that.
    `huge` scales everything by a power of two to just below the bound where products overflow."""
    rng = np.random.default_rng(seed)
    sign = rng.choice([-1.0, 1.0], d)
    z = offset * sign + rng.standard_normal((int(rng.integers(1, 40)), d))
    e = offset * sign + rng.standard_normal((int(rng.integers(1, 60)), d)) * rng.choice([1e-2, 1.0])
    z, e = z.astype(dt), e.astype(dt)
    p = (40 if dt == "float32" else 480) if huge else 0  # |values| * 2^p stays below the product bound
    idx = to_numpy(vq.nearest(asxp(xp, z * 2.0**p), asxp(xp, e * 2.0**p), max_block_bytes=budget * 64))
    z64, e64 = z.astype(np.float64), e.astype(np.float64)
    d2 = ((z64[:, None] - e64[None]) ** 2).sum(-1)
    c = (e64.min(0) + e64.max(0)) / 2
    r_e = 2 * np.abs(e64 - c).max()
    r_z = np.abs(z64 - c).max() + r_e
    tol = 4 * (d + 3) * d * np.finfo(dt).eps * (r_z * r_e + r_e**2)
    assert np.all(d2[np.arange(len(z)), idx] <= d2.min(1) + tol)


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


@settings(max_examples=10)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["float32", "float64"]), st.integers(-1, 1), st.integers(-1, 1))
def test_kmeans_is_equivariant_to_power_of_two_scaling(xp, seed, dt, sx, sw):
    """Bug fixed: near the bound where products overflow (|x| ~ 1e18 in float32), or with large
    weights, the k-means++ draws and the inertia summed w * D^2 over N points to inf: the seeding
    and the Lloyd steps then went wrong silently. Scaling x by 2^p scales the centres by 2^p and
    scaling the weights changes nothing, exactly, whatever p (within the bound)."""
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((40, 3)).astype(dt), rng.uniform(0.1, 4, 40).astype(dt)
    px = sx * (58 if dt == "float32" else 500)  # 4 * 2^58 < sqrt(max / 24) in float32
    pw = sw * (60 if dt == "float32" else 900)
    a = to_numpy(vq.kmeans(asxp(xp, x), 5, iters=4, weights=asxp(xp, w)))
    b = to_numpy(vq.kmeans(asxp(xp, x * 2.0**px), 5, iters=4, weights=asxp(xp, w * 2.0**pw)))
    assert np.all(np.isfinite(b))
    np.testing.assert_array_equal(b, a * 2.0**px)


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
    # float counts whose sum overflows their dtype (the sum once gave inf and perplexity 1)
    assert np.isclose(vq.perplexity(asxp(xp, np.full(k, 3e38, np.float32))), k, rtol=1e-6)


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


CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"))


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("conv", [False, True])
def test_module_under_bfloat16_autocast_equals_float32(device, conv):
    """Bug fixed: under bfloat16 autocast the scores' matrix product ran in bfloat16 and picked
    other codes (z_q off by 3.0). On values that bfloat16 holds exactly (multiples of 1/16 in
    [-2, 2]; their products and sums it does not), z_q, loss, indices and the gradients of z and
    of the codebook equal a float32 run. With a bfloat16 1x1 conv before it (a channel
    permutation, exact) z arrives as bfloat16 and z_q and z's gradient go back as bfloat16."""
    g = torch.Generator().manual_seed(0)
    grid = lambda *shape: (torch.randint(-32, 33, shape, generator=g) / 16).to(device)
    m = vq.VectorQuantizer(512, 8, beta=0.25).to(device)
    with torch.no_grad():
        m.codebook.copy_(grid(512, 8))
    layer = torch.nn.Conv2d(8, 8, 1, bias=False).to(device)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(8)[torch.randperm(8, generator=g)][:, :, None, None])
    x, w = grid(8, 8, 8, 8), grid(8, 8, 8, 8)  # 512 vectors

    def run(autocast):
        m.zero_grad()
        x_in = x.clone().requires_grad_(True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            z = layer(x_in) if conv else x_in
            z.retain_grad()
            z_q, loss, idx = m(z)
            ((z_q * w).sum() + loss).backward()
        return z, z_q, loss, idx, z.grad, m.codebook.grad.clone()

    z, z_q, loss, idx, gz, ge = run(True)
    z_ref, z_q_ref, loss_ref, idx_ref, gz_ref, ge_ref = run(False)
    assert z_q.dtype == z.dtype == (torch.bfloat16 if conv else torch.float32) and loss.dtype == torch.float32
    assert torch.equal(z.float(), z_ref)  # the same input, however it arrived
    assert torch.equal(idx, idx_ref) and torch.equal(z_q.float(), z_q_ref) and torch.equal(loss, loss_ref)
    assert torch.equal(ge, ge_ref) and torch.equal(gz, gz_ref.to(gz.dtype))


class FullSearch:
    """Stand-in for resize.BlockIndex: brute-force nearest code over the whole codebook, every
    image searching all of it; it records what the module passed."""

    def __init__(self, k):
        self.perm, self.calls = torch.arange(k), []

    def search(self, z, codebook, *, images, rule="distance"):
        self.calls.append((images, rule))
        idx = torch.as_tensor(brute_nearest(z.detach().numpy(), codebook.detach().numpy()))
        return idx, torch.ones(int(images.max()) + 1, dtype=z.dtype)


@pytest.mark.parametrize("layout", ["image", "flat"])
def test_block_search_equals_full_search_and_none_restores_it(layout):
    torch.manual_seed(0)
    m = vq.VectorQuantizer(16, 4, beta=0.3).double().eval()
    z = torch.randn(2, 4, 3, 5, dtype=torch.float64) if layout == "image" else torch.randn(30, 4, dtype=torch.float64)
    ref = m(z)
    index = FullSearch(16)
    assert m.use_blocks(index) is m
    got = m(z)
    for a, b in zip(got, ref):
        assert torch.equal(a, b)
    images, rule = index.calls[-1]
    want = torch.arange(2).repeat_interleave(15) if layout == "image" else torch.arange(30)  # an image per row
    assert torch.equal(images, want) and rule == "distance"
    assert torch.equal(m.last_searched, torch.ones(len(want.unique()), dtype=torch.float64))
    with pytest.raises(ValueError, match="^use_blocks"):
        m.train()(z)  # the block search is for inference
    m.use_blocks(None)
    assert m.last_searched is None
    m(z)  # training works again, with the full search
    for a, b in zip(m.eval()(z), ref):
        assert torch.equal(a, b)
    assert len(index.calls) == 1


def test_training_forward_does_not_rescan_the_codebook(monkeypatch):
    """The module checks z's shape only: no finiteness scan of the codebook (or of the indices)
    on every training step."""
    m = vq.VectorQuantizer(8, 3, ema=True, dead_below=0.5)
    z = torch.randn(2, 3, 4, 4)
    m(z)  # the first step (ema_state and nothing else may check)

    def refuse(*args, **kw):
        raise AssertionError("a whole-array check in the training step")
    for name in ("check_matrix", "check_finite", "check_indices"):
        monkeypatch.setattr(vq, name, refuse)
    for _ in range(3):
        _, loss, _ = m(z)
    assert torch.isfinite(loss) and int(m.counts.sum()) == 4 * 32


def test_vq_backward_lets_inf_through():
    """Loss scaling: an inf in the upstream gradient is passed on, not refused."""
    *_, cache = vq.vq_forward(A, A)
    g = np.zeros((4, 3))
    g[1, 2] = np.inf
    gz, ge = vq.vq_backward(cache, g)
    assert np.isinf(gz[1, 2]) and np.isfinite(np.delete(gz.ravel(), 5)).all() and np.isfinite(ge).all()


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
    # values whose squares or products overflow the working dtype pass a finiteness check
    (call(vq.nearest, z=np.full((4, 3), 1e20, np.float32), codebook=A.astype(np.float32)), ValueError, "z"),
    (call(vq.vq_forward, z=A, codebook=np.full((4, 3), 1e160)), ValueError, "codebook"),
    (call(vq.kmeans, x=np.full((4, 3), 1e160), k=2), ValueError, "x"),
    (call(vq.ema_update, state=vq.ema_state(A), z=np.full((4, 3), 1e160), idx=np.zeros(4, int)), ValueError, "z"),
    # the EMA state and options (a NaN or negative count used to stop the updates silently)
    (call(vq.ema_update, state=vq.EMAState(A, np.full(4, np.nan), A), z=A, idx=np.zeros(4, int)), ValueError,
     "state.count"),
    (call(vq.ema_update, state=vq.EMAState(A, -np.ones(4), A), z=A, idx=np.zeros(4, int)), ValueError, "state.count"),
    (call(vq.ema_update, state=vq.EMAState(A, np.ones(3), A), z=A, idx=np.zeros(4, int)), ValueError, "state.count"),
    (call(vq.ema_update, state=vq.EMAState(A, np.ones(4, np.float32), A), z=A, idx=np.zeros(4, int)), TypeError,
     "state.count"),
    (call(vq.ema_update, state=vq.EMAState(A, np.ones(4), A * np.nan), z=A, idx=np.zeros(4, int)), ValueError,
     "state.sum_z"),
    (call(vq.ema_update, state=A, z=A, idx=np.zeros(4, int)), TypeError, "state"),
    (call(vq.ema_update, state=vq.ema_state(A), z=A, idx=np.zeros(4, int), eps=-1e-5), ValueError, "eps"),
    (call(vq.ema_update, state=vq.ema_state(A), z=A, idx=np.zeros(4, int), dead_below=-1), ValueError, "dead_below"),
    (call(vq.ema_update, state=vq.ema_state(A), z=A, idx=np.zeros(4, int), decay=np.nan), ValueError, "decay"),
    # mixed libraries and mismatched shapes, named at the entry (not AttributeError or RuntimeError)
    (call(vq.nearest, z=A, codebook=torch.ones(4, 3, dtype=torch.float64)), TypeError, "codebook"),
    (call(vq.nearest, z=torch.ones(4, 3), codebook=torch.ones(4, 2)), ValueError, "codebook"),
    (call(vq.kmeans, x=A, k=2, weights=torch.ones(4, dtype=torch.float64)), TypeError, "weights"),
    (call(vq.kmeans, x=torch.ones(4, 3), k=2, weights=np.ones(4)), TypeError, "weights"),
    (call(vq.ema_update, state=vq.ema_state(A), z=torch.ones(4, 3, dtype=torch.float64), idx=np.zeros(4, int)),
     TypeError, "z"),
    (call(vq.vq_backward, cache=vq.vq_forward(torch.ones(4, 3), torch.ones(4, 3)).cache, grad_zq=np.ones((4, 3))),
     TypeError, "grad_zq"),
    (call(vq.vq_backward, cache=vq.vq_forward(A, A).cache, grad_zq=np.ones((4, 3), int)), TypeError, "grad_zq"),
    (call(vq.vq_backward, cache=vq.vq_forward(A, A).cache, grad_zq=A, grad_loss="1"), TypeError, "grad_loss"),
    (call(vq.vq_backward, cache=(A, A), grad_zq=A), TypeError, "cache"),
    (call(vq.VectorQuantizer(4, 3), z=np.ones((2, 3), np.float32)), TypeError, "z"),
    (call(vq.VectorQuantizer(4, 3), z=torch.ones(2, 3, dtype=torch.int64)), TypeError, "z"),
    (call(vq.VectorQuantizer(4, 3), z=torch.ones(0, 3)), ValueError, "z"),
    (call(vq.VectorQuantizer(4, 3).decode, idx=np.array([0, 1])), TypeError, "idx"),
    (call(vq.VectorQuantizer(4, 3).use_blocks, index=object()), TypeError, "index"),
    # module options, checked when the module is made, not at the first forward
    (call(vq.VectorQuantizer, codebook_size=4, dim=3, decay=1.5), ValueError, "decay"),
    (call(vq.VectorQuantizer, codebook_size=4, dim=3, eps=-1.0), ValueError, "eps"),
    (call(vq.VectorQuantizer, codebook_size=4, dim=3, dead_below=-1.0), ValueError, "dead_below"),
    (call(vq.VectorQuantizer, codebook_size=4, dim=3, kmeans_iters=-1), ValueError, "kmeans_iters"),
    (call(vq.VectorQuantizer, codebook_size=4, dim=3, kmeans_iters=2.5), TypeError, "kmeans_iters"),
    (call(vq.VectorQuantizer, codebook_size=4, dim=3, beta=np.nan), ValueError, "beta"),
    (call(vq.VectorQuantizer, codebook_size=4, dim=0), ValueError, "dim"),
    (call(vq.VectorQuantizer, codebook_size=4, dim=3, max_block_bytes=0), ValueError, "max_block_bytes"),
]


@pytest.mark.parametrize("fn, error, name", BAD)
def test_bad_input_raises_naming_the_argument(fn, error, name):
    with pytest.raises(error, match=rf"^{name}\b"):
        fn()


def test_bad_input_raises_alike_on_every_backend(xp):
    """Bug fixed: on torch `x.size` is a method, so usage() of an empty tensor returned zeros
    where NumPy refused; every backend now refuses the same inputs with the same error."""
    a = asxp(xp, np.ones((4, 3)))
    for fn, error, name in [
        (call(vq.usage, idx=asxp(xp, np.zeros(0, np.int64)), k=5), ValueError, "idx"),
        (call(vq.usage, idx=asxp(xp, np.array([0, 5])), k=5), ValueError, "idx"),
        (call(vq.usage, idx=asxp(xp, np.array([0.0])), k=5), TypeError, "idx"),
        (call(vq.perplexity, counts=asxp(xp, np.zeros(3))), ValueError, "counts"),
        (call(vq.perplexity, counts=asxp(xp, np.ones((2, 2)))), ValueError, "counts"),
        (call(vq.nearest, z=asxp(xp, np.full((4, 3), np.nan)), codebook=a), ValueError, "z"),
        (call(vq.nearest, z=asxp(xp, np.ones((0, 3))), codebook=a), ValueError, "z"),
        (call(vq.nearest, z=a, codebook=asxp(xp, np.ones((4, 2)))), ValueError, "codebook"),
        (call(vq.nearest, z=asxp(xp, np.full((4, 3), 1e20), np.float32),
              codebook=asxp(xp, np.ones((4, 3)), np.float32)), ValueError, "z"),
        (call(vq.kmeans, x=a, k=5), ValueError, "k"),
        (call(vq.kmeans, x=a, k=2, weights=asxp(xp, np.zeros(4))), ValueError, "weights"),
        (call(vq.ema_update, state=vq.EMAState(a, asxp(xp, -np.ones(4)), a), z=a, idx=asxp(xp, np.zeros(4, np.int64))),
         ValueError, "state.count"),
        (call(vq.vq_backward, cache=vq.vq_forward(a, a).cache, grad_zq=asxp(xp, np.ones((4, 2)))), ValueError, "grad_zq"),
    ]:
        with pytest.raises(error, match=rf"^{name}\b"):
            fn()


def test_vq_backward_rejects_wrong_grad_shape():
    *_, cache = vq.vq_forward(A, A)
    with pytest.raises(ValueError, match="^grad_zq"):
        vq.vq_backward(cache, np.ones((4, 2)))

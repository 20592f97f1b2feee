"""ibq.py against torch autograd (float64) of the public IBQ formulation, on every backend."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import asxp, assert_close, dtype_name, to_numpy
import arrays
import ibq
import vq

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def examples(n=None):
    """The profile's settings, or fewer examples for the expensive tests."""
    return settings() if n is None else settings(max_examples=n)


def reference(z, codebook, grad_zq, grad_loss=1.0, *, beta=0.25, entropy_weight=0.0, temperature=0.01,
              sample_weight=1.0, batch_weight=1.0):
    """The public IBQ quantizer (dense N×K, as SEED-Voken writes it) under torch autograd, float64."""
    z = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    e = torch.tensor(codebook, dtype=torch.float64, requires_grad=True)
    logits = z @ e.T
    soft = torch.softmax(logits, dim=1)
    idx = torch.as_tensor(np.argmax(logits.detach().numpy(), axis=1))  # NumPy: first maximum on ties
    hard = F.one_hot(idx, e.shape[0]).double()
    z_q = (hard - soft.detach() + soft) @ e
    z_q2 = hard @ e
    loss = ((z_q - z) ** 2).mean() + ((z_q2.detach() - z) ** 2).mean() + beta * ((z_q2 - z.detach()) ** 2).mean()
    if entropy_weight:
        probs = torch.softmax(logits / temperature, dim=1)
        sample_entropy = -(probs * torch.log_softmax(logits / temperature + 1e-5, dim=1)).sum(1).mean()
        avg = probs.mean(0)
        avg_entropy = -(avg * torch.log(avg + 1e-5)).sum()
        loss = loss + entropy_weight * (sample_weight * sample_entropy - batch_weight * avg_entropy)
    ((z_q * torch.tensor(grad_zq, dtype=torch.float64)).sum() + grad_loss * loss).backward()
    return z_q.detach().numpy(), loss.item(), idx.numpy(), z.grad.numpy(), e.grad.numpy()


def check_against_reference(xp, z, codebook, grad_zq, grad_loss=1.0, rtol=1e-9, dtype=None, **kw):
    got_zq, got_loss, got_idx, cache = ibq.ibq_forward(asxp(xp, z, dtype), asxp(xp, codebook, dtype), **kw)
    got_gz, got_ge = ibq.ibq_backward(cache, asxp(xp, grad_zq, dtype), grad_loss)
    kw.pop("max_block_bytes", None)
    zq, loss, idx, gz, ge = reference(z, codebook, grad_zq, grad_loss, **kw)
    np.testing.assert_array_equal(to_numpy(got_idx), idx)
    assert dtype_name(got_idx) == "int64"
    assert_close(got_zq, zq, rtol=rtol)
    assert_close(got_loss, loss, rtol=rtol)
    # gradients: absolute tolerance relative to the largest entry (cancellation in sums of products),
    # and never below the rounding of the terms summed: a gradient that cancels to zero (z = 0,
    # all logits tied) is rounding noise on both sides
    floor = rounding_floor(z, codebook, grad_zq, kw)
    assert_close(got_gz, gz, rtol=rtol, atol=max(rtol * np.abs(gz).max(), floor))
    assert_close(got_ge, ge, rtol=rtol, atol=max(rtol * np.abs(ge).max(), floor))
    return got_ge


def rounding_floor(z, codebook, grad_zq, kw):
    """100 float64 ulps of the largest term a gradient entry sums: |x|·|e| times the logits' 1/T."""
    size = max(np.abs(z).max(), np.abs(codebook).max(), np.abs(grad_zq).max(), 1.0)
    inv_t = 1 / kw["temperature"] if kw.get("entropy_weight") else 1.0
    return 100 * np.finfo(np.float64).eps * size**2 * inv_t


@st.composite
def problems(draw, max_n=9, max_k=12, max_d=5):
    n, k, d = draw(st.integers(1, max_n)), draw(st.integers(1, max_k)), draw(st.integers(1, max_d))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 3.0]))
    z = rng.normal(size=(n, d)) * scale
    codebook = rng.normal(size=(k, d)) * scale
    if draw(st.booleans()):  # zeros: a zero row of z ties all codes, a zero code ties with its copies
        z[rng.random(n) < 0.3] = 0.0
        codebook[rng.random(k) < 0.3] = 0.0
    grad_zq = rng.normal(size=(n, d)) * draw(st.sampled_from([0.0, 1.0]))
    return z, codebook, grad_zq


# float64 tile budgets: 1 byte gives one row by one code; 2000, 6040 and 6200 split (rows, codes),
# rows only and codes only at N = 9, K = 12 (test_tile_budgets_split_n_and_k_every_way)
BUDGETS = [1, 64, 300, 2000, 6040, 6200, 2**26]
budgets = st.sampled_from(BUDGETS)


def test_tile_budgets_split_n_and_k_every_way():
    splits = {budget: ibq.tiles(9, 12, 5, 8, budget) for budget in BUDGETS}
    assert {(t.rows < 9, t.codes < 12) for t in splits.values()} == {(True, True), (True, False), (False, True),
                                                                      (False, False)}


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 300), st.integers(1, 2**27))
def test_tiles_fit_the_budget_and_the_cache(n, k, d, budget):
    t = ibq.tiles(n, k, d, 4, budget)
    assert 1 <= t.rows <= min(n, ibq.ROWS) and 1 <= t.codes <= k and t.rows * t.codes <= max(ibq.TILE_CELLS, t.rows)
    if t.codes > 1:  # one code by all rows is the floor: O(N) memory whatever the budget
        assert 4 * t.codes * (n + ibq.TEMPS * t.rows + d) <= budget


@examples()
@given(problems(), budgets, st.sampled_from([0.0, 0.25, 1.0]), st.sampled_from([1.0, 0.5]))
def test_matches_autograd_without_entropy(xp, problem, budget, beta, grad_loss):
    z, codebook, grad_zq = problem
    check_against_reference(xp, z, codebook, grad_zq, grad_loss, beta=beta, max_block_bytes=budget)


@examples()
@given(problems(), budgets, st.sampled_from([0.01, 0.1, 1.0, 10.0]), st.sampled_from([(1.0, 1.0), (0.5, 2.0)]),
       st.sampled_from([0.1, 1.0]))
def test_matches_autograd_with_entropy(xp, problem, budget, temperature, weights, entropy_weight):
    z, codebook, grad_zq = problem
    check_against_reference(xp, z, codebook, grad_zq, 0.7, rtol=1e-8, entropy_weight=entropy_weight,
                            temperature=temperature, sample_weight=weights[0], batch_weight=weights[1],
                            max_block_bytes=budget)


@examples(15)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4), budgets)
def test_exact_ties_go_to_the_lowest_index(xp, seed, copies, budget):
    # small integers make every logit exact, so duplicated codes give exactly equal scores
    rng = np.random.default_rng(seed)
    base = rng.integers(-3, 4, size=(4, 3)).astype(np.float64)
    codebook = np.concatenate([base] * copies)[rng.permutation(4 * copies)]
    z = rng.integers(-3, 4, size=(6, 3)).astype(np.float64)
    logits = z @ codebook.T
    lowest = np.array([np.flatnonzero(row == row.max())[0] for row in logits])
    _, _, idx, _ = ibq.ibq_forward(asxp(xp, z), asxp(xp, codebook), max_block_bytes=budget)
    np.testing.assert_array_equal(to_numpy(idx), lowest)
    check_against_reference(xp, z, codebook, rng.normal(size=z.shape), entropy_weight=0.5, temperature=0.1,
                            max_block_bytes=budget)


@examples(10)
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.01, 0.1]), budgets)
def test_logits_in_the_thousands_stay_exact_and_finite(xp, seed, temperature, budget):
    # |L| up to a few thousand, |L / T| up to 1e5: on torch's CPU backend far beyond the clamp of exp_tile
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(7, 4)) * 40
    codebook = rng.normal(size=(11, 4)) * 40
    check_against_reference(xp, z, codebook, rng.normal(size=z.shape), entropy_weight=1.0,
                            temperature=temperature, rtol=1e-7, max_block_bytes=budget)
    zq, loss, _, cache = ibq.ibq_forward(asxp(xp, z, np.float32), asxp(xp, codebook, np.float32),
                                         entropy_weight=1.0, temperature=temperature, max_block_bytes=budget)
    grads = ibq.ibq_backward(cache, asxp(xp, np.ones(z.shape, np.float32)))
    for x in (zq, loss, *grads):
        assert np.all(np.isfinite(to_numpy(x)))


@examples(10)
@given(problems(max_n=16, max_k=20, max_d=6), budgets, st.booleans())
def test_float32_keeps_dtype_and_accuracy(xp, problem, budget, entropy):
    z, codebook, grad_zq = problem
    z, codebook = z.astype(np.float32).astype(np.float64), codebook.astype(np.float32).astype(np.float64)
    kw = dict(entropy_weight=0.5 if entropy else 0.0, temperature=0.1, max_block_bytes=budget)
    zq, loss, idx, cache = ibq.ibq_forward(asxp(xp, z, np.float32), asxp(xp, codebook, np.float32), **kw)
    gz, ge = ibq.ibq_backward(cache, asxp(xp, grad_zq, np.float32))
    assert [dtype_name(x) for x in (zq, loss, gz, ge)] == ["float32"] * 4
    ref = reference(z, codebook, grad_zq, **{k: v for k, v in kw.items() if k != "max_block_bytes"})
    logits = np.sort(z @ codebook.T, axis=1)
    clear = logits[:, -1] - (logits[:, -2] if logits.shape[1] > 1 else -np.inf) > 1e-3  # no near-tie
    np.testing.assert_array_equal(to_numpy(idx)[clear], ref[2][clear])
    if clear.all():
        for got, want in zip((zq, loss, gz, ge), (ref[0], ref[1], ref[3], ref[4])):
            assert_close(got, want, rtol=2e-4, atol=2e-4 * (np.abs(want).max() + 1e-30))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_accumulates_in_float32(dtype):
    rng = np.random.default_rng(0)
    z = torch.tensor(rng.normal(size=(64, 16)), dtype=dtype)
    codebook = torch.tensor(rng.normal(size=(300, 16)), dtype=dtype)
    grad_zq = torch.tensor(rng.normal(size=(64, 16)), dtype=dtype)
    zq, loss, idx, cache = ibq.ibq_forward(z, codebook, entropy_weight=0.1, temperature=0.1, max_block_bytes=4096)
    gz, ge = ibq.ibq_backward(cache, grad_zq)
    assert {x.dtype for x in (zq, gz, ge)} == {dtype} and loss.dtype == torch.float32
    ref = reference(z.double().numpy(), codebook.double().numpy(), grad_zq.double().numpy(),
                    entropy_weight=0.1, temperature=0.1)
    np.testing.assert_array_equal(idx.numpy(), ref[2])
    assert_close(loss, ref[1], rtol=1e-5)
    # only the final rounding to the half type is lost, not the sums over 300 codes
    eps = torch.finfo(dtype).eps
    for got, want in zip((zq, gz, ge), (ref[0], ref[3], ref[4])):
        assert_close(got.double(), want, rtol=2 * eps, atol=2 * eps * np.abs(want).max())


def test_float16_loss_beyond_float16_range_stays_finite():
    """Bug fixed: the loss went back in z's dtype, so a float16 loss above 65504 was inf where
    float32 holds it. Now it comes in the working dtype (float32) and equals the float32 run."""
    z = torch.full((4, 8), 200.0, dtype=torch.float16)
    codebook = torch.full((3, 8), -200.0, dtype=torch.float16)  # loss = 2.25 · 400² = 3.6e5
    half = ibq.ibq_forward(z, codebook, entropy_weight=0.1).loss
    full = ibq.ibq_forward(z.float(), codebook.float(), entropy_weight=0.1).loss
    assert torch.isfinite(half) and torch.equal(half, full)


@examples(10)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 30), st.integers(1, 4))
def test_every_code_with_softmax_mass_gets_gradient(xp, seed, n, k, d):
    rng = np.random.default_rng(seed)
    z, codebook = rng.normal(size=(n, d)), rng.normal(size=(k, d)) * 3
    _, _, idx, cache = ibq.ibq_forward(asxp(xp, z), asxp(xp, codebook), max_block_bytes=200)
    _, ge = ibq.ibq_backward(cache, asxp(xp, rng.normal(size=z.shape)))
    logits = z @ codebook.T
    mass = np.exp(logits - logits.max(1, keepdims=True)).sum(0) > 1e-200  # (K,) well above underflow
    moved = np.abs(to_numpy(ge)).sum(1) > 0
    np.testing.assert_array_equal(moved[mass], True)


def test_vq_moves_only_the_selected_codes():
    rng = np.random.default_rng(1)
    z, codebook = rng.normal(size=(5, 3)), rng.normal(size=(40, 3))
    _, _, idx, cache = vq.vq_forward(z, codebook)
    _, ge = vq.vq_backward(cache, rng.normal(size=z.shape))
    moved = np.flatnonzero(np.abs(ge).sum(1) > 0)
    np.testing.assert_array_equal(moved, np.unique(idx))
    _, ge = ibq.ibq_backward(ibq.ibq_forward(z, codebook)[3], rng.normal(size=z.shape))
    assert (np.abs(ge).sum(1) > 0).all()


def test_numpy_scalars_are_valid_numbers():
    rng = np.random.default_rng(2)
    z, codebook, g = rng.normal(size=(6, 3)), rng.normal(size=(9, 3)), rng.normal(size=(6, 3))
    py = dict(beta=0.5, entropy_weight=0.2, temperature=0.1, sample_weight=1.0, batch_weight=2.0, max_block_bytes=300)
    npy = {k: (np.int64(v) if isinstance(v, int) else np.float64(v)) for k, v in py.items()}
    want = ibq.ibq_forward(z, codebook, **py)
    got = ibq.ibq_forward(z, codebook, **npy)
    assert got.loss == want.loss and np.array_equal(got.z_q, want.z_q)
    assert all(np.array_equal(a, b) for a, b in zip(ibq.ibq_backward(got.cache, g, np.float32(0.5)),
                                                     ibq.ibq_backward(want.cache, g, 0.5)))


@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 2, 2)])
def test_module_gradients_equal_the_functions(shape):
    torch.manual_seed(0)
    q = ibq.IndexBackpropQuantizer(7, 3, entropy_weight=0.3, temperature=0.1, max_block_bytes=64).double()
    z = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    z_q, loss, idx = q(z)
    grad_zq = torch.randn_like(z_q)
    ((z_q * grad_zq).sum() + 0.5 * loss).backward()
    flat = lambda t: t.permute(0, 2, 3, 1).reshape(-1, 3) if t.ndim == 4 else t  # (N, d)
    want_zq, want_loss, want_idx, cache = ibq.ibq_forward(flat(z.detach()), q.codebook.detach(),
                                                          entropy_weight=0.3, temperature=0.1, max_block_bytes=64)
    want_gz, want_ge = ibq.ibq_backward(cache, flat(grad_zq), 0.5)
    np.testing.assert_array_equal(idx.reshape(-1).numpy(), want_idx.numpy())
    assert_close(flat(z_q.detach()), want_zq)
    assert_close(loss.detach(), want_loss)
    assert_close(flat(z.grad), want_gz)
    assert_close(q.codebook.grad, want_ge)
    assert_close(q.decode(idx), z_q.detach())  # decode(idx) gives forward's z_q, same layout
    assert q.counts.sum() == idx.numel() and 0 < q.utilization() <= 1 and q.perplexity() >= 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("entropy_weight", [0.0, 0.1])
@pytest.mark.parametrize("conv", [False, True])
def test_module_under_bfloat16_autocast_equals_float32(device, entropy_weight, conv):
    """Bug fixed: under bfloat16 autocast the logits' products ran in bfloat16 and the backward in
    float32 against a row max taken in bfloat16 (x <= 0 no longer held): the codebook gradient was
    off by a factor of about 1e10. On values bfloat16 holds exactly (multiples of 1/16 in [-2, 2]),
    z_q, loss, indices and the gradients of z and of the codebook equal a float32 run; with a
    bfloat16 1x1 conv first (a channel permutation, exact) z, z_q and z's gradient are bfloat16."""
    g = torch.Generator().manual_seed(0)
    grid = lambda *shape: (torch.randint(-32, 33, shape, generator=g) / 16).to(device)
    q = ibq.IndexBackpropQuantizer(256, 8, entropy_weight=entropy_weight, temperature=0.1).to(device)
    with torch.no_grad():
        q.codebook.copy_(grid(256, 8))
    layer = torch.nn.Conv2d(8, 8, 1, bias=False).to(device)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(8)[torch.randperm(8, generator=g)][:, :, None, None])
    x, w = grid(4, 8, 8, 8), grid(4, 8, 8, 8)  # 256 vectors

    def run(autocast):
        q.zero_grad()
        x_in = x.clone().requires_grad_(True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            z = layer(x_in) if conv else x_in
            z.retain_grad()
            z_q, loss, idx = q(z)
            ((z_q * w).sum() + loss).backward()  # inside the region: the backward must not autocast either
        return z, z_q, loss, idx, z.grad, q.codebook.grad.clone()

    z, z_q, loss, idx, gz, ge = run(True)
    z_ref, z_q_ref, loss_ref, idx_ref, gz_ref, ge_ref = run(False)
    assert z_q.dtype == z.dtype == (torch.bfloat16 if conv else torch.float32) and loss.dtype == torch.float32
    assert torch.equal(z.float(), z_ref)
    assert torch.equal(idx, idx_ref) and torch.equal(z_q.float(), z_q_ref) and torch.equal(loss, loss_ref)
    assert torch.equal(ge, ge_ref) and torch.equal(gz, gz_ref.to(gz.dtype))


def test_module_training_forward_does_not_check_the_codebook(monkeypatch):
    """The options are checked once, in __init__; a training step does not scan the (K, d)
    codebook for NaN/inf or product overflow (256 MiB at the paper's K = 2^18, d = 256)."""
    q = ibq.IndexBackpropQuantizer(16, 4, entropy_weight=0.1).train()

    def refuse(*args, **kwargs):
        raise AssertionError("the training forward re-checked an array")

    monkeypatch.setattr(arrays, "check_finite", refuse)
    monkeypatch.setattr(arrays, "check_matrix", refuse)
    z_q, loss, _ = q(torch.randn(32, 4, requires_grad=True))
    (z_q.sum() + loss).backward()
    assert q.rule == "dot"  # its block search ranks codes by z·e, as its argmax


def test_module_kmeans_init_and_bad_options():
    torch.manual_seed(0)
    z = torch.randn(50, 4)
    q = ibq.IndexBackpropQuantizer(8, 4, init="kmeans").train()
    q(z)
    assert bool(q.initialized)
    for name, kw, error in [("init", dict(init="uniform"), ValueError),
                            ("temperature", dict(temperature=0.0), ValueError),
                            ("beta", dict(beta=-0.25), ValueError),
                            ("entropy_weight", dict(entropy_weight=True), TypeError)]:
        with pytest.raises(error, match=name):
            ibq.IndexBackpropQuantizer(8, 4, **kw)


def bad_inputs():
    z, e = np.ones((4, 3)), np.ones((5, 3))
    nan = z.copy()
    nan[1, 2] = np.nan
    inf = e.copy()
    inf[4, 0] = np.inf
    huge = np.full((4, 3), 1e19, np.float32)  # squares and products overflow float32: wrong indices before
    return [
        ("z", dict(z=np.ones((4, 3, 1))), ValueError), ("z", dict(z=np.ones((0, 3))), ValueError),
        ("z", dict(z=nan), ValueError), ("z", dict(z=np.ones((4, 3), dtype=np.int64)), TypeError),
        ("z", dict(z=[[1.0, 2.0, 3.0]]), TypeError),
        ("z", dict(z=huge, codebook=np.ones((5, 3), np.float32)), ValueError),
        ("codebook", dict(z=np.ones((4, 3), np.float32), codebook=np.full((5, 3), 1e19, np.float32)), ValueError),
        ("codebook", dict(codebook=np.ones((5, 2))), ValueError), ("codebook", dict(codebook=inf), ValueError),
        ("codebook", dict(codebook=np.ones((0, 3))), ValueError),
        ("codebook", dict(codebook=np.ones((5, 3), np.float32)), TypeError),
        ("temperature", dict(temperature=0.0), ValueError), ("temperature", dict(temperature=-1.0), ValueError),
        ("temperature", dict(temperature=float("nan")), ValueError),
        ("max_block_bytes", dict(max_block_bytes=0), ValueError),
        ("max_block_bytes", dict(max_block_bytes=1.5), TypeError), ("beta", dict(beta=float("inf")), ValueError),
        ("beta", dict(beta=-0.1), ValueError),  # vq refuses it; ibq_forward took it silently
        ("beta", dict(beta=True), TypeError), ("entropy_weight", dict(entropy_weight="1"), TypeError),
    ]


@pytest.mark.parametrize("name, change, error", bad_inputs())
def test_bad_input_raises_naming_the_argument(xp, name, change, error):
    args = dict(z=np.ones((4, 3)), codebook=np.ones((5, 3)))
    args.update(change)
    arrays_ = {k: asxp(xp, v) if isinstance(v, np.ndarray) else v for k, v in args.items() if k in ("z", "codebook")}
    options = {k: v for k, v in args.items() if k not in ("z", "codebook")}
    with pytest.raises(error, match=f"^{name}"):
        ibq.ibq_forward(arrays_["z"], arrays_["codebook"], **options)


def test_with_the_entropy_loss_values_whose_logits_over_t_overflow_are_refused():
    # |z·e| below float32's product bound is finite, but L / T at T = 0.01 is not (8e38)
    z, e = np.full((2, 4), 1e18, np.float32), np.full((3, 4), -1e18, np.float32)
    ibq.ibq_forward(z, e)
    with pytest.raises(ValueError, match="^z"):
        ibq.ibq_forward(z, e, entropy_weight=0.1, temperature=0.01)


def test_mixed_backends_raise_type_error_naming_the_argument():
    z, e = np.ones((4, 3)), np.ones((5, 3))
    with pytest.raises(TypeError, match="^codebook"):
        ibq.ibq_forward(z, torch.ones(5, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="^codebook"):
        ibq.ibq_forward(torch.ones(4, 3, dtype=torch.float64), e)
    cache = ibq.ibq_forward(torch.ones(4, 3, dtype=torch.float64), torch.ones(5, 3, dtype=torch.float64)).cache
    with pytest.raises(TypeError, match="^grad_zq"):
        ibq.ibq_backward(cache, np.ones((4, 3)))


@pytest.mark.parametrize("grad_zq, grad_loss, name, error", [
    (np.ones((4, 2)), 1.0, "grad_zq", ValueError), (np.ones((3, 3)), 1.0, "grad_zq", ValueError),
    (np.ones(12), 1.0, "grad_zq", ValueError), (np.ones((4, 3), np.int64), 1.0, "grad_zq", TypeError),
    (np.ones((4, 3)), "1", "grad_loss", TypeError), (np.ones((4, 3)), np.ones(2), "grad_loss", ValueError),
    (np.ones((4, 3)), float("nan"), "grad_loss", ValueError)])
def test_bad_backward_input_raises_naming_the_argument(xp, grad_zq, grad_loss, name, error):
    _, _, _, cache = ibq.ibq_forward(asxp(xp, np.ones((4, 3))), asxp(xp, np.ones((5, 3))))
    grad_loss = asxp(xp, grad_loss) if isinstance(grad_loss, np.ndarray) else grad_loss
    with pytest.raises(error, match=f"^{name}"):
        ibq.ibq_backward(cache, asxp(xp, grad_zq), grad_loss)
    with pytest.raises(TypeError, match="^cache"):
        ibq.ibq_backward(tuple(cache), asxp(xp, np.ones((4, 3))))

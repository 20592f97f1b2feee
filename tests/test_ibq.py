"""ibq.py against torch autograd (float64) of the public IBQ formulation, on every backend."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import asxp, assert_close, dtype_name, to_numpy
import ibq
import vq



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
        sample_entropy = -(probs * torch.log_softmax(logits / temperature, dim=1)).sum(1).mean()
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


budgets = st.sampled_from([1, 64, 300, 2000, 2**26])  # 1 byte: one row and one code per tile


@examples()
@given(problems(), budgets, st.sampled_from([0.0, 0.25, 1.0]), st.sampled_from([1.0, 0.5]))
def test_matches_autograd_without_entropy(xp, problem, budget, beta, grad_loss):
    z, codebook, grad_zq = problem
    check_against_reference(xp, z, codebook, grad_zq, grad_loss, beta=beta, max_block_bytes=budget)


@examples()
@given(problems(), budgets, st.sampled_from([0.01, 0.1, 1.0]), st.sampled_from([(1.0, 1.0), (0.5, 2.0)]),
       st.sampled_from([0.1, 1.0]))
def test_matches_autograd_with_entropy(xp, problem, budget, temperature, weights, entropy_weight):
    z, codebook, grad_zq = problem
    check_against_reference(xp, z, codebook, grad_zq, 0.7, rtol=1e-8, entropy_weight=entropy_weight,
                            temperature=temperature, sample_weight=weights[0], batch_weight=weights[1],
                            max_block_bytes=budget)


@pytest.mark.parametrize("budget", [1, 64, 2**26])
def test_tiles_split_every_dimension(budget):
    rows, codes = ibq.tiles(9, 12, 5, 8, budget)
    if budget < 2**26:
        assert rows < 9 and codes < 12
    else:
        assert (rows, codes) == (9, 12)


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
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(7, 4)) * 40
    codebook = rng.normal(size=(11, 4)) * 40  # |logits| up to a few thousand, / T up to 1e5
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
    assert {x.dtype for x in (zq, loss, gz, ge)} == {dtype}
    ref = reference(z.double().numpy(), codebook.double().numpy(), grad_zq.double().numpy(),
                    entropy_weight=0.1, temperature=0.1)
    np.testing.assert_array_equal(idx.numpy(), ref[2])
    # only the final rounding to the half type is lost, not the sums over 300 codes
    eps = torch.finfo(dtype).eps
    for got, want in zip((zq, gz, ge), (ref[0], ref[3], ref[4])):
        assert_close(got.double(), want, rtol=2 * eps, atol=2 * eps * np.abs(want).max())


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
    assert mass.all() or not moved.all()  # codes beyond float64's softmax range get exactly nothing


def test_vq_moves_only_the_selected_codes():
    rng = np.random.default_rng(1)
    z, codebook = rng.normal(size=(5, 3)), rng.normal(size=(40, 3))
    _, _, idx, cache = vq.vq_forward(z, codebook)
    _, ge = vq.vq_backward(cache, rng.normal(size=z.shape))
    moved = np.flatnonzero(np.abs(ge).sum(1) > 0)
    np.testing.assert_array_equal(moved, np.unique(idx))
    _, ge = ibq.ibq_backward(ibq.ibq_forward(z, codebook)[3], rng.normal(size=z.shape))
    assert (np.abs(ge).sum(1) > 0).all()


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


def test_module_kmeans_init_and_bad_options():
    torch.manual_seed(0)
    z = torch.randn(50, 4)
    q = ibq.IndexBackpropQuantizer(8, 4, init="kmeans").train()
    q(z)
    assert bool(q.initialized)
    with pytest.raises(ValueError, match="init"):
        ibq.IndexBackpropQuantizer(8, 4, init="uniform")
    with pytest.raises(ValueError, match="temperature"):
        ibq.IndexBackpropQuantizer(8, 4, temperature=0.0)


def bad_inputs():
    z, e = np.ones((4, 3)), np.ones((5, 3))
    nan = z.copy()
    nan[1, 2] = np.nan
    inf = e.copy()
    inf[4, 0] = np.inf
    return [
        ("z", dict(z=np.ones((4, 3, 1)))), ("z", dict(z=np.ones((0, 3)))), ("z", dict(z=nan)),
        ("z", dict(z=np.ones((4, 3), dtype=np.int64))), ("z", dict(z=[[1.0, 2.0, 3.0]])),
        ("codebook", dict(codebook=np.ones((5, 2)))), ("codebook", dict(codebook=inf)),
        ("codebook", dict(codebook=np.ones((0, 3)))), ("codebook", dict(codebook=np.ones((5, 3), np.float32))),
        ("temperature", dict(temperature=0.0)), ("temperature", dict(temperature=-1.0)),
        ("temperature", dict(temperature=float("nan"))), ("max_block_bytes", dict(max_block_bytes=0)),
        ("max_block_bytes", dict(max_block_bytes=1.5)), ("beta", dict(beta=float("inf"))),
        ("entropy_weight", dict(entropy_weight="1")),
    ]


@pytest.mark.parametrize("name, change", bad_inputs())
def test_bad_input_raises_naming_the_argument(xp, name, change):
    args = dict(z=np.ones((4, 3)), codebook=np.ones((5, 3)))
    args.update(change)
    arrays = {k: asxp(xp, v) if isinstance(v, np.ndarray) else v for k, v in args.items() if k in ("z", "codebook")}
    options = {k: v for k, v in args.items() if k not in ("z", "codebook")}
    with pytest.raises((ValueError, TypeError), match=name):
        ibq.ibq_forward(arrays["z"], arrays["codebook"], **options)


@pytest.mark.parametrize("grad_zq", [np.ones((4, 2)), np.ones((3, 3)), np.ones(12), np.ones((4, 3), np.int64)])
def test_bad_grad_zq_raises(xp, grad_zq):
    _, _, _, cache = ibq.ibq_forward(asxp(xp, np.ones((4, 3))), asxp(xp, np.ones((5, 3))))
    with pytest.raises((ValueError, TypeError), match="grad_zq"):
        ibq.ibq_backward(cache, asxp(xp, grad_zq))

"""Bad and awkward input for every public function of the array-API files, on every backend (issue 17).

The contract (arrays.py, DESIGN.md): a public function returns the right answer or raises ValueError
(a bad value) or TypeError (a bad type) whose message starts with the name of the argument at fault.

Each CASE is a valid call built from a drawn problem (sizes, dtype, seed). `test_spoiled_argument_*`
spoils one argument in one way (every way that applies to it, one parametrization each) and asserts the
refusal and the name; hypothesis draws the sizes, the dtype and where the spoiled element sits. The
other tests hold the answers of awkward but valid calls to a brute force: NumPy scalars for Python
numbers, half-precision inputs, empty batches, data far from the origin, ties.
"""
import math
from typing import Callable, NamedTuple

import array_api_compat.numpy
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from array_api_compat import device
from hypothesis import strategies as st

import arrays
import hilbert
import hyperbolic as hb
import ibq
import resize
import vocabulary
import vq
from conftest import asxp, to_numpy

# ----------------------------------------------------------------------------- the valid calls


class Case(NamedTuple):
    fn: Callable
    make: Callable  # make(p, put) -> kwargs; numpy arrays in it go through put (numpy -> xp)
    arrays: dict  # argument -> the spoils that must be refused
    numbers: dict  # argument -> bad values (each must be refused)


class Problem(NamedTuple):
    rng: np.random.Generator
    n: int
    k: int
    d: int
    dtype: type


FLOAT = ("nan", "inf", "int", "bool", "complex", "list")
MATRIX = FLOAT + ("scalar", "extra_axis", "huge")
COUNTS = ("nan", "inf", "bool", "complex", "list", "negative")  # integer counts are counts too
INDEX = ("float", "bool", "negative", "too_big", "list", "extra_axis")
POINTS = ("nan", "inf", "int", "bool", "complex", "list", "scalar", "no_width", "outside")
COUNT = (0, -1, 1.5, True, "2", math.nan)  # refused as a count >= 1
SIZE_LIKE = (-1, 1.5, True, "2", None)
RATE = (-0.5, math.nan, math.inf, True, "0.5")  # refused as a number >= 0
CURV = (0.0, -1.0, math.nan, math.inf, True, "1")


def codes(p, rows=None, scale=1.0):
    return (p.rng.standard_normal((rows or p.k, p.d)) * scale).astype(p.dtype)


def ball(p, rows, dim=None):
    """Points well inside the unit ball."""
    x = p.rng.standard_normal((rows, dim or p.d))
    return (0.7 * x / (1 + np.linalg.norm(x, axis=1, keepdims=True))).astype(p.dtype)


def ids(p, rows, high):
    return p.rng.integers(0, high, rows).astype(np.int64)


def edges(p, n_nodes):
    u = np.arange(n_nodes - 1)
    return np.stack([u, u + 1], axis=1).astype(np.int64)  # a path: every node has a neighbour


def forward_cache(forward):
    def make(p, put):
        return dict(cache=forward(put(codes(p, p.n)), put(codes(p))).cache, grad_zq=codes(p, p.n), grad_loss=1.0)
    return make


def index_of(p, put):
    return resize.block_index(put(codes(p)), 2, method="hilbert")


CASES = {
    "vq.nearest": Case(vq.nearest, lambda p, put: dict(z=codes(p, p.n), codebook=codes(p)),
                       dict(z=MATRIX + ("width", "other"), codebook=MATRIX + ("width", "other", "empty")),
                       dict(max_block_bytes=COUNT)),
    "vq.usage": Case(vq.usage, lambda p, put: dict(idx=ids(p, p.n, p.k), k=p.k), dict(idx=INDEX[:-1]),  # any shape
                     dict(k=COUNT)),
    "vq.perplexity": Case(vq.perplexity, lambda p, put: dict(counts=np.arange(p.k).astype(p.dtype)),
                          dict(counts=COUNTS + ("scalar", "extra_axis")), {}),
    "vq.vq_forward": Case(vq.vq_forward, lambda p, put: dict(z=codes(p, p.n), codebook=codes(p), beta=0.25),
                          dict(z=MATRIX + ("width", "other"), codebook=MATRIX + ("width", "other", "empty")),
                          dict(beta=RATE, max_block_bytes=COUNT)),
    "vq.vq_backward": Case(vq.vq_backward, forward_cache(vq.vq_forward),
                           dict(grad_zq=("int", "bool", "complex", "list", "extra_axis", "width", "rows", "other")),
                           dict(grad_loss=(True, "1", None))),
    "vq.kmeans": Case(vq.kmeans, lambda p, put: dict(x=codes(p, p.n + p.k), k=p.k, weights=np.ones(p.n + p.k, p.dtype)),
                      dict(x=MATRIX + ("empty", "other"), weights=FLOAT + ("rows", "extra_axis", "negative", "other")),
                      dict(k=COUNT + (10**6,), iters=SIZE_LIKE, seed=SIZE_LIKE)),
    "vq.ema_state": Case(vq.ema_state, lambda p, put: dict(codebook=codes(p)), dict(codebook=MATRIX + ("empty",)), {}),
    "vq.ema_update": Case(vq.ema_update, lambda p, put: dict(state=vq.ema_state(put(codes(p))), z=codes(p, p.n),
                                                             idx=ids(p, p.n, p.k)),
                          dict(z=MATRIX + ("width", "rows", "other"), idx=INDEX + ("rows", "other")),
                          dict(decay=RATE + (1.5,), eps=RATE, dead_below=RATE, seed=SIZE_LIKE)),
    "ibq.ibq_forward": Case(ibq.ibq_forward,
                            lambda p, put: dict(z=codes(p, p.n), codebook=codes(p), entropy_weight=0.05),
                            dict(z=MATRIX + ("width", "other"), codebook=MATRIX + ("width", "other", "empty")),
                            dict(beta=RATE, entropy_weight=RATE, temperature=CURV, sample_weight=RATE,
                                 batch_weight=RATE, max_block_bytes=COUNT)),
    "ibq.ibq_backward": Case(ibq.ibq_backward, forward_cache(ibq.ibq_forward),
                             dict(grad_zq=("int", "bool", "complex", "list", "extra_axis", "width", "rows", "other")),
                             dict(grad_loss=(True, "1", None))),
    "hyperbolic.project": Case(hb.project, lambda p, put: dict(x=codes(p, p.n)),
                               dict(x=("nan", "inf", "int", "bool", "complex", "list", "scalar", "no_width")),
                               dict(c=CURV, eps=(0.0, 1.0, -1.0, math.nan, True))),
    "hyperbolic.conformal_factor": Case(hb.conformal_factor, lambda p, put: dict(x=ball(p, p.n)), dict(x=POINTS),
                                        dict(c=CURV)),
    "hyperbolic.riemannian_gradient": Case(hb.riemannian_gradient,
                                           lambda p, put: dict(x=ball(p, p.n), grad=codes(p, p.n)),
                                           dict(x=POINTS + ("other",), grad=FLOAT + ("width", "other")), dict(c=CURV)),
    "hyperbolic.mobius_add": Case(hb.mobius_add, lambda p, put: dict(x=ball(p, p.n), y=ball(p, p.n)),
                                  dict(x=POINTS + ("other",), y=POINTS + ("width", "other")), dict(c=CURV)),
    "hyperbolic.expmap0": Case(hb.expmap0, lambda p, put: dict(v=codes(p, p.n)),
                               dict(v=("nan", "inf", "int", "bool", "complex", "list", "scalar", "no_width")),
                               dict(c=CURV)),
    "hyperbolic.expmap": Case(hb.expmap, lambda p, put: dict(x=ball(p, p.n), v=codes(p, p.n)),
                              dict(x=POINTS + ("other",), v=FLOAT + ("width", "other")), dict(c=CURV)),
    "hyperbolic.logmap0": Case(hb.logmap0, lambda p, put: dict(x=ball(p, p.n)), dict(x=POINTS), dict(c=CURV)),
    "hyperbolic.distance": Case(hb.distance, lambda p, put: dict(x=ball(p, p.n), y=ball(p, p.n)),
                                dict(x=POINTS + ("other",), y=POINTS + ("width", "other")), dict(c=CURV)),
    "hyperbolic.distance_grad": Case(hb.distance_grad, lambda p, put: dict(x=ball(p, p.n), y=ball(p, p.n)),
                                     dict(x=POINTS + ("other",), y=POINTS + ("width", "other")), dict(c=CURV)),
    "hyperbolic.fit": Case(hb.fit, lambda p, put: dict(edges=edges(p, p.k), n_nodes=p.k, dim=2, epochs=1, burn_in=0,
                                                       negatives=1, weights=np.ones(p.k - 1), progress=False),
                           dict(edges=INDEX + ("width", "other"), weights=("nan", "inf", "negative", "rows", "other")),
                           dict(n_nodes=COUNT + (1,), dim=COUNT, epochs=SIZE_LIKE, lr=CURV, negatives=COUNT,
                                c=CURV, batch_size=COUNT, seed=SIZE_LIKE)),
    "hyperbolic.reconstruction": Case(hb.reconstruction,
                                      lambda p, put: dict(embedding=ball(p, p.k), edges=edges(p, p.k)),
                                      dict(embedding=POINTS + ("other",), edges=INDEX + ("width", "other")),
                                      dict(c=CURV, max_block_bytes=COUNT)),
    "hilbert.encode": Case(hilbert.encode, lambda p, put: dict(coords=ids(p, (p.n, p.d), 16), bits=4),
                           dict(coords=INDEX + ("scalar",)), dict(bits=COUNT + (32,))),
    "hilbert.decode": Case(hilbert.decode,
                           lambda p, put: dict(words=to_numpy(hilbert.encode(put(ids(p, (p.n, p.d), 16)), 4)),
                                               n=p.d, bits=4),
                           dict(words=("float", "bool", "list", "extra_axis", "width")),
                           dict(n=COUNT, bits=COUNT + (32,))),
    "hilbert.lexsort_rows": Case(hilbert.lexsort_rows, lambda p, put: dict(words=ids(p, (p.n, 2), 5)),
                                 dict(words=("float", "bool", "list", "extra_axis")), {}),
    "hilbert.to_grid": Case(hilbert.to_grid, lambda p, put: dict(x=codes(p, p.n), bits=4),
                            dict(x=MATRIX), dict(bits=COUNT + (32,), bounds=((1.0, 0.0), (math.nan, 1.0), "ab", 3))),
    "hilbert.order": Case(hilbert.order, lambda p, put: dict(x=codes(p, p.n + 1), bits=4, dims=1),
                          dict(x=MATRIX), dict(bits=COUNT + (32,), dims=COUNT + (10**6,))),
    "hilbert.locality": Case(hilbert.locality, lambda p, put: dict(x=codes(p, p.n + 2), perm=np.arange(p.n + 2), k=1),
                             dict(x=MATRIX + ("rows", "other"),
                                  perm=("float", "bool", "list", "rows", "repeat", "other")),
                             dict(k=COUNT, window=COUNT)),
    "resize.cooccurrence": Case(resize.cooccurrence,
                                lambda p, put: dict(tokens=ids(p, (2, p.d + 1, p.d + 1), p.k), k=p.k),
                                dict(tokens=INDEX + ("scalar",)), dict(k=COUNT, window=COUNT)),
    "resize.enhance": Case(resize.enhance, lambda p, put: dict(codebook=codes(p), embedding=ball(p, p.k, 2),
                                                               seen=np.arange(p.k) % 2 == 0),
                           dict(codebook=MATRIX + ("other",), embedding=POINTS + ("rows", "other"),
                                seen=("float", "rows", "other")),
                           dict(weight=RATE, unseen=("uniformly", 1), seed=SIZE_LIKE)),
    "resize.block_index": Case(resize.block_index, lambda p, put: dict(codebook=codes(p), blocks=2, method="hilbert"),
                               dict(codebook=MATRIX + ("empty",)),
                               dict(blocks=COUNT + (10**6,), method=("hilbertian", None), seed=SIZE_LIKE)),
    "resize.block_search": Case(resize.block_search,
                                lambda p, put: dict(z=codes(p, p.n), codebook=codes(p), index=index_of(p, put),
                                                    images=ids(p, p.n, p.n)),
                                dict(z=MATRIX + ("width", "other"), codebook=MATRIX + ("width", "rows", "other"),
                                     images=INDEX + ("rows", "other")),
                                dict(rule=("distances", None), probes=COUNT + (3,), max_block_bytes=COUNT)),
    "resize.extend": Case(resize.extend, lambda p, put: dict(codebook=codes(p), k=2, perm=np.arange(p.k)),
                          dict(codebook=MATRIX + ("other",), perm=("float", "bool", "list", "rows", "repeat", "other")),
                          dict(k=COUNT, rule=("dots", None))),
    "vocabulary.shrink_vocabulary": Case(vocabulary.shrink_vocabulary,
                                         lambda p, put: dict(codebook=codes(p), size=p.k - 1, method="hilbert",
                                                             usage=np.ones(p.k, p.dtype), order=np.arange(p.k)),
                                         dict(codebook=MATRIX + ("other",), usage=COUNTS + ("rows", "other"),
                                              order=("float", "bool", "list", "rows", "repeat", "other")),
                                         dict(size=COUNT + (10**6,), method=("hilbertian", None), seed=SIZE_LIKE)),
    "vocabulary.grow_vocabulary": Case(vocabulary.grow_vocabulary,
                                       lambda p, put: dict(codebook=codes(p), size=2 * p.k, method="split", noise=0.1),
                                       dict(codebook=MATRIX),  # its only array: no other to mix with
                                       dict(size=SIZE_LIKE + (1,), method=("splits", None), noise=RATE,
                                            seed=SIZE_LIKE)),
}

# ----------------------------------------------------------------------------- the spoils


def _one(a, rng, value):
    a = np.array(a, copy=True)
    if a.size:
        a.flat[rng.integers(a.size)] = value
    return a


def _outside(a):
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    return (1.5 * a / np.maximum(norm, 1e-3) + (norm == 0) * 1.5 / math.sqrt(a.shape[-1])).astype(a.dtype)


def _huge(a):
    big = math.sqrt(np.finfo(a.dtype).max) * 2  # its square overflows
    return _one(a, np.random.default_rng(0), big)


def _width(a):
    return a[..., :-1] if a.shape[-1] > 1 else np.concatenate([a, a], axis=-1)


def _rows(a):
    return a[:-1] if len(a) > 1 else np.concatenate([a, a])


SPOILS = {  # name -> (spoil(numpy value, rng, k), the exception it must raise)
    "nan": (lambda a, rng, k: _one(a, rng, np.nan), ValueError),
    "inf": (lambda a, rng, k: _one(a, rng, -np.inf), ValueError),
    "int": (lambda a, rng, k: np.round(a * 3).astype(np.int64), TypeError),
    "bool": (lambda a, rng, k: a > 0, TypeError),
    "complex": (lambda a, rng, k: a.astype(np.complex64), TypeError),
    "float": (lambda a, rng, k: a.astype(np.float64), TypeError),
    "list": (lambda a, rng, k: a.tolist(), TypeError),
    "scalar": (lambda a, rng, k: a.reshape(-1)[0], ValueError),
    "extra_axis": (lambda a, rng, k: a[None], ValueError),
    "no_width": (lambda a, rng, k: a[..., :0], ValueError),
    "width": (lambda a, rng, k: _width(a), ValueError),
    "rows": (lambda a, rng, k: _rows(a), ValueError),
    "empty": (lambda a, rng, k: a[:0], ValueError),
    "huge": (lambda a, rng, k: _huge(a), ValueError),
    "negative": (lambda a, rng, k: _one(a, rng, -1), ValueError),
    "too_big": (lambda a, rng, k: _one(a, rng, k), ValueError),
    "repeat": (lambda a, rng, k: np.concatenate([a[:1], a[:-1]]), ValueError),
    "outside": (lambda a, rng, k: _outside(a), ValueError),
    "other": (None, TypeError),  # the argument from the other library: torch beside NumPy, NumPy beside torch
}


def other_library(xp, a):
    if "torch" in xp.__name__:
        return np.asarray(a)
    return torch.asarray(np.asarray(a))


def bound(arg, kw):
    """The end of an integer argument's range [0, end): too_big sets one element to it."""
    if arg == "images":
        return len(kw["images"])  # an image id in [0, N)
    for name, end in (("k", lambda v: v), ("bits", lambda v: 2**v), ("n_nodes", lambda v: v),
                      ("state", lambda v: v.codebook.shape[0]), ("embedding", len), ("codebook", len)):
        if name in kw and not (name == "k" and "codebook" in kw):  # extend's k is a factor, not a range
            return end(kw[name])
    raise AssertionError(f"no range known for {arg}")


@st.composite
def problems(draw):
    n, k, d = draw(st.integers(1, 5)), draw(st.integers(3, 6)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return Problem(np.random.default_rng(draw(st.integers(0, 2**32 - 1))), n, k, d, dtype)


def build(case, p, xp):
    put = (lambda a: asxp(xp, a))
    kw = case.make(p, put)
    return {name: put(v) if isinstance(v, np.ndarray) else v for name, v in kw.items()}, kw


def refusal(fn, kwargs, error, names):
    """None if fn(**kwargs) raises `error` whose message starts with one of `names` (`name: ...`,
    `name.field: ...`); else what happened instead."""
    try:
        fn(**kwargs)
    except (ValueError, TypeError) as e:
        head = str(e).split(":")[0]
        if not isinstance(e, error):
            return f"{type(e).__name__} ({e}), not {error.__name__}"
        return None if any(name in head for name in names) else f"message {str(e)!r} names none of {names}"
    except Exception as e:  # noqa: BLE001 -- what the contract forbids: an error from deep inside
        return f"{type(e).__name__}: {e}"
    return "no error"


RELATIONAL = ("width", "rows", "other")  # a mismatch between two arguments may name either


@pytest.mark.parametrize("case_name", CASES)
@settings(max_examples=8)
@given(p=problems())
def test_every_spoiled_argument_is_refused_naming_it(xp, case_name, p):
    """Every spoil of every argument of the case (an array spoiled one way, or a bad number)."""
    case, wrong = CASES[case_name], []
    kwargs, raw = build(case, p, xp)
    for arg, spoils in case.arrays.items():
        for spoil in spoils:
            spoil_fn, error = SPOILS[spoil]
            if spoil == "other":
                bad = other_library(xp, raw[arg])
            else:
                bad = spoil_fn(raw[arg], p.rng, bound(arg, raw) if spoil == "too_big" else None)
                bad = bad if spoil == "list" else asxp(xp, bad)
            names = list(kwargs) if spoil in RELATIONAL else [arg]
            why = refusal(case.fn, {**kwargs, arg: bad}, error, names)
            wrong += [] if why is None else [f"{arg} {spoil}: {why}"]
    for arg, values in case.numbers.items():
        for value in values:
            why = refusal(case.fn, {**kwargs, arg: value}, (ValueError, TypeError), [arg])
            wrong += [] if why is None else [f"{arg}={value!r}: {why}"]
    assert not wrong, "\n".join(wrong)


# ----------------------------------------------------------------------------- awkward but valid


def outcome(fn, kwargs):
    """("refused", exception type, the name its message starts with) or ("answer", NumPy arrays)."""
    try:
        result = fn(**kwargs)
    except (ValueError, TypeError) as e:
        return ("refused", type(e), str(e).split(":")[0])
    parts = result if isinstance(result, tuple) else (result,)
    return ("answer", [to_numpy(x) for x in parts if not isinstance(x, tuple)])  # caches are tuples: skipped


def assert_same_outcome(actual, expected):
    assert actual[0] == expected[0], f"{actual} vs {expected}"
    if actual[0] == "refused":
        assert actual[1:] == expected[1:]
        return
    assert len(actual[1]) == len(expected[1])
    for a, b in zip(*(o[1] for o in (actual, expected))):
        np.testing.assert_array_equal(a, b)


def numpy_scalars(kwargs):
    """Every Python number of the call as the NumPy scalar of the same value."""
    def cast(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return v
        return np.int64(v) if isinstance(v, int) else (np.float32(v) if float(np.float32(v)) == v else np.float64(v))
    return {k: cast(v) for k, v in kwargs.items()}


@pytest.mark.parametrize("case_name", CASES)
@settings(max_examples=3)
@given(p=problems())
def test_numpy_scalars_are_numbers(xp, case_name, p):
    """np.int64(8) and np.float32(0.5) mean what 8 and 0.5 mean (NumPy code passes them around)."""
    case = CASES[case_name]
    kwargs, _ = build(case, p, xp)
    expected = outcome(case.fn, kwargs)
    assert expected[0] == "answer", expected
    assert_same_outcome(outcome(case.fn, numpy_scalars(kwargs)), expected)


EMPTIABLE = [(c, a) for c, case in CASES.items() for a, spoils in case.arrays.items()
             if "extra_axis" in spoils or "rows" in spoils or "scalar" in spoils]


@pytest.mark.parametrize("case_name, arg", EMPTIABLE, ids=["-".join(t) for t in EMPTIABLE])
@settings(max_examples=2)
@given(p=problems())
def test_empty_input_is_answered_or_refused_alike_on_every_backend(xp, case_name, arg, p):
    """No rows: an empty answer or a refusal naming the argument, and the same on every backend as
    on NumPy (torch's `x.size` is a method: a check written with it passes empty tensors)."""
    case = CASES[case_name]
    seed = int(p.rng.integers(2**32))
    runs = []
    for ns in (xp, array_api_compat.numpy):
        kwargs, raw = build(case, p._replace(rng=np.random.default_rng(seed)), ns)
        runs.append(outcome(case.fn, {**kwargs, arg: asxp(ns, raw[arg][:0])}))
    if runs[1][0] == "refused":
        assert arg in runs[1][2] or runs[1][1] is ValueError, runs[1]
    assert_same_outcome(*runs)


HALF = [("vq.nearest", lambda z, cb: vq.nearest(z, cb)),
        ("vq.vq_forward", lambda z, cb: vq.vq_forward(z, cb).idx),
        ("ibq.ibq_forward", lambda z, cb: ibq.ibq_forward(z, cb, entropy_weight=0.05).idx),
        ("resize.block_search", lambda z, cb: resize.block_search(
            z, cb, resize.block_index(cb, 2, method="lsh"), images=arrays.namespace(z=z).zeros(
                z.shape[0], dtype=arrays.namespace(z=z).int64, device=device(z)), exact=True).idx)]


@pytest.mark.parametrize("name, codes_of", HALF, ids=[h[0] for h in HALF])
@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@given(seed=st.integers(0, 2**32 - 1), offset=st.sampled_from([0.0, 1.0, 30.0]))
def test_half_precision_inputs_get_the_codes_of_their_float32_values(xp, name, codes_of, half, seed, offset):
    """float16 / bfloat16 latents and codes (as autocast hands them over) are searched in float32:
    the codes found are those of the same values in float32, also away from the origin."""
    if "strict" in xp.__name__ or (half == "bfloat16" and "torch" not in xp.__name__):
        return  # the standard has no half precision; bfloat16 is torch's alone
    rng = np.random.default_rng(seed)
    z, cb = rng.standard_normal((12, 4)) + offset, rng.standard_normal((6, 4)) + offset
    low = [torch.asarray(a, dtype=getattr(torch, half)) for a in (z, cb)]
    if "torch" in xp.__name__:
        low = [t.to(torch.get_default_device()) for t in low]
        wide = [t.float() for t in low]
    else:
        low = [asxp(xp, to_numpy(t.float()).astype(np.float16)) for t in low]  # float16 values, exactly
        wide = [asxp(xp, to_numpy(t).astype(np.float32)) for t in low]
    np.testing.assert_array_equal(to_numpy(codes_of(*low)), to_numpy(codes_of(*wide)))

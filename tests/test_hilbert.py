"""hilbert.py against the `hilbertcurve` package (Skilling 2004) and the curve's own properties:
the public contract only, on every backend; no test reads a private bit layout."""
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from hilbertcurve.hilbertcurve import HilbertCurve
from hypothesis import given, settings, strategies as st

import hilbert

from conftest import asxp, dtype_name, to_numpy


def to_int(words):
    """Rows of 32-bit words (most significant first) -> Python ints."""
    return [sum(int(v) << (32 * (len(r) - 1 - k)) for k, v in enumerate(r)) for r in to_numpy(words)]


def to_words(ints, n, bits):
    W = hilbert.n_words(n, bits)
    return np.array([[(h >> (32 * (W - 1 - k))) & 0xFFFFFFFF for k in range(W)] for h in ints], dtype=np.int64)


def reference(coords, bits):
    return [int(h) for h in HilbertCurve(bits, coords.shape[1]).distances_from_points(coords.tolist())]


@st.composite
def points(draw, max_total=64, max_n=8):
    n = draw(st.integers(1, max_n))
    bits = draw(st.integers(1, min(31, max_total // n)))
    N = draw(st.integers(1, 20))
    edge = st.sampled_from([0, 2**bits - 1])  # near-boundary coordinates
    c = draw(st.lists(st.lists(st.integers(0, 2**bits - 1) | edge, min_size=n, max_size=n), min_size=N, max_size=N))
    return np.array(c, dtype=np.int64), bits


@given(points())
@settings(max_examples=10)
def test_encode_equals_hilbertcurve(xp, pb):
    coords, bits = pb
    words = hilbert.encode(asxp(xp, coords), bits)
    assert dtype_name(words) == "int64" and words.shape == (coords.shape[0], hilbert.n_words(coords.shape[1], bits))
    assert to_int(words) == reference(coords, bits)


@given(points())
@settings(max_examples=10)
def test_decode_equals_hilbertcurve(xp, pb):
    coords, bits = pb
    n = coords.shape[1]
    got = hilbert.decode(asxp(xp, to_words(reference(coords, bits), n, bits)), n, bits)
    np.testing.assert_array_equal(to_numpy(got), coords)


# Shapes that reach every layout of section 2 through the public functions: rows of several
# levels then fewer (22, 3), (3, 21); fields wider than n (9, 7), (5, 12) or exactly n (2, 31),
# (1, 31); packs of one level, whole (64, 1) or over groups (33, 2), (65, 2), (70, 1), in lanes
# wider than bits (40, 3), (100, 5), (34, 17); 64-bit words through the sign bit (8, 8), (4, 16),
# (16, 4), (32, 2); the benchmark's (3, 16), (64, 4) and HyperHill's (288, 24).
SHAPES = [(22, 3), (3, 21), (9, 7), (5, 12), (2, 31), (1, 31), (33, 2), (64, 1), (65, 2), (70, 1),
          (40, 3), (100, 5), (34, 17), (8, 8), (4, 16), (16, 4), (32, 2), (3, 16), (64, 4), (288, 24)]


@pytest.mark.parametrize("n,bits", SHAPES)
def test_every_layout_equals_hilbertcurve(xp, n, bits):
    coords = np.random.default_rng(100 * n + bits).integers(0, 2**bits, (6, n))
    coords[0], coords[1] = 0, 2**bits - 1  # all-zero and all-one bits
    words = hilbert.encode(asxp(xp, coords), bits)
    assert to_int(words) == reference(coords, bits)
    np.testing.assert_array_equal(to_numpy(hilbert.decode(words, n, bits)), coords)


@pytest.mark.parametrize("n,bits", [(3, 5), (40, 3)])  # rows and packs
def test_blocks_of_points_agree_with_one_block(xp, monkeypatch, n, bits):
    coords = np.random.default_rng(5).integers(0, 2**bits, (20001, n))
    whole = to_int(hilbert.encode(asxp(xp, coords), bits))
    monkeypatch.setattr(hilbert, "BLOCK", 1)  # blocks of 8192 points: 8192, 8192, 3617 (padded)
    words = hilbert.encode(asxp(xp, coords), bits)
    assert to_int(words) == whole
    edges = np.r_[8000:8400, 16200:16600, 19990:20001]  # across both block boundaries, and the end
    assert [whole[i] for i in edges] == reference(coords[edges], bits)
    np.testing.assert_array_equal(to_numpy(hilbert.decode(words, n, bits)), coords)


@pytest.mark.parametrize("n,bits", [(8, 8), (3, 16), (40, 3), (1, 5)])  # rows, packs, one column
def test_encode_and_decode_leave_their_input_unchanged(xp, n, bits):
    """Skilling's loops and the transposes write in place on arrays of their own; the caller's
    arrays are only read (also where encode's lanes need no padding and start as a view)."""
    coords = np.random.default_rng(n).integers(0, 2**bits, (64, n))
    c = asxp(xp, coords)
    words = hilbert.encode(c, bits)
    kept = to_numpy(words).copy()
    hilbert.decode(words, n, bits)
    np.testing.assert_array_equal(to_numpy(c), coords)
    np.testing.assert_array_equal(to_numpy(words), kept)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int32"])
def test_small_integer_dtypes_are_accepted(xp, dtype):
    """Fixed bug: the range checks compared int8/int32 arrays with 2^bits and 2^32, which torch
    wrapped (refusing valid zeros) and array_api_strict refused with an OverflowError."""
    coords = np.random.default_rng(1).integers(0, 100, (10, 3))
    want = hilbert.encode(asxp(xp, coords), 31)
    np.testing.assert_array_equal(to_numpy(hilbert.encode(asxp(xp, coords, dtype), 31)), to_numpy(want))
    words = to_numpy(hilbert.encode(asxp(xp, coords), 8))  # 24 bits: fits int32
    np.testing.assert_array_equal(to_numpy(hilbert.decode(asxp(xp, words, "int32"), 3, 8)), coords)


@given(points(max_total=31 * 70, max_n=70))
@settings(max_examples=10)
def test_decode_inverts_encode(xp, pb):
    coords, bits = pb
    got = hilbert.decode(hilbert.encode(asxp(xp, coords), bits), coords.shape[1], bits)
    np.testing.assert_array_equal(to_numpy(got), coords)


SMALL = [(1, 4), (2, 1), (2, 3), (3, 3), (4, 2), (5, 2), (10, 1)]


@pytest.mark.parametrize("n,bits", SMALL)
def test_encode_is_bijection_on_small_grids(xp, n, bits):
    grid = np.array(list(itertools.product(range(2**bits), repeat=n)), dtype=np.int64)
    h = to_int(hilbert.encode(asxp(xp, grid), bits))
    assert sorted(h) == list(range(2 ** (n * bits)))


@pytest.mark.parametrize("n,bits", SMALL)
def test_consecutive_indices_are_unit_steps_exhaustive(xp, n, bits):
    h = np.arange(2 ** (n * bits), dtype=np.int64)[:, None]
    coords = to_numpy(hilbert.decode(asxp(xp, h), n, bits))
    assert (np.abs(np.diff(coords, axis=0)).sum(axis=1) == 1).all()
    assert (coords[0] == 0).all()  # the curve starts at the origin


@given(st.integers(1, 70), st.integers(1, 31), st.data())
@settings(max_examples=10)
def test_consecutive_indices_are_unit_steps_large(xp, n, bits, data):
    h = data.draw(st.lists(st.integers(0, 2 ** (n * bits) - 2), min_size=1, max_size=8))
    a = hilbert.decode(asxp(xp, to_words(h, n, bits)), n, bits)
    b = hilbert.decode(asxp(xp, to_words([v + 1 for v in h], n, bits)), n, bits)  # index + 1, carried
    assert (np.abs(to_numpy(a) - to_numpy(b)).sum(axis=1) == 1).all()


def test_words_sort_rows_in_curve_order(xp):
    coords = np.random.default_rng(0).integers(0, 16, (300, 20))  # 80-bit indices, 3 words
    words = hilbert.encode(asxp(xp, coords), 4)
    perm = to_numpy(hilbert.lexsort_rows(words))
    h = to_int(words)
    assert [h[i] for i in perm] == sorted(h)


@given(st.integers(0, 30), st.integers(1, 4), st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_lexsort_rows_equals_numpy_lexsort(xp, N, W, seed):
    """Any integers, negative ones and ties included (few distinct values), and no rows at all."""
    words = np.random.default_rng(seed).integers(-3, 3, (N, W))
    want = np.lexsort(words.T[::-1])  # np.lexsort: last key most significant; stable
    np.testing.assert_array_equal(to_numpy(hilbert.lexsort_rows(asxp(xp, words))), want)


def clustered(seed, K=300, d=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (8, d))
    return centres[rng.integers(0, 8, K)] + rng.normal(0, 1, (K, d))


@given(st.integers(0, 2**16), st.sampled_from([None, 1, 2, 6]), st.integers(1, 12), st.booleans())
@settings(max_examples=10)
def test_order_is_deterministic_permutation(xp, seed, dims, bits, ties):
    x = clustered(seed, K=60)
    if ties:
        x[10:30] = x[0]  # duplicates share a cell: stable sort keeps their input order
    x = asxp(xp, x)
    p = hilbert.order(x, bits=bits, dims=dims)
    assert dtype_name(p) == "int64"
    p = to_numpy(p)
    np.testing.assert_array_equal(np.sort(p), np.arange(60))
    np.testing.assert_array_equal(to_numpy(hilbert.order(x, bits=bits, dims=dims)), p)
    if ties:
        pos = [i for i in p if 10 <= i < 30]
        assert pos == sorted(pos)


@pytest.mark.parametrize("dims", [None, 2])
def test_order_beats_random_on_clustered_data(xp, dims):
    x = asxp(xp, clustered(1))
    h = hilbert.locality(x, hilbert.order(x, bits=8, dims=dims), k=5)
    r = hilbert.locality(x, asxp(xp, np.random.default_rng(0).permutation(300)), k=5)
    assert h.step < r.step and h.knn_recall > r.knn_recall


def test_locality_equals_brute_force(xp):
    x = clustered(2, K=50)
    perm = np.random.default_rng(3).permutation(50)
    got = hilbert.locality(asxp(xp, x), asxp(xp, perm), k=4, window=6, max_block_bytes=1000)
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    place = np.argsort(perm)
    nb = np.argsort(d, axis=1, kind="stable")[:, :4]
    recall = (np.abs(place[nb] - place[:, None]) <= 6).mean()
    step = np.linalg.norm(np.diff(x[perm], axis=0), axis=1).mean()
    np.testing.assert_allclose([got.step, got.knn_recall], [step, recall], rtol=1e-10)


def test_order_accepts_float16_and_scale(xp):
    x = clustered(4, K=40)
    p = to_numpy(hilbert.order(asxp(xp, x), dims=3))
    np.testing.assert_array_equal(to_numpy(hilbert.order(asxp(xp, 8.0 * x), dims=3)), p)  # exact scaling
    if xp.__name__ != "array_api_strict":  # the standard has no float16
        assert sorted(to_numpy(hilbert.order(asxp(xp, x, "float16")))) == list(range(40))


@pytest.mark.parametrize("dims", [None, 2])
def test_order_of_huge_float32_values_is_the_order_of_small_ones(xp, dims):
    """Fixed bug: the PCA's covariance, a sum over K = 2000 rows, overflowed float32 for values
    below their product bound (|x| ~ 2e18): silently wrong axes, or LinAlgError. Scaling by a
    power of two changes no rounding, so the order must not change."""
    x = np.random.default_rng(0).normal(0, 1, (2000, 6)).astype(np.float32)
    want = to_numpy(hilbert.order(asxp(xp, x), dims=dims))
    np.testing.assert_array_equal(to_numpy(hilbert.order(asxp(xp, x * np.float32(2**59)), dims=dims)), want)


@given(st.integers(1, 31), st.sampled_from(["float32", "float64"]), st.booleans(), st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_order_sorts_the_encoded_grid(xp, bits, dtype, fixed, seed):
    """order = lexsort_rows(encode(to_grid(x))). Fixed bug: in float32 at bits >= 25 the last cell
    rounded up to 2^bits, and order failed with a message naming `coords`, an argument its caller
    never passed (with encode unchecked inside order, it would now be a silent wrong answer)."""
    x = asxp(xp, np.tanh(clustered(seed % 100, K=50, d=3) / 10), dtype)
    bounds = (-1.0, 1.0) if fixed else None
    want = hilbert.lexsort_rows(hilbert.encode(hilbert.to_grid(x, bits, bounds=bounds), bits))
    np.testing.assert_array_equal(to_numpy(hilbert.order(x, bits=bits, bounds=bounds)), to_numpy(want))


finite = st.floats(-1e6, 1e6, allow_nan=False, width=64) | st.sampled_from([0.0, -0.0, 1e-300, -1e-300])


@given(st.integers(1, 31), st.floats(-100, 100), st.floats(1e-3, 100), st.sampled_from(["float32", "float64"]),
       st.lists(finite, min_size=1, max_size=24), st.data())
@settings(max_examples=25)
def test_fixed_grid_is_the_formula(xp, bits, lo, width, dtype, values, data):
    """cell = floor((x - lo) / (hi - lo) · 2^bits), clipped to [0, 2^bits - 1], in x's dtype: values
    far outside the bounds, on them and at the edges included."""
    hi = lo + width
    values += data.draw(st.lists(st.sampled_from([lo, hi, np.nextafter(hi, -np.inf), lo - 1e6]), max_size=4))
    x = np.array(values, dtype=dtype).reshape(-1, 1)
    t = (x - x.dtype.type(lo)) / x.dtype.type(hi - lo) * x.dtype.type(2**bits)
    want = np.minimum(np.floor(np.clip(t, 0, 2**bits)).astype(np.int64), 2**bits - 1)  # 2^31 - 1: no float32
    got = to_numpy(hilbert.to_grid(asxp(xp, x), bits, bounds=(lo, hi)))
    assert dtype_name(got) == "int64"
    np.testing.assert_array_equal(got, want)


@given(st.integers(1, 31), st.sampled_from(["float32", "float64"]), st.integers(0, 2**32 - 1), st.booleans())
@settings(max_examples=15)
def test_fitted_grid_is_the_formula(xp, bits, dtype, seed, flat):
    """cell = floor((x - min) / span · 2^bits) clipped to 2^bits - 1, min per axis, span the largest
    extent of any axis (one scale: cells are cubes); a constant axis, or all points equal, in cell 0."""
    x = (clustered(seed % 100, K=30, d=3) * 10.0 ** (seed % 7 - 3)).astype(dtype)
    if flat:
        x[:, 1] = x[0, 1]
    lo, span = x.min(axis=0), (x.max(axis=0) - x.min(axis=0)).max()
    want = np.minimum(np.floor((x - lo) / span * x.dtype.type(2**bits)).astype(np.int64), 2**bits - 1)
    np.testing.assert_array_equal(to_numpy(hilbert.to_grid(asxp(xp, x), bits)), want)
    assert not to_numpy(hilbert.to_grid(asxp(xp, x[:1] + 0 * x), bits)).any()


@given(st.integers(1, 31), st.integers(-64, 64), st.integers(-3, 4), st.sampled_from(["float32", "float64"]),
       st.lists(st.integers(-2**14, 2**14), min_size=1, max_size=30))
@settings(max_examples=25)
def test_fixed_grid_equals_exact_arithmetic(xp, bits, lo16, e, dtype, ks):
    """On values that every float dtype holds exactly (multiples of 2^-10, bounds lo and lo + 2^e),
    the cells are exactly HyperHill's floor((x - lo) / stride), stride = (hi - lo) / 2^bits, computed
    with fractions; below lo: cell 0; at hi and above: cell 2^bits - 1."""
    lo, hi = Fraction(lo16, 16), Fraction(lo16, 16) + Fraction(2) ** e
    xs = [Fraction(k, 2**10) for k in ks] + [lo, hi]
    stride = (hi - lo) / 2**bits
    want = [min(max((v - lo) // stride, 0), 2**bits - 1) for v in xs]
    x = np.array([float(v) for v in xs], dtype=dtype)[:, None]
    got = hilbert.to_grid(asxp(xp, x), bits, bounds=(float(lo), float(hi)))
    assert to_numpy(got)[:, 0].tolist() == want


def test_fixed_grid_order_does_not_depend_on_the_other_points(xp):
    """With bounds the grid is the data's own: the order of a subset is the order of the whole
    restricted to it (a grid fitted to the data moves with its min and span)."""
    x = np.tanh(clustered(5, K=200, d=5) / 10)
    whole = to_numpy(hilbert.order(asxp(xp, x), bits=10, bounds=(-1, 1)))
    part = to_numpy(hilbert.order(asxp(xp, x[:120]), bits=10, bounds=(-1, 1)))
    np.testing.assert_array_equal(part, whole[whole < 120])


def test_hyperhill_setting_equals_hilbertcurve(xp):
    """HyperHill's Alg. 3: all n = 288 dimensions at p = 24 bits on the grid (e + 1) / stride; the
    order is that of hilbertcurve's indices of the cells (6912-bit integers)."""
    e = np.random.default_rng(7).uniform(-1, 1, (40, 288))
    e[0], e[1] = -1.0, 1.0 - 1e-12  # the first and the last cell on every axis
    perm = to_numpy(hilbert.order(asxp(xp, e), bits=24, dims=None, bounds=(-1.0, 1.0)))
    cells = np.floor((e + 1) / (2 / 2**24)).astype(np.int64)
    h = reference(cells, 24)
    assert perm.tolist() == sorted(range(40), key=lambda i: h[i])


def test_numpy_scalars_are_numbers(xp):
    x, coords = asxp(xp, clustered(6, K=30)), asxp(xp, np.arange(12).reshape(6, 2))
    want = to_numpy(hilbert.order(x, bits=8, dims=2))
    np.testing.assert_array_equal(to_numpy(hilbert.order(x, bits=np.int64(8), dims=np.int32(2))), want)
    np.testing.assert_array_equal(to_numpy(hilbert.encode(coords, np.int64(4))), to_numpy(hilbert.encode(coords, 4)))
    np.testing.assert_array_equal(to_numpy(hilbert.to_grid(x, np.int64(6), bounds=(np.float32(-1), np.float64(1)))),
                                  to_numpy(hilbert.to_grid(x, 6, bounds=(-1, 1))))
    perm = hilbert.order(x)
    assert hilbert.locality(x, perm, k=np.int64(3), window=np.int64(4)) == hilbert.locality(x, perm, k=3, window=4)


G = np.array([[0, 1], [2, 3]], dtype=np.int64)
F = np.zeros((3, 2))
BAD = [
    (lambda xp: hilbert.encode(asxp(xp, G), 1), ValueError, "coords"),  # 2 and 3 >= 2^1
    (lambda xp: hilbert.encode(asxp(xp, -G), 4), ValueError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, G, "float64"), 4), TypeError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, G > 0), 4), TypeError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, np.zeros((0, 2), np.int64)), 4), ValueError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, G[0]), 4), ValueError, "coords"),
    (lambda xp: hilbert.encode(G.tolist(), 4), TypeError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, G), 0), ValueError, "bits"),
    (lambda xp: hilbert.encode(asxp(xp, G), 32), ValueError, "bits"),
    (lambda xp: hilbert.encode(asxp(xp, G), 4.0), TypeError, "bits"),
    (lambda xp: hilbert.encode(asxp(xp, G), True), TypeError, "bits"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 2), np.int64)), 2, 8), ValueError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.full((3, 1), 2**16)), 2, 8), ValueError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.full((3, 1), -1)), 2, 8), ValueError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((0, 1), np.int64)), 2, 8), ValueError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 1), np.float64)), 2, 8), TypeError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 1), np.int64)), 0, 8), ValueError, "n"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 1), np.int64)), 2.0, 8), TypeError, "n"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 1), np.int64)), 2, 40), ValueError, "bits"),
    (lambda xp: hilbert.lexsort_rows(asxp(xp, F)), TypeError, "words"),
    (lambda xp: hilbert.order(asxp(xp, G), bits=4), TypeError, "x"),
    (lambda xp: hilbert.order(asxp(xp, np.full((3, 2), np.nan)), bits=4), ValueError, "x"),
    (lambda xp: hilbert.order(asxp(xp, np.zeros((0, 2))), bits=4), ValueError, "x"),
    (lambda xp: hilbert.order(asxp(xp, np.full((3, 2), 1e300)), dims=2), ValueError, "x"),  # was LinAlgError
    (lambda xp: hilbert.order(asxp(xp, np.array([[1e300], [-1e300]]))), ValueError, "x"),  # was "coords"
    (lambda xp: hilbert.order(asxp(xp, np.full((3, 2), 1e30), "float32")), ValueError, "x"),
    (lambda xp: hilbert.order(asxp(xp, F), bits=4, dims=3), ValueError, "dims"),
    (lambda xp: hilbert.order(asxp(xp, F), bits=4, dims=1.0), TypeError, "dims"),
    (lambda xp: hilbert.order(asxp(xp, F), bits=40), ValueError, "bits"),
    (lambda xp: hilbert.order(asxp(xp, F), bounds=(1.0, -1.0)), ValueError, "bounds"),
    (lambda xp: hilbert.order(asxp(xp, F), bounds=(0.0, np.inf)), ValueError, "bounds"),
    (lambda xp: hilbert.order(asxp(xp, F), bounds=(-1e308, 1e308)), ValueError, "bounds"),  # hi - lo = inf
    (lambda xp: hilbert.order(asxp(xp, F), bounds=1.0), TypeError, "bounds"),
    (lambda xp: hilbert.order(asxp(xp, F), bounds=(0.0, "1")), TypeError, "bounds"),
    (lambda xp: hilbert.order(asxp(xp, F), dims=1, bounds=(-1, 1)), ValueError, "bounds"),
    (lambda xp: hilbert.to_grid(asxp(xp, G), 4), TypeError, "x"),
    (lambda xp: hilbert.to_grid(asxp(xp, F, "float32"), 4, bounds=(-2e38, 2e38)), ValueError, "bounds"),
    (lambda xp: hilbert.locality(asxp(xp, F), asxp(xp, np.array([0, 0, 1]))), ValueError, "perm"),
    (lambda xp: hilbert.locality(asxp(xp, F), asxp(xp, np.array([0, 1, 2])), k=3), ValueError, "k"),
    (lambda xp: hilbert.locality(asxp(xp, F), asxp(xp, np.array([0, 1, 2])), k=1, window=0), ValueError, "window"),
    (lambda xp: hilbert.locality(asxp(xp, np.full((3, 2), 1e300)), asxp(xp, np.arange(3))), ValueError, "x"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_raises_naming_argument(xp, case):
    call, exc, name = BAD[case]
    with pytest.raises(exc, match=rf"^{name}: "):
        call(xp)


def test_mixed_backends_raise_naming_the_argument(xp):
    """locality(x of one library, perm of another): a TypeError naming perm, not an error from
    deep inside the distance computation."""
    x = asxp(xp, clustered(3, K=20))
    perm = torch.arange(20) if xp.__name__.endswith("numpy") else np.arange(20)
    with pytest.raises(TypeError, match="^perm: "):
        hilbert.locality(x, perm, k=2)

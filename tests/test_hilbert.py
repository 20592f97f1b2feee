"""hilbert.py against the `hilbertcurve` package (Skilling 2004) and the curve's own properties."""
import itertools

import numpy as np
import pytest
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
    c, bits = pb
    words = hilbert.encode(asxp(xp, c), bits)
    assert dtype_name(words) == "int64" and words.shape == (c.shape[0], hilbert.n_words(c.shape[1], bits))
    assert to_int(words) == [int(h) for h in HilbertCurve(bits, c.shape[1]).distances_from_points(c.tolist())]


@given(points())
@settings(max_examples=10)
def test_decode_equals_hilbertcurve(xp, pb):
    c, bits = pb
    n = c.shape[1]
    h = HilbertCurve(bits, n).distances_from_points(c.tolist())
    got = hilbert.decode(asxp(xp, to_words(h, n, bits)), n, bits)
    np.testing.assert_array_equal(to_numpy(got), c)


# Every layout between words and lanes: rows of several levels then fewer, (22, 3) and (3, 21),
# in fields wider than n (22, 3), (3, 21), (9, 7), (5, 12), or exactly n (2, 31), (1, 31); packs
# of one level, whole (64, 1) or split over groups (33, 2), (65, 2), (70, 1), in lanes wider than
# `bits` (40, 3), (100, 5), (34, 17); rows of 64 bits, through the sign bit (8, 8), (4, 16),
# (16, 4), (32, 2).
BLOCK_SHAPES = [(22, 3), (3, 21), (9, 7), (5, 12), (2, 31), (1, 31), (33, 2), (64, 1), (65, 2),
                (70, 1), (40, 3), (100, 5), (34, 17), (8, 8), (4, 16), (16, 4), (32, 2)]


@pytest.mark.parametrize("n,bits", BLOCK_SHAPES)
def test_every_block_shape_equals_hilbertcurve(xp, n, bits):
    c = np.random.default_rng(100 * n + bits).integers(0, 2**bits, (6, n))
    c[0], c[1] = 0, 2**bits - 1  # all-zero and all-one bits
    words = hilbert.encode(asxp(xp, c), bits)
    assert to_int(words) == [int(h) for h in HilbertCurve(bits, n).distances_from_points(c.tolist())]
    np.testing.assert_array_equal(to_numpy(hilbert.decode(words, n, bits)), c)


@pytest.mark.parametrize("n,bits", [(3, 5), (40, 3)])  # rows and packs
def test_blocks_of_points_agree_with_one_block(xp, monkeypatch, n, bits):
    c = np.random.default_rng(5).integers(0, 2**bits, (20001, n))
    whole = to_int(hilbert.encode(asxp(xp, c), bits))
    monkeypatch.setattr(hilbert, "BLOCK", 1)  # blocks of 8192 points: 8192, 8192, 3617 (padded)
    words = hilbert.encode(asxp(xp, c), bits)
    assert to_int(words) == whole
    edges = np.r_[8000:8400, 16200:16600, 19990:20001]  # across both block boundaries, and the end
    want = HilbertCurve(bits, n).distances_from_points(c[edges].tolist())
    assert [whole[i] for i in edges] == [int(h) for h in want]
    np.testing.assert_array_equal(to_numpy(hilbert.decode(words, n, bits)), c)


def test_skilling_transpose_layout():
    """Skilling's example: n = 3, bits = 5, h = ABCDEFGHIJKLMNO is X[0] = ADGJM, X[1] = BEHKN,
    X[2] = CFILO; checked for every 15-bit h (10590 <-> (13, 19, 6) is hilbertcurve's instance)."""
    h = np.arange(2**15, dtype=np.int64)
    X = hilbert._words_to_rows([h], 3, 5)
    for i in range(3):
        want = [int(format(v, "015b")[i::3], 2) for v in range(2**15)]
        np.testing.assert_array_equal(X[i], want)
    assert [int(x[10590]) for x in X] == [13, 19, 6]
    np.testing.assert_array_equal(hilbert._rows_to_words(X, 5)[0], h)


@given(st.integers(1, 31), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2**32))
@settings(max_examples=10)
def test_transpose_lanes_is_the_matrix_transpose(xp, bits, groups, M, seed):
    S = hilbert._lane_bits(bits)
    L = 64 // S
    assert S >= bits and S & (S - 1) == 0
    lanes = np.random.default_rng(seed).integers(0, 2**bits, (groups, L, M, L))  # (.., row, k, lane)
    lanes[0, 0, 0, :] = 2**bits - 1  # every bit of a row set, the top lane's sign bit for S = bits
    A = np.sum(lanes << (S * np.arange(L, dtype=np.int64)), axis=-1)  # (groups, L, M) int64
    got = to_numpy(hilbert._transpose_lanes(asxp(xp, A), bits))
    want = np.sum(np.swapaxes(lanes, 1, 3) << (S * np.arange(L, dtype=np.int64)), axis=-1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(to_numpy(hilbert._transpose_lanes(asxp(xp, got), bits)), A)


int64s = st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-1, -(2**63), 2**63 - 1, 0])


@given(st.integers(0, 6), st.lists(int64s, min_size=1, max_size=8))
@settings(max_examples=15)
def test_transpose_bits_is_the_bit_matrix_transpose(xp, a, values):
    """Rows of 2^a bits: bit t·2^a + r goes to bit r·2^(6-a) + t, the sign bit included; and the
    transpose with 2^(6-a) columns undoes it."""
    R, C = 2 ** (6 - a), 2**a
    V = np.array(values, dtype=np.int64)
    got = to_numpy(hilbert._transpose_bits(asxp(xp, V), a))
    for v, g in zip(values, got.tolist()):
        u = v % 2**64
        want = sum(((u >> (t * C + r)) & 1) << (r * R + t) for t in range(R) for r in range(C))
        assert g % 2**64 == want
    np.testing.assert_array_equal(to_numpy(hilbert._transpose_bits(asxp(xp, got), 6 - a)), V)


@given(st.integers(1, 32), st.data())
@settings(max_examples=15)
def test_spread_moves_fields_to_stride_and_compact_inverts(xp, g, data):
    """c fields of g bits from stride g to stride n >= g: the rows layout's levels (g = n
    coordinates, n the field width F) and the packs' single bits (g = 1)."""
    n = data.draw(st.integers(g, 64))
    c = data.draw(st.integers(1, 64 // n))
    fields = data.draw(st.lists(st.lists(st.integers(0, 2**g - 1), min_size=c, max_size=c),
                                min_size=1, max_size=6))
    x = np.array([sum(f << (t * g) for t, f in enumerate(row)) % 2**64 for row in fields],
                 dtype=np.uint64).astype(np.int64)
    got = to_numpy(hilbert._spread(asxp(xp, x), n, c, g))
    want = [sum(f << (t * n) for t, f in enumerate(row)) for row in fields]
    assert [v % 2**64 for v in got.tolist()] == want
    np.testing.assert_array_equal(to_numpy(hilbert._compact(asxp(xp, got), n, c, g)), x)


@pytest.mark.parametrize("n,bits", [(8, 8), (3, 16), (40, 3), (1, 5)])  # rows, packs, one column
def test_encode_and_decode_leave_their_input_unchanged(xp, n, bits):
    """The bit loops write in place on arrays of their own; the caller's array is only read."""
    c = np.random.default_rng(n).integers(0, 2**bits, (50, n))
    coords = asxp(xp, c)
    words = hilbert.encode(coords, bits)
    kept = to_numpy(words).copy()
    hilbert.decode(words, n, bits)
    np.testing.assert_array_equal(to_numpy(coords), c)
    np.testing.assert_array_equal(to_numpy(words), kept)


@given(points(max_total=31 * 70, max_n=70))
@settings(max_examples=10)
def test_decode_inverts_encode(xp, pb):
    c, bits = pb
    got = hilbert.decode(hilbert.encode(asxp(xp, c), bits), c.shape[1], bits)
    np.testing.assert_array_equal(to_numpy(got), c)


SMALL = [(1, 4), (2, 1), (2, 3), (3, 3), (4, 2), (5, 2), (10, 1)]


@pytest.mark.parametrize("n,bits", SMALL)
def test_encode_is_bijection_on_small_grids(xp, n, bits):
    grid = np.array(list(itertools.product(range(2**bits), repeat=n)), dtype=np.int64)
    h = to_int(hilbert.encode(asxp(xp, grid), bits))
    assert sorted(h) == list(range(2 ** (n * bits)))


@pytest.mark.parametrize("n,bits", SMALL)
def test_consecutive_indices_are_unit_steps_exhaustive(xp, n, bits):
    h = np.arange(2 ** (n * bits), dtype=np.int64)[:, None]
    c = to_numpy(hilbert.decode(asxp(xp, h), n, bits))
    assert (np.abs(np.diff(c, axis=0)).sum(axis=1) == 1).all()
    assert (c[0] == 0).all()  # the curve starts at the origin


@given(st.integers(1, 70), st.integers(1, 31), st.data())
@settings(max_examples=10)
def test_consecutive_indices_are_unit_steps_large(xp, n, bits, data):
    h = data.draw(st.lists(st.integers(0, 2 ** (n * bits) - 2), min_size=1, max_size=8))
    a = hilbert.decode(asxp(xp, to_words(h, n, bits)), n, bits)
    b = hilbert.decode(asxp(xp, to_words([v + 1 for v in h], n, bits)), n, bits)  # index + 1, carried
    assert (np.abs(to_numpy(a) - to_numpy(b)).sum(axis=1) == 1).all()


def test_words_sort_rows_in_curve_order(xp):
    c = np.random.default_rng(0).integers(0, 16, (300, 20))  # 80-bit indices, 3 words
    words = hilbert.encode(asxp(xp, c), 4)
    perm = to_numpy(hilbert.lexsort_rows(words))
    h = to_int(words)
    assert [h[i] for i in perm] == sorted(h)


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


G = np.array([[0, 1], [2, 3]], dtype=np.int64)
BAD = [
    (lambda xp: hilbert.encode(asxp(xp, G), 1), ValueError, "coords"),  # 2 and 3 >= 2^1
    (lambda xp: hilbert.encode(asxp(xp, -G), 4), ValueError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, G, "float64"), 4), TypeError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, G > 0), 4), TypeError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, np.zeros((0, 2), np.int64)), 4), ValueError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, G[0]), 4), ValueError, "coords"),
    (lambda xp: hilbert.encode(asxp(xp, G), 0), ValueError, "bits"),
    (lambda xp: hilbert.encode(asxp(xp, G), 32), ValueError, "bits"),
    (lambda xp: hilbert.encode(asxp(xp, G), 4.0), TypeError, "bits"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 2), np.int64)), 2, 8), ValueError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.full((3, 1), 2**16)), 2, 8), ValueError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.full((3, 1), -1)), 2, 8), ValueError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((0, 1), np.int64)), 2, 8), ValueError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 1), np.float64)), 2, 8), TypeError, "words"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 1), np.int64)), 0, 8), ValueError, "n"),
    (lambda xp: hilbert.decode(asxp(xp, np.zeros((3, 1), np.int64)), 2, 40), ValueError, "bits"),
    (lambda xp: hilbert.order(asxp(xp, G), bits=4), TypeError, "x"),
    (lambda xp: hilbert.order(asxp(xp, np.full((3, 2), np.nan)), bits=4), ValueError, "x"),
    (lambda xp: hilbert.order(asxp(xp, np.zeros((0, 2))), bits=4), ValueError, "x"),
    (lambda xp: hilbert.order(asxp(xp, np.zeros((3, 2))), bits=4, dims=3), ValueError, "dims"),
    (lambda xp: hilbert.order(asxp(xp, np.zeros((3, 2))), bits=40), ValueError, "bits"),
    (lambda xp: hilbert.locality(asxp(xp, np.zeros((3, 2))), asxp(xp, np.array([0, 0, 1]))), ValueError, "perm"),
]


@pytest.mark.parametrize("case", range(len(BAD)))
def test_bad_input_raises_naming_argument(xp, case):
    call, exc, name = BAD[case]
    with pytest.raises(exc, match=rf"\b{name}\b"):
        call(xp)

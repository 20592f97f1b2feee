"""arrays.py: the shared checks accept exactly what they promise, name the argument when they
refuse, and scatter_add equals a brute-force sum on every backend."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import arrays
from conftest import asxp, assert_close, to_numpy


@given(st.integers(0, 40), st.integers(1, 7), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_scatter_add_equals_brute_force(xp, n, k, d, seed):
    rng = np.random.default_rng(seed)
    idx, values = rng.integers(0, k, n), rng.normal(size=(n, d))
    want = np.zeros((k, d))
    for i, j in enumerate(idx):
        want[j] += values[i]
    got = arrays.scatter_add(asxp(xp, idx), asxp(xp, values), k, max_block_bytes=64)
    assert got.shape == (k, d)
    assert_close(got, want, rtol=1e-12, atol=1e-12)


@given(st.one_of(st.integers(-10, 10), st.floats(-10, 10)).map(lambda v: v),
       st.sampled_from([int, float, np.int64, np.float32, np.float64]))
def test_check_number_takes_python_and_numpy_scalars(value, cast):
    if cast in (int, np.int64):
        value = int(value)
    got = arrays.check_number(cast(value), "x", integer=cast in (int, np.int64))
    assert type(got) in (int, float) and got == pytest.approx(float(cast(value)))


@pytest.mark.parametrize("value, kw, error", [
    (True, {}, TypeError), (np.bool_(True), {}, TypeError), ("1", {}, TypeError), (None, {}, TypeError),
    (np.array(1.0), {}, TypeError), (torch.tensor(1.0), {}, TypeError), (1.5, dict(integer=True), TypeError),
    (math.nan, {}, ValueError), (math.inf, {}, ValueError), (-1, dict(low=0), ValueError),
    (0.0, dict(low=0.0, low_open=True), ValueError), (1.0, dict(high=1.0, high_open=True), ValueError),
    (2**70, dict(integer=True, high=2**63 - 1), ValueError)])
def test_check_number_refuses_naming_the_argument(value, kw, error):
    with pytest.raises(error, match="^width: "):
        arrays.check_number(value, "width", **kw)


def test_check_array_and_matrix_refuse_naming_the_argument(xp):
    good = asxp(xp, np.ones((3, 2)))
    for bad, error in [([[1.0]], TypeError), (asxp(xp, np.ones((3, 2), np.int64)), TypeError),
                       (asxp(xp, np.ones(3)), ValueError), (asxp(xp, np.ones((0, 2))), ValueError),
                       (asxp(xp, np.full((3, 2), np.nan)), ValueError),
                       (asxp(xp, np.full((3, 2), 1e300)), ValueError)]:
        with pytest.raises(error, match="^codebook: "):
            arrays.check_matrix(bad, "codebook")
    with pytest.raises(ValueError, match="^codebook: expected shape \\(n, 5\\)"):
        arrays.check_matrix(good, "codebook", cols=5)
    assert arrays.check_matrix(good, "codebook", cols=2) is not None


def test_product_bound_keeps_sums_of_squares_finite(xp):
    for dt in ("float32", "float64"):
        d = 256
        b = arrays.product_bound(xp, getattr(xp, dt), d)
        x = asxp(xp, np.full((2, d), b), dt)
        y = x - (-x)  # a centred difference at the bound: twice the bound
        assert math.isfinite(float(xp.sum(y * y)))


def test_namespace_names_the_argument_from_another_library(xp):
    a = asxp(xp, np.ones(3))
    other = torch.ones(3) if not isinstance(a, torch.Tensor) else np.ones(3)
    with pytest.raises(TypeError, match="^codebook: "):
        arrays.namespace(z=a, codebook=other)
    with pytest.raises(TypeError, match="^z: expected an array"):
        arrays.namespace(z=[1.0, 2.0])
    assert arrays.namespace(z=a, codebook=None) is not None


def test_permutation_and_indices(xp):
    arrays.check_permutation(asxp(xp, np.array([2, 0, 1])), 3, "perm")
    for bad in (np.array([0, 0, 1]), np.array([0, 1]), np.array([0.0, 1.0, 2.0]), np.array([1, 2, 3])):
        with pytest.raises((ValueError, TypeError), match="^perm: "):
            arrays.check_permutation(asxp(xp, bad), 3, "perm")
    with pytest.raises(ValueError, match="^idx: values must lie in \\[0, 4\\)"):
        arrays.check_indices(asxp(xp, np.array([0, 4])), 4, "idx")
    with pytest.raises(ValueError, match="^idx: is empty"):
        arrays.check_indices(asxp(xp, np.zeros(0, np.int64)), 4, "idx")


def test_size_counts_elements_on_every_backend(xp):
    assert arrays.size(asxp(xp, np.zeros((0, 3)))) == 0
    assert arrays.size(asxp(xp, np.zeros((2, 3)))) == 6
    assert to_numpy(arrays.to_host(asxp(xp, np.arange(3)))).tolist() == [0, 1, 2]


def test_check_indices_compares_small_dtypes_as_python_ints(xp):
    """Fixed bug: int8 indices were compared with k in their own dtype, so k = 1000 wrapped."""
    arrays.check_indices(asxp(xp, np.array([0, 100], np.int8)), 1000, "idx")
    with pytest.raises(ValueError, match="^idx: "):
        arrays.check_indices(asxp(xp, np.array([0, 100], np.int8)), 100, "idx")

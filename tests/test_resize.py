"""Tests of resize.py: co-occurrence against a brute-force count, the segmentation against brute force
over all cut sets, the invariants of shrink and grow for every method, and bad input."""
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import asxp, assert_close, dtype_name, to_numpy

import resize

TINY = dict(dim=2, epochs=2)  # a tiny Poincare fit: these tests check invariants, not quality


def brute_cooccurrence(tokens, window):
    counts = Counter()
    for image in tokens:
        cells = [(y, x) for y in range(image.shape[0]) for x in range(image.shape[1])]
        for (y, x), (v, u) in itertools.combinations(cells, 2):
            a, b = image[y, x], image[v, u]
            if max(abs(y - v), abs(x - u)) <= window and a != b:
                counts[(min(a, b), max(a, b))] += 1
    return counts


@settings(max_examples=10)
@given(data=st.data(), window=st.sampled_from([1, 2]))
def test_cooccurrence_equals_brute_force(xp, data, window):
    k = data.draw(st.integers(1, 6))
    shape = data.draw(st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5)))
    tokens = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, k - 1)))
    pairs, counts = resize.cooccurrence(asxp(xp, tokens), k, window=window)
    assert dtype_name(pairs) == "int64" and dtype_name(counts) == "int64"
    pairs, counts = to_numpy(pairs), to_numpy(counts)
    assert pairs.shape == (counts.shape[0], 2)
    keys = pairs[:, 0] * k + pairs[:, 1]
    assert np.all(pairs[:, 0] < pairs[:, 1]) and np.all(np.diff(keys) > 0) and np.all(counts > 0)
    assert dict(zip(map(tuple, pairs.tolist()), counts.tolist())) == brute_cooccurrence(tokens, window)


def test_cooccurrence_handles_a_vocabulary_of_2_to_the_18(xp):
    k = 2**18
    tokens = np.array([[[k - 1, 0], [k - 1, k - 2]]])
    pairs, counts = resize.cooccurrence(asxp(xp, tokens), k)
    assert to_numpy(pairs).tolist() == [[0, k - 2], [0, k - 1], [k - 2, k - 1]]
    assert to_numpy(counts).tolist() == [1, 2, 2]


def run_cost(x, w, starts):
    total = 0.0
    for s, e in zip(starts[:-1], starts[1:]):
        if w[s:e].sum() > 0:
            mean = (w[s:e, None] * x[s:e]).sum(0) / w[s:e].sum()
            total += (w[s:e] * ((x[s:e] - mean) ** 2).sum(1)).sum()
    return total


@settings(max_examples=15)
@given(data=st.data())
def test_optimal_runs_equal_brute_force_over_all_cut_sets(xp, data):
    n = data.draw(st.integers(1, 8))
    size = data.draw(st.integers(1, n))
    max_run = data.draw(st.one_of(st.none(), st.integers(-(-n // size), n)))
    x = data.draw(hnp.arrays(np.float64, (n, 2), elements=st.sampled_from([0.0, 1.0, -3.0, 2.5, 1e3])))
    w = data.draw(hnp.arrays(np.float64, (n,), elements=st.sampled_from([0.0, 1.0, 2.0, 7.0])))
    starts = resize.optimal_runs(asxp(xp, x), asxp(xp, w), size, max_run=max_run)
    assert starts[0] == 0 and starts[-1] == n and np.all(np.diff(starts) >= 1)
    limit = max_run or n
    assert np.all(np.diff(starts) <= limit)
    best = min(run_cost(x, w, [0, *cuts, n]) for cuts in itertools.combinations(range(1, n), size - 1)
               if np.all(np.diff([0, *cuts, n]) <= limit))
    assert run_cost(x, w, starts) == pytest.approx(best, rel=1e-9, abs=1e-6)


def codes(seed, k=24, d=3):
    rng = np.random.default_rng(seed)
    codebook = rng.normal(size=(k, d))
    usage = rng.integers(0, 9, k).astype(np.int64)
    usage[0] = 1
    tokens = rng.integers(0, k, (2, 6, 6))
    return codebook, usage, tokens


def test_enhance_gives_the_embedding_weight_times_the_codes_share_of_variance(xp):
    codebook, _, _ = codes(0)
    emb = np.random.default_rng(1).uniform(-0.5, 0.5, (codebook.shape[0], 2))
    for weight in (0.0, 0.5, 2.0):
        out = to_numpy(resize.enhance(asxp(xp, codebook), asxp(xp, emb), weight=weight))
        assert out.shape == (codebook.shape[0], 5)
        assert_close(out[:, :3], codebook)
        v_codes, v_emb = out[:, :3].var(0).sum(), out[:, 3:].var(0).sum()
        assert v_emb == pytest.approx(weight * v_codes, rel=1e-9)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        tangent = np.arctanh(norm) * emb / norm
        if weight:  # the embedding's direction survives: it is logmap0 up to one factor
            ratio = out[:, 3:] / tangent
            assert_close(ratio, np.full_like(ratio, ratio[0, 0]), rtol=1e-9)


@pytest.mark.parametrize("method", resize.SHRINK_METHODS)
def test_shrink_mapping_is_int64_onto_the_new_codes(xp, method):
    codebook, usage, tokens = codes(2)
    cooc = resize.cooccurrence(asxp(xp, tokens), 24)
    new, mapping = resize.shrink(asxp(xp, codebook), 7, method=method, usage=asxp(xp, usage), cooc=cooc, **TINY)
    assert tuple(new.shape) == (7, 3) and dtype_name(new) == "float64"
    assert tuple(mapping.shape) == (24,) and dtype_name(mapping) == "int64"
    assert sorted(set(to_numpy(mapping).tolist())) == list(range(7))


@pytest.mark.parametrize("method", ["hyperhill", "hilbert"])
@pytest.mark.parametrize("segmentation", ["optimal", "fixed"])
def test_merged_code_is_the_usage_weighted_mean_of_its_run(xp, method, segmentation):
    codebook, usage, tokens = codes(3)
    cooc = resize.cooccurrence(asxp(xp, tokens), 24)
    new, mapping = resize.shrink(asxp(xp, codebook), 5, method=method, usage=asxp(xp, usage), cooc=cooc,
                                 segmentation=segmentation, **TINY)
    new, mapping = to_numpy(new), to_numpy(mapping)
    for r in range(5):
        w = usage[mapping == r] if usage[mapping == r].sum() else np.ones((mapping == r).sum())
        assert_close(new[r], (w[:, None] * codebook[mapping == r]).sum(0) / w.sum(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", resize.SHRINK_METHODS)
def test_shrink_to_k_is_the_identity_up_to_order(xp, method):
    codebook, usage, tokens = codes(4)
    cooc = resize.cooccurrence(asxp(xp, tokens), 24)
    new, mapping = resize.shrink(asxp(xp, codebook), 24, method=method, usage=asxp(xp, usage), cooc=cooc, **TINY)
    new, mapping = to_numpy(new), to_numpy(mapping)
    assert sorted(mapping.tolist()) == list(range(24))
    np.testing.assert_array_equal(new[mapping], codebook)


@pytest.mark.parametrize("method", resize.GROW_METHODS)
def test_grow_keeps_the_old_rows_first(xp, method):
    codebook, usage, tokens = codes(5)
    cooc = resize.cooccurrence(asxp(xp, tokens), 24)
    new = to_numpy(resize.grow(asxp(xp, codebook), 61, method=method, usage=asxp(xp, usage), cooc=cooc, **TINY))
    assert new.shape == (61, 3) and np.all(np.isfinite(new))
    np.testing.assert_array_equal(new[:24], codebook)


@pytest.mark.parametrize("method", ["hyperhill", "hilbert"])
def test_grow_inserts_on_segments_between_codes(method):
    codebook, usage, tokens = codes(6)
    new = resize.grow(codebook, 40, method=method, usage=usage, cooc=resize.cooccurrence(tokens, 24), **TINY)
    for p in new[24:]:  # p = a + t (b - a) for some pair of old codes and t in (0, 1)
        a, b = codebook[:, None, :], codebook[None, :, :]
        t = np.sum((p - a) * (b - a), -1) / np.maximum(np.sum((b - a) ** 2, -1), 1e-300)
        off = np.linalg.norm(a + t[..., None] * (b - a) - p, axis=-1)
        assert np.any((off < 1e-9) & (t > 0) & (t < 1))


@pytest.mark.parametrize("fn, size, method", [(resize.shrink, 9, m) for m in resize.SHRINK_METHODS]
                         + [(resize.grow, 35, m) for m in resize.GROW_METHODS])
def test_every_method_is_deterministic_for_a_seed(fn, size, method):
    codebook, usage, tokens = codes(7)
    cooc = resize.cooccurrence(tokens, 24)
    one, two = (fn(codebook, size, method=method, usage=usage, cooc=cooc, seed=3, **TINY) for _ in range(2))
    for a, b in zip(*(r if isinstance(r, tuple) else (r,) for r in (one, two))):
        np.testing.assert_array_equal(a, b)


def test_hyperhill_without_cooc_names_cooc():
    codebook, usage, _ = codes(8)
    for fn, size in ((resize.shrink, 5), (resize.grow, 30)):
        with pytest.raises(ValueError, match="cooc"):
            fn(codebook, size, usage=usage)


def bad_calls():
    codebook, usage, tokens = codes(9)
    cooc = resize.cooccurrence(tokens, 24)
    nan = codebook.copy()
    nan[3, 1] = np.nan
    s, g = resize.shrink, resize.grow
    return [
        ("size", lambda: s(codebook, 0, cooc=cooc)),
        ("size", lambda: s(codebook, -2, method="random")),
        ("size", lambda: s(codebook, 25, cooc=cooc)),
        ("size", lambda: g(codebook, 23, cooc=cooc)),
        ("size", lambda: s(codebook, 3.0, method="random")),
        ("usage", lambda: s(codebook, 5, method="usage", usage=usage[:-1])),
        ("usage", lambda: g(codebook, 30, method="split", usage=-usage)),
        ("cooc", lambda: s(codebook, 5, cooc=(cooc[0][:, :1], cooc[1]))),
        ("cooc", lambda: s(codebook, 5, cooc=(cooc[0], -cooc[1]))),
        ("cooc", lambda: s(codebook, 5, cooc=(cooc[0], cooc[1][:-1]))),
        ("cooc", lambda: g(codebook, 30, cooc=(cooc[0] + 24, cooc[1]))),
        ("codebook", lambda: s(nan, 5, method="random")),
        ("codebook", lambda: g(nan, 30, method="random")),
        ("codebook", lambda: s(codebook[0], 1, method="random")),
        ("method", lambda: s(codebook, 5, method="split")),
        ("method", lambda: g(codebook, 30, method="kmeans")),
        ("method", lambda: s(codebook, 5, method="nope")),
        ("cooc", lambda: s(codebook, 5, cooc=(np.zeros((0, 2), np.int64), np.zeros(0, np.int64)))),
        ("order", lambda: s(codebook, 5, method="hilbert", order=np.zeros(24, np.int64))),
        ("order", lambda: g(codebook, 30, method="hilbert", order=np.arange(23))),
        ("segmentation", lambda: s(codebook, 5, method="hilbert", segmentation="greedy")),
        ("tokens", lambda: resize.cooccurrence(tokens, 10)),
        ("tokens", lambda: resize.cooccurrence(tokens - 1, 24)),
        ("tokens", lambda: resize.cooccurrence(tokens[0], 24)),
        ("tokens", lambda: resize.cooccurrence(tokens * 1.0, 24)),
        ("window", lambda: resize.cooccurrence(tokens, 24, window=0)),
        ("k", lambda: resize.cooccurrence(tokens, 0)),
        ("weight", lambda: resize.enhance(codebook, np.zeros((24, 2)), weight=-1.0)),
        ("embedding", lambda: resize.enhance(codebook, np.zeros((23, 2)))),
    ]


@pytest.mark.parametrize("case", range(len(bad_calls())))
def test_bad_input_raises_naming_the_argument(case):
    name, call = bad_calls()[case]
    with pytest.raises((ValueError, TypeError), match=name):
        call()

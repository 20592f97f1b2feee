"""Tests of vocabulary.py (ours: vocabularies of another size): the optimal segmentation against brute force over
all cut sets; shrink's mapping onto every new code, its usage-weighted (or norm-keeping) merges and its identity at
size K; grow's old rows first and its codes on segments between neighbours; bad input named."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import asxp, assert_close, dtype_name, to_numpy

import resize
import vocabulary

TINY = dict(dim=2, epochs=1, burn_in=0, draws=2)  # a rough Poincare fit: these tests check invariants, not quality


def run_cost(x, w, starts):
    total = 0.0
    for s, e in zip(starts[:-1], starts[1:]):
        if w[s:e].sum() > 0:
            mean = (w[s:e, None] * x[s:e]).sum(0) / w[s:e].sum()
            total += (w[s:e] * ((x[s:e] - mean) ** 2).sum(1)).sum()
    return total


@settings(max_examples=15)
@given(data=st.data())
def test_optimal_runs_equal_brute_force_over_all_cut_sets(data):
    n = data.draw(st.integers(1, 8))
    size = data.draw(st.integers(1, n))
    max_run = data.draw(st.integers(-(-n // size), n))
    x = data.draw(hnp.arrays(np.float64, (n, 2), elements=st.sampled_from([0.0, 1.0, -3.0, 2.5, 1e3])))
    w = data.draw(hnp.arrays(np.float64, (n,), elements=st.sampled_from([0.0, 1.0, 2.0, 7.0])))
    starts = vocabulary.optimal_runs(x, w, size, max_run)
    assert starts[0] == 0 and starts[-1] == n and np.all(np.diff(starts) >= 1) and np.all(np.diff(starts) <= max_run)
    best = min(run_cost(x, w, [0, *cuts, n]) for cuts in itertools.combinations(range(1, n), size - 1)
               if np.all(np.diff([0, *cuts, n]) <= max_run))
    assert run_cost(x, w, starts) == pytest.approx(best, rel=1e-9, abs=1e-6)


def codes(seed, k=24, d=3, dead=0):
    rng = np.random.default_rng(seed)
    usage = rng.integers(1, 9, k).astype(np.int64)
    usage[:dead] = 0
    return rng.normal(size=(k, d)), usage, rng.integers(0, k, (2, 6, 6))


@pytest.mark.parametrize("rule", vocabulary.RULES)
@pytest.mark.parametrize("method", vocabulary.SHRINK_METHODS)
def test_shrink_vocabulary_maps_onto_every_new_code(xp, method, rule):
    """kmeans with many dead codes: the bug fixed returned duplicates and a mapping that missed most new ids."""
    codebook, usage, tokens = codes(2, dead=20)
    cooc = resize.cooccurrence(asxp(xp, tokens), 24)
    new, mapping = vocabulary.shrink_vocabulary(asxp(xp, codebook), 7, method=method, usage=asxp(xp, usage),
                                                cooc=cooc, rule=rule, **TINY)
    assert tuple(new.shape) == (7, 3) and dtype_name(mapping) == "int64"
    assert sorted(set(to_numpy(mapping).tolist())) == list(range(7))
    assert len({tuple(r) for r in to_numpy(new).round(12).tolist()}) == 7


@pytest.mark.parametrize("method", ["hyperhill", "hilbert", "kmeans"])
def test_merged_codes_are_usage_weighted_means_or_keep_the_mean_norm(xp, method):
    codebook, usage, tokens = codes(3)
    cooc = resize.cooccurrence(asxp(xp, tokens), 24)
    for rule in vocabulary.RULES:
        new, mapping = (to_numpy(a) for a in vocabulary.shrink_vocabulary(
            asxp(xp, codebook), 5, method=method, usage=asxp(xp, usage), cooc=cooc, rule=rule, **TINY))
        for r in range(5):
            w, members = usage[mapping == r], codebook[mapping == r]
            mean = (w[:, None] * members).sum(0) / w.sum()
            if rule == "distance":
                assert_close(new[r], mean, rtol=1e-9, atol=1e-12)
            else:  # the direction of the mean, the members' mean norm
                norm = (w * np.linalg.norm(members, axis=1)).sum() / w.sum()
                assert_close(new[r], mean / np.linalg.norm(mean) * norm, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", vocabulary.SHRINK_METHODS)
def test_shrink_vocabulary_to_k_is_the_identity_up_to_order(method):
    codebook, usage, tokens = codes(4)
    new, mapping = vocabulary.shrink_vocabulary(codebook, 24, method=method, usage=usage,
                                                cooc=resize.cooccurrence(tokens, 24), **TINY)
    assert sorted(mapping.tolist()) == list(range(24))
    np.testing.assert_array_equal(new[mapping], codebook)


@pytest.mark.parametrize("rule", vocabulary.RULES)
@pytest.mark.parametrize("method", vocabulary.GROW_METHODS)
def test_grow_vocabulary_keeps_the_old_rows_first(xp, method, rule):
    codebook, usage, tokens = codes(5)
    new = to_numpy(vocabulary.grow_vocabulary(asxp(xp, codebook), 61, method=method, usage=asxp(xp, usage), rule=rule,
                                              cooc=resize.cooccurrence(asxp(xp, tokens), 24), **TINY))
    assert new.shape == (61, 3) and np.all(np.isfinite(new))
    np.testing.assert_array_equal(new[:24], codebook)


def test_grow_vocabulary_inserts_on_segments_between_neighbours():
    codebook, usage, tokens = codes(6)
    order = resize.block_index(codebook, 1, method="hilbert").perm
    new = vocabulary.grow_vocabulary(codebook, 40, method="hilbert", usage=usage, order=order)
    a, b = codebook[order[:-1]], codebook[order[1:]]
    for p in new[24:]:  # p = a + t (b - a), t in (0, 1), for some neighbours a, b along the order
        t = np.sum((p - a) * (b - a), -1) / np.maximum(np.sum((b - a) ** 2, -1), 1e-300)
        assert np.any((np.linalg.norm(a + t[:, None] * (b - a) - p, axis=-1) < 1e-9) & (t > 0) & (t < 1))


def bad_calls():
    codebook, usage, _ = codes(9)
    s, g = vocabulary.shrink_vocabulary, vocabulary.grow_vocabulary
    return [
        ("size", lambda: s(codebook, 0, method="random")),
        ("size", lambda: s(codebook, 25, method="random")),
        ("usage", lambda: s(codebook, 5, method="usage", usage=usage[:-1])),
        ("usage", lambda: s(codebook, 5, usage=-usage, method="usage")),
        ("usage", lambda: s(codebook, 5, usage=usage * 0, method="usage")),
        ("method", lambda: s(codebook, 5, method="split")),
        ("rule", lambda: s(codebook, 5, method="usage", rule="cosine")),
        ("order", lambda: s(codebook, 5, method="hilbert", order=np.zeros(24, np.int64))),
        ("cooc", lambda: s(codebook, 5, method="hyperhill")),
        ("settings", lambda: s(codebook, 5, method="hilbert", dimm=3)),
        ("size", lambda: g(codebook, 23, method="random")),
        ("method", lambda: g(codebook, 30, method="kmeans")),
        ("noise", lambda: g(codebook, 30, method="split", noise=float("nan"))),
        ("noise", lambda: g(codebook, 30, method="split", noise=-1.0)),
        ("noise", lambda: g(codebook, 30, method="random", noise=float("inf"))),
        ("order", lambda: g(codebook, 30, method="hilbert", order=np.arange(23))),
        ("codebook", lambda: g(codebook[:1], 3, method="split")),  # the bug fixed: inf codes
    ]


@pytest.mark.parametrize("case", range(len(bad_calls())))
def test_bad_input_raises_naming_the_argument(case):
    name, call = bad_calls()[case]
    with pytest.raises((ValueError, TypeError), match=name):
        call()

"""Tests of resize.py against brute force: co-occurrence counts, the block search restricted to each image's union
of blocks (and the full search in exact mode), EXT's interpolation, the enhanced codebook, the saved index, and bad
input on every public function. The vocabulary extensions (vocabulary.py) are tested in test_vocabulary.py."""
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import asxp, assert_close, dtype_name, to_numpy

import resize
import vq

TINY = dict(dim=2, epochs=1, burn_in=0, draws=2)  # a rough Poincare fit: these tests check invariants, not quality


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
    shape = data.draw(st.tuples(st.integers(0, 2), st.integers(1, 5), st.integers(1, 5)))
    tokens = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(0, k - 1)))
    pairs, counts = resize.cooccurrence(asxp(xp, tokens), k, window=window)
    assert dtype_name(pairs) == "int64" and dtype_name(counts) == "int64"
    pairs, counts = to_numpy(pairs), to_numpy(counts)
    keys = pairs[:, 0] * k + pairs[:, 1]
    assert pairs.shape == (counts.shape[0], 2) and np.all(pairs[:, 0] < pairs[:, 1]) and np.all(np.diff(keys) > 0)
    assert dict(zip(map(tuple, pairs.tolist()), counts.tolist())) == brute_cooccurrence(tokens, window)


def test_cooccurrence_of_an_empty_batch_is_empty(xp):
    """The bug fixed: torch's `x.size` is a method, so an empty torch batch raised RuntimeError."""
    pairs, counts = resize.cooccurrence(asxp(xp, np.zeros((0, 4, 4), np.int64)), 8)
    assert tuple(pairs.shape) == (0, 2) and tuple(counts.shape) == (0,)


def test_cooccurrence_handles_a_vocabulary_of_2_to_the_18(xp):
    k = 2**18
    pairs, counts = resize.cooccurrence(asxp(xp, np.array([[[k - 1, 0], [k - 1, k - 2]]])), k)
    assert to_numpy(pairs).tolist() == [[0, k - 2], [0, k - 1], [k - 2, k - 1]]
    assert to_numpy(counts).tolist() == [1, 2, 2]


def index_of(perm, blocks, codebook):
    """A BlockIndex of a given order: equal blocks, their means (exact for the dyadic test data)."""
    k = len(perm)
    s = np.arange(blocks + 1) * k // blocks
    return perm, s, np.stack([codebook[perm[a:b]].mean(0) for a, b in zip(s[:-1], s[1:])])


def brute_block_search(z, codebook, index, images, rule, probes):
    """Route (ties to the lower block), take each image's union, search it (ties to the lowest original id)."""
    perm, starts, centers = index
    score = (lambda q, e: q @ e.T) if rule == "dot" else (lambda q, e: -((q[:, None] - e[None]) ** 2).sum(-1))
    route = score(z, centers)
    picked = np.zeros(route.shape, bool)
    for _ in range(probes):
        best = np.argmax(np.where(picked, -np.inf, route), axis=1)
        picked[np.arange(len(z)), best] = True
    n_img = images.max() + 1
    union = np.zeros((n_img, len(centers)), bool)
    np.logical_or.at(union, images, picked)
    block_of = np.repeat(np.arange(len(centers)), np.diff(starts))[np.argsort(perm)]  # code id -> its block
    s = score(z, codebook)
    allowed = union[images][:, block_of]
    idx = np.argmax(np.where(allowed, s, -np.inf), axis=1)  # argmax: the lowest id among exact ties
    share = (allowed.sum(1) / len(codebook))
    searched = np.bincount(images, share, minlength=n_img) / np.maximum(np.bincount(images, minlength=n_img), 1)
    return idx, searched


def dyadic_case(data, k_blocks=None):
    """Small-integer codes (duplicates, ties, offsets) in blocks of 2^j codes, so block means are exact."""
    blocks = data.draw(st.sampled_from([1, 2, 4])) if k_blocks is None else k_blocks
    k = blocks * data.draw(st.sampled_from([1, 2, 4]))
    d = data.draw(st.integers(1, 3))
    offset = data.draw(st.sampled_from([0.0, 1000.0, -64.0]))
    codebook = data.draw(hnp.arrays(np.float64, (k, d), elements=st.integers(-3, 3))) + offset
    n = data.draw(st.integers(1, 12))
    z = data.draw(hnp.arrays(np.float64, (n, d), elements=st.integers(-4, 4))) + offset
    images = data.draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, n - 1)))
    perm = np.asarray(data.draw(st.permutations(range(k))), dtype=np.int64)
    return codebook, z, images, index_of(perm, blocks, codebook)


@settings(max_examples=40)
@given(data=st.data(), rule=st.sampled_from(resize.RULES))
def test_block_search_equals_brute_force_on_each_images_union(xp, data, rule):
    codebook, z, images, index = dyadic_case(data)
    if rule == "dot":  # dot scores grow with the offset: keep them exact
        codebook, z = codebook - codebook.mean(0).round(), z - codebook.mean(0).round()
        index = index_of(index[0], len(index[2]), codebook)
    probes = data.draw(st.integers(1, len(index[2])))
    found = resize.block_search(asxp(xp, z), asxp(xp, codebook), tuple(asxp(xp, a) for a in index),
                                images=asxp(xp, images), rule=rule, probes=probes)
    idx, searched = brute_block_search(z, codebook, index, images, rule, probes)
    assert dtype_name(found.idx) == "int64"
    np.testing.assert_array_equal(to_numpy(found.idx), idx)
    assert_close(found.searched, searched, rtol=1e-12)


@settings(max_examples=30)
@given(data=st.data(), rule=st.sampled_from(resize.RULES))
def test_exact_mode_and_one_block_equal_the_full_search(xp, data, rule):
    codebook, z, images, index = dyadic_case(data)
    if rule == "dot":
        codebook, z = codebook - codebook.mean(0).round(), z - codebook.mean(0).round()
        index = index_of(index[0], len(index[2]), codebook)
    full = to_numpy(vq.nearest(asxp(xp, z), asxp(xp, codebook))) if rule == "distance" else np.argmax(z @ codebook.T, 1)
    one = index_of(index[0], 1, codebook)
    for idx, exact in ((index, True), (one, False)):
        found = resize.block_search(asxp(xp, z), asxp(xp, codebook), resize.BlockIndex(*(asxp(xp, a) for a in idx)),
                                    images=asxp(xp, images), rule=rule, exact=exact)
        np.testing.assert_array_equal(to_numpy(found.idx), full)


@settings(max_examples=10)
@given(seed=st.integers(0, 3), method=st.sampled_from(resize.METHODS), blocks=st.integers(1, 6))
def test_block_index_is_a_permutation_in_equal_blocks_and_deterministic(xp, seed, method, blocks):
    rng = np.random.default_rng(seed)
    codebook, tokens = rng.normal(size=(24, 3)), rng.integers(0, 24, (2, 6, 6))
    cooc = resize.cooccurrence(asxp(xp, tokens), 24)
    one, two = (resize.block_index(asxp(xp, codebook), blocks, method=method, cooc=cooc, seed=seed, **TINY)
                for _ in range(2))
    perm = to_numpy(one.perm)
    assert dtype_name(one.perm) == "int64" and sorted(perm.tolist()) == list(range(24))
    assert np.diff(to_numpy(one.starts)).max() - np.diff(to_numpy(one.starts)).min() <= 1
    s = to_numpy(one.starts)
    assert_close(one.centers, np.stack([codebook[perm[a:b]].mean(0) for a, b in zip(s[:-1], s[1:])]), rtol=1e-12)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_kmeans_blocks_give_each_centre_its_nearest_codes():
    """Two far clusters of 8 codes and 2 blocks: each block is one cluster, whatever the cluster sizes would be."""
    rng = np.random.default_rng(0)
    codebook = np.concatenate([rng.normal(size=(8, 2)), rng.normal(size=(8, 2)) + 100])
    perm = resize.block_index(codebook, 2, method="kmeans").perm
    assert sorted(set(perm[:8] // 8)) == [perm[0] // 8] and sorted(set(perm[8:] // 8)) == [perm[8] // 8]


def test_block_index_method_search_calls_block_search(xp):
    rng = np.random.default_rng(1)
    codebook, z = rng.normal(size=(16, 2)), rng.normal(size=(10, 2))
    index = resize.block_index(asxp(xp, codebook), 4, method="lsh")
    one = index.search(asxp(xp, z), asxp(xp, codebook), images=asxp(xp, np.zeros(10, np.int64)), probes=2)
    two = resize.block_search(asxp(xp, z), asxp(xp, codebook), index, images=asxp(xp, np.zeros(10, np.int64)), probes=2)
    np.testing.assert_array_equal(to_numpy(one.idx), to_numpy(two.idx))


@settings(max_examples=15)
@given(data=st.data(), rule=st.sampled_from(resize.RULES))
def test_extend_inserts_k_minus_1_codes_between_neighbours_along_perm(xp, data, rule):
    k, kk, d = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 7)), data.draw(st.integers(1, 3))
    codebook = data.draw(hnp.arrays(np.float64, (kk, d), elements=st.sampled_from([0.0, 1.0, -2.0, 0.5, 3.0])))
    perm = np.asarray(data.draw(st.permutations(range(kk))), dtype=np.int64)
    new = to_numpy(resize.extend(asxp(xp, codebook), k, perm=asxp(xp, perm), rule=rule))
    assert new.shape == (k * (kk - 1) + 1, d) and np.all(np.isfinite(new))
    np.testing.assert_array_equal(new[:kk], codebook)
    for i in range(kk - 1):
        a, b = codebook[perm[i]], codebook[perm[i + 1]]
        for j in range(1, k):
            got, t = new[kk + i * (k - 1) + j - 1], j / k
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos = a @ b / max(na * nb, 1e-300)
            if rule == "distance" or na == 0 or nb == 0 or np.sqrt(max(0.0, 1 - cos**2)) <= 1e-6:
                assert_close(got, a + t * (b - a), rtol=1e-12, atol=1e-12)
            else:  # on the arc: the interpolated norm, and a direction in the plane of a and b between them
                assert np.linalg.norm(got) == pytest.approx((1 - t) * na + t * nb, rel=1e-9)
                assert got @ a / na >= min(na, nb) * cos - 1e-9 and got @ b / nb >= min(na, nb) * cos - 1e-9


def test_dot_extend_codes_win_the_argmax_at_their_own_direction():
    """On a segment a code never wins an argmax z.e; on the arc (equal norms) each new code wins at its direction."""
    a, b = np.array([[2.0, 0.0]]), np.array([[0.0, 2.0]])
    codebook = np.concatenate([a, b])
    for rule, wins in (("distance", False), ("dot", True)):
        new = resize.extend(codebook, 4, perm=np.array([0, 1]), rule=rule)
        for e in new[2:]:
            assert (np.argmax(new @ (e / np.linalg.norm(e))) >= 2) == wins


def test_extend_k_1_returns_the_codebook(xp):
    codebook = asxp(xp, np.arange(6.0).reshape(3, 2))
    assert resize.extend(codebook, 1, perm=asxp(xp, np.array([2, 0, 1]))) is codebook


def codes(seed, k=24, d=3, dead=0):
    rng = np.random.default_rng(seed)
    usage = rng.integers(1, 9, k).astype(np.int64)
    usage[:dead] = 0
    return rng.normal(size=(k, d)), usage, rng.integers(0, k, (2, 6, 6))


def test_enhance_as_the_paper_and_as_ours(xp):
    codebook, _, _ = codes(0)
    emb = np.random.default_rng(1).uniform(-0.5, 0.5, (24, 2))
    seen = np.arange(24) % 3 > 0
    paper = to_numpy(resize.enhance(asxp(xp, codebook), asxp(xp, emb), weight=None, seen=asxp(xp, seen),
                                    unseen="uniform"))
    np.testing.assert_array_equal(paper[:, :3], codebook)
    np.testing.assert_array_equal(paper[seen, 3:], emb[seen])  # eq. 10: as is
    assert np.all(np.abs(paper[~seen, 3:]) < 1) and not np.allclose(paper[~seen, 3:], emb[~seen])
    for weight in (0.0, 0.3, 2.0):
        ours = to_numpy(resize.enhance(asxp(xp, codebook), asxp(xp, emb), weight=weight))
        assert ours[:, 3:].var(0).sum() == pytest.approx(weight * codebook.var(0).sum(), rel=1e-9)
        radius = np.linalg.norm(emb, axis=1, keepdims=True)
        tangent = np.arctanh(radius) * emb / radius
        if weight:  # logmap0 up to one factor
            assert_close(ours[:, 3:] / tangent, np.full_like(tangent, ours[0, 3] / tangent[0, 0]), rtol=1e-9)


def test_save_index_and_load_index_round_trip(tmp_path):
    codebook, _, _ = codes(7)
    index = resize.block_index(codebook, 4, method="hilbert")
    resize.save_index(index, tmp_path / "index.safetensors", method="hilbert")
    for a, b in zip(index, resize.load_index(tmp_path / "index.safetensors")):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == ["index.safetensors"]  # no temporary left behind


def bad_calls():
    codebook, _, tokens = codes(9)
    cooc = resize.cooccurrence(tokens, 24)
    index = resize.block_index(codebook, 4, method="hilbert")
    z, images = codebook[:5] + 0.1, np.zeros(5, np.int64)
    nan = codebook.copy()
    nan[3, 1] = np.nan
    bi, bs, e = resize.block_index, resize.block_search, resize.extend
    return [
        ("blocks", lambda: bi(codebook, 0, method="lsh")),
        ("blocks", lambda: bi(codebook, 25, method="lsh")),
        ("blocks", lambda: bi(codebook, 2.0, method="lsh")),
        ("method", lambda: bi(codebook, 4, method="faiss")),
        ("cooc", lambda: bi(codebook, 4)),
        ("cooc", lambda: bi(codebook, 4, cooc=(cooc[0][:, :1], cooc[1]))),
        ("cooc", lambda: bi(codebook, 4, cooc=(cooc[0] + 24, cooc[1]))),
        ("cooc", lambda: bi(codebook, 4, cooc=[cooc[0], cooc[1]])),
        ("settings", lambda: bi(codebook, 4, cooc=cooc, dimm=3)),
        ("codebook", lambda: bi(nan, 4, method="lsh")),
        ("z", lambda: bs(z[:, :2], codebook, index, images=images)),
        ("z", lambda: bs(z * np.nan, codebook, index, images=images)),
        ("images", lambda: bs(z, codebook, index, images=images[:4])),
        ("images", lambda: bs(z, codebook, index, images=images * 1.0)),
        ("images", lambda: bs(z, codebook, index, images=images - 1)),
        ("images", lambda: bs(z, codebook, index, images=images + 5)),
        ("rule", lambda: bs(z, codebook, index, images=images, rule="cosine")),
        ("probes", lambda: bs(z, codebook, index, images=images, probes=5)),
        # the bug fixed: one check answered a bad `exact` and a bad `rule` alike; now each names its own argument
        ("exact", lambda: bs(z, codebook, index, images=images, exact=1)),
        ("rule", lambda: bs(z, codebook, index, images=images, rule=None, exact=True)),
        ("index", lambda: bs(z, codebook, index[:2], images=images)),
        ("index.perm", lambda: bs(z, codebook, index._replace(perm=np.zeros(24, np.int64)), images=images)),
        ("index.starts", lambda: bs(z, codebook, index._replace(starts=np.array([0, 12, 12, 24])), images=images)),
        ("index.centers", lambda: bs(z, codebook, index._replace(centers=index.centers[:, :2]), images=images)),
        ("codebook", lambda: bs(z.astype(np.float32), codebook, index, images=images)),
        ("k", lambda: e(codebook, 0, perm=index.perm)),
        ("perm", lambda: e(codebook, 2, perm=np.zeros(24, np.int64))),
        ("perm", lambda: e(codebook, 2, perm=np.arange(23))),
        ("codebook", lambda: e(nan, 2, perm=index.perm)),
        ("rule", lambda: e(codebook, 2, perm=index.perm, rule="cosine")),
        ("tokens", lambda: resize.cooccurrence(tokens, 10)),
        ("tokens", lambda: resize.cooccurrence(tokens[0], 24)),
        ("tokens", lambda: resize.cooccurrence(tokens * 1.0, 24)),
        ("window", lambda: resize.cooccurrence(tokens, 24, window=0)),
        ("k", lambda: resize.cooccurrence(tokens, 0)),
        ("weight", lambda: resize.enhance(codebook, np.zeros((24, 2)), weight=-1.0)),
        ("embedding", lambda: resize.enhance(codebook, np.zeros((23, 2)))),
        ("unseen", lambda: resize.enhance(codebook, np.zeros((24, 2)), unseen="gauss")),
        ("seen", lambda: resize.enhance(codebook, np.zeros((24, 2)), seen=np.ones(24))),
    ]


@pytest.mark.parametrize("case", range(len(bad_calls())))
def test_bad_input_raises_naming_the_argument(case):
    name, call = bad_calls()[case]
    with pytest.raises((ValueError, TypeError), match=name):
        call()

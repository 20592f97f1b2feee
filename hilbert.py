"""The n-dimensional Hilbert curve for all points at once, and the Hilbert ordering of vectors.

Paper: J. Skilling, "Programming the Hilbert curve", AIP Conference Proceedings 707, 381-387
(2004), doi:10.1063/1.1751381. Its two C routines are `_axes_to_transpose` (AxestoTranspose:
"inverse undo excess work", then Gray encode) and `_transpose_to_axes` (TransposetoAxes: Gray
decode, then "undo excess work"). Here each line acts on a whole column of N points, so the Python
loops run over bits and dimensions only, never over points. The index agrees with the
`hilbertcurve` package (galtay/hilbertcurve): `encode(c, p)` is
`HilbertCurve(p, n).distance_from_point(c)` written in words; `decode` is `point_from_distance`.

Conventions (Skilling's, and `hilbertcurve`'s):
- a point has n integer coordinates in [0, 2^bits): the cube of side 2^bits, 2^(n·bits) cells;
- the index h in [0, 2^(n·bits)) is stored by Skilling as its "transpose" X, n numbers of `bits`
  bits: bit j of X[i] is bit j·n + (n - 1 - i) of h, so coordinate 0 holds the most significant
  bit of every level. Skilling's example, n = 3, bits = 5: h = ABCDE FGHIJ KLMNO is
  X[0] = ADGJM, X[1] = BEHKN, X[2] = CFILO;
- we return h as W = ceil(n·bits / 32) int64 words of 32 bits, most significant word first, so
  that rows compare lexicographically as the integers do and n·bits may exceed 64 (64 dimensions of
  4 bits is a 256-bit index, 8 words). Only int64 shifts, and/or/xor and comparisons are used, so
  the same lines run on NumPy, array_api_strict, torch (CPU/CUDA) and CuPy.

HyperHill (Li et al., "Resizing codebook of vector quantization without retraining", Multimedia
Systems 2023, sec. 3) orders an (enhanced) codebook along this curve so that neighbours on the
curve are neighbours in space; `order` does that for float vectors, `locality` measures how well.
"""
import math
from typing import NamedTuple

from array_api_compat import array_namespace, device

WORD = 32  # bits of index per int64 word: a 32-bit word never reaches the sign bit


def _check_bits(bits, name="bits"):
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{name} must be an int, got {type(bits).__name__}")
    if not 1 <= bits <= 31:
        raise ValueError(f"{name} must be in [1, 31], got {bits}")


def _check_int_matrix(xp, a, name):
    if not xp.isdtype(a.dtype, "integral"):  # bool is not integral in the array API
        raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {tuple(a.shape)}")
    return xp.astype(a, xp.int64)


def n_words(n, bits):
    """W = ceil(n·bits / 32): the number of 32-bit words of an index."""
    return -(-n * bits // WORD)


def _axes_to_transpose(X, bits):
    """Skilling's AxestoTranspose on columns: coordinates X[0..n-1] (N,) -> transposed index."""
    xp = array_namespace(X[0])
    X, n = list(X), len(X)
    for q in range(bits - 1, 0, -1):  # Q = 2^q from the top bit down to 2: inverse undo excess work
        Q, P = 1 << q, (1 << q) - 1
        X[0] = X[0] ^ (P & -((X[0] >> q) & 1))  # i = 0: invert, or exchange with itself (no-op)
        for i in range(1, n):
            hi = (X[i] & Q) != 0
            t = xp.where(hi, 0, (X[0] ^ X[i]) & P)  # exchange the low bits of X[0] and X[i] ...
            X[0] = X[0] ^ xp.where(hi, P, t)  # ... or invert those of X[0]
            X[i] = X[i] ^ t
    for i in range(1, n):  # Gray encode
        X[i] = X[i] ^ X[i - 1]
    # Skilling's t = xor of (Q - 1) over the set bits Q > 1 of X[n-1]: bit j of t is the parity
    # of the bits of X[n-1] above j, the inverse Gray code of X[n-1] >> 1 (log2(31) < 5 steps).
    t = X[n - 1] >> 1
    for s in (1, 2, 4, 8, 16):
        t = t ^ (t >> s)
    return [x ^ t for x in X]


def _transpose_to_axes(X, bits):
    """Skilling's TransposetoAxes on columns: transposed index X[0..n-1] (N,) -> coordinates."""
    xp = array_namespace(X[0])
    X, n = list(X), len(X)
    t = X[n - 1] >> 1  # Gray decode by H ^ (H / 2)
    for i in range(n - 1, 0, -1):
        X[i] = X[i] ^ X[i - 1]
    X[0] = X[0] ^ t
    for q in range(1, bits):  # Q = 2, 4, ..., 2^(bits-1): undo excess work
        Q, P = 1 << q, (1 << q) - 1
        for i in range(n - 1, 0, -1):
            hi = (X[i] & Q) != 0
            t = xp.where(hi, 0, (X[0] ^ X[i]) & P)
            X[0] = X[0] ^ xp.where(hi, P, t)
            X[i] = X[i] ^ t
        X[0] = X[0] ^ (P & -((X[0] >> q) & 1))
    return X


def _bit_places(n, bits):
    """(i, j, w, s): bit j of X[i] is bit s of word w (words most significant first)."""
    W = n_words(n, bits)
    for i in range(n):
        for j in range(bits):
            pos = j * n + (n - 1 - i)  # position in h, 0 = least significant
            yield i, j, W - 1 - pos // WORD, pos % WORD


def _move(v, src, dst):
    """The bit `src` of v, alone, moved to position `dst`."""
    b = v & (1 << src)
    return b << (dst - src) if dst >= src else b >> (src - dst)


def _transpose_to_words(X, bits):
    words = [0] * n_words(len(X), bits)
    for i, j, w, s in _bit_places(len(X), bits):
        words[w] = words[w] | _move(X[i], j, s)
    return words


def _words_to_transpose(words, n, bits):
    X = [0] * n
    for i, j, w, s in _bit_places(n, bits):
        X[i] = X[i] | _move(words[w], s, j)
    return X


def encode(coords, bits):
    """Hilbert index of integer points: coords (N, n), each in [0, 2^bits) -> int64 (N, W) words.

    W = ceil(n·bits / 32); word 0 holds the most significant 32 bits, so sorting the rows
    lexicographically sorts the points along the curve.
    """
    _check_bits(bits)
    xp = array_namespace(coords)
    c = _check_int_matrix(xp, coords, "coords")
    if bool(xp.any(c < 0)) or bool(xp.any(c >= 2**bits)):
        raise ValueError(f"coords must lie in [0, 2^bits) = [0, {2**bits}) for bits={bits}")
    X = _axes_to_transpose([c[:, i] for i in range(c.shape[1])], bits)
    zero = xp.zeros(c.shape[0], dtype=xp.int64, device=device(c))
    return xp.stack([zero | w for w in _transpose_to_words(X, bits)], axis=1)  # (N, W)


def decode(words, n, bits):
    """Points of Hilbert indices: int64 words (N, W), W = ceil(n·bits / 32) -> coords int64 (N, n)."""
    _check_bits(bits)
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    xp = array_namespace(words)
    h = _check_int_matrix(xp, words, "words")
    W = n_words(n, bits)
    if h.shape[1] != W:
        raise ValueError(f"words must have ceil(n·bits/32) = {W} columns for n={n}, bits={bits}, "
                         f"got {h.shape[1]}")
    top = n * bits - WORD * (W - 1)  # bits used in the most significant word
    if bool(xp.any(h < 0)) or bool(xp.any(h >= 2**WORD)) or bool(xp.any(h[:, 0] >= 2**top)):
        raise ValueError(f"words must hold an index in [0, 2^(n·bits)) = [0, 2^{n * bits}) as "
                         f"32-bit words")
    zero = xp.zeros(h.shape[0], dtype=xp.int64, device=device(h))
    X = [zero | x for x in _words_to_transpose([h[:, w] for w in range(W)], n, bits)]
    return xp.stack(_transpose_to_axes(X, bits), axis=1)  # (N, n)


def lexsort_rows(words):
    """Stable argsort of the rows of an int (N, W) array in lexicographic order: W stable
    argsorts, from the least significant column to the most (the array API has no lexsort)."""
    xp = array_namespace(words)
    perm = xp.arange(words.shape[0], dtype=xp.int64, device=device(words))
    for w in range(words.shape[1] - 1, -1, -1):
        perm = xp.take(perm, xp.argsort(xp.take(words[:, w], perm), stable=True))
    return perm


def _check_float_matrix(xp, x, name):
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (K, d), got shape {tuple(x.shape)}")
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    if x.dtype not in (xp.float32, xp.float64):  # float16 / bfloat16: work in float32
        x = xp.astype(x, xp.float32)
    return x


def principal_axes(x, dims):
    """The top `dims` principal axes (d, dims) of the rows of x, largest variance first.

    An eigenvector is defined up to its sign; we make its largest-magnitude entry positive (the
    convention of scikit-learn's PCA), so the ordering does not flip with the LAPACK build. Axes
    with equal variance are not unique at all: there the ordering may differ between backends.
    """
    xp = array_namespace(x)
    xc = x - xp.mean(x, axis=0)
    _, v = xp.linalg.eigh(xc.T @ xc)  # eigenvalues ascending; (d, d) covariance, never K×K
    v = xp.flip(v[:, v.shape[1] - dims:], axis=1)  # (d, dims)
    rows = xp.arange(v.shape[0], device=device(x))[:, None]
    biggest = xp.sum(xp.where(rows == xp.argmax(xp.abs(v), axis=0), v, 0.0), axis=0)  # (dims,)
    return v * (1.0 - 2.0 * xp.astype(biggest < 0, v.dtype))


def quantize(y, bits):
    """Float points (K, n) -> integer grid coordinates in [0, 2^bits), one scale for every axis.

    One common scale (the largest extent of any axis) keeps the grid isotropic: cells are cubes,
    so the curve's neighbourhoods are Euclidean ones. Scaling each axis to its own min/max would
    stretch a nearly flat axis (a minor principal axis, noise) over the whole grid and let it split
    the data as early and as often as the main axes, ordering by noise.
    """
    xp = array_namespace(y)
    lo = xp.min(y, axis=0)
    span = xp.max(xp.max(y, axis=0) - lo)
    cells = 2**bits
    scale = cells / xp.where(span > 0, span, 1.0)  # all points equal: every point in cell 0
    return xp.astype(xp.clip(xp.floor((y - lo) * scale), 0, cells - 1), xp.int64)


def order(x, *, bits=8, dims=None):
    """A permutation (K,) int64 that visits the float vectors x (K, d) along the Hilbert curve.

    With `dims`, x is first projected onto its top `dims` principal axes (dims = d rotates without
    reducing); with dims=None the raw coordinates are used. Each axis is quantized to `bits` bits
    on one common scale (see `quantize`), and the rows are sorted by Hilbert index; points in the
    same cell keep their input order (a stable sort), so the result is deterministic.

    Choosing dims and bits: the curve visits 2^(dims·bits) cells. Few dims keep the curve's
    locality (a cell has 2·dims face neighbours of which the curve passes through only 2, so the
    more dimensions, the more spatial neighbours end up far apart along it) but merge points that
    differ only in the dropped directions. Too few bits put distinct points in one cell, where
    their order is the arbitrary input order (collisions); about log2(K)/dims bits separate K
    points of spread-out data, more are needed for clustered data, and extra bits cost only time
    (linear in dims·bits), never locality.
    """
    _check_bits(bits)
    xp = array_namespace(x)
    x = _check_float_matrix(xp, x, "x")
    if dims is not None:
        if isinstance(dims, bool) or not isinstance(dims, int):
            raise TypeError(f"dims must be an int or None, got {type(dims).__name__}")
        if not 1 <= dims <= x.shape[1]:
            raise ValueError(f"dims must be in [1, d] = [1, {x.shape[1]}], got {dims}")
        x = x @ principal_axes(x, dims)  # (K, dims)
    return lexsort_rows(encode(quantize(x, bits), bits))


class Locality(NamedTuple):
    step: float  # mean Euclidean distance between consecutive vectors of the ordering (lower: better)
    knn_recall: float  # fraction of the k nearest neighbours within `window` places (higher: better)


def locality(x, perm, *, k=10, window=None, max_block_bytes=2**26):
    """How well the ordering `perm` keeps neighbours in x (K, d) together.

    `step` is the mean distance between consecutive vectors along perm; `knn_recall` the fraction
    of each vector's k nearest neighbours (Euclidean, itself excluded) at most `window` places from
    it along perm (default window = k). The neighbours are found in blocks of rows whose (B, K)
    distance matrix fits `max_block_bytes`, so no K×K matrix is formed.
    """
    xp = array_namespace(x, perm)
    x = _check_float_matrix(xp, x, "x")
    K = x.shape[0]
    if not xp.isdtype(perm.dtype, "integral") or perm.shape != (K,):
        raise ValueError(f"perm must be an integer array of shape ({K},)")
    perm = xp.astype(perm, xp.int64)
    if not bool(xp.all(xp.sort(perm) == xp.arange(K, device=device(x)))):
        raise ValueError("perm must be a permutation of 0..K-1")
    if not 1 <= k < K:
        raise ValueError(f"k must be in [1, K) = [1, {K}), got {k}")
    window = k if window is None else window
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")

    xs = xp.take(x, perm, axis=0)
    step = xp.mean(xp.sqrt(xp.sum((xs[1:, :] - xs[:-1, :]) ** 2, axis=1))) if K > 1 else 0.0
    place = xp.argsort(perm)  # place[i] = position of vector i along the ordering
    sq = xp.sum(x * x, axis=1)
    cols = xp.arange(K, device=device(x))
    B = max(1, max_block_bytes // (K * xp.finfo(x.dtype).bits // 8))  # rows a block
    hits = 0
    for r0 in range(0, K, B):
        r1 = min(r0 + B, K)
        rows = xp.arange(r0, r1, device=device(x))
        d2 = sq[r0:r1, None] - 2.0 * (x[r0:r1, :] @ x.T) + sq[None, :]  # (B, K)
        d2 = xp.where(cols == rows[:, None], math.inf, d2)  # a vector is not its own neighbour
        for _ in range(k):  # k argmin passes: cheaper than sorting K distances per row
            nb = xp.argmin(d2, axis=1)  # the first of equal distances
            far = xp.abs(xp.take(place, nb) - xp.take(place, rows))
            hits += int(xp.sum(xp.astype(far <= window, xp.int64)))
            d2 = xp.where(cols == nb[:, None], math.inf, d2)
    return Locality(float(step), hits / (K * k))


def _codebook(K=512, seed=0):
    """A codebook-like data set: a k-means codebook (K, 64) of 8×8 patches of skimage's camera."""
    import numpy as np
    from skimage import data
    from sklearn.cluster import KMeans

    img = data.camera().astype(np.float64) / 255.0
    rng = np.random.default_rng(seed)
    r, c = rng.integers(0, img.shape[0] - 8, 8000), rng.integers(0, img.shape[1] - 8, 8000)
    patches = np.stack([img[i:i + 8, j:j + 8].ravel() for i, j in zip(r, c)])  # (8000, 64)
    return KMeans(K, n_init=1, max_iter=20, random_state=seed).fit(patches).cluster_centers_


def main():
    import argparse
    import time

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="hilbert.png")
    args = ap.parse_args()

    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, p in zip(axes[:3], (1, 2, 4)):  # the 2-D curve: decode 0 .. 4^p - 1
        pts = decode(np.arange(4**p, dtype=np.int64)[:, None], 2, p)
        ax.plot(pts[:, 0], pts[:, 1], "-", lw=1.5)
        ax.set_title(f"2-D Hilbert curve, bits={p}")
        ax.set_aspect("equal")
    rng = np.random.default_rng(0)
    cloud = np.concatenate([rng.normal(m, 0.6, (60, 2)) for m in ((0, 0), (4, 1), (1, 5), (5, 5))])
    path = cloud[order(cloud, bits=8)]
    axes[3].plot(path[:, 0], path[:, 1], "-", c="0.6", lw=0.8)
    axes[3].scatter(path[:, 0], path[:, 1], c=np.arange(len(path)), cmap="viridis", s=12)
    axes[3].set_title("point cloud in Hilbert order (colour = place)")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")

    x = _codebook()
    K = x.shape[0]
    rows = [("random", rng.permutation(K)), ("sort by first coordinate", np.argsort(x[:, 0], kind="stable"))]
    for dims in (2, 4, 8, None):
        t = time.perf_counter()
        perm = order(x, bits=8, dims=dims)
        rows.append((f"hilbert dims={dims} bits=8 ({1e3 * (time.perf_counter() - t):.0f} ms)", perm))
    print(f"\nlocality of orderings of a k-means codebook of camera 8x8 patches (K={K}, d={x.shape[1]})")
    print("| ordering | mean step (lower better) | 10-NN within ±10 places (higher better) |")
    print("| --- | --- | --- |")
    for name, perm in rows:
        loc = locality(x, np.asarray(perm), k=10)
        print(f"| {name} | {loc.step:.3f} | {loc.knn_recall:.3f} |")


if __name__ == "__main__":
    main()

"""The n-dimensional Hilbert curve for all points at once, and the Hilbert ordering of vectors.

Paper: J. Skilling, "Programming the Hilbert curve", AIP Conference Proceedings 707, 381-387
(2004), doi:10.1063/1.1751381. Its two C routines are `_axes_to_transpose` (AxestoTranspose:
"inverse undo excess work", then Gray encode) and `_transpose_to_axes` (TransposetoAxes: Gray
decode, then "undo excess work"). Here each line acts on a whole column of points, so the Python
loops run over bits and dimensions only, never over points; 64 // bits points share each int64
(SWAR lanes, below), and the bits of the index are gathered a block of up to 64 at a time by
"magic mask" spreads (`_spread`, `_compact`), so few array operations move single bits. The index
agrees with the `hilbertcurve` package (galtay/hilbertcurve): `encode(c, p)` is
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
BLOCK = 2**20  # int64 values (points x coordinates) processed at a time, at least 8192 points


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


def _i64(v):
    """The int64 with the same 64 bits as the Python int v in [0, 2^64)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _lane(v, bits):
    """v (< 2^bits) repeated in every lane of `bits` bits of an int64: a SWAR constant."""
    return _i64(sum(v << (lane * bits) for lane in range(64 // bits)))


# SWAR ("SIMD within a register"): Skilling's loops only shift, mask and xor within a number of
# `bits` bits, so 64 // bits points share one int64, each in its own lane, and every array
# operation below advances that many points at once (16 points for bits = 4). A lane never
# borrows from its neighbour: right shifts are masked with `ones` or `_lane(...)` (which also drops
# the sign bits an arithmetic shift brings into the top lane), and `m * P` with m a 0/1 per lane
# and P < 2^q <= 2^(bits-1) stays inside each lane, below bit 63.


def _contiguous(a):
    """A C-contiguous copy of a (transposed) view: reshaping through 1-D copies in C order."""
    xp = array_namespace(a)
    return xp.reshape(xp.reshape(a, (-1,)), a.shape)


def _points_to_lanes(points, bits):
    """Points (N, n) of values < 2^bits -> SWAR rows (n, M), M = ceil(N / L), L = 64 // bits:
    point l·M + k is lane l of column k. Lanes are blocks of points, so packing reads contiguous
    blocks and only the L times smaller result is transposed."""
    xp = array_namespace(points)
    (N, n), L = points.shape, 64 // bits
    M = -(-N // L)
    if L * M > N:
        pad = xp.zeros((L * M - N, n), dtype=xp.int64, device=device(points))
        points = xp.concat([points, pad])
    A = xp.reshape(points, (L, M, n))
    packed = A[0, ...]
    for lane in range(1, L):
        packed = packed | (A[lane, ...] << (lane * bits))
    return _contiguous(packed.T)


def _rows_to_lanes(rows, bits):
    """Rows (n, N), one point a column -> SWAR rows (n, M), lanes as in `_points_to_lanes`."""
    xp = array_namespace(rows)
    (n, N), L = rows.shape, 64 // bits
    M = -(-N // L)
    if L * M > N:
        pad = xp.zeros((n, L * M - N), dtype=xp.int64, device=device(rows))
        rows = xp.concat([rows, pad], axis=1)
    A = xp.reshape(rows, (n, L, M))
    packed = A[:, 0, :]
    for lane in range(1, L):
        packed = packed | (A[:, lane, :] << (lane * bits))
    return packed


def _lanes_to_rows(packed, bits, N):
    """SWAR rows (n, M) -> rows (n, N), one point a column."""
    xp = array_namespace(packed)
    lanes = [(packed >> (lane * bits)) & ((1 << bits) - 1) for lane in range(64 // bits)]
    return xp.concat(lanes, axis=1)[:, :N]  # a shift by a Python int: numpy's fast loop


def _lanes_to_points(packed, bits, N):
    """SWAR rows (n, M) -> points (N, n): the inverse of `_points_to_lanes`."""
    xp = array_namespace(packed)
    packed = _contiguous(packed.T)  # (M, n)
    lanes = [(packed >> (lane * bits)) & ((1 << bits) - 1) for lane in range(64 // bits)]
    return xp.concat(lanes, axis=0)[:N, :]


def _rows(a):
    return [a[i, :] for i in range(a.shape[0])]


def _axes_to_transpose(X, bits):
    """Skilling's AxestoTranspose on SWAR rows: coordinates X[0..n-1] -> transposed index."""
    X, n = list(X), len(X)
    ones = _lane(1, bits)
    for q in range(bits - 1, 0, -1):  # Q = 2^q from the top bit down to 2: inverse undo excess work
        P, low = (1 << q) - 1, _lane((1 << q) - 1, bits)
        X[0] = X[0] ^ (((X[0] >> q) & ones) * P)  # i = 0: invert, or exchange with itself (no-op)
        for i in range(1, n):
            inv = ((X[i] >> q) & ones) * P  # lanes whose bit Q of X[i] is set: invert X[0] ...
            t = (X[0] ^ X[i]) & (inv ^ low)  # ... the others: exchange the low bits of X[0], X[i]
            X[0] = X[0] ^ (t | inv)
            X[i] = X[i] ^ t
    for i in range(1, n):  # Gray encode
        X[i] = X[i] ^ X[i - 1]
    # Skilling's t = xor of (Q - 1) over the set bits Q > 1 of X[n-1]: bit j of t is the parity
    # of the bits of X[n-1] above j, a prefix xor of X[n-1] >> 1 within each lane.
    t, s = (X[n - 1] >> 1) & _lane((1 << (bits - 1)) - 1, bits), 1
    while s < bits - 1:
        t = t ^ ((t >> s) & _lane((1 << (bits - s)) - 1, bits))
        s *= 2
    return [x ^ t for x in X]


def _transpose_to_axes(X, bits):
    """Skilling's TransposetoAxes on SWAR rows: transposed index X[0..n-1] -> coordinates."""
    X, n = list(X), len(X)
    ones = _lane(1, bits)
    t = (X[n - 1] >> 1) & _lane((1 << (bits - 1)) - 1, bits)  # Gray decode by H ^ (H / 2)
    for i in range(n - 1, 0, -1):
        X[i] = X[i] ^ X[i - 1]
    X[0] = X[0] ^ t
    for q in range(1, bits):  # Q = 2, 4, ..., 2^(bits-1): undo excess work
        P, low = (1 << q) - 1, _lane((1 << q) - 1, bits)
        for i in range(n - 1, 0, -1):
            inv = ((X[i] >> q) & ones) * P
            t = (X[0] ^ X[i]) & (inv ^ low)
            X[0] = X[0] ^ (t | inv)
            X[i] = X[i] ^ t
        X[0] = X[0] ^ (((X[0] >> q) & ones) * P)
    return X


def _chunks(n, bits):
    """Blocks (j0, c, i0, i1) of the index, each at most 64 bits: bits j0..j0+c-1 of coordinates
    i0..i1-1, whose places in h are the `width` bits from `base` up (bit j of X[i] is bit
    j·n + (n-1-i) of h). For n <= 64 a block is c whole levels; for n > 64, part of one level."""
    if n <= 64:
        c = min(bits, 64 // n)
        blocks = [(j0, min(c, bits - j0), 0, n) for j0 in range(0, bits, c)]
    else:
        blocks = [(j0, 1, i0, min(i0 + 64, n)) for j0 in range(bits) for i0 in range(0, n, 64)]
    for j0, c, i0, i1 in blocks:
        yield j0, c, i0, i1, j0 * n + n - i1, (c - 1) * n + i1 - i0  # ..., base, width


def _spread_masks(n, c):
    """Masks of the "magic bits" spread of c bits to stride n: after the step that moves bit t
    by k·(n-1) if bit k of t is set, bit t is at t + (n-1)·(t with its bits below k cleared)."""
    return {k: _i64(sum(1 << (t + (n - 1) * (t & -k)) for t in range(c))) for k in _powers(c)}


def _powers(c):
    """1, 2, 4, ..., K with K the smallest power of two >= c."""
    k = 1
    while k < c:
        yield k
        k *= 2
    yield k


def _spread(x, n, c):
    """Bits 0..c-1 of x moved to 0, n, 2n, ...: log2(c) shift-or-mask steps instead of c moves."""
    mask = _spread_masks(n, c)
    for k in sorted(mask, reverse=True)[1:]:
        x = (x | (x << (k * (n - 1)))) & mask[k]
    return x


def _compact(x, n, c):
    """The inverse of `_spread`: bits 0, n, 2n, ... (others zero) moved to 0..c-1."""
    mask = _spread_masks(n, c)
    for k in sorted(mask)[:-1]:
        x = (x | (x >> (k * (n - 1)))) & mask[2 * k]
    return x


def _groups(i0, i1, bits):
    """Coordinates i0..i1-1 in groups [a, b) of at most 64 // bits, packed into one int64 each."""
    G = 64 // bits
    return [(a, min(a + G, i1)) for a in range(i0, i1, G)]


def _transpose_to_words(X, bits):
    """Transposed index X[0..n-1] -> 32-bit words of h, most significant first.

    A block of c >= 2 levels: each coordinate's c bits are spread to stride n (`_spread`) and
    shifted into place. A block of one level (n > 32, or bits = 1): a few coordinates are packed
    into one int64, `bits` bits each (coordinate a at the top), and their bit j0 gathered by
    `_compact` with stride `bits`, so no array operation moves a single bit."""
    n = len(X)
    W = n_words(n, bits)
    words, packs = [0] * W, {}
    for j0, c, i0, i1, base, width in _chunks(n, bits):
        V = 0  # the block's bits of h, from `base` up
        if c > 1:
            for i in range(i0, i1):
                V = V | (_spread((X[i] >> j0) & ((1 << c) - 1), n, c) << (i1 - 1 - i))
        for a, b in _groups(i0, i1, bits) if c == 1 else []:
            if (a, b) not in packs:
                packs[a, b] = X[a]
                for i in range(a + 1, b):
                    packs[a, b] = (packs[a, b] << bits) | X[i]
            stride = _i64(sum(1 << (t * bits) for t in range(b - a)))
            V = V | (_compact((packs[a, b] >> j0) & stride, bits, b - a) << (i1 - b))
        for w in range(W):
            r = WORD * (W - 1 - w) - base  # the word's lowest bit, counted from `base`
            if -WORD < r < width:  # the word and the block overlap
                if r >= 0:
                    words[w] = words[w] | ((V >> r) & ((1 << min(WORD, width - r)) - 1))
                else:
                    words[w] = words[w] | ((V << -r) & (2**WORD - 1))
    return words


def _words_to_transpose(words, n, bits):
    """32-bit words of h, most significant first -> transposed index X[0..n-1]: the inverse of
    `_transpose_to_words`, block by block."""
    W = len(words)
    X, packs = [0] * n, {}
    for j0, c, i0, i1, base, width in _chunks(n, bits):
        V = 0
        for w in range(W):
            r = WORD * (W - 1 - w) - base
            if -WORD < r < width:
                V = V | (words[w] << r if r >= 0 else words[w] >> -r)
        V = V & _i64((1 << width) - 1)
        if c > 1:
            stride = _i64(sum(1 << (t * n) for t in range(c)))
            for i in range(i0, i1):
                X[i] = X[i] | (_compact((V >> (i1 - 1 - i)) & stride, n, c) << j0)
        for a, b in _groups(i0, i1, bits) if c == 1 else []:
            y = _spread((V >> (i1 - b)) & _i64((1 << (b - a)) - 1), bits, b - a)
            packs[a, b] = packs.get((a, b), 0) | (y << j0)
    for (a, b), p in packs.items():
        for i in range(a, b):
            x = (p >> ((b - 1 - i) * bits)) & ((1 << bits) - 1)
            X[i] = x if isinstance(X[i], int) else X[i] | x  # int: no bits from other blocks
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
    return _by_blocks(_encode_block, c, c.shape[1], bits)


def _by_blocks(f, a, n, *args):
    """f on blocks of rows of a, concatenated: a block's arrays of n coordinates stay in cache
    instead of streaming N-long arrays through memory once per bit operation."""
    xp = array_namespace(a)
    N, B = a.shape[0], max(8192, BLOCK // n)
    if N <= B:
        return f(a, *args)
    return xp.concat([f(a[s:min(s + B, N), :], *args) for s in range(0, N, B)], axis=0)


def _encode_block(c, bits):
    xp = array_namespace(c)
    X = xp.stack(_axes_to_transpose(_rows(_points_to_lanes(c, bits)), bits))
    return xp.stack(_transpose_to_words(_rows(_lanes_to_rows(X, bits, c.shape[0])), bits), axis=1)


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
    return _by_blocks(_decode_block, h, n, n, bits)


def _decode_block(h, n, bits):
    xp = array_namespace(h)
    X = _rows_to_lanes(xp.stack(_words_to_transpose(_rows(_contiguous(h.T)), n, bits)), bits)
    return _lanes_to_points(xp.stack(_transpose_to_axes(_rows(X), bits)), bits, h.shape[0])


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

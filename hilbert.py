"""The n-dimensional Hilbert curve for many points at once, and the Hilbert ordering of vectors.

Paper: J. Skilling, "Programming the Hilbert curve", AIP Conf. Proc. 707, 381-387 (2004),
doi:10.1063/1.1751381. Section 1 is its two C routines, AxestoTranspose and TransposetoAxes, line
for line, each line acting on arrays of points. Section 2 is ours (the paper leaves bit layouts to
the reader): layouts that let those lines move 64 bits at a time, and what they buy. The index is
`hilbertcurve`'s: `encode(coords, p)` is `HilbertCurve(p, n).distance_from_point(coords)`.

Conventions (Skilling's and `hilbertcurve`'s): a point has n integer coordinates in [0, 2^bits).
Skilling keeps the index h in [0, 2^(n·bits)) as its "transpose" X, n numbers of `bits` bits: bit
j of X[i] is bit j·n + (n - 1 - i) of h, so coordinate 0 holds the top bit of every level. His
example, n = 3, bits = 5: h = ABCDE FGHIJ KLMNO is X[0] = ADGJM, X[1] = BEHKN, X[2] = CFILO. We
return h as W = ceil(n·bits / 32) int64 words of 32 bits, most significant first, so rows sort as
the integers do, whatever n·bits (288 dimensions of 24 bits: 216 words). Only int64 bit operations
are used: the same lines run on NumPy, array_api_strict, torch and CuPy.

HyperHill (Li et al., "Resizing codebook of vector quantization without retraining", Multimedia
Systems 2023, Alg. 3) sorts an enhanced codebook along this curve in all n = 288 dimensions, p = 24
bits, on the grid (e + 1) / stride, stride = 2 / 2^p: `order(x, bits=24, bounds=(-1, 1))`. Our
default grid departs from it, fitted to the data. `locality` measures how well an order does.
"""
import functools
import math
from typing import NamedTuple

from array_api_compat import array_namespace, device

import arrays

WORD = 32  # bits of index per int64 word: a 32-bit word never reaches the sign bit
BLOCK = 2**20  # int64 values (points x coordinates) processed at a time, at least 8192 points


# ---- 1. Skilling's routines ------------------------------------------------------------------
# X[i] is coordinate i (or row i of the transposed index) of many points, an int64 array with a
# point in each lane of S bits (section 2): `_lane(v, bits)` is v in every lane, and a mask stands
# for Skilling's `if`. The routines write in place on rows made for them (1.5x faster).
def _axes_to_transpose(X, bits):
    """Skilling's AxestoTranspose: coordinates X[0..n-1] -> the transposed Hilbert index."""
    n = len(X)
    for q in range(bits - 1, 0, -1):  # Q = 2^q = M, ..., 4, 2: inverse undo excess work
        for i in range(n):
            _invert_or_exchange(X, i, q, bits)
    for i in range(1, n):  # Gray encode
        X[i] ^= X[i - 1]
    t = 0
    for q in range(bits - 1, 0, -1):  # if (X[n-1] & Q) t ^= Q - 1
        t = t ^ ((X[n - 1] >> q) & _lane(1, bits)) * ((1 << q) - 1)
    for i in range(n):
        X[i] ^= t
    return X


def _transpose_to_axes(X, bits):
    """Skilling's TransposetoAxes: the transposed Hilbert index X[0..n-1] -> coordinates."""
    n = len(X)
    t = (X[n - 1] >> 1) & _lane((1 << (bits - 1)) - 1, bits)  # Gray decode by H ^ (H / 2)
    for i in range(n - 1, 0, -1):
        X[i] ^= X[i - 1]
    X[0] ^= t
    for q in range(1, bits):  # Q = 2, 4, ..., 2^(bits-1): undo excess work
        for i in range(n - 1, -1, -1):
            _invert_or_exchange(X, i, q, bits)
    return X


def _invert_or_exchange(X, i, q, bits):
    """Skilling's inner step, Q = 2^q, P = Q - 1, in every lane at once: where X[i] & Q, invert the
    low bits of X[0] (X[0] ^= P); elsewhere exchange the low bits of X[0] and X[i]."""
    invert = (X[i] >> q) & _lane(1, bits)
    invert *= (1 << q) - 1  # P in the lanes where X[i] & Q, 0 elsewhere
    if i > 0:  # (an exchange of X[0] with itself does nothing)
        t = X[0] ^ X[i]
        t &= invert ^ _lane((1 << q) - 1, bits)  # t = (X[0] ^ X[i]) & P in the other lanes
        X[0] ^= t
        X[i] ^= t
    X[0] ^= invert


# ---- 2. Layout: 64 bits at a time (ours) ------------------------------------------------------
# What it buys (bench_hilbert.py: speed-up over hilbertcurve, 100,000 points; when each came in):
# - SWAR lanes: L = 64 // S points share an int64, each in a lane of S bits (the power of two >=
#   bits), so each operation of section 1 advances L points; with index bits moved 64 at a time,
#   2.5-16x over one point an int64. No lane borrows from the next: right shifts are masked by
#   `_lane` constants (which drop the sign bits >> brings into the top lane), and P * (0 or 1)
#   stays in its lane. Point l·M + k of a block of L·M points is lane l of column k.
# - Bit-matrix transposes ("rows", n <= 32): c = 64 // F levels of h in fields of F bits (F the
#   power of two >= n; `_spread` from stride n) are a c x F bit matrix, whose transpose
#   (`_transpose_bits`, <= 5 delta swaps) holds each coordinate's bits of those levels side by
#   side; with section 1 in place, decode at (n, bits) = (8, 8) went from 83-95x to 122-153x.
# - Lane transposes ("packs", n > 32 or bits = 1): `_transpose_lanes` turns L SWAR rows of L
#   points into packs of L coordinates of a point (pack g: coordinate n-1-(g·L + f) in lane f, as
#   in h), and `_transpose_bits` a pack into levels of L bits; decode at (64, 4): 41-50x -> 91-97x.
# Now (NumPy, five runs): encode 129-412x, decode 81-260x at the targets' shapes (3, 16), (8, 8),
# (64, 4). Blocks of about 2^20 values (`_by_blocks`) keep a block's rows in cache.
def _i64(v):  # the int64 with the 64 bits of the Python int v in [0, 2^64)
    return v - (1 << 64) if v >= 1 << 63 else v


def _pow2(v):  # the smallest power of two >= v: the lane width S of bits, the field F of n
    return 1 << (v - 1).bit_length()


@functools.cache
def _lane(v, bits):  # v (< 2^bits) in every lane of an int64
    return _i64(sum(v << (lane * _pow2(bits)) for lane in range(64 // _pow2(bits))))


def _rows(a):
    return [a[i, :] for i in range(a.shape[0])]


def _contiguous(a):  # a C-contiguous copy of a (transposed) view, by a 1-D copy in C order
    xp = array_namespace(a)
    return xp.reshape(xp.reshape(a, (-1,)), a.shape)


def _pad(a, bits):  # a (N, k) with zero rows appended up to a multiple of L = 64 // S
    xp, extra = array_namespace(a), -a.shape[0] % (64 // _pow2(bits))
    return xp.concat([a, xp.zeros((extra, a.shape[1]), dtype=a.dtype, device=device(a))]) if extra else a


def _to_lanes(rows, bits):
    """Rows (n, L·M), one point a column -> SWAR rows (n, M): an or-chain over slices, faster than
    a sum over a lane axis, and faster on a transposed view than on a copy."""
    A = array_namespace(rows).reshape(rows, (rows.shape[0], 64 // _pow2(bits), -1))  # (n, L, M)
    packed = A[:, 0, :]
    for lane in range(1, A.shape[1]):
        packed = packed | (A[:, lane, :] << (lane * _pow2(bits)))
    return packed


def _lane_values(lanes, bits, axis):
    """SWAR rows -> the values in their lanes, along a new axis of L inserted at `axis`."""
    xp, shape = array_namespace(lanes), [-1 if a == axis else 1 for a in range(lanes.ndim + 1)]
    shifts = xp.arange(0, 64, _pow2(bits), dtype=xp.int64, device=device(lanes))
    A = xp.expand_dims(lanes, axis=axis) >> xp.reshape(shifts, tuple(shape))
    A &= (1 << bits) - 1  # in place: one temporary fewer
    return A


def _transpose_lanes(A, bits):
    """A (..., L, M) -> B with lane l of B[..., r, k] = lane r of A[..., l, k]: each L x L matrix
    of lanes transposed in log2(L) swaps of off-diagonal blocks (Warren, Hacker's Delight, 7-3)."""
    xp = array_namespace(A)
    L, M, lead, S, s = A.shape[-2], A.shape[-1], A.shape[:-2], _pow2(bits), A.shape[-2] // 2
    while s >= 1:
        B = xp.reshape(A, (*lead, L // (2 * s), 2, s, M))
        top, bottom = B[..., 0, :, :], B[..., 1, :, :]  # rows r and r + s, bit s of r clear
        clear = _i64(sum(((1 << S) - 1) << (lane * S) for lane in range(L) if not lane & s))
        t = ((top >> (s * S)) ^ bottom) & clear  # lane l + s of top <-> lane l of bottom
        A = xp.reshape(xp.stack([top ^ (t << (s * S)), bottom ^ t], axis=-3), A.shape)
        s //= 2
    return A


@functools.cache
def _spread_steps(n, c, g):
    """The "magic mask" steps that move c fields of g bits from stride g to stride n: for k = K/2,
    ..., 1 (K = _pow2(c)) the fields t with bit k set move up by k·(n - g). A step is (shift, the
    bits that stay, those that move before the step, after it)."""
    def at(fields, k):  # the bits of these fields once the steps down to k are done
        return _i64(sum(((1 << g) - 1) << (t * g + (n - g) * (t & -k)) for t in fields))
    steps, k = [], _pow2(c) // 2
    while k >= 1:
        moving, staying = [t for t in range(c) if t & k], [t for t in range(c) if not t & k]
        steps.append((k * (n - g), at(staying, k), at(moving, 2 * k), at(moving, k)))
        k //= 2
    return steps


def _spread(x, n, c, g=1):
    """Fields 0..c-1 of g bits of x (field t at bit t·g) moved to stride n (field t at bit t·n)."""
    for shift, stay, _, dst in _spread_steps(n, c, g):
        x = (x & stay) | ((x << shift) & dst)
    return x


def _compact(x, n, c, g=1):
    """The inverse of `_spread`: fields of g bits at stride n moved to stride g."""
    for shift, stay, src, _ in reversed(_spread_steps(n, c, g)):
        x = (x & stay) | ((x >> shift) & src)  # src <= bit 63 - shift: no sign bits from >>
    return x


@functools.cache
def _transpose_swaps(a):
    """The delta swaps (d, mask) that transpose the bit matrix of an int64 with 2^(6-a) rows of 2^a
    bits (bit t·2^a + r -> bit r·2^(6-a) + t): a rotation of the 6 bits of a bit's position by
    6 - a, made of exchanges of two position bits s < l, each one delta swap (Warren, 7-3)."""
    held, swaps = list(range(6)), []  # held[s]: the source position bit now in slot s
    for s in range(6):
        l = held.index((s + a) % 6)  # l >= s: the slots below s are already right
        if l != s:
            held[s], held[l] = held[l], held[s]
            mask = sum(1 << p for p in range(64) if (p >> s) & 1 and not (p >> l) & 1)
            swaps.append((2**l - 2**s, _i64(mask)))
    return swaps


def _transpose_bits(V, a):
    """V (int64 array) with its bit matrix of 2^(6-a) rows of 2^a bits transposed."""
    for d, mask in _transpose_swaps(a):
        t = V >> d  # t, then the new V, are ours: in place
        t ^= V
        t &= mask  # the sign bits of >> stay outside mask: p + d <= 63
        V = V ^ t
        t <<= d
        V ^= t
    return V


def _bits_of(words, base, width):
    """Bits base .. base + width - 1 (width <= 64) of h, from its words (most significant first)."""
    V = None
    for k in range(base // WORD, (base + width - 1) // WORD + 1):  # the words touched, lowest first
        w, r = words[len(words) - 1 - k], WORD * k - base  # r: the word's lowest bit, from base
        w = w << r if r >= 0 else w >> -r
        V = w if V is None else V | w
    return V & _i64((1 << width) - 1)


def _put_bits(words, V, base, width):
    """Or the `width` bits of V into bits base .. base + width - 1 of h's words, in place."""
    for k in range(base // WORD, (base + width - 1) // WORD + 1):
        r = WORD * k - base
        part = (V >> r) & ((1 << min(WORD, width - r)) - 1) if r >= 0 else (V << -r) & (2**WORD - 1)
        words[len(words) - 1 - k] = words[len(words) - 1 - k] | part


def _lanes_to_words(X, bits):
    """Transposed index in SWAR rows X (n, M) -> h's words, a list of W arrays (L·M,)."""
    xp = array_namespace(X)
    (n, M), S, F = X.shape, _pow2(bits), _pow2(X.shape[0])
    L, C, words = 64 // S, 64 // F, [0] * n_words(X.shape[0], bits)
    if min(bits, C) > 1:  # rows: c levels of each coordinate, side by side, then transposed
        rows, c = _rows(xp.reshape(_lane_values(X, bits, 1), (n, -1))), min(bits, C)
        for j0 in range(0, bits, c):
            cj = min(c, bits - j0)
            V = (rows[0] >> j0) & ((1 << cj) - 1)
            for i in range(1, n):  # coordinate i in row n - 1 - i of the bit matrix
                V <<= C  # V is ours: in place
                V |= (rows[i] >> j0) & ((1 << cj) - 1)
            V = _transpose_bits(V, 6 - (F.bit_length() - 1))  # bit r·C + t -> bit t·F + r
            V = _compact(V, F, cj, n) if F > n else V  # V rebound: one array fewer held
            _put_bits(words, V, j0 * n, cj * n)
        return words
    A = xp.reshape(_pad(xp.flip(X, axis=0), bits), (-1, L, M))  # packs: coordinate n - 1 first
    packs = xp.reshape(_transpose_lanes(A, bits), (-1, L * M))  # (G, L·M), G = ceil(n / L)
    levels = _transpose_bits(packs, S.bit_length() - 1)  # L lanes of S bits -> S levels of L bits
    for j in range(bits):
        level = (levels >> (j * L)) & _i64((1 << L) - 1)  # bit j of L coordinates
        for g in range(packs.shape[0]):  # the padding's lanes are 0, also in a last, short pack
            _put_bits(words, level[g, :], j * n + g * L, min(L, n - g * L))
    return words


def _words_to_lanes(words, n, bits):
    """h's words, a list of W arrays (L·M,) -> transposed index in SWAR rows (n, M)."""
    xp = array_namespace(words[0])
    S, F = _pow2(bits), _pow2(n)
    L, C, X = 64 // S, 64 // F, [0] * n
    if min(bits, C) > 1:  # rows
        c = min(bits, C)
        for j0 in range(0, bits, c):
            cj = min(c, bits - j0)
            V = _bits_of(words, j0 * n, cj * n)  # levels j0 .. j0 + cj - 1 at stride n
            V = _transpose_bits(_spread(V, F, cj, n) if F > n else V, F.bit_length() - 1)
            for i in range(n):  # bit t·F + r -> bit r·C + t
                x = (V >> ((n - 1 - i) * C)) & ((1 << cj) - 1)
                X[i] = x if j0 == 0 else X[i] | (x << j0)
        X = xp.stack(X)  # the list's rows freed before the lanes are made: less memory to fault in
        return _to_lanes(X, bits)
    levels = [0] * -(-n // L)
    for j in range(bits):
        for g in range(len(levels)):
            level = _bits_of(words, j * n + g * L, min(L, n - g * L))
            levels[g] = level if j == 0 else levels[g] | (level << (j * L))
    packs = _transpose_bits(xp.stack(levels), 6 - (S.bit_length() - 1))  # S levels -> L lanes
    A = _transpose_lanes(xp.reshape(packs, (len(levels), L, -1)), bits)
    return xp.flip(xp.reshape(A, (len(levels) * L, -1))[:n, :], axis=0)


def _by_blocks(f, a, n, *args):
    """f on blocks of rows of a, written into one output (a concat would copy it once more)."""
    xp, parts = array_namespace(a), arrays.blocks(a.shape[0], max(8192, BLOCK // n))
    first = f(a[parts[0], :], *args)
    if len(parts) == 1:
        return first
    out = xp.empty((a.shape[0], first.shape[1]), dtype=first.dtype, device=device(a))
    out[parts[0], :] = first
    for s in parts[1:]:
        out[s, :] = f(a[s, :], *args)
    return out


def _encode_block(coords, bits):
    xp = array_namespace(coords)
    lanes = _contiguous(_to_lanes(_pad(coords, bits).T, bits))  # (n, M), unstrided for in place
    X = xp.stack(_axes_to_transpose(_rows(lanes), bits))
    return xp.stack(_lanes_to_words(X, bits), axis=1)[:coords.shape[0], :]


def _decode_block(h, n, bits):
    xp = array_namespace(h)
    X = _words_to_lanes(_rows(_contiguous(_pad(h, bits).T)), n, bits)
    X = xp.stack(_transpose_to_axes(_rows(X), bits))
    points = _lane_values(_contiguous(X.T), bits, 0)  # (L, M, n): point l·M + k
    return xp.reshape(points, (-1, n))[:h.shape[0], :]


# ---- 3. The index: encode, decode ------------------------------------------------------------
def n_words(n, bits):  # W = ceil(n·bits / 32), the number of 32-bit words of an index
    return -(-n * bits // WORD)


def encode(coords, bits):
    """Hilbert index of integer points: coords (N, n), each in [0, 2^bits) -> int64 (N, W) words,
    W = ceil(n·bits / 32), word 0 the most significant: sorting the rows sorts along the curve."""
    bits = arrays.check_number(bits, "bits", low=1, high=31, integer=True)
    xp = arrays.check_array(coords, "coords", kind="integral", ndim=2)
    coords = xp.astype(coords, xp.int64, copy=False)  # first: 2^bits may not fit int8; no copy
    arrays.check_indices(coords, 2**bits, "coords")
    return _by_blocks(_encode_block, coords, coords.shape[1], bits)


def decode(words, n, bits):
    """Points of Hilbert indices: int64 words (N, W), W = ceil(n·bits / 32) -> coords int64 (N, n)."""
    bits = arrays.check_number(bits, "bits", low=1, high=31, integer=True)
    n = arrays.check_number(n, "n", low=1, integer=True)
    W, top = n_words(n, bits), n * bits - WORD * (n_words(n, bits) - 1)  # top: bits of word 0
    xp = arrays.check_array(words, "words", kind="integral", shape=(None, W))
    h = xp.astype(words, xp.int64, copy=False)  # first: 2^32 does not fit int32; no copy
    if bool(xp.any(h < 0)) or bool(xp.any(h >= 2**WORD)) or bool(xp.any(h[:, 0] >= 2**top)):
        raise ValueError(f"words: must hold indices in [0, 2^{n * bits}) as 32-bit words (n={n}, bits={bits})")
    return _by_blocks(_decode_block, h, n, n, bits)


# ---- 4. Ordering vectors ---------------------------------------------------------------------
def lexsort_rows(words):
    """Stable argsort of the rows of an int (N, W) array in lexicographic order."""
    arrays.check_array(words, "words", kind="integral", ndim=2, empty_ok=True)
    return _lexsort_rows(words)


def _lexsort_rows(words):
    xp = array_namespace(words)
    perm = xp.arange(words.shape[0], dtype=xp.int64, device=device(words))
    for w in range(words.shape[1] - 1, -1, -1):  # least significant first (no lexsort in the API)
        perm = xp.take(perm, xp.argsort(xp.take(words[:, w], perm), stable=True))
    return perm


def to_grid(x, bits, *, bounds=None):
    """Float points x (K, n) -> grid cells int64 (K, n) in [0, 2^bits): floor(t · 2^bits), clipped.

    bounds=None: a grid fitted to the data, t = (x - min) / span with each axis' min and one span,
    the largest extent of any axis: cells stay cubes, so the curve's neighbourhoods are Euclidean
    (a per-axis scale would stretch a nearly flat noise axis over the whole grid).
    bounds=(lo, hi): a fixed grid, t = (x - lo) / (hi - lo), the cell floor((x - lo) / stride) of
    stride (hi - lo) / 2^bits; values below lo go to cell 0, values at hi or above to the last
    cell. HyperHill's grid is bounds=(-1, 1)."""
    return _to_grid(*_check_grid(x, bits, bounds))


def _check_grid(x, bits, bounds):  # to_grid's arguments checked; x in its working dtype
    xp = arrays.check_matrix(x, "x", products=True)
    bits = arrays.check_number(bits, "bits", low=1, high=31, integer=True)
    dtype = arrays.working_dtype(xp, x.dtype)
    if bounds is not None:
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise TypeError(f"bounds: expected a pair (lo, hi) or None, got {bounds!r}")
        big = float(xp.finfo(dtype).max) / 2  # so that hi - lo is finite
        bounds = tuple(arrays.check_number(b, "bounds", low=-big, high=big) for b in bounds)
        if not bounds[0] < bounds[1]:
            raise ValueError(f"bounds: expected lo < hi, got {bounds!r}")
    return xp.astype(x, dtype, copy=False), bits, bounds


def _to_grid(x, bits, bounds):
    xp = array_namespace(x)
    if bounds is None:
        lo = xp.min(x, axis=0)
        span = xp.max(xp.max(x, axis=0) - lo)
        t = (x - lo) / xp.where(span > 0, span, 1.0)  # all points equal: all in cell 0
    else:
        t = (x - bounds[0]) / (bounds[1] - bounds[0])
    cells = 2**bits  # clip to 2^bits in float (2^31 - 1 is no float32), then to 2^bits - 1
    return xp.clip(xp.astype(xp.clip(xp.floor(t * cells), 0.0, float(cells)), xp.int64), 0, cells - 1)


def _principal_axes(x, dims):
    """The top `dims` principal axes (d, dims) of the rows of x, largest variance first, signed so
    that the largest-magnitude entry is positive (as scikit-learn): no flips with the LAPACK build."""
    xp = array_namespace(x)
    xc = x - xp.mean(x, axis=0)
    xc = xc / xp.where(xp.max(xp.abs(xc)) > 0, xp.max(xp.abs(xc)), 1.0)  # K·max^2 must not overflow
    _, v = xp.linalg.eigh(xc.T @ xc)  # eigenvalues ascending; (d, d) covariance, never K×K
    v = xp.flip(v[:, v.shape[1] - dims:], axis=1)  # (d, dims)
    rows = xp.arange(v.shape[0], device=device(x))[:, None]
    biggest = xp.sum(xp.where(rows == xp.argmax(xp.abs(v), axis=0), v, 0.0), axis=0)  # (dims,)
    return v * (1.0 - 2.0 * xp.astype(biggest < 0, v.dtype))


def order(x, *, bits=8, dims=None, bounds=None):
    """A permutation (K,) int64 that visits the float vectors x (K, d) along the Hilbert curve.

    With `dims`, x is first projected onto its top `dims` principal axes; dims=None keeps the raw
    coordinates. They go to `to_grid` (fitted to the data, or fixed by `bounds`, which needs
    dims=None), and rows are sorted by Hilbert index, stably: points in one cell keep their input
    order. HyperHill (Alg. 3) is order(x, bits=24, bounds=(-1, 1)). Few dims keep the curve's
    locality (of a cell's 2·dims face neighbours the curve passes 2) but merge points that differ
    in the dropped directions; about log2(K)/dims bits separate K spread-out points."""
    x, bits, bounds = _check_grid(x, bits, bounds)
    if dims is not None:
        dims = arrays.check_number(dims, "dims", low=1, high=x.shape[1], integer=True)
        if bounds is not None:
            raise ValueError("bounds: a fixed grid needs dims=None (a projection has no fixed range)")
        x = x @ _principal_axes(x, dims)  # (K, dims)
    grid = _to_grid(x, bits, bounds)
    return _lexsort_rows(_by_blocks(_encode_block, grid, grid.shape[1], bits))


# ---- 5. How good an ordering is --------------------------------------------------------------
class Locality(NamedTuple):
    step: float  # mean Euclidean distance between consecutive vectors of the ordering (lower: better)
    knn_recall: float  # fraction of the k nearest neighbours within `window` places (higher: better)


def locality(x, perm, *, k=10, window=None, max_block_bytes=2**26):
    """How well the ordering `perm` keeps neighbours in x (K, d) together (`Locality`); k nearest
    neighbours (Euclidean, itself excluded) within `window` places (default k) count as kept. The
    neighbours are found in blocks of rows whose (B, K) distances fit `max_block_bytes`."""
    xp = arrays.namespace(x=x, perm=perm)
    arrays.check_matrix(x, "x", products=True)
    K = x.shape[0]
    arrays.check_permutation(perm, K, "perm")
    k = arrays.check_number(k, "k", low=1, high=K - 1, integer=True)
    window = k if window is None else arrays.check_number(window, "window", low=1, integer=True)
    max_block_bytes = arrays.check_number(max_block_bytes, "max_block_bytes", low=1, integer=True)
    x, perm = xp.astype(x, arrays.working_dtype(xp, x.dtype), copy=False), xp.astype(perm, xp.int64)
    xs = xp.take(x, perm, axis=0)
    step = xp.mean(xp.sqrt(xp.sum((xs[1:, :] - xs[:-1, :]) ** 2, axis=1)))
    place = xp.argsort(perm)  # place[i] = position of vector i along the ordering
    sq, cols, hits = xp.sum(x * x, axis=1), xp.arange(K, device=device(x)), 0
    for r in arrays.blocks(K, max(1, max_block_bytes // (K * xp.finfo(x.dtype).bits // 8))):
        rows = xp.arange(r.start, r.stop, device=device(x))
        d2 = sq[r, None] - 2.0 * (x[r, :] @ x.T) + sq[None, :]  # (B, K)
        d2 = xp.where(cols == rows[:, None], math.inf, d2)  # a vector is not its own neighbour
        for _ in range(k):  # k argmin passes: cheaper than sorting K distances per row
            nb = xp.argmin(d2, axis=1)  # the first of equal distances
            far = xp.abs(xp.take(place, nb) - xp.take(place, rows))
            hits += int(xp.sum(xp.astype(far <= window, xp.int64)))
            d2 = xp.where(cols == nb[:, None], math.inf, d2)
    return Locality(float(step), hits / (K * k))


def main():
    """A figure of the 2-D curve and of a point cloud in Hilbert order; a table of the locality of
    orderings of a k-means codebook of 8×8 patches of skimage's camera (K = 512, d = 64)."""
    import argparse

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from skimage import data
    from sklearn.cluster import KMeans

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="hilbert.png")
    out = ap.parse_args().out
    rng = np.random.default_rng(0)
    cloud = np.concatenate([rng.normal(m, 0.6, (60, 2)) for m in ((0, 0), (4, 1), (1, 5), (5, 5))])
    paths = [(decode(np.arange(4**p, dtype=np.int64)[:, None], 2, p), f"2-D Hilbert curve, bits={p}")
             for p in (1, 2, 4)] + [(cloud[order(cloud, bits=8)], "point cloud in Hilbert order")]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, (path, title) in zip(axes, paths):  # colour = place along the curve
        ax.plot(path[:, 0], path[:, 1], "-", c="0.6", lw=1)
        ax.scatter(path[:, 0], path[:, 1], c=np.arange(len(path)), cmap="viridis", s=12)
        ax.set(title=title, aspect="equal")
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print(f"wrote {out}")

    img, r = data.camera() / 255.0, np.random.default_rng(0)
    at = zip(r.integers(0, img.shape[0] - 8, 8000), r.integers(0, img.shape[1] - 8, 8000))
    patches = np.stack([img[i:i + 8, j:j + 8].ravel() for i, j in at])  # (8000, 64)
    x = KMeans(512, n_init=1, max_iter=20, random_state=0).fit(patches).cluster_centers_
    rows = [("random", rng.permutation(512)), ("sort by first coordinate", np.argsort(x[:, 0], kind="stable"))]
    rows += [(f"hilbert dims={dims} bits=8", order(x, bits=8, dims=dims)) for dims in (2, 4, 8, None)]
    print("\nlocality of orderings of a k-means codebook of camera 8x8 patches (K=512, d=64)")
    print("| ordering | mean step (lower better) | 10-NN within ±10 places (higher better) |\n| --- | --- | --- |")
    for name, perm in rows:
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in locality(x, perm, k=10)) + " |")


if __name__ == "__main__":
    main()

"""The n-dimensional Hilbert curve for all points at once, and the Hilbert ordering of vectors.

Paper: J. Skilling, "Programming the Hilbert curve", AIP Conference Proceedings 707, 381-387
(2004), doi:10.1063/1.1751381. Its two C routines are `_axes_to_transpose` (AxestoTranspose:
"inverse undo excess work", then Gray encode) and `_transpose_to_axes` (TransposetoAxes: Gray
decode, then "undo excess work"). Here each line acts on a whole column of points, so the Python
loops run over bits and dimensions only, never over points; L = 64 // S points share each int64
(SWAR lanes of S >= bits bits, below), and the bits of the index move a block of up to 64 at a
time, by "magic mask" spreads (`_spread`, `_compact`), transposes of the 64-bit matrix of an int64
(`_transpose_bits`) and of lanes (`_transpose_lanes`), so few array operations move single bits.
The index agrees with the `hilbertcurve` package (galtay/hilbertcurve): `encode(c, p)` is
`HilbertCurve(p, n).distance_from_point(c)` written in words; `decode` is `point_from_distance`.

Conventions (Skilling's, and `hilbertcurve`'s):
- a point has n integer coordinates in [0, 2^bits): the cube of side 2^bits, 2^(n·bits) cells;
- the index h in [0, 2^(n·bits)) is stored by Skilling as its "transpose" X, n numbers of `bits`
  bits: bit j of X[i] is bit j·n + (n - 1 - i) of h, so coordinate 0 holds the most significant
  bit of every level. Skilling's example, n = 3, bits = 5: h = ABCDE FGHIJ KLMNO is
  X[0] = ADGJM, X[1] = BEHKN, X[2] = CFILO;
- we return h as W = ceil(n·bits / 32) int64 words of 32 bits, most significant word first, so
  that rows compare lexicographically as the integers do and n·bits may exceed 64 (64 dimensions of
  4 bits is a 256-bit index, 8 words). Only int64 shifts, and/or/xor, comparisons and products by
  a constant are used, so the same lines run on NumPy, array_api_strict, torch (CPU/CUDA) and CuPy.

HyperHill (Li et al., "Resizing codebook of vector quantization without retraining", Multimedia
Systems 2023, sec. 3) orders an (enhanced) codebook along this curve so that neighbours on the
curve are neighbours in space; `order` does that for float vectors, `locality` measures how well.
"""
import functools
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
    return xp.astype(a, xp.int64, copy=False)  # no copy: the input is only read


def n_words(n, bits):
    """W = ceil(n·bits / 32): the number of 32-bit words of an index."""
    return -(-n * bits // WORD)


def _i64(v):
    """The int64 with the same 64 bits as the Python int v in [0, 2^64)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _ceil_pow2(v):
    """The smallest power of two >= v."""
    return 1 << (v - 1).bit_length()


def _lane_bits(bits):
    """The width S of a SWAR lane: the smallest power of two >= bits. L = 64 // S lanes then fill an
    int64 exactly, and an L x L block of lanes can be transposed by halving (`_transpose_lanes`)."""
    return _ceil_pow2(bits)


@functools.cache
def _lane(v, bits):
    """v (< 2^bits) repeated in every lane of an int64: a SWAR constant."""
    S = _lane_bits(bits)
    return _i64(sum(v << (lane * S) for lane in range(64 // S)))


# SWAR ("SIMD within a register"): Skilling's loops only shift, mask and xor within a number of
# `bits` bits, so L = 64 // S points share one int64, each in its own lane of S >= bits bits, and
# every array operation below advances L points at once (16 points for bits = 4). A lane never
# borrows from its neighbour: right shifts are masked with `ones` or `_lane(...)` (which also drops
# the sign bits an arithmetic shift brings into the top lane), and `m * P` with m a 0/1 per lane
# and P < 2^q <= 2^(bits-1) stays inside each lane, below bit 63. Point l·M + k of a block of
# L·M points is lane l of column k, so packing reads contiguous blocks of points.


def _contiguous(a):
    """A C-contiguous copy of a (transposed) view: reshaping through 1-D copies in C order."""
    xp = array_namespace(a)
    return xp.reshape(xp.reshape(a, (-1,)), a.shape)


def _pad_rows(a, bits):
    """a (N, k) with zero rows appended up to a multiple of L = 64 // S: whole SWAR columns of
    points, or whole packs of coordinates."""
    xp = array_namespace(a)
    L = 64 // _lane_bits(bits)
    if a.shape[0] % L == 0:
        return a
    pad = xp.zeros((L - a.shape[0] % L, a.shape[1]), dtype=a.dtype, device=device(a))
    return xp.concat([a, pad])


def _lane_shifts(bits, like):
    """The shift of each lane, (L,): 0, S, 2S, ..."""
    xp = array_namespace(like)
    return xp.arange(0, 64, _lane_bits(bits), dtype=xp.int64, device=device(like))


def _rows_to_lanes(rows, bits):
    """Rows (n, L·M), one point a column -> SWAR rows (n, M). An or-chain over slices: faster than
    a sum over a lane axis, and faster still on the transpose of points (L·M, n) than on a copy."""
    xp = array_namespace(rows)
    S = _lane_bits(bits)
    A = xp.reshape(rows, (rows.shape[0], 64 // S, -1))
    packed = A[:, 0, :]
    for lane in range(1, 64 // S):
        packed = packed | (A[:, lane, :] << (lane * S))
    return packed


def _lanes_to_points(lanes, bits):
    """SWAR rows (n, M) -> points (L·M, n): the inverse of `_rows_to_lanes(points.T)`."""
    xp = array_namespace(lanes)
    A = _contiguous(lanes.T)[None, ...] >> _lane_shifts(bits, lanes)[:, None, None]  # (L, M, n)
    A &= (1 << bits) - 1  # in place: A is the size of the output, one temporary fewer
    return xp.reshape(A, (-1, lanes.shape[0]))


def _lanes_to_rows(lanes, bits):
    """SWAR rows (n, M) -> rows (n, L·M): the inverse of `_rows_to_lanes`."""
    xp = array_namespace(lanes)
    A = lanes[:, None, :] >> _lane_shifts(bits, lanes)[:, None]  # (n, L, M)
    A &= (1 << bits) - 1
    return xp.reshape(A, (lanes.shape[0], -1))


def _transpose_lanes(A, bits):
    """A (..., L, M) -> B with lane l of B[..., r, k] = lane r of A[..., l, k]: for every k, the
    L x L matrix of lanes (rows r, lanes l) transposed. log2(L) steps, each swapping the
    off-diagonal blocks of a half-size block matrix at once (Warren, "Hacker's Delight", 7-3)."""
    xp = array_namespace(A)
    L, M, lead, S = A.shape[-2], A.shape[-1], A.shape[:-2], _lane_bits(bits)
    s = L // 2
    while s >= 1:
        B = xp.reshape(A, (*lead, L // (2 * s), 2, s, M))
        top, bottom = B[..., 0, :, :], B[..., 1, :, :]  # rows r and r + s, bit s of r clear
        # lanes l with bit s clear: lane l + s of the top row swaps with lane l of the bottom row
        t = ((top >> (s * S)) ^ bottom) & _swap_mask(s, S)
        A = xp.reshape(xp.stack([top ^ (t << (s * S)), bottom ^ t], axis=-3), A.shape)
        s //= 2
    return A


@functools.cache
def _swap_mask(s, S):
    """The lanes l (of S bits) whose bit s is clear."""
    return _i64(sum(((1 << S) - 1) << (l * S) for l in range(64 // S) if not l & s))


def _rows(a):
    return [a[i, :] for i in range(a.shape[0])]


# Skilling's loops below write in place (`^=`) on the rows they are given: the callers hand over
# rows of arrays made for them, and an operation that allocates nothing is about 1.5x faster than
# one that fills a fresh array (fewer page faults and cache misses).


def _invert_or_exchange(X, i, q, bits):
    """Skilling's step for Q = 2^q and coordinate i > 0, in the lanes of X[0] and X[i] in place:
    where bit Q of X[i] is set, invert the low bits (below Q) of X[0]; elsewhere exchange the low
    bits of X[0] and X[i]."""
    inv = (X[i] >> q) & _lane(1, bits)
    inv *= (1 << q) - 1  # the low bits of the lanes to invert
    t = X[0] ^ X[i]
    t &= inv ^ _lane((1 << q) - 1, bits)  # the low bits of the lanes to exchange
    X[0] ^= t
    X[0] ^= inv
    X[i] ^= t


def _invert_self(X, q, bits):
    """Skilling's step for Q = 2^q and i = 0 (an exchange with itself does nothing)."""
    inv = (X[0] >> q) & _lane(1, bits)
    inv *= (1 << q) - 1
    X[0] ^= inv


def _axes_to_transpose(X, bits):
    """Skilling's AxestoTranspose on SWAR rows: coordinates X[0..n-1] -> transposed index."""
    X, n = list(X), len(X)
    for q in range(bits - 1, 0, -1):  # Q = 2^q from the top bit down to 2: inverse undo excess work
        _invert_self(X, q, bits)
        for i in range(1, n):
            _invert_or_exchange(X, i, q, bits)
    for i in range(1, n):  # Gray encode
        X[i] ^= X[i - 1]
    # Skilling's t = xor of (Q - 1) over the set bits Q > 1 of X[n-1]: bit j of t is the parity
    # of the bits of X[n-1] above j, a prefix xor of X[n-1] >> 1 within each lane.
    t, s = (X[n - 1] >> 1) & _lane((1 << (bits - 1)) - 1, bits), 1
    while s < bits - 1:
        t ^= (t >> s) & _lane((1 << (bits - s)) - 1, bits)
        s *= 2
    for x in X:
        x ^= t
    return X


def _transpose_to_axes(X, bits):
    """Skilling's TransposetoAxes on SWAR rows: transposed index X[0..n-1] -> coordinates."""
    X, n = list(X), len(X)
    t = (X[n - 1] >> 1) & _lane((1 << (bits - 1)) - 1, bits)  # Gray decode by H ^ (H / 2)
    for i in range(n - 1, 0, -1):
        X[i] ^= X[i - 1]
    X[0] ^= t
    for q in range(1, bits):  # Q = 2, 4, ..., 2^(bits-1): undo excess work
        for i in range(n - 1, 0, -1):
            _invert_or_exchange(X, i, q, bits)
        _invert_self(X, q, bits)
    return X


def _levels_at_once(n, bits):
    """c: how many levels of the index one int64 holds for all n coordinates, each level in a
    field of F = `_ceil_pow2(n)` bits in the rows layout (1 when n > 32)."""
    return min(bits, 64 // _ceil_pow2(n))


@functools.cache
def _spread_steps(n, c, g):
    """The "magic mask" steps that move c fields of g bits from stride g to stride n: for k =
    K/2, ..., 2, 1 (K the power of two >= c) the fields t with bit k set move up by k·(n-g), so
    that afterwards field t starts at bit t·g + (n-g)·(t with its bits below k cleared). Each step
    is (shift, stay, src, dst): the bits of the fields that do not move, and of those that do,
    before and after the move."""
    def bits(fields, k):  # the bits of these fields after the step of k
        return _i64(sum(((1 << g) - 1) << (t * g + (n - g) * (t & -k)) for t in fields))
    steps, powers = [], list(_powers(c))
    for k, before in zip(reversed(powers[:-1]), reversed(powers[1:])):
        moving = [t for t in range(c) if t & k]
        stay = bits([t for t in range(c) if not t & k], k)
        steps.append((k * (n - g), stay, bits(moving, before), bits(moving, k)))
    return steps


@functools.cache
def _every(n, c):
    """Bits 0, n, 2n, ..., (c-1)·n set."""
    return _i64(sum(1 << (t * n) for t in range(c)))


def _powers(c):
    """1, 2, 4, ..., K with K the smallest power of two >= c."""
    k = 1
    while k < c:
        yield k
        k *= 2
    yield k


def _spread(x, n, c, g=1):
    """Fields 0..c-1 of g bits of x (field t at bit t·g) moved to stride n (field t at bit t·n):
    log2(c) steps of four operations instead of c moves."""
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
    """The delta swaps (d, mask) that transpose the bit matrix of an int64 with 2^(6-a) rows of
    2^a bits: bit t·2^a + r goes to bit r·2^(6-a) + t. That rotates the six bits of a bit's
    position by 6 - a, and a rotation is a product of exchanges of two position bits k < l; each
    exchange is one delta swap of the bits p with p_k = 1, p_l = 0 and their partners p + 2^l - 2^k
    (Warren, "Hacker's Delight", 7-3): 6 - gcd(6, a) swaps of six operations each."""
    held, swaps = list(range(6)), []  # held[s]: the position bit of the source now in slot s
    for s in range(6):
        l = held.index((s + a) % 6)  # l >= s: slots below s are already right
        if l != s:
            held[s], held[l] = held[l], held[s]
            mask = sum(1 << p for p in range(64) if (p >> s) & 1 and not (p >> l) & 1)
            swaps.append((2**l - 2**s, _i64(mask)))
    return swaps


def _transpose_bits(V, a):
    """V (int64 array) with its bit matrix of 2^(6-a) rows of 2^a bits transposed."""
    for d, mask in _transpose_swaps(a):
        t = V >> d  # t, then the new V, are ours: in place (see Skilling's loops above)
        t ^= V
        t &= mask  # the sign bits of >> stay outside mask: p + d <= 63
        V = V ^ t
        t <<= d
        V ^= t
    return V


def _bits_of(words, base, width):
    """Bits base .. base + width - 1 (width <= 64) of h, given as 32-bit words, most significant
    first: an int64 whose bit 63 may be set."""
    W, V = len(words), 0
    for w in range(W):
        r = WORD * (W - 1 - w) - base  # the word's lowest bit, counted from `base`
        if -WORD < r < width:  # the word and the bits overlap
            V = V | (words[w] << r if r >= 0 else words[w] >> -r)
    return V & _i64((1 << width) - 1)


def _put_bits(words, V, base, width):
    """Or the `width` bits of V into bits base .. base + width - 1 of the words of h, in place."""
    W = len(words)
    for w in range(W):
        r = WORD * (W - 1 - w) - base
        if 0 <= r < width:
            words[w] = words[w] | ((V >> r) & ((1 << min(WORD, width - r)) - 1))
        elif -WORD < r < 0:
            words[w] = words[w] | ((V << -r) & (2**WORD - 1))


# Skilling's transpose X and the index h are one bit matrix read two ways: bit j of X[i] is bit
# j·n + (n-1-i) of h. Two layouts move between them, so that no array operation moves single bits:
# - rows (n <= 32): c = 64 // F levels of h fill an int64, level t in a field of F >= n bits
#   (a power of two; `_spread` of the levels from stride n to F when F > n). That is a bit matrix
#   of 64 / F rows (levels) by F columns (coordinates), and `_transpose_bits` turns it into one of
#   F rows of c bits: coordinate i's bits of the c levels, side by side.
# - packs (n > 32, or bits = 1): one level of L = 64 // S coordinates fills an int64 (pack g
#   holds coordinate n-1-(g·L + f) in lane f, reversed as in h); each level's L bits are spread to
#   stride S by `_spread`, and `_transpose_lanes` turns the packs of L points into SWAR rows.


def _words_to_rows(words, n, bits):
    """32-bit words of h -> transposed index X[0..n-1], one row a coordinate (n <= 32)."""
    F, c = _ceil_pow2(n), _levels_at_once(n, bits)  # the field of a level, levels at once
    C = 64 // F  # columns of the transposed bit matrix, c of them used
    X = [None] * n
    for j0 in range(0, bits, c):
        cj = min(c, bits - j0)
        V = _bits_of(words, j0 * n, cj * n)  # levels j0 .. j0 + cj - 1 at stride n
        if F > n:
            V = _spread(V, F, cj, n)
        V = _transpose_bits(V, F.bit_length() - 1)  # bit t·F + r -> bit r·C + t
        for i in range(n):
            x = (V >> ((n - 1 - i) * C)) & ((1 << cj) - 1)
            X[i] = x if j0 == 0 else X[i] | (x << j0)
    return X


def _rows_to_words(X, bits):
    """Transposed index X[0..n-1] -> 32-bit words of h: the inverse of `_words_to_rows`."""
    n = len(X)
    F, c = _ceil_pow2(n), _levels_at_once(n, bits)
    C = 64 // F
    words = [0] * n_words(n, bits)
    for j0 in range(0, bits, c):
        cj = min(c, bits - j0)
        V = (X[0] >> j0) & ((1 << cj) - 1)
        for i in range(1, n):
            V <<= C  # V is ours: in place (see Skilling's loops above)
            V |= (X[i] >> j0) & ((1 << cj) - 1)
        V = _transpose_bits(V, 6 - (F.bit_length() - 1))  # bit r·C + t -> bit t·F + r
        if F > n:
            V = _compact(V, F, cj, n)
        _put_bits(words, V, j0 * n, cj * n)
    return words


def _words_to_packs(words, n, bits):
    """32-bit words of h -> packs (ceil(n / L), N), L = 64 // S coordinates each."""
    xp = array_namespace(words[0])
    S = _lane_bits(bits)
    L = 64 // S
    packs = [0] * -(-n // L)
    for j in range(bits):
        for g in range(len(packs)):
            width = min(L, n - g * L)
            packs[g] = packs[g] | (_spread(_bits_of(words, j * n + g * L, width), S, width) << j)
    return xp.stack(packs)


def _packs_to_words(packs, n, bits):
    """Packs (ceil(n / L), N) -> 32-bit words of h: the inverse of `_words_to_packs`."""
    S = _lane_bits(bits)
    L, words = 64 // S, [0] * n_words(n, bits)
    for j in range(bits):
        for g in range(packs.shape[0]):
            width = min(L, n - g * L)
            level = _compact((packs[g, :] >> j) & _every(S, width), S, width)
            _put_bits(words, level, j * n + g * L, width)
    return words


def _lanes_to_packs(lanes, bits):
    """SWAR rows (n, M) -> packs (ceil(n / L), L·M)."""
    xp = array_namespace(lanes)
    L, M = 64 // _lane_bits(bits), lanes.shape[1]
    A = _pad_rows(xp.flip(lanes, axis=0), bits)  # coordinate n-1 first, as in h
    return xp.reshape(_transpose_lanes(xp.reshape(A, (-1, L, M)), bits), (-1, L * M))


def _packs_to_lanes(packs, n, bits):
    """Packs (ceil(n / L), L·M) -> SWAR rows (n, M): the inverse of `_lanes_to_packs`."""
    xp = array_namespace(packs)
    L = 64 // _lane_bits(bits)
    A = _transpose_lanes(xp.reshape(packs, (packs.shape[0], L, -1)), bits)
    return xp.flip(xp.reshape(A, (packs.shape[0] * L, -1))[:n, :], axis=0)


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
    """f on blocks of rows of a, written into one output: a block's arrays of n coordinates stay in
    cache instead of streaming N-long arrays through memory once per bit operation."""
    xp = array_namespace(a)
    N, B = a.shape[0], max(8192, BLOCK // n)
    first = f(a[:min(B, N), :], *args)
    if N <= B:
        return first
    out = xp.empty((N, first.shape[1]), dtype=first.dtype, device=device(a))
    out[:B, :] = first
    for s in range(B, N, B):
        out[s:min(s + B, N), :] = f(a[s:min(s + B, N), :], *args)
    return out


def _encode_block(c, bits):
    xp = array_namespace(c)
    N, n = c.shape
    lanes = _contiguous(_rows_to_lanes(_pad_rows(c, bits).T, bits))  # rows in place, unstrided
    X = xp.stack(_axes_to_transpose(_rows(lanes), bits))
    if _levels_at_once(n, bits) > 1:
        words = _rows_to_words(_rows(_lanes_to_rows(X, bits)), bits)
    else:
        words = _packs_to_words(_lanes_to_packs(X, bits), n, bits)
    return xp.stack(words, axis=1)[:N, :]


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
    words = _rows(_contiguous(_pad_rows(h, bits).T))
    if _levels_at_once(n, bits) > 1:
        X = _rows_to_lanes(xp.stack(_words_to_rows(words, n, bits)), bits)
    else:
        X = _packs_to_lanes(_words_to_packs(words, n, bits), n, bits)
    return _lanes_to_points(xp.stack(_transpose_to_axes(_rows(X), bits)), bits)[:h.shape[0], :]


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

"""What every concept file shares: one way to check input, the working dtype, host copies and a
scatter-add that the array API lacks.

The rule (DESIGN.md): a public function checks its arguments once, at its top, with these helpers,
and then calls unchecked internals. Each message starts with the argument's name as the caller
wrote it (`z: ...`), so the caller knows what to fix; a bad type raises TypeError, a bad value
ValueError. Internal calls, and the torch modules' training forwards, do not check again.

Arrays may come from NumPy, array_api_strict, torch (CPU or CUDA) or CuPy; numbers may be Python
or NumPy scalars (np.float32(1.0) is a number, a bool is not).
"""
import math
import numbers

import numpy as np
from array_api_compat import array_namespace, device, is_array_api_obj
from array_api_compat import is_cupy_namespace, is_numpy_namespace, is_torch_namespace


def size(x):
    """Number of elements of an array of any backend (torch's `x.size` is a method)."""
    return math.prod(x.shape)


def is_array(x):
    """An array of any backend; a NumPy scalar (np.float32(1.0)) counts as a number, not an array."""
    return is_array_api_obj(x) and not isinstance(x, np.generic)


def namespace(**arrays):
    """The namespace of the named arrays (None values are skipped). TypeError naming the first
    argument that is not an array, or that lives in another library or on another device than the
    first: mixing them would fail later, deep inside, with a message that names neither."""
    first = None
    for name, x in arrays.items():
        if x is None:
            continue
        if not is_array_api_obj(x):
            raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
        xp = array_namespace(x)
        if first is None:
            first = (name, x, xp)
            continue
        name0, x0, xp0 = first
        if xp.__name__ != xp0.__name__:
            raise TypeError(f"{name}: a {_library(xp)} array, but {name0} is a {_library(xp0)} array")
        if str(device(x)) != str(device(x0)):
            raise TypeError(f"{name}: on device {device(x)}, but {name0} is on {device(x0)}")
    if first is None:
        raise TypeError("expected at least one array")
    return first[2]


def _library(xp):
    return xp.__name__.split(".")[-1] if "compat" in xp.__name__ else xp.__name__.split(".")[0]


def check_number(value, name, *, low=None, high=None, integer=False, low_open=False, high_open=False):
    """A real (or integer) Python or NumPy scalar in [low, high] (open ends on request); returns it
    as a Python int or float."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
        raise TypeError(f"{name}: expected {'an integer' if integer else 'a real number'}, got {value!r}")
    value = int(value) if integer else float(value)
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name}: {value!r} is outside "
                         f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}")
    return value


def check_choice(value, name, choices):
    """value is one of `choices` (strings, typically)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_array(x, name, *, kind="real floating", ndim=None, shape=None, empty_ok=False):
    """x is an array of dtype kind `kind` ("real floating" or "integral"; bool is neither), with
    `ndim` axes and, where `shape` gives a size (None: any), that size on each axis; non-empty
    unless empty_ok. Returns x's namespace."""
    if not is_array_api_obj(x):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")
    xp = array_namespace(x)
    if not xp.isdtype(x.dtype, kind):
        what = {"real floating": "a real floating", "integral": "an integer"}.get(kind, f"a {kind}")
        raise TypeError(f"{name}: expected {what} dtype, got {x.dtype}")
    ndim = len(shape) if shape is not None else ndim
    if ndim is not None and x.ndim != ndim:
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")" if shape else f"{ndim}-d"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if shape is not None and any(s is not None and s != t for s, t in zip(shape, x.shape)):
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if not empty_ok and size(x) == 0:
        raise ValueError(f"{name}: is empty, shape {tuple(x.shape)}")
    return xp


def product_bound(xp, dtype, d):
    """The largest |value| whose products summed over d terms (and the squared norms and centred
    differences built from them) stay finite in `dtype`: sqrt(max / (8 d))."""
    return math.sqrt(float(xp.finfo(dtype).max) / (8 * max(1, d)))


def check_finite(x, name, *, bound=None, max_block_bytes=2**26):
    """No NaN or inf in x (and, with `bound`, no |value| above it), checked in blocks of rows so
    that a huge codebook needs no whole-size temporary."""
    xp = array_namespace(x)
    if size(x) == 0:
        return
    row = max(1, math.prod(x.shape[1:]) * 8)
    rows = max(1, max_block_bytes // row)
    for i in range(0, x.shape[0], rows):
        part = x[i:min(i + rows, x.shape[0]), ...]
        if not bool(xp.all(xp.isfinite(part))):
            raise ValueError(f"{name}: contains NaN or inf")
        if bound is not None and float(xp.max(xp.abs(part))) > bound:
            raise ValueError(f"{name}: has values of magnitude up to {float(xp.max(xp.abs(part))):.3g}, "
                             f"beyond {bound:.3g}, where its squares and products overflow {x.dtype}")


def check_matrix(x, name, *, cols=None, rows=None, products=True, max_block_bytes=2**26):
    """x is a finite, non-empty real floating (rows, cols) array; with `products` its values are
    also small enough for squared norms and dot products in the working dtype (`product_bound`)."""
    xp = check_array(x, name, shape=(rows, cols))
    bound = product_bound(xp, working_dtype(xp, x.dtype), x.shape[1]) if products else None
    check_finite(x, name, bound=bound, max_block_bytes=max_block_bytes)
    return xp


def check_indices(idx, k, name, *, ndim=None, empty_ok=False):
    """idx is an integer array with values in [0, k)."""
    xp = check_array(idx, name, kind="integral", ndim=ndim, empty_ok=empty_ok)
    if size(idx):
        lo, hi = int(xp.min(idx)), int(xp.max(idx))  # Python ints: k may not fit idx's dtype (int8 against 1000)
        if lo < 0 or hi >= k:
            raise ValueError(f"{name}: values must lie in [0, {k}), got [{lo}, {hi}]")
    return xp


def check_permutation(perm, k, name):
    """perm is an integer (k,) array holding each of 0..k-1 once."""
    xp = check_array(perm, name, kind="integral", shape=(k,))
    seen = xp.sort(xp.astype(perm, xp.int64))
    if not bool(xp.all(seen == xp.arange(k, dtype=xp.int64, device=device(perm)))):
        raise ValueError(f"{name}: is not a permutation of 0..{k - 1}")
    return xp


def working_dtype(xp, dtype):
    """float16/bfloat16 accumulate in float32; float32 and float64 stay as they are."""
    return dtype if dtype in (xp.float32, xp.float64) else xp.float32


def blocks(total, step):
    """Slices covering range(total) in steps of `step` (the array API leaves stops past the end
    unspecified)."""
    return [slice(i, min(i + step, total)) for i in range(0, total, step)]


def to_host(x):
    """A NumPy array with the values of an array of any backend."""
    if hasattr(x, "detach"):  # torch
        return x.detach().cpu().numpy()
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)


def scatter_add(idx, values, k, *, max_block_bytes=2**26):
    """out[j] = sum of values[i] over i with idx[i] == j: (k, d) from int idx (N,), values (N, d).

    The array API has no scatter-add, so NumPy (sorted runs summed by add.reduceat, several times
    faster than np.add.at), torch (index_add_) and CuPy (cupyx.scatter_add) take their own path;
    elsewhere a one-hot block (N, cols) times values is exact and portable."""
    xp = array_namespace(idx, values)
    shape = (k, values.shape[1])
    if is_numpy_namespace(xp):
        out = np.zeros(shape, dtype=values.dtype)
        if idx.shape[0]:
            order = np.argsort(idx, kind="stable")
            sorted_idx = idx[order]
            starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
            out[sorted_idx[starts]] = np.add.reduceat(values[order], starts, axis=0)
        return out
    out = xp.zeros(shape, dtype=values.dtype, device=device(values))
    if is_torch_namespace(xp):
        return out.index_add_(0, idx, values)
    if is_cupy_namespace(xp):
        import cupyx
        cupyx.scatter_add(out, idx, values)
        return out
    cols = max(1, max_block_bytes // (max(1, idx.shape[0]) * 8))
    parts = []
    for ks in blocks(k, cols):
        codes = xp.arange(ks.start, ks.stop, dtype=idx.dtype, device=device(idx))
        onehot = xp.astype(idx[:, None] == codes[None, :], values.dtype)  # (N, cols)
        parts.append(onehot.T @ values)
    return xp.concat(parts, axis=0)

"""Shared test machinery: the `xp` fixture that runs a test on every array backend, and helpers
to move arrays between backends and compare them.

Every concept file is written against the array API, so every test that takes `xp` runs on
NumPy (the reference), array_api_strict (which refuses anything outside the standard), torch on
the CPU, and, where present, torch on CUDA and CuPy. Tests build their inputs in NumPy, move them
with `asxp(xp, a)`, call the function under test, and compare with `to_numpy` / `assert_close`.

Hypothesis: the "ci" profile (the default) has no deadline, a bounded number of examples and a
fixed seed, so the suite is fast and reproducible; `HYPOTHESIS_PROFILE=dev` draws more.
"""
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the concept files live at the root

import array_api_compat  # noqa: E402
import array_api_compat.numpy  # noqa: E402
import array_api_compat.torch  # noqa: E402
import array_api_strict  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    print_blob=True,
    # the xp fixture only names a stateless namespace, so sharing it across examples is safe
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.register_profile("dev", settings.get_profile("ci"), max_examples=200, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _cupy():
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:
        return None


BACKENDS = ["numpy", "array_api_strict", "torch"]
if torch.cuda.is_available():
    BACKENDS.append("torch-cuda")
if _cupy() is not None:
    BACKENDS.append("cupy")


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array namespace of one backend; `asxp(xp, a)` puts NumPy data on it."""
    name = request.param
    if name == "numpy":
        yield array_api_compat.numpy
    elif name == "array_api_strict":
        yield array_api_strict
    elif name == "torch":
        yield array_api_compat.torch
    elif name == "torch-cuda":
        torch.set_default_device("cuda")
        try:
            yield array_api_compat.torch
        finally:
            torch.set_default_device("cpu")
    else:
        yield array_api_compat.get_namespace(_cupy().zeros(1))


def asxp(xp, a, dtype=None):
    """NumPy (or Python) data `a` as an array of namespace `xp`, on its default device."""
    a = np.asarray(a)
    if dtype is not None:
        a = a.astype(dtype)
    if array_api_compat.is_torch_namespace(xp):
        return torch.asarray(a.copy(), device=torch.get_default_device())
    return xp.asarray(a)


def to_numpy(x):
    """Any backend's array (or a Python scalar) as a NumPy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def assert_close(actual, desired, rtol=1e-7, atol=0.0, err_msg=""):
    np.testing.assert_allclose(to_numpy(actual), to_numpy(desired), rtol=rtol, atol=atol, err_msg=err_msg)


def dtype_name(x):
    """'float32', 'int64', ... for an array of any backend."""
    return str(x.dtype).split(".")[-1]

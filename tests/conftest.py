import os
import tempfile
import threading
import warnings

# The tests check the cost model's own choices and must not depend on earlier runs: measured calibration is
# off by default here (tests/test_calibrate.py turns it on) and any record goes to a fresh directory.
os.environ["FASTDECONV_CALIBRATE"] = "0"
os.environ["FASTDECONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastdeconv-test-cache-")
# ... and decide from one fixed machine profile, the reference rates the model's ratios were fitted against, not
# from this host's measured speeds (tests/test_profile.py measures and feeds other profiles explicitly): the
# choices the tests check are then the same on every machine.
_PROFILE = os.path.join(os.environ["FASTDECONV_CACHE_DIR"], "reference-profile.json")
with open(_PROFILE, "w", encoding="utf-8") as _fh:
    _fh.write("{}")  # no rate given: every family takes its reference rate
os.environ["FASTDECONV_PROFILE"] = _PROFILE

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=120, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

METHODS = ("scatter", "gather", "zerofill", "auto")


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def tolerance(dtype):
    return {"rtol": 1e-4, "atol": 1e-4} if np.dtype(dtype) == np.float32 else {"rtol": 1e-10, "atol": 1e-10}


def within(timeout, fn, *args):
    """``fn(*args)`` in a daemon thread, failing instead of hanging the suite when it takes over ``timeout``
    seconds; returns (value, messages of the warnings it raised). An exception it raises is a failure too."""
    box = {}

    def target():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                box["value"] = fn(*args)
            except BaseException as exc:  # reported below
                box["error"] = exc
        box["warnings"] = [str(w.message) for w in caught]

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    name = getattr(fn, "__name__", repr(fn))
    assert not thread.is_alive(), f"{name} did not return within {timeout} s"
    if "error" in box:
        raise AssertionError(f"{name} raised {box['error']!r}")
    return box["value"], box["warnings"]

"""``import fastdeconv`` is cheap: the public names (and numba) load on first use."""

import subprocess
import sys

import pytest

import fastdeconv


def test_import_does_not_load_numba():
    code = ("import sys, fastdeconv; assert 'numba' not in sys.modules and 'numpy' not in sys.modules; "
            "fastdeconv.conv_transpose; assert 'numba' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_public_names_resolve():
    for name in fastdeconv.__all__ + ["compat"]:
        assert getattr(fastdeconv, name) is not None
        assert name in dir(fastdeconv)
    from fastdeconv import Choice, conv_transpose, plan  # noqa: F401
    assert fastdeconv.compat.tf_conv2d_transpose.__module__ == "fastdeconv.compat"


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        fastdeconv.nope  # noqa: B018

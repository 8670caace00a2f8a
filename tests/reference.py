"""The float64 reference every test checks against: ``fastdeconv.tools.reference`` (the one that ``compare``
uses too), re-exported so that tests keep ``from reference import conv_transpose_ref``."""

from fastdeconv.tools.reference import conv_transpose_ref, crop, cropped_output, full_output

__all__ = ["conv_transpose_ref", "crop", "cropped_output", "full_output"]

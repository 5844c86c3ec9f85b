"""Analyses as pure functions on arrays (or a Comparison's Dataset); Comparison methods wrap them.

Within a run: ``correlate`` (levels and increments of a measure against a target),
``change_points``, ``stages``, ``generalization`` and ``memorization``. Across runs: ``kendall_gap``,
``granulated_kendall``, ``sign_error``, ``conditional_mutual_information``. Bounds from a code
length: ``occam_bound``, ``kl_bound``, ``binomial_bound``, ``prefix_free_bits``.
"""

from .bounds import binomial_bound, kl_bound, occam_bound, prefix_free_bits
from .correlation import correlate
from .runs import conditional_mutual_information, granulated_kendall, kendall_gap, sign_error
from .stages import stages
from .transitions import change_points, generalization, memorization

__all__ = [
    "correlate", "change_points", "generalization", "memorization", "stages",
    "kendall_gap", "granulated_kendall", "sign_error", "conditional_mutual_information",
    "occam_bound", "kl_bound", "binomial_bound", "prefix_free_bits",
]

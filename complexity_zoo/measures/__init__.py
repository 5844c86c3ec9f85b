"""The built-in measures; importing this package registers them, one module per family."""

from . import compression, kolmogorov, llc, lmn, norms, spectral

__all__ = ["compression", "kolmogorov", "llc", "lmn", "norms", "spectral"]

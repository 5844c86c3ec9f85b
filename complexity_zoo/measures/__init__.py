"""The built-in measures; importing this package registers them, one module per family."""

from . import compression, norms, spectral

__all__ = ["compression", "norms", "spectral"]

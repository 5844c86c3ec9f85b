"""complexity_zoo: complexity measures over checkpoint series, and what they say about generalization."""

from . import _main_guard, regularizers, tasks  # noqa: F401 (_main_guard first: before anything imports)
from ._trust import allow_factory, allowed_factories, disallow_factory
from .compare import compare
from .comparison import Comparison
from .data import Data
from .errors import (
    CheckpointError,
    ComplexityZooError,
    MissingDependencyError,
    UnknownMeasureError,
)
from .measure import Measure, MeasureResult
from .registry import get_measure, list_measures, register_measure
from .trajectory import Checkpoint, Trajectory

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "Comparison",
    "ComplexityZooError",
    "Data",
    "Measure",
    "MeasureResult",
    "MissingDependencyError",
    "Trajectory",
    "UnknownMeasureError",
    "allow_factory",
    "allowed_factories",
    "compare",
    "disallow_factory",
    "get_measure",
    "list_measures",
    "register_measure",
    "regularizers",
    "tasks",
]

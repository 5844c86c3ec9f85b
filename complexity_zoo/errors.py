"""The errors complexity_zoo raises on purpose.

Every one derives from :class:`ComplexityZooError` and from the builtin it
refines, so ``except ValueError`` keeps working for callers that predate us.
"""

from __future__ import annotations


class ComplexityZooError(Exception):
    """Base class of every error the library raises on purpose."""


class UnknownMeasureError(ComplexityZooError, KeyError):
    """A measure name or preset tag that is not registered."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class DuplicateMeasureError(ComplexityZooError, ValueError):
    """Two different classes registered under one name."""


class UnknownSettingError(ComplexityZooError, TypeError):
    """A setting that the measure does not have."""


class InvalidSettingError(ComplexityZooError, ValueError):
    """A setting whose value is out of range or of the wrong kind."""


class MissingDependencyError(ComplexityZooError, ImportError):
    """An optional dependency is not installed; the message names the extra."""


class MissingDataError(ComplexityZooError, ValueError):
    """A measure that needs data was called without it."""


class MissingInitError(ComplexityZooError, ValueError):
    """A measure that needs the initial weights was called without them (``init=``)."""


class DataError(ComplexityZooError, ValueError):
    """Examples or a loss that cannot be used as given."""


class ModelError(ComplexityZooError, TypeError):
    """Something that is not a usable ``torch.nn.Module``."""


class NonFiniteError(ComplexityZooError, ValueError):
    """Non-finite weights or a non-finite measured value."""


class MeasureError(ComplexityZooError, RuntimeError):
    """A measure failed for a reason of its own; the message names it."""


class UndefinedMeasureError(MeasureError):
    """A measure that is not defined for this model (e.g. the path norm of a tanh network)."""


class TrajectoryError(ComplexityZooError, ValueError):
    """A series of checkpoints that is inconsistent (duplicate steps, bad metrics)."""


class FactoryArgumentsError(TrajectoryError, TypeError):
    """A model spec whose kwargs the factory does not take (found before anything is computed)."""


class CheckpointError(ComplexityZooError, ValueError):
    """A checkpoint that cannot be read or does not fit its model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """A checkpoint file or run folder that does not exist."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint that would need arbitrary unpickling to load."""


class NotACheckpointError(CheckpointError):
    """A file named like a checkpoint that holds something else (text, HTML, a git-lfs pointer)."""


class LimitExceededError(CheckpointError):
    """A file that would cost more than the library's bound to read (a pickle payload, a header),
    refused before the memory is allocated."""


class UntrustedCodeError(ComplexityZooError, PermissionError):
    """Loading would import or run code that a file names, and the caller did not allow it."""


class OutsideFolderError(UntrustedCodeError):
    """A path a folder yields (a file, a link, a name in a file) that leads outside that folder."""


class ExecutorError(ComplexityZooError, RuntimeError):
    """An execution back end that cannot run a comparison's jobs (unknown, or a job it cannot send)."""


class WorkerLostError(ExecutorError):
    """A worker died while running a job (killed, out of memory, a crash), every time it was retried."""


class ComparisonInterrupted(KeyboardInterrupt):
    """compare() stopped by Ctrl-C or SIGTERM; the message says what was kept and how to resume."""


class ResultNotFoundError(ComplexityZooError, FileNotFoundError):
    """A saved comparison that does not exist."""


class ComplexityZooWarning(UserWarning):
    """Base class of the library's warnings."""


class MeasureFailedWarning(ComplexityZooWarning):
    """A cell of a comparison failed and was left NaN (``compare(strict=False)``)."""


class ExecutorWarning(ComplexityZooWarning):
    """A back end set up so that the comparison runs slowly (its results are not affected)."""


class CacheWarning(ComplexityZooWarning):
    """A cache cell that failed verification (recomputed), or a cache that cannot be written."""


class PluginWarning(ComplexityZooWarning):
    """A third-party measure plugin failed to load."""

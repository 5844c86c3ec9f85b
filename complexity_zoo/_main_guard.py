"""Run first on import: ``python -m complexity_zoo.cli`` never imports modules from the working directory.

``python -m`` puts the working directory first on ``sys.path``, so a run folder the command is
started in could ship a ``pandas.py`` (or ``numpy.py``) that imports instead of the real one.
That entry is dropped, as the ``complexity-zoo`` console script never has it; ``--model``
modules of the working directory then need ``PYTHONPATH=.``, as with the console script.
"""

import os
import sys


def guard_module_run() -> None:
    """Drop the working directory from the front of ``sys.path`` under ``python -m complexity_zoo...``."""
    argv = list(getattr(sys, "orig_argv", []))
    if "-m" not in argv[:-1] or not argv[argv.index("-m") + 1].startswith("complexity_zoo"):
        return
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


guard_module_run()

"""Data files xviz reads at run time (labels, examples, the shipped atlas, colour tables),
shipped inside the package: see ``README.md`` here for where each came from."""

from __future__ import annotations

import atexit
from contextlib import ExitStack
from functools import cache
from importlib.resources import as_file, files
from pathlib import Path

_files = ExitStack()
atexit.register(_files.close)


@cache
def data_path(*parts: str) -> Path:
    """A file or folder of ``xviz/data`` as a path on disk, wherever the package is installed
    (``importlib.resources``: a wheel's files are on disk already; an archive is unpacked for
    the life of the process)."""
    return _files.enter_context(as_file(files(__name__).joinpath(*parts)))

"""Make a file or folder read-only for the code under test, even when the tests run as root.

``chmod`` is what an operator's read-only store looks like. Root ignores file modes, so as
root the path is also made immutable (``chattr +i``), which root's writes obey too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def read_only(path: Path) -> Iterator[Path]:
    mode = path.stat().st_mode
    path.chmod(mode & ~0o222)
    immutable = os.geteuid() == 0
    if immutable:
        chattr = shutil.which("chattr")
        assert chattr, "running as root: chattr is needed to make a path read-only"
        subprocess.run([chattr, "+i", str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        if immutable:
            subprocess.run([chattr, "-i", str(path)], check=True, capture_output=True)
        path.chmod(mode)

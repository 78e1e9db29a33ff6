"""Running the installed command with stderr on a pseudo-terminal, as a person sees it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(sys.executable).absolute().with_name("cloudgreet-billing")
#: Cursor movements and erasures Rich uses to redraw a live bar.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


@dataclass
class OnTerminal:
    returncode: int
    stdout: str
    #: Everything drawn on the terminal, escape sequences removed.
    terminal: str


def run_on_a_terminal(
    *args: str,
    env: dict[str, str],
    cwd: Path,
    columns: int = 80,
    stdin: object = None,
    stdout_too: bool = False,
) -> OnTerminal:
    """Run the command with stderr (and with ``stdout_too``, stdout) on a terminal of
    ``columns`` columns."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        [str(SCRIPT), *args],
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        stdout=slave if stdout_too else subprocess.PIPE,
        stderr=slave,
        env={"TERM": "xterm-256color", "NO_COLOR": "1", **env},
        cwd=cwd,
    )
    os.close(slave)
    drawn = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the last writer closed the terminal
                break
            if not chunk:
                break
            drawn += chunk
        elif process.poll() is not None:
            break
    os.close(master)
    stdout = "" if process.stdout is None else process.stdout.read().decode()
    process.wait(timeout=60)
    return OnTerminal(process.returncode, stdout, ANSI.sub("\n", drawn.decode(errors="replace")))

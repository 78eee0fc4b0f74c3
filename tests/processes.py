"""Processes the suite starts die with it, even when the run is killed (SIGTERM to pytest, xdist or not).

On Linux each one is started with PR_SET_PDEATHSIG: the kernel signals it when the thread that started it
exits. That thread is the spawner below, which lives as long as the test process; an xdist worker gets the
same link to the controller (``die_with_parent``, from conftest)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1

_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")  # one thread, never retired
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with_parent(death_signal: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Have the kernel send ``death_signal`` to this process when its parent (thread) ends; ``parent``: the
    pid it had when it was started (by default, the one it has now)."""
    if _prctl is None:
        return
    parent = parent or os.getppid()
    if _prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent ended before the link was made
        os.kill(os.getpid(), death_signal)


def spawn(args: list[str], *, death_signal: int = signal.SIGKILL, **options: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **options)``, from the spawner thread, for a process that gets
    ``death_signal`` when this test process ends (SIGTERM for one that must stop children of its own)."""
    link = partial(die_with_parent, death_signal, os.getpid())
    return _spawner.submit(subprocess.Popen, args, preexec_fn=link, **options).result()


def _state_and_parent(stat: Path) -> tuple[str, int] | None:
    """From /proc/<pid>/stat: the process's state letter and its parent's pid (None once it is gone)."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return fields[0], int(fields[1])


def children_of(parent: int) -> list[int]:
    return [
        int(stat.parent.name)
        for stat in Path("/proc").glob("[0-9]*/stat")
        if (found := _state_and_parent(stat)) is not None and found[1] == parent
    ]


def is_running(pid: int) -> bool:
    """A zombie (one no one reaped: this machine's init may not) is not running."""
    found = _state_and_parent(Path(f"/proc/{pid}/stat"))
    return found is not None and found[0] != "Z"

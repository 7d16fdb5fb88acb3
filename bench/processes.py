"""How the benches start ``salesmgr`` (and Python) as child processes: as a user's Python does.

A user's Python caches each module's bytecode, and pip compiles a package's modules when it
installs it, so a user's ``salesmgr`` starts without compiling anything.  This machine sets
``PYTHONDONTWRITEBYTECODE=1`` and the README installs editable, so a child left alone compiles
some 200 modules from source on every run (0.1-0.14 s a command): a cost no user has, which
would be counted in every figure.  `run_children_as_a_user` gives every child the cache back:
without ``PYTHONDONTWRITEBYTECODE``, with ``PYTHONPYCACHEPREFIX`` in the bench's temporary folder
(nothing is written beside the sources, and it goes with the folder), warmed by one untimed run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = str(Path(sys.executable).parent / "salesmgr")  # the installed console script


def run_children_as_a_user(folder: Path) -> None:
    """From now on, every child process of this bench caches bytecode in ``folder/pycache``.

    The warming run is ``salesmgr --help``: it imports every plugin and every command's module.
    What a command imports later (a store, a session) is cached by its own first run, which a
    best-of-R figure does not keep."""
    cache = folder / "pycache"
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    subprocess.run([SCRIPT, "--help"], check=True, stdout=subprocess.DEVNULL)
    print(f"child processes cache bytecode as a user's Python does (PYTHONDONTWRITEBYTECODE "
          f"dropped, PYTHONPYCACHEPREFIX={cache}, warmed by one untimed salesmgr --help)")

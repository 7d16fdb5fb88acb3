"""``python -m salesmgr.emulator ARGS`` is ``salesmgr emulator ARGS``: the emulator can be
started with a known Python (``sys.executable``) without looking for the console script."""

from __future__ import annotations

import sys

from salesmgr.cli.group import cli

if __name__ == "__main__":
    cli.main(args=["emulator", *sys.argv[1:]], prog_name="salesmgr")

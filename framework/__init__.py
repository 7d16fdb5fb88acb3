"""salesmgr: a sales pipeline kept in step between a mobile device and a desktop.

Plugins write ``from salesmgr import hookimpl``.
"""

from __future__ import annotations

from salesmgr.plugin.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]

"""The plugins that ship with salesmgr: record types, merge rules, the codec, merge policies and
transports.

Each module here is an ordinary pluggy plugin, named in the ``salesmgr`` entry-point group of
salesmgr's own ``pyproject.toml`` exactly as a third party names its own.
"""

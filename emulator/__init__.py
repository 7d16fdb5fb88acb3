"""The software device: plays the mobile side of a sync (``salesmgr emulator serve``)."""

BUILTIN_PLUGINS: tuple[str, ...] = ("salesmgr.emulator.commands",)

"""The software device: plays the mobile side of a sync (``salesmgr emulator serve``), plays a
day on it (``salesmgr emulator day``), and the whole story (``salesmgr demo``)."""

BUILTIN_PLUGINS: tuple[str, ...] = (
    "salesmgr.emulator.commands",
    "salesmgr.emulator.day",
    "salesmgr.emulator.demo",
)

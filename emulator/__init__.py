"""The software device: plays the mobile side of a sync (``salesmgr emulator serve``), plays a
day on it (``salesmgr emulator day``), and the whole story (``salesmgr demo``).  Its commands
are added by `salesmgr.emulator.plugin`, which imports nothing heavy."""

"""pytest fixtures for integration tests against an emulated salesmgr device.

Installed with salesmgr (entry point ``pytest11``), so any project's tests can write::

    def test_our_site_syncs(emulated_device, tmp_path):
        device = emulated_device("serial", baud=115200)      # a cradle on a pseudo-terminal
        ...  # salesmgr load / sync against device.url with device.secret
        assert device.pipeline() is not None

``emulated_device(transport, ...)`` starts ``salesmgr emulator serve`` in a subprocess and returns
an `EmulatedDevice`: its ``url``, ``secret``, ``device_file``, ``env`` (the secret as
``SALESMGR_SECRET``), ``pipeline()`` to read what it holds, and ``stop()``.  Every device a test
started is stopped afterwards (SIGTERM, then SIGKILL if it does not stop in time).  Any transport
the test's registry knows works, a plugin's too (say where it listens with ``on=``): a plugin
the emulator's process would not load by itself (registered only in the test, or any while
``SALESMGR_DISABLE_PLUGINS`` is set) is handed to it (`salesmgr.testing.plugged`).
``salesmgr_transport`` runs a test once per transport installed here (``tcp``, ``serial``,
``folder``).  Install with ``pip install salesmgr[testing]`` (it brings pytest); disable the
plugin with ``pytest -p no:salesmgr``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from salesmgr.errors import SalesmgrError

if TYPE_CHECKING:
    from salesmgr.emulator.process import EmulatorProcess
    from salesmgr.model.pipeline import Pipeline
    from salesmgr.plugin.manager import Registry

# Where each transport's emulator listens; "{folder}" is a new folder of the test's.
LISTEN_ON = {
    "tcp": "tcp://127.0.0.1:0",
    "tcps": "tcps://127.0.0.1:0",
    "serial": "serial-pty",
    "folder": "folder://{folder}/mirror",
}
TRANSPORTS = ("tcp", "serial", "folder")  # what `salesmgr_transport` runs over; named after
# the URL schemes of their transports


@dataclass
class EmulatedDevice:
    """A device emulator running in a subprocess."""

    transport: str
    url: str  # where the desktop reaches it: salesmgr load/sync --to/--from URL
    secret: str
    device_file: Path
    process: EmulatorProcess = field(repr=False)
    mailbox: Path | None = None  # the folder of a store-and-forward device (folder://)
    _lines_matched: dict[str, int] = field(
        default_factory=lambda: {"stdout": 0, "stderr": 0}, repr=False
    )

    @property
    def env(self) -> dict[str, str]:
        """Environment for a desktop command: the pairing secret."""
        return {"SALESMGR_SECRET": self.secret}

    def pipeline(self) -> Pipeline | None:
        """What the device holds now; None while nothing was loaded."""
        from salesmgr import storage

        if not self.device_file.exists() or self.device_file.stat().st_size == 0:
            return None
        return storage.load(self.device_file)

    @property
    def stdout(self) -> str:
        return self.process.stdout

    @property
    def stderr(self) -> str:
        return self.process.stderr

    def running(self) -> bool:
        return self.process.running()

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until the device has taken what the desktop left for it and shows its current
        state.  A live device (tcp, serial) is always settled: the desktop's command returns
        once the device committed.  A store-and-forward device (folder) works in its own time:
        call this after ``salesmgr load``/``sync`` and after editing its file."""
        if self.mailbox is not None:
            try:
                self.process.settle(self.mailbox, self.device_file, timeout)
            except SalesmgrError as problem:
                pytest.fail(f"{problem}; the emulator printed:\n{self.stdout}{self.stderr}")

    def expect(self, text: str, timeout: float = 10.0) -> str:
        """Wait until the emulator prints a line containing ``text`` — on its output or its
        error output, where a failed session is reported — after the lines earlier calls
        matched; return that line.  A store-and-forward device (``folder``) takes what the
        desktop left in its own time: ``device.expect("committed")`` waits for it."""
        deadline = time.monotonic() + timeout
        while True:
            alive = self.running()  # looked at first: what it printed before exiting counts
            for stream, said in (("stdout", self.stdout), ("stderr", self.stderr)):
                lines = said.splitlines()
                for number in range(self._lines_matched[stream], len(lines)):
                    if text in lines[number]:
                        self._lines_matched[stream] = number + 1
                        return lines[number]
            if time.monotonic() >= deadline or not alive:
                pytest.fail(
                    f"the emulated device did not print {text!r} within {timeout:g} s; "
                    f"it printed:\n{self.stdout}{self.stderr}"
                )
            time.sleep(0.02)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for a ``once=True`` device to end by itself; its exit status."""
        return self.process.wait(timeout)

    def stop(self) -> int:
        """SIGTERM (the device file stays whole), SIGKILL if needed; the exit status."""
        return self.process.stop()


def plugins_to_hand_over(registry: Registry, scheme: str) -> list[str]:
    """What the emulator's process must register to have the ``scheme`` transport: nothing for
    salesmgr's own, else the module of the plugin that registered it (``NAME=PATH``)."""
    for name, info in registry.plugins.items():
        if ("transport", scheme) not in info.provides:
            continue
        plugin = registry.pm.get_plugin(name)
        if isinstance(plugin, ModuleType) and plugin.__name__.startswith("salesmgr."):
            return []
        if not isinstance(plugin, ModuleType) or not getattr(plugin, "__file__", None):
            raise ValueError(
                f"the {scheme}:// transport comes from {name!r}, which is not a module: the "
                "emulator's process can only load a plugin module (or an installed one)"
            )
        return [f"{plugin.__name__}={plugin.__file__}"]
    return []


class DeviceFactory:
    """``emulated_device(transport="tcp", device_file=None, secret=None, baud=None, faults=(),
    *, on=None, once=False, timeout=None, args=())``: start a device (``on``: where it listens,
    instead of a new address or folder; needed for a transport this plugin does not know, a
    plugin's); every one is stopped at teardown."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[EmulatedDevice] = []

    def __call__(
        self,
        transport: str = "tcp",
        device_file: str | Path | None = None,
        secret: str | None = None,
        baud: int | None = None,
        faults: Iterable[str] = (),
        *,
        on: str | None = None,
        once: bool = False,
        timeout: float | None = None,
        args: Iterable[str] = (),
    ) -> EmulatedDevice:
        from salesmgr.emulator.process import EmulatorProcess, emulator_command
        from salesmgr.plugin.manager import get_registry
        from salesmgr.sync.wire import auth

        registry = get_registry()
        if transport not in registry.transports:
            pytest.skip(f"the {transport}:// transport is not installed")
        if on is None and transport not in LISTEN_ON:
            raise ValueError(
                f"say where the emulated device listens on the {transport}:// transport: "
                f"emulated_device({transport!r}, on=\"{transport}://...\")"
            )
        home = self.folder / f"device-{len(self.started) + 1}"
        home.mkdir()
        new_folder = on is None
        if on is None:
            on = LISTEN_ON[transport].format(folder=home)
            if transport == "folder":
                (home / "mirror").mkdir()
        path = Path(device_file) if device_file is not None else home / "device.smp"
        secret = secret or auth.new_secret()
        command = emulator_command(
            path, on, baud=baud, faults=faults, once=once, timeout=timeout, extra=args
        )
        handed = plugins_to_hand_over(registry, transport)
        if handed:  # python -m salesmgr.emulator ... -> python -m salesmgr.testing.plugged ...
            module = command.index("salesmgr.emulator")
            command = [sys.executable, "-m", "salesmgr.testing.plugged", *handed, "--",
                       "emulator", *command[module + 1:]]
        process = EmulatorProcess(command, home, secret=secret)
        # The emulator prints the folder's real path.
        mailbox = Path(process.url.removeprefix("folder://")) if transport == "folder" else None
        if mailbox is not None:
            # An offer before the test leaves anything: an offer written after a load arrived, by
            # a look that began before it, would pass for the load's answer (as in salesmgr demo).
            deadline = time.monotonic() + 10
            while not any(mailbox.glob("offer-*.smdrop")) and time.monotonic() < deadline:
                if not process.running():
                    break
                time.sleep(0.02)
        device = EmulatedDevice(transport, process.url, secret, path, process, mailbox)
        self.started.append(device)
        if mailbox is not None and new_folder:
            # A store-and-forward device is ready once its first offer lies in its new folder,
            # as a live one is once it listens: what the desktop leaves is looked at afresh.
            device.settle()
        return device

    def stop_all(self) -> None:
        for device in reversed(self.started):
            device.stop()


@pytest.fixture
def emulated_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeviceFactory]:
    """A factory of emulated devices (subprocesses), all stopped when the test ends."""
    factory = DeviceFactory(tmp_path_factory.mktemp("salesmgr-devices"))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(params=TRANSPORTS)
def salesmgr_transport(request: pytest.FixtureRequest) -> str:
    """Each transport in turn (``tcp``, ``serial``, ``folder``); skipped if not installed."""
    from salesmgr.plugin.manager import get_registry

    name: str = request.param
    if name not in get_registry().transports:
        pytest.skip(f"the {name}:// transport is not installed")
    return name

"""The emulator in a subprocess, started and stopped the way a user or a test harness would.

``python -P -m salesmgr.emulator serve ...`` runs in a child process with its output going to files
(a pipe nobody reads could fill up and block it); the first line it prints, ``listening on URL``,
is read back with a deadline.  `stop` sends SIGTERM — the emulator finishes cleanly and its file
stays whole — and kills it only if it does not stop in time.  Used by ``salesmgr demo`` and by the
pytest plugin (`salesmgr.testing.pytest_plugin`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from salesmgr.cli.site_config import SECRET_ENV
from salesmgr.errors import SalesmgrError, SyncError

START_TIMEOUT = 20.0  # seconds for the child to start Python, import salesmgr and listen
STOP_TIMEOUT = 10.0


def emulator_command(
    device_file: Path,
    on: str,
    *,
    baud: int | None = None,
    faults: Iterable[str] = (),
    once: bool = False,
    timeout: float | None = None,
    extra: Iterable[str] = (),
) -> list[str]:
    """The command line of ``salesmgr emulator serve`` run by this Python."""
    # -P: the child's import path starts with salesmgr's own, never with the current folder
    # (``python -m`` would put it first, and a planted pluggy.py there would run).
    command = [
        sys.executable, "-P", "-m", "salesmgr.emulator", "serve", str(device_file), "--on", on
    ]
    if baud is not None:
        command += ["--baud", str(baud)]
    for fault in faults:
        command += ["--fault", fault]
    if once:
        command.append("--once")
    if timeout is not None:
        command += ["--timeout", f"{timeout:g}"]
    return [*command, *extra]


def mailbox_settled(folder: Path, device_file: Path, secret: str | bytes) -> bool:
    """True when a store-and-forward device (``folder://``) has looked at everything the desktop
    left in ``folder`` and its offer there describes its file as it is now: no readable load or
    answer waits in the folder unless the device refused it (a damaged one it never takes), and
    the newest offer carries the device file's knowledge (a blank offer for a device with
    nothing loaded).

    Judged by what the drops and the file say, never by their times: two processes' writes can
    land in the same clock tick, or the emulator's first offer after the desktop's load."""
    from salesmgr import storage
    from salesmgr.sync.wire.auth import secret_bytes
    from salesmgr.sync.wire.drops import DropKind, Offer, Refusal, parse_name, unseal_file

    key = secret_bytes(secret)
    waiting: set[str] = set()
    refused: set[str] = set()
    offers: list[Offer] = []
    with os.scandir(folder) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        parsed = parse_name(name)
        if parsed is None:
            continue
        kind, drop_id = parsed
        try:
            drop = unseal_file(folder / name, key, name)
        except FileNotFoundError:  # taken or replaced meanwhile
            return False
        except SalesmgrError:
            # Damaged, cut short or sealed with another secret: the device refuses it and
            # leaves it in place for inspection; nothing of it can reach the device file.
            continue
        if kind in (DropKind.ANSWER, DropKind.LOAD):
            waiting.add(drop_id)
        elif isinstance(drop, Refusal):
            refused.add(drop.refused)
        elif isinstance(drop, Offer):
            offers.append(drop)
    if waiting - refused or not offers:
        return False
    newest = max(offers, key=lambda offer: (offer.created_ms, offer.drop_id))
    try:
        size = device_file.stat().st_size
    except FileNotFoundError:
        size = 0
    if not size:
        return newest.blank
    try:
        held = storage.read_file(device_file)
    except SalesmgrError:
        return False  # being replaced, or damaged: the emulator reports that itself
    if not held.records:
        return newest.blank
    return (
        not newest.blank
        and newest.pipeline_id == held.pipeline_id
        and newest.knowledge == held.knowledge
    )


class EmulatorProcess:
    """One running emulator; ``url`` is where the desktop reaches it."""

    def __init__(
        self,
        command: list[str],
        log_dir: Path,
        *,
        secret: str,
        env: Mapping[str, str] | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.command = command
        stamp = time.monotonic_ns()
        self.out_path = log_dir / f"emulator-{stamp}.out"
        self.err_path = log_dir / f"emulator-{stamp}.err"
        self.secret = secret  # to read the drops of a store-and-forward device (settle)
        # The secret goes through the environment: a command line is visible to every user.
        child_env = {**os.environ, **(env or {}), SECRET_ENV: secret}
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=child_env
            )
        try:
            self.url = self._wait_for_url(start_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            first, newline, _ = self.stdout.partition("\n")
            if newline:
                if not first.startswith("listening on "):
                    raise SyncError(f"the emulator said {first!r}, not where it listens")
                return first.removeprefix("listening on ")
            if self.process.poll() is not None:
                said = self.stderr.strip().splitlines()
                reason = said[-1] if said else f"exit status {self.process.returncode}"
                raise SyncError(f"the emulator did not start: {reason}")
            time.sleep(0.02)
        raise SyncError(f"the emulator did not say where it listens within {timeout:g} s")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        """Its exit status once it has stopped by itself (``--once``); SyncError after timeout."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise SyncError(f"the emulator is still running after {timeout:g} s") from None

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait, and SIGKILL if it has not stopped within ``timeout``; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def settle(self, mailbox: Path, device_file: Path, timeout: float = 10.0) -> None:
        """Wait until the device has taken what the desktop left in ``mailbox`` and offers
        what its file holds now (see `mailbox_settled`); SyncError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not mailbox_settled(mailbox, device_file, self.secret):
            if not self.running():
                raise SyncError(f"the emulator stopped: {self.stderr.strip()[-300:]}")
            if time.monotonic() >= deadline:
                raise SyncError(
                    f"the device did not take what was left in {mailbox} within {timeout:g} s"
                )
            time.sleep(0.02)

    def output_contains(self, text: str, timeout: float = 10.0, *, stream: str = "stdout") -> bool:
        """Wait for ``text`` in its stdout (or ``stream="stderr"``); False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if text in (self.stdout if stream == "stdout" else self.stderr):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

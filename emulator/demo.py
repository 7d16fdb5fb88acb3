"""``salesmgr demo``: a whole working day in a few seconds, with nothing to set up.

In a temporary folder it creates the desktop pipeline, starts the device emulator in a subprocess
(by default behind an emulated serial cradle at 115200 baud), writes the site's ``salesmgr.toml``,
and then runs the very commands a site runs: ``salesmgr load`` in the morning, a day on the road
(on the device's file) and in the office (on the desktop's), ``salesmgr sync`` in the evening,
``salesmgr conflicts`` and ``salesmgr list``.  Whatever happens — an error, Ctrl-C, SIGTERM — the
emulator is stopped and the folder removed (unless ``--keep DIR``).
"""

from __future__ import annotations

import random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from salesmgr import storage
from salesmgr.cli.site_config import CONFIG_NAME
from salesmgr.cli.views import display_cell, make_console, output_mode, plain_table
from salesmgr.emulator.day import DaySummary, office_day, road_day, starting_pipeline
from salesmgr.emulator.process import EmulatorProcess, emulator_command
from salesmgr.errors import ConfigError, PluginError, SyncError
from salesmgr.plugin.manager import get_registry
from salesmgr.storage import editing_pipeline, save_pipeline
from salesmgr.sync.wire import auth
from salesmgr.testing.compare import user_data

if TYPE_CHECKING:
    from rich.table import Table

DEFAULT_BAUD = 115200
DESKTOP, DEVICE = "desk.smp", "device.smp"
TABLE_COLUMNS = ("company", "title", "stage", "value", "next_action_date", "today")


@click.command("demo")
@click.option(
    "--transport",
    type=click.Choice(["serial", "folder", "tcp"]),
    default="serial",
    show_default=True,
    help="How the desktop reaches the emulated device: a serial cradle (a pseudo-terminal), a "
    "mirrored folder, or the network.",
)
@click.option(
    "--baud",
    type=click.IntRange(min=300),
    help=f"Speed of the serial line (default {DEFAULT_BAUD}); serial only.",
)
@click.option(
    "--keep",
    type=click.Path(path_type=Path),
    metavar="DIR",
    help="Work in DIR (new or empty) and keep the files; default: a temporary folder, removed.",
)
@click.option("--seed", type=int, help="Play this day (default: a new one; the seed is printed).")
@click.pass_context
def demo(
    ctx: click.Context, transport: str, baud: int | None, keep: Path | None, seed: int | None
) -> None:
    """Play a whole day: morning load, a day on the road and in the office, evening sync.

    Creates a pipeline of about thirty opportunities, starts the device emulator, loads it, plays
    the day on both sides (the same --seed plays the same day), syncs, and prints the merge report
    and the pipeline.  Nothing to set up; nothing is left behind unless --keep DIR."""
    transports = get_registry().transports  # the choices are named after their URL schemes
    if transport not in transports:
        known = ", ".join(f"{s}://" for s in sorted(transports))
        raise PluginError(
            f"--transport {transport}: no {transport}:// transport is installed (known: {known})"
        )
    if baud is not None and transport != "serial":
        raise ConfigError(f"--baud is for --transport serial (a {transport} link has no baud rate)")
    if seed is None:
        seed = random.SystemRandom().randrange(1, 10_000)
    started = time.monotonic()
    with working_folder(keep) as folder, stopped_by_sigterm():
        story = DemoDay(ctx, folder, transport, baud or DEFAULT_BAUD, seed, kept=keep is not None)
        try:
            story.play()
        finally:
            story.stop_device()
    story.say(f"\nThe whole day took {time.monotonic() - started:.1f} s (seed {seed}: "
              f"salesmgr demo --transport {transport} --seed {seed} plays it again).")


class DemoDay:
    """The steps of the demo, narrated as plain lines (piped) or with rich headings (terminal)."""

    def __init__(
        self, ctx: click.Context, folder: Path, transport: str, baud: int, seed: int, kept: bool
    ) -> None:
        self.ctx = ctx
        self.folder = folder
        self.transport = transport
        self.baud = baud
        self.seed = seed
        self.kept = kept
        self.desk = folder / DESKTOP
        self.device = folder / DEVICE
        self.secret = auth.new_secret()
        self.emulator: EmulatorProcess | None = None
        self.mailbox: Path | None = None  # the folder of a store-and-forward device
        self.console = make_console() if output_mode(False) == "table" else None

    # -- narration ----------------------------------------------------------------------------
    def step(self, title: str) -> None:
        if self.console is not None:
            self.console.print()
            self.console.rule(f"[bold]{title}", align="left")
        else:
            click.echo(f"\n== {title}")

    def say(self, text: str) -> None:
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text(text))
        else:
            click.echo(text)

    def command(self, text: str) -> None:
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text(f"$ {text}", style="bold cyan"))
        else:
            click.echo(f"$ {text}")

    def run(self, name: str, **params: Any) -> None:
        """The salesmgr command ``name``, exactly as the command line runs it."""
        group = self.ctx.find_root().command
        assert isinstance(group, click.Group)
        command = group.get_command(self.ctx, name)
        assert command is not None, name
        self.ctx.invoke(command, **params)

    # -- the day ------------------------------------------------------------------------------
    def play(self) -> None:
        line = f"a serial cradle at {self.baud} baud" if self.transport == "serial" else {
            "folder": "a mirrored folder (store and forward)", "tcp": "the network (tcp)"
        }[self.transport]
        self.say(f"salesmgr demo: one working day, synced over {line}")
        where = "kept" if self.kept else "removed at the end; --keep DIR keeps it"
        self.say(f"working in {self.folder} ({where})")

        self.step("1. The desktop pipeline")
        desktop = starting_pipeline(self.seed)
        save_pipeline(desktop, self.desk)
        opportunities = sum(1 for _ in desktop.live("opportunity"))
        activities = sum(1 for _ in desktop.live("activity"))
        self.say(f"{DESKTOP}: {desktop.name!r}, {opportunities} opportunities and {activities} "
                 f"activities, owner {desktop.owner}, in {desktop.currency}")

        self.step("2. The device")
        self.start_device()

        self.step("3. Morning: load the device")
        self.command(f"salesmgr load {DESKTOP}")
        self.run("load", file=self.desk, secret=self.secret)
        self.settle("the device took the pipeline from the folder")

        self.step("4. On the road: the salesperson works on the device")
        with editing_pipeline(self.device) as pipeline:
            road = road_day(pipeline, self.seed)
        self.tell(road, f"salesmgr emulator day {DEVICE} --seed {self.seed}")
        self.settle("the device left its changes in the folder")

        self.step("5. In the office: the assistant works on the desktop")
        with editing_pipeline(self.desk) as pipeline:
            office = office_day(pipeline, self.seed, contested=road.contested)
        self.tell(office, "")

        self.step("6. Evening: sync")
        self.command(f"salesmgr sync {DESKTOP}")
        self.run("sync", file=self.desk, secret=self.secret)
        self.settle("the device took the answer from the folder")
        self.command(f"salesmgr conflicts {DESKTOP} --all")
        self.run("conflicts", file=str(self.desk), include_all=True)

        self.step("7. The pipeline tonight")
        self.check_both_sides_agree()
        self.show_pipeline(road, office)

    def tell(self, day: DaySummary, replay: str) -> None:
        for line in day.lines():
            self.say(f"  {line}")
        if replay:
            self.say(f"({replay} plays this day on a device file)")

    def start_device(self) -> None:
        options: dict[str, Any] = {}
        if self.transport == "serial":
            on, options = "serial-pty", {"baud": self.baud, "pace": True}
            command = emulator_command(self.device, on, baud=self.baud)
            shown = f"--on serial-pty --baud {self.baud}"
        elif self.transport == "folder":
            self.mailbox = mirror = self.folder / "activesync"
            mirror.mkdir()
            on = f"folder://{mirror}"
            command = emulator_command(self.device, on)
            shown = f"--on {on}"
        else:
            on = "tcp://127.0.0.1:0"
            command = emulator_command(self.device, on)
            shown = f"--on {on}"
        self.command(f"salesmgr emulator serve {DEVICE} {shown} &")
        self.emulator = EmulatorProcess(command, self.folder, secret=self.secret)
        if self.mailbox is not None:
            # Its first offer, before the desktop leaves anything: an offer written after a
            # load arrived, by a look that began before it, would pass for the load's answer.
            self.emulator.settle(self.mailbox, self.device)
        self.say(f"listening on {self.emulator.url}")
        self.say(f"(a new device: {DEVICE} does not exist yet; the pairing secret is random and "
                 "given to both ends)")
        config = site_config(self.emulator.url, options)
        (self.folder / CONFIG_NAME).write_text(config)
        self.say(f"{CONFIG_NAME} beside {DESKTOP}, so that load and sync need no options:")
        for text in config.strip().splitlines():
            self.say(f"  {text}")

    def settle(self, done: str) -> None:
        """A device behind a folder takes what the desktop left in its own time: wait for it
        and say ``done`` (a live device has already committed when the desktop's command
        returns)."""
        if self.mailbox is not None and self.emulator is not None:
            self.emulator.settle(self.mailbox, self.device)
            self.say(f"({done})")

    def stop_device(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
            self.emulator = None

    def check_both_sides_agree(self) -> None:
        desktop, device = storage.load(self.desk), storage.load(self.device)
        if user_data(desktop) != user_data(device):
            raise SyncError(
                f"after the sync {DESKTOP} and {DEVICE} differ: please report this bug"
            )
        counts = [
            count(sum(1 for _ in desktop.live(kind)), noun)
            for kind, noun in (
                ("opportunity", "opportunit(y|ies)"),
                ("activity", "activit(y|ies)"),
                ("conflict", "conflict log entr(y|ies)"),
            )
        ]
        self.say(f"The desktop and the device hold the same {', '.join(counts[:2])} and "
                 f"{counts[2]}.")

    def show_pipeline(self, *days: DaySummary) -> None:
        """The live opportunities, and which side changed each today."""
        changed: dict[str, list[str]] = {}
        for day in days:
            for action in day.actions:
                who = changed.setdefault(action.record_id, [])
                if day.who not in who:
                    who.append(day.who)
        pipeline = storage.load(self.desk)
        records = sorted(pipeline.live("opportunity"),
                         key=lambda r: (r.get("company").casefold(), r.get("title"), r.id))
        sides = {("road",): "road", ("office",): "office", ("road", "office"): "both"}
        rows = [
            [*(r.get(c) for c in TABLE_COLUMNS[:-1]), sides.get(tuple(changed.get(r.id, ())), "")]
            for r in records
        ]
        if self.console is not None:
            title = f"{pipeline.name}: {count(len(rows), 'opportunit(y|ies)')}"
            self.console.print(pipeline_table(rows, title))
        else:
            click.echo(plain_table(TABLE_COLUMNS, rows), nl=False)


def pipeline_table(rows: list[list[str]], title: str) -> Table:
    """The demo's table: names may wrap, figures and dates never do."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=Text(title), title_justify="left")
    for name in TABLE_COLUMNS:
        figure = name in ("value", "next_action_date")
        table.add_column(
            {"next_action_date": "next step", "today": "changed"}.get(name, name),
            justify="right" if name == "value" else "left",
            no_wrap=figure or name == "stage",
        )
    for row in rows:
        table.add_row(*(Text(display_cell(n, c)) for n, c in zip(TABLE_COLUMNS, row, strict=True)))
    return table


def count(number: int, noun: str) -> str:
    """``count(2, "entr(y|ies)")`` is "2 entries"."""
    stem, _, forms = noun.partition("(")
    one, _, many = forms.rstrip(")").partition("|")
    return f"{number} {stem}{one if number == 1 else many}"


def site_config(url: str, options: dict[str, Any]) -> str:
    lines = ["[sync]", f'url = "{url}"', "timeout = 30", ""]
    if options:
        lines.append("[sync.options]")
        for key, value in options.items():
            shown = str(value).lower() if isinstance(value, bool) else value
            lines.append(f"{key} = {shown}")
        if options.get("pace"):
            lines[-1] += "  # a pty has no speed: send no faster than a real line would"
    return "\n".join(lines) + "\n"


@contextmanager
def working_folder(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created, or empty) and kept; else a new temporary folder, removed afterwards."""
    if keep is None:
        folder = Path(tempfile.mkdtemp(prefix="salesmgr-demo-"))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if keep.exists() and not keep.is_dir():
        raise ConfigError(f"--keep {keep}: is not a folder")
    if keep.is_dir() and any(keep.iterdir()):
        raise ConfigError(f"--keep {keep}: is not empty; give a new or empty folder")
    try:
        keep.mkdir(parents=True, exist_ok=True)
    except OSError as problem:
        reason = problem.strerror or problem
        raise ConfigError(f"--keep {keep}: cannot create it ({reason})") from None
    yield keep.resolve()


@contextmanager
def stopped_by_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit for the block, so the clean-up runs as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

"""What a sync session did, as lines for a person and as JSON, whatever carried it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from salesmgr.errors import PartlySynced
from salesmgr.merge.report import MergeReport
from salesmgr.sync.rules import plural


@dataclass
class SessionResult:
    side: str  # "desktop" or "device"
    mode: str  # "sync" or "load"
    peer_replica: str = ""
    dry_run: bool = False
    slow: str = ""  # why the device was asked for everything, if it was
    report: MergeReport | None = None
    mass_change: str | None = None  # a dry run that a real sync would refuse
    committed: bool = False  # the device saved what it received
    # The sync was finished on this side but the device's acknowledgement did not arrive: why.
    unconfirmed: str = ""
    saved: bool = False  # this end wrote its file
    records_received: int = 0
    records_sent: int = 0
    device_records: int = 0  # live records on the device at the end
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def traffic(self) -> str:
        return (
            f"{self.records_received} records received, {self.records_sent} sent; "
            f"{self.bytes_sent} bytes sent, {self.bytes_received} received "
            f"in {self.seconds:.2f} s"
        )

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.side == "desktop" and self.mode == "load":
            out.append(
                f"loaded the device: {self.records_sent} records sent, "
                f"it now holds {self.device_records}"
            )
        elif self.side == "desktop":
            out.extend(self.report.lines() if self.report else [])
        else:
            state = "committed" if self.committed else "nothing written"
            out.append(
                f"{self.mode} with desktop {self.peer_replica[:8]}: {state}, "
                f"device holds {self.device_records} records"
            )
        if self.slow:
            out.append(f"slow sync (full comparison): {self.slow}")
        if self.mass_change:
            out.append(f"a real sync would stop: {self.mass_change}")
        if self.unconfirmed:
            out.append(
                f"the device's confirmation did not arrive ({self.unconfirmed}): this desktop "
                "holds everything; the device may not have saved its part yet, and the next "
                "sync confirms it (and sends it whatever it still lacks)"
            )
        if self.dry_run:
            out.append("dry run: nothing was written on either side")
        out.append(self.traffic())
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "side": self.side,
            "mode": self.mode,
            "peer_replica": self.peer_replica,
            "dry_run": self.dry_run,
            "slow_sync": self.slow or None,
            "mass_change": self.mass_change,
            "committed": self.committed,
            "confirmed": self.committed or not self.unconfirmed,
            "saved": self.saved,
            "records_received": self.records_received,
            "records_sent": self.records_sent,
            "device_records": self.device_records,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 4),
            "report": self.report.as_json() if self.report else None,
        }


@dataclass
class DropResult(SessionResult):
    """A `SessionResult` for one drop or file taken from a mailbox."""

    taken: str = ""  # the drop or file taken from the mailbox
    written: str = ""  # the drop or file left there
    waiting: str = ""  # the round needs the device to act first: why
    notices: list[str] = field(default_factory=list)
    # Entries of the mailbox not taken (over a cap, unsealed, damaged...), each as
    # "ENTRY: why": left in place, and the command does not claim full success (`refused_in`).
    refused: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.mode == "load":
            out.append(
                f"left the whole pipeline for the device: {plural(self.records_sent, 'record')} "
                f"in {self.written}"
            )
            out.append(
                "the device takes it at its next look; it refuses if it holds changes this "
                "desktop has not seen (then sync first)"
            )
        else:
            out.append(f"took {self.taken}")
            if self.report is not None:
                out.extend(self.report.lines())
            if self.slow:
                out.append(f"slow sync (full comparison): {self.slow}")
            if self.mass_change:
                out.append(f"a real sync would stop: {self.mass_change}")
            if self.written:
                out.append(f"left {self.written} for the device")
            if self.waiting:
                out.append(self.waiting)
        out.extend(f"note: {n}" for n in self.notices)
        out.extend(f"refused {r}; left in place for inspection" for r in self.refused)
        if self.dry_run:
            out.append("dry run: nothing was written in the folder or to the desktop file")
        out.append(self.traffic())
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            **super().as_json(),
            "taken": self.taken or None,
            "written": self.written or None,
            "waiting": self.waiting or None,
            "notices": list(self.notices),
            "refused": list(self.refused),
        }


def refused_in(results: Sequence[SessionResult]) -> PartlySynced | None:
    """The error a command ends with when it took what it could but refused some of what it
    found (docs/integrators.md, "Exit status"), or None when it refused nothing."""
    refused = [r for result in results if isinstance(result, DropResult) for r in result.refused]
    if not refused:
        return None
    more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
    entries = "1 entry" if len(refused) == 1 else f"{len(refused)} entries"
    return PartlySynced(
        f"done for the rest, but refused {entries} of the folder: {refused[0]}{more}; "
        "left in place for inspection"
    )

"""What a merge did: counts each way, the conflicts and how they were decided, warnings.

The same report serves ``salesmgr merge``, a live sync and a mailbox round (lines for a person,
JSON for scripts, the ``merged`` sync event)."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as default
from typing import Any

from salesmgr.merge.brake import Losses


@dataclass
class Counts:
    added: int = 0
    changed: int = 0
    deleted: int = 0

    def as_json(self) -> dict[str, int]:
        return {"added": self.added, "changed": self.changed, "deleted": self.deleted}


@dataclass
class ConflictEntry:
    """A decided or open conflict, as written to the conflict log."""

    id: str
    record_id: str
    kind: str
    label: str
    field: str
    desktop_value: str | None
    device_value: str | None
    winner: str
    value: str | None
    policy: str
    status: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MergeReport:
    policy: str
    to_desktop: Counts = default(default_factory=Counts)
    to_device: Counts = default(default_factory=Counts)
    conflicts: list[ConflictEntry] = default(default_factory=list)
    warnings: list[str] = default(default_factory=list)
    duplicates: list[tuple[str, str, str]] = default(default_factory=list)  # combine: likely dupes
    # What each side loses (records deleted, its own values overwritten): the brake counts it.
    losses: dict[str, Losses] = default(
        default_factory=lambda: {"desktop": Losses(), "device": Losses()}
    )
    emptied: bool = False  # it deletes, and no record standing on its own is live afterwards

    @property
    def changes_nothing(self) -> bool:
        return not any(
            (*self.to_desktop.as_json().values(), *self.to_device.as_json().values())
        ) and not self.conflicts

    def progress(self) -> dict[str, Any]:
        """What the ``merged`` sync event says: the counts each way and how many conflicts."""
        return {
            "to_desktop": self.to_desktop.as_json(),
            "to_device": self.to_device.as_json(),
            "conflicts": len(self.conflicts),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "to_desktop": self.to_desktop.as_json(),
            "to_device": self.to_device.as_json(),
            "conflicts": [c.as_json() for c in self.conflicts],
            "warnings": list(self.warnings),
            "likely_duplicates": [
                {"desktop_id": a, "device_id": b, "label": label}
                for a, b, label in self.duplicates
            ],
        }

    def lines(self) -> list[str]:
        d, v = self.to_desktop, self.to_device
        out = [
            f"desktop: {d.added} added, {d.changed} changed, {d.deleted} deleted",
            f"device:  {v.added} added, {v.changed} changed, {v.deleted} deleted",
            f"conflicts: {len(self.conflicts)} (policy {self.policy})",
        ]
        for c in self.conflicts:
            state = "open, desktop value kept for now" if c.status == "open" else f"{c.winner} won"
            out.append(
                f"  {c.id[:8]} {c.label or c.record_id[:8]} {c.field}: "
                f"desktop {show(c.desktop_value)} / device {show(c.device_value)} -> {state}"
            )
        for a, b, label in self.duplicates:
            out.append(f"  likely duplicate: {label} (desktop {a[:8]}, device {b[:8]})")
        out.extend(f"warning: {w}" for w in self.warnings)
        return out


def show(value: str | None) -> str:
    if value is None:
        return "(empty)"
    text = value if len(value) <= 40 else value[:37] + "..."
    return repr(text)

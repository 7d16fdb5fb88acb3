"""The mass-change brake: the one rule that stops a merge emptying or replacing a side.

It exists to catch a side that is emptied or replaced — its records deleted, or its own values
overwritten by a reset or restored replica — not a busy day: a record the other side simply
edited since the two last agreed is not counted.  The merge engine counts what each side loses
(`Losses`, in `MergeReport.losses`); `mass_change` judges it.  Every path that writes a merge asks
it once, after merging in memory and before saving anything: ``salesmgr merge``, a live sync and a
folder sync, all through `salesmgr.sync.rules.brake`.  docs/sync-model.md has the contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

MASS_CHANGE_MINIMUM = 10  # below this many records, losing "more than half" is a normal day
NAMED = 5  # records named in the message; the rest are counted


@dataclass
class Losses:
    """What a merge takes from one side: records live there that it deletes, and records whose
    values written there, unseen by the other side, it overwrites (conflicts that side lost)."""

    deleted: dict[str, str] = field(default_factory=dict)  # record id -> label
    replaced: dict[str, str] = field(default_factory=dict)

    def records(self) -> dict[str, str]:
        """Every record counted, once."""
        return {**self.replaced, **self.deleted}

    def what(self) -> str:
        """``delete 9 and overwrite 2``."""
        deleted = len(self.deleted)
        replaced = len(self.records()) - deleted
        parts = [f"delete {deleted}"] if deleted else []
        if replaced:
            parts.append(f"overwrite {replaced}")
        return " and ".join(parts)

    def named(self) -> str:
        """``Acme (5f34328f), Beta (0c1d2e3f) and 3 more``."""
        names = [
            f"{label} ({record_id[:8]})" if label else record_id[:8]
            for record_id, label in sorted(self.records().items(), key=lambda item: item[::-1])
        ]
        if len(names) <= NAMED:
            return ", ".join(names)
        return f"{', '.join(names[:NAMED])} and {len(names) - NAMED} more"


def mass_change(
    losses: Mapping[str, Losses], before: Mapping[str, int], emptied: bool
) -> str | None:
    """Why a merge must not be written without --allow-mass-change, or None.

    ``losses`` and ``before`` (live records before the merge) are per side; ``emptied``: no
    record standing on its own is live once the merge is written (both sides then hold the
    same).  A side is braked when the merge deletes its last such record, whatever its size, or
    when it deletes or overwrites more than half of its records (at least
    `MASS_CHANGE_MINIMUM` of them)."""
    for side, lost in losses.items():
        if lost.deleted and emptied:
            return (
                f"this would delete every record left on the {side} ({lost.named()}); "
                "nothing was written (use --allow-mass-change if that is right)"
            )
        count = len(lost.records())
        total = before.get(side, 0)
        if count >= MASS_CHANGE_MINIMUM and count * 2 > total:
            return (
                f"this would {lost.what()} of the {total} records on the {side} "
                f"({lost.named()}); nothing was written "
                "(use --allow-mass-change if that is right)"
            )
    return None

"""The built-in merge policies: who wins when both sides changed the same thing differently.

Each is registered through `salesmgr_register_policies`, exactly as a third-party policy is.  The
losing value always goes to the conflict log, whatever the policy; a policy only picks the winner.
"""

from __future__ import annotations

from collections.abc import Callable

from salesmgr.merge.engine import Conflict, FieldOutcome
from salesmgr.plugin.hookspecs import hookimpl
from salesmgr.plugin.interfaces import MergePolicy


def live_side(conflict: Conflict) -> str:
    """In a delete/edit conflict, the side that kept (and edited) the record."""
    return "device" if conflict.desktop_value == "deleted" else "desktop"


class NewestField(MergePolicy):
    name = "field-merge"
    help = (
        "per field: a true conflict goes to the most recent change (versions break exact ties); "
        "a deleted record that was edited elsewhere comes back with the edit"
    )

    def resolve(self, conflict: Conflict) -> FieldOutcome:
        if conflict.is_deletion:
            return FieldOutcome(live_side(conflict))  # type: ignore[arg-type]
        return FieldOutcome(conflict.side_newest())


class SideWins(MergePolicy):
    def __init__(self, side: str) -> None:
        self.side = side
        self.name = f"{side}-wins"
        self.help = f"the {side} wins every true conflict (deletions included)"

    def resolve(self, conflict: Conflict) -> FieldOutcome:
        return FieldOutcome(self.side)  # type: ignore[arg-type]


class NewestRecord(MergePolicy):
    name = "newest-record"
    help = "record level: the record changed most recently wins whole (the classic behaviour)"
    record_level = True

    def resolve(self, conflict: Conflict) -> FieldOutcome:
        return FieldOutcome(conflict.side_newest())


class KeepBoth(MergePolicy):
    name = "keep-both"
    help = "record level: a conflicting record is kept twice, one copy per side (Palm HotSync)"
    record_level = True

    def resolve(self, conflict: Conflict) -> FieldOutcome:
        if conflict.is_deletion:
            return FieldOutcome(live_side(conflict))  # type: ignore[arg-type]
        return FieldOutcome("both")


class Manual(MergePolicy):
    name = "manual"
    help = "keep the desktop value for now and leave the conflict open (salesmgr resolve)"

    def resolve(self, conflict: Conflict) -> FieldOutcome:
        return FieldOutcome("desktop", open=True)


@hookimpl
def salesmgr_register_policies(register: Callable[[MergePolicy], None]) -> None:
    for policy in (NewestField(), SideWins("desktop"), SideWins("device"), NewestRecord(),
                   KeepBoth(), Manual()):
        register(policy)

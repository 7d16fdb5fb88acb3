"""The merge goal of issue 13, shared by the benches that check it (bench/cli.py, merge.py)."""

from __future__ import annotations

MERGE_SECONDS = 1.0  # for a merge of 100,000 records with 1% changed on each side ...
MERGE_CHANGES = 1_000  # ... that is, 1,000 records changed on each side


def merge_goal(changed: int) -> float:
    """Seconds a merge with ``changed`` records changed on each side may take.

    Issue 13 sets 1 s for 100,000 records with 1% changed on each side, "cost proportional to
    the changes, not the file": a larger merge may take as long per change (10 s for 10,000 a
    side, 1,000,000 records at 1%), a smaller one no longer than 1 s."""
    return MERGE_SECONDS * max(1.0, changed / MERGE_CHANGES)


def merge_goal_text(changed: int) -> str:
    goal = merge_goal(changed)
    if goal == MERGE_SECONDS:
        return f"under {goal:.0f} s"
    return (f"under {goal:.0f} s ({MERGE_SECONDS:.0f} s per {MERGE_CHANGES:,} records changed "
            f"on each side, as at 100,000 records)")

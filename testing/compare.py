"""Comparing pipelines by what users see, for tests and the demo."""

from __future__ import annotations

from salesmgr.model.pipeline import Pipeline, user_values


def user_data(pipeline: Pipeline) -> dict[str, tuple[str, bool, dict[str, str]]]:
    """A pipeline's content as users see it (no versions, no hidden fields): for comparisons."""
    return {
        rid: (
            r.kind,
            r.deleted,
            user_values(r.values),
        )
        for rid, r in pipeline.records.items()
    }

"""Built-in merge rules (filled in by the merge engine)."""

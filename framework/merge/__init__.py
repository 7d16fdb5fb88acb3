"""The causal per-field merge of two replicas (`engine`), driven by the merge hooks."""

"""The record model: field kinds and record types (`fields`), pipelines, records and versions
(`pipeline`)."""

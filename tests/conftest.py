"""Hypothesis profiles for this suite, chosen with ``HYPOTHESIS_PROFILE`` (tox passes it on).

- ``dev`` (the default on a workstation): random examples, and the example database in
  ``.hypothesis/`` so that a failure found once is replayed first on the next run.
- ``ci`` (the default when ``CI`` is set): derandomized, no example database — every run of the
  same commit draws the same examples, and nothing a previous run stored can make a run fail that
  the code alone would pass.

Each test keeps its own ``max_examples`` and ``stateful_step_count``; a profile only says how the
examples are drawn and remembered.
"""

from __future__ import annotations

import os

from hypothesis import settings

PROFILE_ENV = "HYPOTHESIS_PROFILE"

settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, database=None, print_blob=True)


def chosen_profile() -> str:
    """The profile asked for, else ``ci`` under CI and ``dev`` elsewhere."""
    return os.environ.get(PROFILE_ENV) or ("ci" if os.environ.get("CI") else "dev")


settings.load_profile(chosen_profile())

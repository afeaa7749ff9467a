"""Test-suite settings shared by every package's tests and the cross-package tests.

Hypothesis runs derandomized by default so that CI is never flaky (a failing example is found
again on every run); ``HYPOTHESIS_PROFILE=thorough`` explores with fresh random examples.
Runtime shape checking (jaxtyping + beartype) is switched on for our torch packages by
``--jaxtyping-packages`` in ``pyproject.toml``.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough", parent=settings.get_profile("default"), max_examples=500, derandomize=False
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

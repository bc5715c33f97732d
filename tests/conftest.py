"""Suite-wide settings: property tests explore the same examples on every run (no flaky CI)."""

from hypothesis import settings

settings.register_profile("deterministic", derandomize=True, print_blob=True)
settings.load_profile("deterministic")

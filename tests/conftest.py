"""Suite-wide setup: the repository on sys.path, and the skip policy
(tests/skip_policy.py: in CI a skip not on tests/skips_allowed.txt fails)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import pytest  # noqa: E402 - after the path set-up above

from tests import skip_policy  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    """Judge every skip against the allow-list (strict under CI=true)."""
    skip_policy.install(config)

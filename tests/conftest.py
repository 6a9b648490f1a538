"""Hypothesis profiles: the same code always gets the same verdict under ``make test``.

* ``ci`` (default, ``make test``): derandomized, so every run tries the same examples (the
  counts each test sets); no example database, so a failure found on one machine is not
  silently replayed only there; no deadline, since the 2 shared cores make timings noisy.
* ``thorough`` (``make test-all``, or ``HYPOTHESIS_PROFILE=thorough`` /
  ``--hypothesis-profile=thorough``): randomized search with ``THOROUGH_SCALE`` times each
  test's example count, failures kept in the local ``.hypothesis/`` database so a re-run
  replays them first. Pin whatever it finds with ``@example`` so ``ci`` checks it too.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

THOROUGH_SCALE = 5

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# --hypothesis-profile (handled by Hypothesis' pytest plugin after this file loads) wins.
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Per-test settings that a profile alone cannot impose.

    A test's own ``@settings(...)`` overrides the profile for every value it names, so:
    the ``too_slow`` health check (a wall-clock limit, which load on the 2 shared cores can
    trip) is suppressed for every test, and under ``thorough`` every test's example count is
    scaled (tests without ``@settings`` start from the profile's 100). Hypothesis keeps a
    test's settings in ``_hypothesis_internal_use_settings`` (its own ``@seed`` rewrites that
    attribute the same way); should a release rename it, this fails loudly rather than
    silently keeping the old settings.
    """
    thorough = settings.get_current_profile_name() == "thorough"
    done: set[int] = set()
    for item in items:
        fn = getattr(item, "obj", None)
        if not getattr(fn, "is_hypothesis_test", False) or id(fn) in done:
            continue
        done.add(id(fn))  # parametrized tests share one function object
        own = fn._hypothesis_internal_use_settings
        extra = {"max_examples": own.max_examples * THOROUGH_SCALE} if thorough else {}
        fn._hypothesis_internal_use_settings = settings(
            own,
            derandomize=not thorough,
            suppress_health_check=[*own.suppress_health_check, HealthCheck.too_slow],
            **extra,
        )

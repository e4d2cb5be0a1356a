"""Run Django's own cache test suite (``BaseCacheTests``) against
``shmdict.contrib.django.SharedDictCache``.

Django ships those tests in its sdist and git repository, not in the wheel,
so they need the ``tests/`` directory of the *installed* Django version::

    python tests/django_cache_suite.py /path/to/django/tests
    DJANGO_TESTS_DIR=/path/to/django/tests python tests/django_cache_suite.py
    python tests/django_cache_suite.py --fetch   # pip download the matching sdist

``--fetch`` downloads ``Django==<installed version>`` as an sdist with pip into
``~/.cache/shmdict/`` and extracts only ``tests/cache``. The suite is run like
Django's ``RedisCacheTests``: every cache alias (default, prefix, v2,
custom_key, custom_key2) points at one shared dict; the culling aliases are
left out because culling by MAX_ENTRIES does not apply (the tests that need
them skip themselves). tests/test_contrib_django.py runs this script when
DJANGO_TESTS_DIR is set.
"""

from __future__ import annotations

import os
import sys
import tempfile
import unittest


def fetch() -> str:
    """Download and extract Django's cache tests (tests/cache/ of the installed version's sdist); returns their root."""
    import django

    import sdist_tests  # here, not at the top: the test suite runs this file with PYTHONSAFEPATH set

    keep = lambda rel: rel[len("tests/"):] if rel.startswith("tests/cache/") else None  # noqa: E731
    return str(sdist_tests.fetch("Django", django.get_version(), keep, "cache/tests.py"))


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--fetch":
        tests_dir = fetch()
    else:
        tests_dir = argv[0] if argv else os.environ.get("DJANGO_TESTS_DIR", "")
    if not tests_dir or not os.path.exists(os.path.join(tests_dir, "cache", "tests.py")):
        print("usage: django_cache_suite.py DJANGO_TESTS_DIR | --fetch", file=sys.stderr)
        return 2
    sys.path.insert(0, tests_dir)
    shm = tempfile.mkdtemp(prefix="shmdict-django-", dir="/dev/shm")
    os.environ["SHMDICT_DIR"] = shm

    import django
    from django.conf import settings

    backend = "shmdict.contrib.django.SharedDictCache"
    settings.configure(
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "cache"],
        CACHES={"default": {"BACKEND": backend, "LOCATION": "djsuite"}},
        SECRET_KEY="shmdict-tests",
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    )
    django.setup()
    from django.db import connection
    from django.test import TestCase, override_settings
    from django.test.utils import setup_test_environment

    setup_test_environment()
    connection.creation.create_test_db(verbosity=0)

    from cache.tests import BaseCacheTests, caches_setting_for_tests  # type: ignore[import-not-found]

    caches = caches_setting_for_tests(BACKEND=backend, LOCATION="djsuite", exclude={"cull", "zero_cull"})
    cls = override_settings(CACHES=caches)(type("SharedDictCacheTests", (BaseCacheTests, TestCase), {}))
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(cls)
    result = unittest.TextTestRunner(verbosity=1, stream=sys.stdout).run(suite)
    for f in os.listdir(shm):
        os.unlink(os.path.join(shm, f))
    os.rmdir(shm)
    print(f"Django {django.get_version()} BaseCacheTests: ran {result.testsRun}, failures {len(result.failures)}, "
          f"errors {len(result.errors)}, skipped {len(result.skipped)}")
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

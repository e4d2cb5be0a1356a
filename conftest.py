"""Root pytest configuration: ``--doctest-modules`` imports every module under
``shmdict/``; the contrib modules need their optional extras, so they are
skipped (not errors) where those are not installed."""

import importlib.util

collect_ignore = [
    path
    for path, dep in (("shmdict/contrib/limits.py", "limits"), ("shmdict/contrib/django.py", "django"))
    if importlib.util.find_spec(dep) is None
]

"""Integrations with other libraries, each behind an optional extra.

- :mod:`shmdict.contrib.limits`: a ``shmdict://`` storage for ``limits`` 5.x
  (Flask-Limiter, slowapi); ``pip install 'shmdict[limits]'``.
- :mod:`shmdict.contrib.django`: ``SharedDictCache``, a Django cache backend;
  ``pip install 'shmdict[django]'``.
- :mod:`shmdict.contrib.prometheus`: prometheus_client's multiprocess mode
  (metrics shared by worker processes) in one dict instead of files;
  ``pip install 'shmdict[prometheus]'``.

Nothing here is imported by ``import shmdict``.
"""

"""Integrations with other libraries, each behind an optional extra.

- :mod:`shmdict.contrib.limits`: a ``shmdict://`` storage for ``limits`` 5.x
  (Flask-Limiter, slowapi); the ``limits`` extra.
- :mod:`shmdict.contrib.django`: ``SharedDictCache``, a Django cache backend;
  the ``django`` extra.
- :mod:`shmdict.contrib.prometheus`: prometheus_client's multiprocess mode
  (metrics shared by worker processes) in one dict instead of files;
  the ``prometheus`` extra.

An extra is installed with shmdict from its source folder
(``pip install '.[limits]'``). Nothing here is imported by ``import
shmdict``; importing an integration whose library is missing names the
package to install.
"""

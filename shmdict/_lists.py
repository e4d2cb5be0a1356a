"""Lists of a ``SharedDict``: push and pop at either end, length.

``Lists`` is a mixin of ``SharedDict`` (``shmdict/_dict.py``). A list is
one record holding every element, so each call is one C call under the
dict's lock (``csrc/list.c``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ._api import DictAPI, implements
from ._lib import encode_key, ffi, lib, raise_rc
from ._values import Value
from ._values import store_args as _store_args

__all__ = ["Lists"]


@implements(DictAPI)
class Lists:
    """lpush, rpush, lpop, rpop, llen."""

    __slots__ = ()

    if TYPE_CHECKING:

        def _handle(self) -> Any: ...

        def _read(self, fn: Any, key: str) -> Any: ...

    def _push(self, key: str, value: Value, left: int) -> int:
        h = self._handle()
        k = encode_key(key)
        t, i, f, b, n = _store_args(value)
        out = ffi.new("shmdict_out_t *")  # this call's own: never a nested call's (see _lib.take)
        rc = lib.shmdict_push(h, k, len(k), left, t, i, f, b, n, out)
        if rc < 0:
            raise_rc(rc, key)
        return int(out.i)

    def lpush(self, key: str, value: Value) -> int:
        return self._push(key, value, 1)

    def rpush(self, key: str, value: Value) -> int:
        return self._push(key, value, 0)

    def _pop_end(self, key: str, left: int) -> Any:
        fn = lib.shmdict_pop_end

        def call(h: Any, k: bytes, n: int, out: Any, buf: Any, cap: int) -> int:
            return fn(h, k, n, left, out, buf, cap)  # type: ignore[no-any-return]

        try:
            return self._read(call, key)
        except KeyError:
            return None

    def lpop(self, key: str) -> Optional[Value]:
        return self._pop_end(key, 1)  # type: ignore[no-any-return]

    def rpop(self, key: str) -> Optional[Value]:
        return self._pop_end(key, 0)  # type: ignore[no-any-return]

    def llen(self, key: str) -> int:
        h = self._handle()
        k = encode_key(key)
        n = lib.shmdict_llen(h, k, len(k))
        if n < 0:
            raise_rc(n, key)
        return int(n)

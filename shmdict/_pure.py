"""The hot methods of ``SharedDict`` in Python over cffi.

``PureBase`` is the base class of ``SharedDict`` on PyPy (where CPython-API
extensions are slow) and on CPython with ``SHMDICT_PURE=1``. Otherwise the
base is ``shmdict._speed.SharedDictBase`` (``csrc/python/pytype.c``), the same
methods in C. Both behave identically -- same exceptions and messages, same
checks in the same order (closed handle, then key, then value, then TTL), same
types back -- and each method is one C call under the dict's lock. Their
docstrings are the contract's (``shmdict/_api.py``) plus the notes here,
and the C type shows the same text.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

from ._api import DictAPI, implements
from ._lib import INT64_MAX as _I64_MAX
from ._lib import INT64_MIN as _I64_MIN
from ._lib import Scratch, encode_key, free, give, lib, number, raise_rc, seconds, take
from ._values import (
    BYTES,
    FLOAT,
    INT,
    MISSING,
    NULL,
    STR,
    Value,
    f64,
    i64,
    pack_item,
    read,
    result,
    store_args,
    text,
    u32,
    unpack_value,
)

__all__ = ["PureBase"]

_ENOTFOUND, _ERANGE, _EWRONGTYPE = lib.SHMDICT_ENOTFOUND, lib.SHMDICT_ERANGE, lib.SHMDICT_EWRONGTYPE
_MAX_KEY = lib.SHMDICT_MAX_KEY
_tag_q = struct.Struct("<Bq").pack
_tag_u32 = struct.Struct("<BI").pack
_c_get, _c_pop, _c_set, _c_incr, _c_delete = (
    lib.shmdict_get,
    lib.shmdict_pop,
    lib.shmdict_set,
    lib.shmdict_incr,
    lib.shmdict_delete,
)


@implements(DictAPI)
class PureBase:
    """get, [], in, set, [] =, del, delete, pop, incr, get_many, set_many."""

    __slots__ = ()
    _h: Any  # the cffi handle, None once closed (slots of SharedDict)
    _name: str

    def _attach(self, handle: Any, name: str) -> None:
        """Nothing to do: these methods use ``self._h`` (the C type takes its handle here)."""

    def _detach(self) -> None:
        """Nothing to do: ``close()`` sets ``self._h`` to None."""

    def _open(self) -> Any:
        h = self._h
        if h is None:
            raise ValueError(f"operation on closed SharedDict {self._name!r}")
        return h

    # Reads call shmdict_get once and return an int or a miss without a further
    # Python call: these are the most frequent operations. Anything else goes
    # through _values.result (other types, a value larger than the buffer, errors).

    def get(self, key: str, default: Any = None) -> Any:
        h = self._h
        if h is None:
            self._open()
        k = key.encode() if type(key) is str else encode_key(key)
        n = len(k)
        if not 0 < n <= _MAX_KEY:
            encode_key(key)  # raises the precise error
        # This call's own buffers (see _lib.take): a nested call from a signal
        # handler or finalizer between the C call and the reads below cannot
        # overwrite them. Inlined: the hottest path.
        fl = free.list
        s = fl.pop() if fl else Scratch()
        out, buf, cap, view = s.all
        rc = _c_get(h, k, n, out, buf, cap)
        if rc == INT:
            v = out.i
        elif rc == _ENOTFOUND:
            v = default
        else:
            v = result(rc, out, view, cap, _c_get, h, k, key, self._name)
        fl.append(s)
        return v

    def __getitem__(self, key: str) -> Value:
        h = self._h
        if h is None:
            self._open()
        k = key.encode() if type(key) is str else encode_key(key)
        n = len(k)
        if not 0 < n <= _MAX_KEY:
            encode_key(key)
        fl = free.list  # this call's own buffers, as in get
        s = fl.pop() if fl else Scratch()
        out, buf, cap, view = s.all
        rc = _c_get(h, k, n, out, buf, cap)
        v = out.i if rc == INT else result(rc, out, view, cap, _c_get, h, k, key, self._name)
        fl.append(s)
        return v  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        h = self._open()
        if not isinstance(key, str):
            return False  # a mapping of str keys holds no other key
        k = encode_key(key)
        rc = _c_get(h, k, len(k), free.sink, NULL, 0)  # only rc is read; str/bytes: nothing copied
        if rc > 0 or rc == _EWRONGTYPE:  # a list is present too
            return True
        if rc == _ENOTFOUND:
            return False
        raise_rc(rc, key)

    def pop(self, key: str, default: Any = MISSING) -> Any:
        h = self._open()
        try:
            return read(_c_pop, h, encode_key(key), key, self._name)
        except KeyError:
            if default is MISSING:
                raise
            return default

    # ---- writes -----------------------------------------------------------

    def set(self, key: str, value: Value, exptime: float = 0) -> None:
        """A full dict first reclaims expired items (and evicts, if it evicts) before raising ``shmdict.Full``."""
        h = self._h
        if h is None:
            self._open()
        k = key.encode() if type(key) is str else encode_key(key)
        kn = len(k)
        if not 0 < kn <= _MAX_KEY:
            encode_key(key)
        if type(value) is int and _I64_MIN <= value <= _I64_MAX:
            t, i, f, b, n = INT, value, 0.0, NULL, 0
        else:
            t, i, f, b, n = store_args(value)
        ex = seconds(exptime) if exptime else 0.0  # a false exptime (0, None): no TTL
        rc = _c_set(h, k, kn, t, i, f, b, n, ex, 0)
        if rc:
            raise_rc(rc, key)

    def __setitem__(self, key: str, value: Value) -> None:
        PureBase.set(self, key, value)

    def delete(self, key: str) -> bool:
        h = self._open()
        k = encode_key(key)
        rc = _c_delete(h, k, len(k))
        if rc == 0:
            return True
        if rc == _ENOTFOUND:
            return False
        raise_rc(rc, key)

    def __delitem__(self, key: str) -> None:
        if not PureBase.delete(self, key):
            raise KeyError(key)

    def incr(
        self,
        key: str,
        delta: Union[int, float] = 1,
        exptime: Optional[float] = None,
        *,
        init: Union[int, float, None] = None,
        init_ttl: Optional[float] = None,
    ) -> Union[int, float]:
        h = self._h
        if h is None:
            self._open()
        k = key.encode() if type(key) is str else encode_key(key)
        if not 0 < len(k) <= _MAX_KEY:
            encode_key(key)
        if type(delta) is int and _I64_MIN <= delta <= _I64_MAX:
            dt, di, df = INT, delta, 0.0
        else:
            dt, di, df = number(delta, "delta")
        it, ii, fi = (0, 0, 0.0) if init is None else number(init, "init")
        ittl = 0.0 if init_ttl is None else seconds(init_ttl, "init_ttl")
        ex = 0.0 if exptime is None else seconds(exptime)
        fl = free.list  # this call's own out-struct, as in get
        s = fl.pop() if fl else Scratch()
        out = s.out
        rc = _c_incr(h, k, len(k), dt, di, df, it, ii, fi, ittl, exptime is not None, ex, out)
        if rc == INT:
            v = out.i
        elif rc == FLOAT:
            v = out.f
        else:
            raise_rc(rc, key)
        fl.append(s)
        return v  # type: ignore[no-any-return]

    # ---- batches ------------------------------------------------------------

    def get_many(self, keys: Iterable[str]) -> dict[str, Value]:
        """Each run of up to 1,024 keys is read under one lock hold (a consistent
        snapshot of those keys); a longer list lets other processes in between runs.
        """
        if isinstance(keys, (str, bytes)):  # "ab" is one key, not the keys "a" and "b"
            raise TypeError("get_many takes an iterable of keys, not a single str")
        h = self._open()
        ks = tuple(keys)
        parts: list[bytes] = []
        ap, pack = parts.append, u32.pack
        for key in ks:  # inlined: this loop is the per-key cost get_many exists to cut
            b = key.encode() if type(key) is str else encode_key(key)
            n = len(b)
            if not 0 < n <= _MAX_KEY:
                encode_key(key)  # raises the precise error
            ap(pack(n))
            ap(b)
        packed = b"".join(parts)
        s = take()  # this call's own buffers (see _lib.take)
        while True:
            rc = lib.shmdict_get_many(h, packed, len(packed), len(ks), s.buf, s.cap, s.out)
            if rc == _ERANGE:
                s.grow(s.out.len)
                continue
            if rc < 0:
                raise_rc(rc)
            break
        data = s.view[: s.out.len].tobytes()
        give(s)
        result: dict[str, Value] = {}
        pos, name = 0, self._name
        q, f, u = i64.unpack_from, f64.unpack_from, u32.unpack_from
        for key in ks:
            t = data[pos]
            if t == 0:
                pos += 1
            elif t == INT:
                result[key] = q(data, pos + 1)[0]
                pos += 9
            elif t == STR or t == BYTES:
                (n,) = u(data, pos + 1)
                v = data[pos + 5 : pos + 5 + n]
                result[key] = text(v, name) if t == STR else v
                pos += 5 + n
            elif t == FLOAT:
                result[key] = f(data, pos + 1)[0]
                pos += 9
            else:  # bool, list
                result[key], pos = unpack_value(data, pos, name)
        return result

    def set_many(self, mapping: Union[Mapping[str, Value], Iterable[tuple[str, Value]]], exptime: float = 0) -> None:
        """Each item is its own transaction; up to 1,024 of them are stored per
        lock hold. An item that can never fit raises ``shmdict.Full`` before
        anything is stored; when the dict fills up, the items before the one
        that did not fit stay stored, the rest are not.
        """
        h = self._open()
        items = mapping.items() if isinstance(mapping, Mapping) else mapping
        parts: list[bytes] = []
        ap, pack = parts.append, u32.pack
        n = 0
        for key, value in items:  # inlined fast paths: this loop is set_many's per-item cost
            b = key.encode() if type(key) is str else encode_key(key)
            kn = len(b)
            if not 0 < kn <= _MAX_KEY:
                encode_key(key)
            t = type(value)
            if t is int and _I64_MIN <= value <= _I64_MAX:  # type: ignore[operator]
                ap(pack(kn))
                ap(b)
                ap(_tag_q(INT, value))
            elif t is str:
                vb = value.encode()  # type: ignore[union-attr]
                ap(pack(kn))
                ap(b)
                ap(_tag_u32(STR, len(vb)))
                ap(vb)
            elif t is bytes:
                ap(pack(kn))
                ap(b)
                ap(_tag_u32(BYTES, len(value)))  # type: ignore[arg-type]
                ap(value)  # type: ignore[arg-type]
            else:
                ap(pack_item(b, value))
            n += 1
        ex = seconds(exptime) if exptime else 0.0
        packed = b"".join(parts)
        rc = lib.shmdict_set_many(h, packed, len(packed), n, ex, 0, free.sink)  # only rc is read
        if rc < 0:
            raise_rc(rc)

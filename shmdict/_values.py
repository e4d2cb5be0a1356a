"""Python values to and from the core's formats, for the cffi binding.

Shared by the pure-Python base (``_pure.py``), the rest of ``SharedDict``
(``_dict.py``) and, on its rare paths, the C type (``csrc/python/pytype.c`` calls
``text``, ``unpack_list`` and ``pairs`` so that both bindings raise the same
errors from the same code).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Union

from . import _lib
from ._lib import ffi, give, lib, raise_rc, take
from .exceptions import CorruptError

Value = Union[bool, int, float, str, bytes]

BOOL, INT, FLOAT = lib.SHMDICT_T_BOOL, lib.SHMDICT_T_INT, lib.SHMDICT_T_FLOAT
STR, BYTES, LIST = lib.SHMDICT_T_STR, lib.SHMDICT_T_BYTES, lib.SHMDICT_T_LIST
_ERANGE = lib.SHMDICT_ERANGE
NULL = ffi.NULL
MISSING: Any = object()
u32 = struct.Struct("<I")
i64 = struct.Struct("<q")
f64 = struct.Struct("<d")


def store_args(value: object) -> tuple[int, int, float, Any, int]:
    """(type, i, f, buffer, length) for shmdict_set. Subclasses of the five
    value types are stored as their base type (an IntEnum comes back an int)."""
    t = _lib.value_type(value)
    if t is int:
        return INT, int(value), 0.0, NULL, 0  # type: ignore[call-overload]
    if t is str:
        b = str.encode(value)  # type: ignore[arg-type]
        return STR, 0, 0.0, b, len(b)
    if t is float:
        return FLOAT, 0, float(value), NULL, 0  # type: ignore[arg-type]
    if t is bytes:
        b = bytes(value)  # type: ignore[call-overload]
        return BYTES, 0, 0.0, b, len(b)
    return BOOL, 1 if value else 0, 0.0, NULL, 0


def text(b: bytes, name: str = "dict") -> str:
    """Decode UTF-8 from the file; bytes that are not UTF-8 can only come
    from a corrupted (or hostile) file, so they are a CorruptError, not a
    UnicodeDecodeError escaping from a read."""
    try:
        return b.decode()
    except UnicodeDecodeError:
        raise CorruptError(f"{name}: a stored key or str value is not valid UTF-8") from None


def read(fn: Callable[..., int], h: Any, k: bytes, key: object, name: str) -> Any:
    """Run a get-like C call (get, pop, get_stale, pop_end) on a checked
    handle and encoded key: the value, or KeyError / the error's exception.
    A str/bytes value larger than this thread's buffer is read again into a
    larger one."""
    s = take()  # this call's own buffers: see _lib.take
    out, buf, cap, view = s.all
    while True:
        rc = fn(h, k, len(k), out, buf, cap)
        if rc == INT:
            v: Any = out.i
        elif rc == STR or rc == BYTES:
            n = out.len
            if n > cap:
                s.grow(n)
                out, buf, cap, view = s.all
                continue
            b = view[:n].tobytes()
            v = text(b, name) if rc == STR else b
        elif rc == FLOAT:
            v = out.f
        elif rc == BOOL:
            v = out.i != 0
        elif rc == _ERANGE:
            s.grow(out.len)
            out, buf, cap, view = s.all
            continue
        else:
            raise_rc(rc, key)
        give(s)
        return v


def result(rc: int, out: Any, view: Any, cap: int, fn: Callable[..., int], h: Any, k: bytes, key: object,
           name: str) -> Any:
    """The value a get-like call with return code rc left in (out, view), for
    any rc but INT and ENOTFOUND, which callers test first; a str/bytes value
    that did not fit in the buffer is read again with ``read``."""
    if rc == STR or rc == BYTES:
        n = out.len
        if n > cap:
            return read(fn, h, k, key, name)
        b = view[:n].tobytes()
        return text(b, name) if rc == STR else b
    if rc == FLOAT:
        return out.f
    if rc == BOOL:
        return out.i != 0
    if rc == _ERANGE:
        return read(fn, h, k, key, name)
    raise_rc(rc, key)


def pack_item(k: bytes, value: object) -> bytes:
    """One set_many item: (u32 klen, key, u8 type, payload)."""
    t, i, f, b, n = store_args(value)
    head = u32.pack(len(k)) + k + bytes((t,))
    if t == STR or t == BYTES:
        return head + u32.pack(n) + bytes(b)
    if t == FLOAT:
        return head + f64.pack(f)
    return head + i64.pack(i)


def pairs(mapping: Union[Mapping[str, Value], Iterable[tuple[str, Value]]]) -> list[tuple[str, Value]]:
    """set_many's input as a list of (key, value): a Mapping's items, or the pairs given."""
    items = mapping.items() if isinstance(mapping, Mapping) else mapping
    return [(k, v) for k, v in items]


def unpack_value(data: bytes, pos: int, name: str = "dict") -> tuple[Any, int]:
    """One packed value (u8 type, payload) at pos: (value or MISSING, next pos)."""
    t = data[pos]
    pos += 1
    if t == 0:
        return MISSING, pos
    if t == INT:
        return i64.unpack_from(data, pos)[0], pos + 8
    if t == FLOAT:
        return f64.unpack_from(data, pos)[0], pos + 8
    if t == BOOL:
        return i64.unpack_from(data, pos)[0] != 0, pos + 8
    (n,) = u32.unpack_from(data, pos)
    b = data[pos + 4 : pos + 4 + n]
    if t == LIST:
        return unpack_list(b), pos + 4 + n
    return (text(b, name) if t == STR else b), pos + 4 + n


def unpack_list(b: bytes) -> list[Value]:
    """A list's packed elements: (u32 n, u8 type, payload, u32 n) each."""
    out: list[Value] = []
    pos, end = 0, len(b)
    while pos < end:
        (n,) = u32.unpack_from(b, pos)
        t = b[pos + 4]
        p = pos + 5
        if t == INT:
            out.append(i64.unpack_from(b, p)[0])
        elif t == FLOAT:
            out.append(f64.unpack_from(b, p)[0])
        elif t == BOOL:
            out.append(i64.unpack_from(b, p)[0] != 0)
        elif t == STR:
            out.append(text(b[p : p + n]))
        else:
            out.append(b[p : p + n])
        pos = p + n + 4
    return out

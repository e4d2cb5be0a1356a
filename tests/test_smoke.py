"""The compiled module imports and its constants are sane."""

from __future__ import annotations

import re

import shmdict
from shmdict import _lib

ERROR_CODES = [
    "SHMDICT_ENOTFOUND",
    "SHMDICT_EFULL",
    "SHMDICT_ETOOBIG",
    "SHMDICT_ECORRUPT",
    "SHMDICT_ENOTNUM",
    "SHMDICT_EOVERFLOW",
    "SHMDICT_ESYS",
    "SHMDICT_EVERSION",
    "SHMDICT_ELOCK",
    "SHMDICT_EINVAL",
    "SHMDICT_ERANGE",
]


def test_ffi_and_lib_import():
    """The cffi module exposes ffi and lib, and _lib re-uses them."""
    from shmdict._shmdict import ffi, lib

    assert lib is _lib.lib
    assert ffi.sizeof("shmdict_out_t") >= 28
    assert callable(lib.shmdict_create)


def test_constants_are_sane():
    """The layout constants have the values the header documents."""
    lib = _lib.lib
    assert lib.SHMDICT_OK == 0
    assert lib.SHMDICT_MAX_KEY == 65535
    assert lib.SHMDICT_MIN_SIZE == 32768
    assert lib.SHMDICT_MAX_SIZE_MB == 32768
    assert lib.SHMDICT_NAME_MAX == 200
    assert lib.SHMDICT_LAYOUT_VERSION >= 1


def test_error_codes_are_distinct_and_negative():
    """Every error code is a distinct negative integer."""
    codes = [getattr(_lib.lib, n) for n in ERROR_CODES]
    assert all(c < 0 for c in codes)
    assert len(set(codes)) == len(codes)


def test_strerror_describes_every_code():
    """shmdict_strerror returns a non-empty message for every code, known or not."""
    ffi, lib = _lib.ffi, _lib.lib
    messages = set()
    for n in ERROR_CODES:
        msg = ffi.string(lib.shmdict_strerror(getattr(lib, n))).decode()
        assert msg
        messages.add(msg)
    assert len(messages) == len(ERROR_CODES)
    for rc in (1, -12345, 2**31 - 1, -(2**31)):
        assert ffi.string(lib.shmdict_strerror(rc))


def test_value_types_are_distinct():
    """The stored value type tags are distinct and non-zero."""
    lib = _lib.lib
    tags = [lib.SHMDICT_T_BOOL, lib.SHMDICT_T_INT, lib.SHMDICT_T_FLOAT, lib.SHMDICT_T_STR, lib.SHMDICT_T_BYTES]
    assert 0 not in tags
    assert len(set(tags)) == 5


def test_public_names():
    """The package exports the documented API."""
    for attr in ("new", "get", "open", "unlink", "SharedDict", "Error", "Full", "CorruptError"):
        assert hasattr(shmdict, attr), attr
    assert set(shmdict.__all__) >= {"new", "get", "open", "unlink", "SharedDict", "Error", "Full", "CorruptError"}


def test_fault_points_are_named_operation_dot_step():
    """fault_points lists unique names shaped '<operation>.<step>'."""
    points = _lib.fault_points()
    assert isinstance(points, list)
    assert points
    assert len(set(points)) == len(points)
    for p in points:
        assert isinstance(p, str)
        assert re.fullmatch(r"[a-z_]+\.[a-z0-9_.]+", p), p
    ops = {p.split(".", 1)[0] for p in points}
    assert ops >= {"insert", "overwrite", "delete", "incr", "expire", "reclaim", "flush"}


def test_fault_arm_and_disarm():
    """Arming a known point and disarming again leaves this process working."""
    point = _lib.fault_points()[0]
    _lib.fault_arm(point, 1000000)
    _lib.fault_arm(None)


def test_fault_arm_rejects_unknown_point():
    """Arming a name that is not a fault point is refused."""
    try:
        _lib.fault_arm("no.such_point")
    except (ValueError, KeyError, shmdict.Error):
        pass
    else:
        raise AssertionError("fault_arm accepted an unknown point")

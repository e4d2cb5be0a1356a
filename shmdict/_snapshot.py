"""Snapshots: the file format, its writer and reader, and dump/load for both engines.

``SharedDict.dump`` / ``load`` and ``RedisDict.dump`` / ``load`` are thin
wrappers around the functions here; both engines write and read the same
format, so a snapshot moves between them.

FILE FORMAT, version 1. Every integer is little-endian::

    file    = header block* trailer
    header  = magic (12 bytes: 89 'SHMDSNP' 0d 0a 1a 0a) | u32 version (1)
    block   = u32 count (1 .. 2**32 - 2) | u64 length | items (length bytes) | u32 crc
    trailer = u32 0xFFFFFFFF | u64 total items | u64 created (ns since the epoch) | u32 crc
    item    = u32 klen | key (UTF-8) | u8 type | u64 deadline | value

``crc`` is the CRC-32 (zlib) of the block's or trailer's bytes before it,
continued from the previous crc (the first from the CRC-32 of the header):
one chain over the whole file, so a flipped byte, a lost, repeated or moved
block, a truncation or a foreign file are all detected. Nothing may follow
the trailer.

An item's ``deadline`` is its expiry as wall-clock time (ns since the Unix
epoch; 0 = never), so a load later gives it the time that remains; an item
whose deadline has passed at load is skipped. Values, by type::

    1 bool   8 bytes: 0 or 1          4 str    u32 len | UTF-8
    2 int    8 bytes: int64           5 bytes  u32 len | bytes
    3 float  8 bytes: IEEE-754 double 6 list   u32 count | u32 len | elements
    element = u32 n | u8 type (1..5) | n bytes | u32 n    (numbers: n = 8)

The item encoding is csrc/snapshot.c's, which exports and stores the local
engine's items in C; this module frames and checks the blocks. Loading reads
the whole snapshot and validates every byte of it (frames, checksums, then
every item) before the first write, so a bad snapshot changes nothing.
"""

from __future__ import annotations

import errno
import io
import math
import os
import stat
import struct
import tempfile
import time
import zlib
from typing import IO, Any, Union

from ._lib import INT64_MAX, INT64_MIN, ffi, lib, raise_rc
from .exceptions import CorruptError, Full

__all__ = ["Writer", "dump_local", "dump_redis", "load_local", "load_redis", "read_snapshot", "salvage_handle"]

MAGIC = b"\x89SHMDSNP\r\n\x1a\n"
VERSION = 1
TRAILER = 0xFFFFFFFF

_HEADER = struct.Struct("<12sI")
_BLOCK = struct.Struct("<IQ")
_TAIL = struct.Struct("<IQQ")
_U32 = struct.Struct("<I")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_ITEM_HEAD = struct.Struct("<BQ")

BOOL, INT, FLOAT, STR, BYTES, LIST = 1, 2, 3, 4, 5, 6

# Work per lock hold (each hold is also one block of the file when dumping):
# about a millisecond, so other processes never wait long for the dict.
EXPORT_COUNT = 1024  # records examined
IMPORT_COUNT = 1024  # items stored
HOLD_BYTES = 256 << 10  # or this many bytes of items, whichever comes first
BLOCK_BYTES = 1 << 20  # the dump buffer (grown for a larger probe run)

FileArg = Union[str, bytes, "os.PathLike[str]", IO[bytes]]


# ---- writing ------------------------------------------------------------------------


def _check_target(path: str) -> None:
    """A dump replaces only a regular file (or creates one): a device node,
    FIFO, socket or directory at the path is refused, and so is a symbolic
    link (never followed: the snapshot would land wherever it points)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, "refusing to dump over a symbolic link (give the real path)", path)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "refusing to dump over something that is not a regular file", path)


def _remove_dead_temps(d: str, base: str) -> None:
    """Remove the temporary files that killed dumps to ``base`` left in ``d``:
    ``.BASE.PID.XXXXXXXX.tmp`` whose PID is no live process, regular files
    owned by this user (a live dump's file is left alone)."""
    head = f".{base}."
    try:
        names = os.listdir(d)
    except OSError:
        return
    for n in names:
        if not (n.startswith(head) and n.endswith(".tmp")):
            continue
        pid_s = n[len(head):].split(".", 1)[0]
        if not pid_s.isdigit() or not pid_s.isascii():
            continue
        pid = int(pid_s)
        if pid == os.getpid():
            continue  # this process's: a dump in flight on another thread
        try:
            os.kill(pid, 0)
            continue  # alive: its dump may be in flight
        except ProcessLookupError:
            pass
        except OSError:
            continue  # alive (EPERM: another user's process)
        p = os.path.join(d, n)
        try:
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                os.unlink(p)
        except OSError:
            pass


class Writer:
    """Writes one snapshot to ``dst``: a path (written to a temporary file in
    the same directory, mode 0600, fsynced and renamed over the path only when
    complete, so a failed dump never leaves a half snapshot under the name)
    or a binary file object (written as is).

    A path that exists must be a regular file (``_check_target``, checked
    before and again right before the rename). The temporary file's name
    carries the PID of the dumping process, so that the next dump to the
    same path removes what a killed one left behind."""

    def __init__(self, dst: FileArg) -> None:
        self._tmp: str | None = None
        self._path: str | None = None
        if isinstance(dst, (str, bytes, os.PathLike)):
            path = os.fsdecode(dst)
            _check_target(path)
            d, base = os.path.split(os.path.abspath(path))
            _remove_dead_temps(d, base)
            fd, self._tmp = tempfile.mkstemp(dir=d, prefix=f".{base}.{os.getpid()}.", suffix=".tmp")
            self._path = path
            self._f: IO[bytes] = os.fdopen(fd, "wb")
        elif hasattr(dst, "write"):
            if isinstance(dst, io.TextIOBase):
                raise TypeError("a snapshot is binary: open the file with 'wb'")
            self._f = dst
        else:
            raise TypeError(f"file must be a path or a binary file object, not {type(dst).__name__}")
        self.count = 0
        head = _HEADER.pack(MAGIC, VERSION)
        self._crc = zlib.crc32(head)
        self._write(head)

    def _write(self, data: Any) -> None:
        """All of data, even to an unbuffered file whose write() takes a part."""
        n = self._f.write(data)
        if n is None:
            if isinstance(self._f, io.RawIOBase):
                raise BlockingIOError("the snapshot's file would block: give a blocking file")
            return  # a file-like object that reports nothing took it all
        with memoryview(data) as mv:
            while n < len(mv):
                k = self._f.write(mv[n:])
                if not k:
                    raise BlockingIOError("the snapshot's file took no more bytes")
                n += k

    def block(self, count: int, payload: Any) -> None:
        """Append a block of ``count`` (>= 1) encoded items."""
        head = _BLOCK.pack(count, len(payload))
        self._crc = zlib.crc32(payload, zlib.crc32(head, self._crc))
        self._write(head)
        self._write(payload)
        self._write(_U32.pack(self._crc))
        self.count += count

    def finish(self) -> None:
        tail = _TAIL.pack(TRAILER, self.count, time.time_ns())
        self._crc = zlib.crc32(tail, self._crc)
        self._write(tail + _U32.pack(self._crc))
        self._f.flush()
        if self._tmp is not None and self._path is not None:
            os.fsync(self._f.fileno())
            self._f.close()
            try:
                _check_target(self._path)  # again: something may have been put there meanwhile
            except OSError:
                self._unlink_tmp()
                raise
            os.replace(self._tmp, self._path)
            self._tmp = None
            try:  # make the rename itself durable
                dfd = os.open(os.path.dirname(os.path.abspath(self._path)), os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:
                pass

    def abort(self) -> None:
        if self._tmp is not None:
            self._f.close()
            self._unlink_tmp()

    def _unlink_tmp(self) -> None:
        if self._tmp is not None:
            try:
                os.unlink(self._tmp)
            except OSError:
                pass
            self._tmp = None


def encode_item(key: str, value: Any, deadline: int) -> bytes:
    """One item (see FILE FORMAT); ``value`` a bool, int, float, str, bytes
    or a non-empty list of them."""
    k = str.encode(key)
    t, v = _encode_value(value, top=True)
    return _U32.pack(len(k)) + k + _ITEM_HEAD.pack(t, deadline) + v


def _encode_value(value: Any, top: bool) -> tuple[int, bytes]:
    if isinstance(value, bool):
        return BOOL, _I64.pack(int(value))
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise OverflowError(f"int {value} does not fit in a signed 64-bit integer")
        return INT, _I64.pack(value)
    if isinstance(value, float):
        return FLOAT, _F64.pack(value)
    if isinstance(value, str):
        b = str.encode(value)
        return STR, _U32.pack(len(b)) + b
    if isinstance(value, bytes):
        return BYTES, _U32.pack(len(value)) + value
    if top and isinstance(value, list) and value:
        parts = []
        for e in value:
            t, v = _encode_value(e, top=False)
            body = v if t <= FLOAT else v[4:]
            n = _U32.pack(len(body))
            parts.append(n + bytes((t,)) + body + n)
        elems = b"".join(parts)
        return LIST, _U32.pack(len(value)) + _U32.pack(len(elems)) + elems
    raise TypeError(f"cannot snapshot a value of type {type(value).__name__}")


# ---- reading ------------------------------------------------------------------------


def read_all(src: FileArg) -> bytes:
    """The whole snapshot from a path or a binary file object."""
    if isinstance(src, (str, bytes, os.PathLike)):
        with open(src, "rb") as f:
            return f.read()
    if not hasattr(src, "read"):
        raise TypeError(f"file must be a path or a binary file object, not {type(src).__name__}")
    data = src.read()
    if data is None:
        raise BlockingIOError("the snapshot's file would block: give a blocking file")
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError("a snapshot is binary: open the file with 'rb'")
    return bytes(data)


def blocks(data: bytes) -> list[tuple[int, int, int]]:
    """The blocks of a snapshot as (count, offset, length) of their items in
    ``data``, after checking the header,
    every checksum, the trailer and the end of the file.

    Raises:
        shmdict.CorruptError: not a snapshot, another version, damaged or truncated.
    """
    mv = memoryview(data)
    end = len(data)
    if end < _HEADER.size or bytes(mv[:12]) != MAGIC:
        raise CorruptError("not a shmdict snapshot (bad magic)")
    (version,) = _U32.unpack_from(data, 12)
    if version != VERSION:
        raise CorruptError(f"snapshot format version {version} is not supported (this shmdict reads {VERSION})")
    crc = zlib.crc32(mv[: _HEADER.size])
    pos, total = _HEADER.size, 0
    out: list[tuple[int, int, int]] = []
    while True:
        if end - pos < 4:
            raise CorruptError("snapshot is truncated (no trailer)")
        (count,) = _U32.unpack_from(data, pos)
        if count == TRAILER:
            if end - pos < _TAIL.size + 4:
                raise CorruptError("snapshot is truncated (in the trailer)")
            crc = zlib.crc32(mv[pos : pos + _TAIL.size], crc)
            _, n, _created = _TAIL.unpack_from(data, pos)
            pos += _TAIL.size
            if _U32.unpack_from(data, pos)[0] != crc:
                raise CorruptError("snapshot is damaged (trailer checksum mismatch)")
            if n != total:
                raise CorruptError(f"snapshot is damaged (trailer says {n} items, blocks hold {total})")
            if pos + 4 != end:
                raise CorruptError(f"snapshot has {end - pos - 4} unexpected bytes after its end")
            return out
        if end - pos < _BLOCK.size:
            raise CorruptError("snapshot is truncated (in a block header)")
        _, length = _BLOCK.unpack_from(data, pos)
        if count == 0 or length > end - pos - _BLOCK.size - 4:
            raise CorruptError("snapshot is damaged or truncated (bad block length)")
        off = pos + _BLOCK.size
        crc = zlib.crc32(mv[off : off + length], zlib.crc32(mv[pos:off], crc))
        pos = off + length
        if _U32.unpack_from(data, pos)[0] != crc:
            raise CorruptError(f"snapshot is damaged (checksum mismatch in block {len(out) + 1})")
        pos += 4
        out.append((count, off, length))
        total += count


def decode_items(count: int, b: bytes) -> list[tuple[str, Any, int]]:
    """The items of one block (its ``count`` and item bytes) as (key, value,
    deadline), checked as strictly as the C loader checks them.

    Raises:
        shmdict.CorruptError: a malformed item.
    """
    out: list[tuple[str, Any, int]] = []
    pos, end = 0, len(b)
    try:
        while pos < end:
            (kl,) = _U32.unpack_from(b, pos)
            if not 0 < kl <= lib.SHMDICT_MAX_KEY or end - pos - 4 < kl:
                raise ValueError("key length")
            key = b[pos + 4 : pos + 4 + kl].decode()
            pos += 4 + kl
            t, deadline = _ITEM_HEAD.unpack_from(b, pos)
            pos += _ITEM_HEAD.size
            if t == LIST:
                n, ln = struct.unpack_from("<II", b, pos)
                pos += 8
                if n == 0 or ln > end - pos:
                    raise ValueError("list length")
                v: Any = _decode_elems(b[pos : pos + ln], n)
                pos += ln
            else:
                v, pos = _decode_scalar(t, b, pos, end)
            out.append((key, v, deadline))
    except (ValueError, struct.error, IndexError) as e:  # UnicodeDecodeError is a ValueError
        raise CorruptError(f"snapshot item {len(out) + 1} of a block is malformed ({e})") from None
    if len(out) != count:
        raise CorruptError(f"snapshot is damaged (a block says {count} items, holds {len(out)})")
    return out


def _decode_scalar(t: int, b: bytes, pos: int, end: int) -> tuple[Any, int]:
    if t in (BOOL, INT, FLOAT):
        if end - pos < 8:
            raise ValueError("short number")
        if t == FLOAT:
            return _F64.unpack_from(b, pos)[0], pos + 8
        (i,) = _I64.unpack_from(b, pos)
        if t == BOOL:
            if i not in (0, 1):
                raise ValueError("bool not 0 or 1")
            return i == 1, pos + 8
        return i, pos + 8
    if t not in (STR, BYTES):
        raise ValueError(f"type {t}")
    (n,) = _U32.unpack_from(b, pos)
    if n > end - pos - 4:
        raise ValueError("value length")
    raw = b[pos + 4 : pos + 4 + n]
    return (raw.decode() if t == STR else raw), pos + 4 + n


def _decode_elems(b: bytes, count: int) -> list[Any]:
    out, pos, end = [], 0, len(b)
    while pos < end:
        if end - pos < 9:
            raise ValueError("list element")
        (n,) = _U32.unpack_from(b, pos)
        t = b[pos + 4]
        if n > end - pos - 9 or _U32.unpack_from(b, pos + 5 + n)[0] != n or (t <= FLOAT and n != 8):
            raise ValueError("list element")
        if t <= FLOAT:
            v, _ = _decode_scalar(t, b, pos + 5, pos + 5 + n)
        elif t in (STR, BYTES):
            raw = b[pos + 5 : pos + 5 + n]
            v = raw.decode() if t == STR else raw
        else:
            raise ValueError(f"list element type {t}")
        out.append(v)
        pos += 9 + n
    if len(out) != count:
        raise ValueError("list count")
    return out


def read_snapshot(file: FileArg) -> list[tuple[str, Any, float]]:
    """The items of a snapshot file, without a dict: a list of ``(key, value,
    ttl)`` in file order, where ``ttl`` is the seconds that remain now (``0``:
    never expires) and a list value is a ``list``; items already expired are
    left out. ``file`` is a path or a binary file object.

    Raises:
        shmdict.CorruptError: not a snapshot, or damaged or truncated.

    .. versionadded:: 0.2
    """
    data = read_all(file)
    items = [decode_items(n, data[off : off + ln]) for n, off, ln in blocks(data)]
    now = time.time_ns()
    out: list[tuple[str, Any, float]] = []
    for block in items:
        for key, value, deadline in block:
            if deadline == 0:
                out.append((key, value, 0.0))
            elif deadline > now:
                out.append((key, value, (deadline - now) / 1e9))
    return out



# ---- the local engine (C does the items) ---------------------------------------------


def dump_local(d: Any, dst: FileArg) -> int:
    """SharedDict.dump: every live item, in batches of one lock hold each."""
    h = d._handle()
    out = ffi.new("shmdict_out_t *")
    cap = BLOCK_BYTES
    buf = ffi.new("char[]", cap)
    w = Writer(dst)
    try:
        cursor = 0
        while True:
            rc = lib.shmdict_export(h, cursor, EXPORT_COUNT, HOLD_BYTES, time.time_ns(), buf, cap, out)
            if rc == lib.SHMDICT_ERANGE:  # one probe run holds more than the buffer: grow it, same cursor
                cap = max(2 * cap, int(out.len) + int(out.len) // 4)
                buf = ffi.new("char[]", cap)
                continue
            if rc < 0:
                raise_rc(rc)
            if rc:
                w.block(rc, ffi.buffer(buf, out.len))
            cursor = int(out.i)
            if cursor == 0:
                break
        w.finish()
    except BaseException:
        w.abort()
        raise
    return w.count


def _check_rc(rc: int) -> None:
    if rc == lib.SHMDICT_ECORRUPT:
        raise CorruptError("snapshot is damaged (a malformed item)")
    if rc == lib.SHMDICT_ETOOBIG:
        raise Full("an item of the snapshot is larger than this dict can ever hold; nothing was loaded")
    if rc < 0:
        raise_rc(rc)


def _partial(stored: int, live: int) -> Full:
    e = Full(
        f"dict is full: stored the snapshot's first {stored} of {live} items "
        f"(in file order); the rest were not loaded"
    )
    e.stored = stored  # type: ignore[attr-defined]
    return e


def load_local(d: Any, src: FileArg) -> int:
    """SharedDict.load: validate everything, refuse what can never fit, then
    store in batches of one lock hold each. Returns the items stored."""
    h = d._handle()
    data = read_all(src)
    bl = blocks(data)
    base = ffi.from_buffer(data)  # the items are read in place: no copy
    out = ffi.new("shmdict_out_t *")
    wall = time.time_ns()
    live = need = 0
    for count, off, length in bl:
        rc = lib.shmdict_import(h, base + off, length, 0, 0, wall, 0, out)
        _check_rc(rc)
        if rc != count:
            raise CorruptError(f"snapshot is damaged (a block says {count} items, holds {rc})")
        live += int(out.i)
        need += int(out.len)
    info = d._info()
    # records and index share the space: each key also takes an index slot (8 bytes, 87.5% full)
    room = info["capacity"] + info["index_cap"] * 8
    grows_to = (d.stats()["max_size"] or 0) // 4096 * 4096  # a dict with a max_size grows that far
    room += max(0, grows_to - info["file_size"])
    need_all = need + 8 * (live * 8 // 7 + 1)
    if need_all > room:
        raise Full(
            f"the snapshot's {live} items need {need_all} bytes with their index slots; this dict "
            f"holds at most {room} bytes of records and index even when empty; nothing was loaded"
        )
    stored = 0
    for _, off, length in bl:
        pos = off
        while pos < off + length:
            rc = lib.shmdict_import(
                h, base + pos, off + length - pos, IMPORT_COUNT, HOLD_BYTES, time.time_ns(), 1, out
            )
            stored += int(out.i)
            if rc < 0:
                if rc in (lib.SHMDICT_EFULL, lib.SHMDICT_ETOOBIG):
                    raise _partial(stored, live)
                _check_rc(rc)
            pos += int(out.len)
    return stored


# ---- Redis ----------------------------------------------------------------------------

# For each key: {1, pttl, value} for a string, {2, pttl, elements} for a
# list, {0} if it went away. One script per batch: each item read whole.
_REDIS_READ = """
local out = {}
for i, k in ipairs(KEYS) do
  local t = redis.call('TYPE', k)['ok']
  if t == 'string' then
    out[i] = {1, redis.call('PTTL', k), redis.call('GET', k)}
  elseif t == 'list' then
    out[i] = {2, redis.call('PTTL', k), redis.call('LRANGE', k, 0, -1)}
  else
    out[i] = {0}
  end
end
return out
"""

# A whole list in one step, for a cluster's load: ARGV[1] PX ms (0: none), then the elements.
_REDIS_LIST = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end  -- unpack() would cap a list's length
if ARGV[1] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

REDIS_BATCH = 500


def dump_redis(d: Any, dst: FileArg) -> int:
    """RedisDict.dump: SCAN the prefix (every master of a cluster), read each
    batch of keys with one script (one per hash slot on a cluster; each item
    whole), write the same format."""
    from redis import RedisError  # present: d is a RedisDict

    from ._redis_codec import _raise, decode

    r = d._c()
    script = r.register_script(_REDIS_READ)
    w = Writer(dst)
    seen: set[bytes] = set()

    def flush(raws: list[bytes]) -> None:
        wall = time.time_ns()  # before the read: a deadline is never later than Redis's
        rows = d._topo.run_grouped(script, raws)
        parts, n = [], 0
        for raw, row in zip(raws, rows):
            kind = int(row[0])
            if kind == 0:
                continue
            pttl = int(row[1])
            if pttl == -2:
                continue
            deadline = 0 if pttl < 0 else wall + max(pttl, 1) * 1_000_000
            key = d._user_key(raw)
            value: Any = decode(row[2]) if kind == 1 else [decode(e) for e in row[2]]
            if kind == 2 and not value:
                continue
            parts.append(encode_item(key, value, deadline))
            n += 1
        if n:
            w.block(n, b"".join(parts))

    try:
        batch: list[bytes] = []
        try:
            for raw in d._topo.scan_iter(d._match + b"*"):
                if raw in seen or d._user_key(raw) is None:
                    continue
                seen.add(raw)
                batch.append(raw)
                if len(batch) >= REDIS_BATCH:
                    flush(batch)
                    batch = []
            if batch:
                flush(batch)
        except RedisError as e:
            _raise(e)
        w.finish()
    except BaseException:
        w.abort()
        raise
    return w.count


def load_redis(d: Any, src: FileArg) -> int:
    """RedisDict.load: decode and check every item first, then write them in
    MULTI/EXEC batches (each item whole: a list is DEL + RPUSH + PEXPIRE). On a
    cluster, whose transactions hold one hash slot only, each item is one
    command or script instead, a batch one pipeline."""
    from redis import RedisError  # present: d is a RedisDict

    from ._redis_codec import _raise, encode

    data = read_all(src)
    items = [it for n, off, ln in blocks(data) for it in decode_items(n, data[off : off + ln])]
    r = d._c()
    stored = 0
    try:
        for i in range(0, len(items), REDIS_BATCH):
            now = time.time_ns()
            p = r.pipeline(transaction=not d._topo.multi_slot)
            n = 0
            for key, value, deadline in items[i : i + REDIS_BATCH]:
                if deadline and deadline <= now:
                    continue
                ms = math.ceil((deadline - now) / 1e6) if deadline else 0
                k = d._k(key)
                if isinstance(value, list) and d._topo.multi_slot:
                    p.execute_command("EVAL", _REDIS_LIST, 1, k, ms, *[encode(e) for e in value])
                elif isinstance(value, list):
                    p.delete(k)
                    p.rpush(k, *[encode(e) for e in value])
                    if ms:
                        p.pexpire(k, ms)
                else:
                    p.set(k, encode(value), px=ms or None)
                n += 1
            if n:
                p.execute()
            stored += n
    except RedisError as e:
        try:
            _raise(e)
        except Full as f:
            f.stored = stored  # type: ignore[attr-defined]
            raise
    return stored


# ---- salvage: the snapshot of a dict that reports CorruptError (shmdict/_salvage.py) ----

SLOTS = 4096  # index slots read per batch (one block of the file)


def salvage_handle(h: Any, dst: FileArg) -> tuple[int, int]:
    """Write the whole records of the dict behind handle ``h`` to ``dst``;
    returns (items written, records refused as damaged)."""
    out = ffi.new("shmdict_out_t *")
    cap = BLOCK_BYTES
    buf = ffi.new("char[]", cap)
    refused = 0
    w = Writer(dst)
    try:
        start = 0
        while True:
            rc = lib.shmdict_salvage(h, start, SLOTS, time.time_ns(), buf, cap, out)
            if rc == lib.SHMDICT_ERANGE:  # one item larger than the buffer: grow it, same slot
                cap = max(2 * cap, int(out.len) + int(out.len) // 4)
                buf = ffi.new("char[]", cap)
                continue
            if rc < 0:
                raise_rc(rc)
            refused += int(out.ver)
            if rc:
                w.block(rc, ffi.buffer(buf, out.len))
            start = int(out.i)
            if start == 0:
                break
        w.finish()
    except BaseException:
        w.abort()
        raise
    return w.count, refused

"""Snapshots of the local engine: dump/load round trips, TTLs, damaged files,
Full, and the export cursor's guarantee under concurrent changes."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib

import pytest
from conftest import MIN_SIZE, unique_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shmdict
from shmdict import _snapshot
from shmdict._lib import ffi, lib

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def contents(d: shmdict.SharedDict) -> dict:
    """Every live item, lists included (read without changing anything)."""
    out = dict(d.items())
    return out


def fill_all_types(d: shmdict.SharedDict) -> dict:
    items = {
        "int": 42,
        "neg": -(2**63),
        "big": 2**63 - 1,
        "true": True,
        "false": False,
        "float": 1.5,
        "nan-free": -0.0,
        "str": "héllo wörld ✓",
        "empty-str": "",
        "bytes": b"\x00\xff" * 50,
        "empty-bytes": b"",
        "ключ": "unicode key",
        "k" * 300: "long key",
    }
    for k, v in items.items():
        d[k] = v
    for v in (1, "two", b"3", 4.5, False, "", b""):
        d.rpush("list", v)
    items["list"] = [1, "two", b"3", 4.5, False, "", b""]
    return items


def snap(d: shmdict.SharedDict) -> bytes:
    b = io.BytesIO()
    d.dump(b)
    return b.getvalue()


def craft(items: list[tuple[str, object, int]], version: int = 1, block_count: int | None = None) -> bytes:
    """A snapshot with valid checksums around arbitrary items."""
    b = io.BytesIO()
    w = _snapshot.Writer(b)
    if items:
        payload = b"".join(_snapshot.encode_item(k, v, dl) for k, v, dl in items)
        w.block(block_count or len(items), payload)
    w.finish()
    raw = b.getvalue()
    if version != 1:
        raw = reframe(raw[:12] + struct.pack("<I", version) + raw[16:])
    return raw


def reframe(raw: bytes) -> bytes:
    """Recompute every checksum of a (possibly edited) snapshot."""
    out = bytearray(raw[:16])
    crc = zlib.crc32(raw[:16])
    pos = 16
    while True:
        (n,) = struct.unpack_from("<I", raw, pos)
        if n == 0xFFFFFFFF:
            crc = zlib.crc32(raw[pos : pos + 20], crc)
            out += raw[pos : pos + 20] + struct.pack("<I", crc)
            return bytes(out)
        (ln,) = struct.unpack_from("<Q", raw, pos + 4)
        body = raw[pos : pos + 12 + ln]
        crc = zlib.crc32(body, crc)
        out += body + struct.pack("<I", crc)
        pos += 12 + ln + 4


# ---- round trips ----------------------------------------------------------------------


def test_round_trip_every_type_and_lists(d):
    """Every value type, empty values, unicode and long keys, and a list come back with their types."""
    items = fill_all_types(d)
    raw = snap(d)
    with shmdict.new(unique_name(), "1m") as e:
        assert e.load(io.BytesIO(raw)) == len(items)
        got = contents(e)
        assert got == items
        for k, v in items.items():
            assert type(got[k]) is type(v)
        assert e.lpop("list") == 1 and e.rpop("list") == b"" and e.llen("list") == 5
        e.rpush("list", "more")
        e.lpush("list", 0)
        assert e.llen("list") == 7
        e.check()


def test_path_round_trip_atomic_and_private(d, shm_dir):
    """A path is written whole under a temporary name, then renamed; mode 0600; no leftovers."""
    fill_all_types(d)
    path = os.path.join(shm_dir, "snap.bin")
    with open(path, "wb") as f:
        f.write(b"old contents")
    n = d.dump(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(shm_dir)) == sorted(["snap.bin", f"shmdict.{d.name}"])
    with shmdict.new(unique_name(), "1m") as e:
        assert e.load(path) == n
        assert contents(e) == contents(d)


def test_failed_dump_to_path_leaves_old_file(d, shm_dir):
    """A dump that fails midway leaves the previous snapshot untouched and no temporary file."""
    path = os.path.join(shm_dir, "snap.bin")
    d["a"] = 1
    d.dump(path)
    before = open(path, "rb").read()
    d.close()
    with pytest.raises(ValueError):
        d.dump(path)
    assert open(path, "rb").read() == before
    assert [f for f in os.listdir(shm_dir) if f.endswith(".tmp")] == []


def test_large_values_and_many_blocks(d):
    """A value larger than the dump buffer, and enough items for many blocks."""
    with shmdict.new(unique_name(), "16m") as big:
        big["huge"] = os.urandom(3 << 20)
        for i in range(20_000):
            big[f"k{i}"] = i
        raw = snap(big)
        blocks = _snapshot.blocks(raw)
        assert len(blocks) > 3
        with shmdict.new(unique_name(), "16m") as e:
            assert e.load(io.BytesIO(raw)) == 20_001
            assert e["huge"] == big["huge"] and e["k19999"] == 19999 and len(e) == 20_001


def test_empty_dict_round_trip(d):
    raw = snap(d)
    assert _snapshot.blocks(raw) == []
    with shmdict.new(unique_name(), "1m") as e:
        e["kept"] = 1
        assert e.load(io.BytesIO(raw)) == 0
        assert contents(e) == {"kept": 1}


def test_load_overwrites_same_keys_and_keeps_others(d):
    """Same keys overwritten (a list by a scalar and back), other keys kept."""
    d["a"] = 1
    d["s"] = "old"
    d.rpush("L", 1)
    raw = snap(d)
    with shmdict.new(unique_name(), "1m") as e:
        e["a"] = "other"
        e.rpush("s", "a list")
        e["L"] = 5
        e["mine"] = b"kept"
        assert e.load(io.BytesIO(raw)) == 3
        assert contents(e) == {"a": 1, "s": "old", "L": [1], "mine": b"kept"}


def test_reload_into_the_same_dict_is_idempotent(d):
    items = fill_all_types(d)
    raw = snap(d)
    for _ in range(3):
        d.load(io.BytesIO(raw))
    assert contents(d) == items
    d.check()


# ---- TTLs ------------------------------------------------------------------------------


def test_ttls_become_wall_clock_deadlines(d):
    """A TTL is dumped as a deadline: the load gives the time that remains."""
    d.set("t", "v", 100)
    d["forever"] = 1
    raw = snap(d)
    ((n, off, ln),) = _snapshot.blocks(raw)
    deadlines = {k: dl for k, _, dl in _snapshot.decode_items(n, raw[off : off + ln])}
    assert deadlines["forever"] == 0
    assert time.time_ns() < deadlines["t"] <= time.time_ns() + 100 * 10**9
    with shmdict.new(unique_name(), "1m") as e:
        e.load(io.BytesIO(raw))
        assert 0 < e.ttl("t") <= 100 and e.ttl("forever") == 0


def test_a_later_load_gives_the_time_that_remains(d):
    """An item dumped with 1000 s left, loaded as if 400 s later, has at most 600 s left."""
    now = time.time_ns()
    raw = craft([("later", "x", now + 600 * 10**9), ("gone", "y", now - 10**9), ("ever", "z", 0)])
    assert d.load(io.BytesIO(raw)) == 2
    assert 590 < d.ttl("later") <= 600
    assert "gone" not in d and d.ttl("ever") == 0


def test_items_expired_at_load_are_skipped_and_do_not_overwrite(d):
    d["gone"] = "current value"
    raw = craft([("gone", "stale", 1)])  # 1 ns after the epoch
    assert d.load(io.BytesIO(raw)) == 0
    assert d["gone"] == "current value"


def test_expired_items_are_not_dumped(d):
    d.set("short", 1, 5)
    d["long"] = 2
    from shmdict import _lib

    _lib.clock_shift(10)
    try:
        assert [k for k, _, _ in shmdict.read_snapshot(io.BytesIO(snap(d)))] == ["long"]
    finally:
        _lib.clock_shift(-10)


def test_list_ttl_round_trip(d):
    d.rpush("L", 1)
    d.expire("L", 50)
    with shmdict.new(unique_name(), "1m") as e:
        e.load(io.BytesIO(snap(d)))
        assert 0 < e.ttl("L") <= 50 and e.llen("L") == 1


# ---- bad input -------------------------------------------------------------------------


@pytest.fixture
def loaded(d):
    """A dict with content, and a valid snapshot of other content."""
    with shmdict.new(unique_name(), "1m") as src:
        fill_all_types(src)
        src.set("ttl", 1, 100)
        raw = snap(src)
    d["mine"] = "unchanged"
    d["str"] = "mine too"
    return d, raw


@SETTINGS
@given(data=st.data())
def test_any_byte_flip_is_corrupt_and_changes_nothing(loaded, data):
    d, raw = loaded
    pos = data.draw(st.integers(0, len(raw) - 1))
    x = data.draw(st.integers(1, 255))
    bad = raw[:pos] + bytes([raw[pos] ^ x]) + raw[pos + 1 :]
    before = contents(d)
    with pytest.raises(shmdict.CorruptError):
        d.load(io.BytesIO(bad))
    assert contents(d) == before


@SETTINGS
@given(data=st.data())
def test_any_truncation_or_extension_is_corrupt_and_changes_nothing(loaded, data):
    d, raw = loaded
    cut = data.draw(st.integers(0, len(raw) - 1))
    tail = data.draw(st.binary(min_size=1, max_size=8))
    before = contents(d)
    for bad in (raw[:cut], raw + tail):
        with pytest.raises(shmdict.CorruptError):
            d.load(io.BytesIO(bad))
    assert contents(d) == before


def test_dropped_or_repeated_block_is_corrupt(d):
    with shmdict.new(unique_name(), "4m") as src:
        for i in range(20_000):
            src[f"k{i}"] = i
        raw = snap(src)
    bl = _snapshot.blocks(raw)
    assert len(bl) >= 2
    first_len = 12 + bl[0][2] + 4
    dropped = raw[:16] + raw[16 + first_len :]
    repeated = raw[:16] + raw[16 : 16 + first_len] + raw[16:]
    for bad in (dropped, repeated, reframe(dropped), reframe(repeated)):
        with pytest.raises(shmdict.CorruptError):
            d.load(io.BytesIO(bad))
    assert len(d) == 0


@pytest.mark.parametrize(
    "foreign",
    [b"", b"\x89", b"hello world\n" * 10, b'{"a": 1}', bytes(64), _snapshot.MAGIC, _snapshot.MAGIC + b"\x01\x00\x00\x00"],
)
def test_foreign_files_are_corrupt(d, foreign):
    d["mine"] = 1
    with pytest.raises(shmdict.CorruptError):
        d.load(io.BytesIO(foreign))
    assert contents(d) == {"mine": 1}


def test_a_dict_file_is_not_a_snapshot(d, shm_dir):
    d["x"] = 1
    with pytest.raises(shmdict.CorruptError, match="not a shmdict snapshot"):
        d.load(os.path.join(shm_dir, f"shmdict.{d.name}"))


def test_another_version_is_refused(d):
    raw = craft([("a", 1, 0)], version=2)
    with pytest.raises(shmdict.CorruptError, match="version 2"):
        d.load(io.BytesIO(raw))
    assert len(d) == 0


def _item(kl: bytes, t: int, value: bytes, deadline: int = 0) -> bytes:
    return struct.pack("<I", len(kl)) + kl + struct.pack("<BQ", t, deadline) + value


def _elem(t: int, body: bytes) -> bytes:
    n = struct.pack("<I", len(body))
    return n + bytes([t]) + body + n


BAD_ITEMS = {
    "empty key": _item(b"", 2, bytes(8)),
    "key not utf-8": _item(b"\xff\xfe", 2, bytes(8)),
    "surrogate key": _item(b"\xed\xa0\x80", 2, bytes(8)),
    "unknown type": _item(b"k", 7, bytes(8)),
    "type 0": _item(b"k", 0, bytes(8)),
    "bool 2": _item(b"k", 1, struct.pack("<q", 2)),
    "short int": _item(b"k", 2, bytes(4)),
    "str not utf-8": _item(b"k", 4, struct.pack("<I", 2) + b"\xc3\x28"),
    "overlong str": _item(b"k", 4, struct.pack("<I", 2) + b"\xc0\x80"),
    "str length past end": _item(b"k", 4, struct.pack("<I", 99) + b"ab"),
    "empty list": _item(b"k", 6, struct.pack("<II", 0, 0)),
    "list count too high": _item(b"k", 6, struct.pack("<II", 2, 17) + _elem(2, bytes(8))),
    "list count too low": _item(b"k", 6, struct.pack("<II", 1, 34) + _elem(2, bytes(8)) * 2),
    "list element type": _item(b"k", 6, struct.pack("<II", 1, 17) + _elem(6, bytes(8))),
    "list int of 4 bytes": _item(b"k", 6, struct.pack("<II", 1, 13) + _elem(2, bytes(4))),
    "list trailer mismatch": _item(
        b"k", 6, struct.pack("<II", 1, 17) + struct.pack("<I", 8) + b"\x02" + bytes(8) + struct.pack("<I", 9)
    ),
    "list str not utf-8": _item(b"k", 6, struct.pack("<II", 1, 11) + _elem(4, b"\xff\xff")),
    "list bool 7": _item(b"k", 6, struct.pack("<II", 1, 17) + _elem(1, struct.pack("<q", 7))),
    "trailing junk in block": _item(b"k", 2, bytes(8)) + b"\x00",
}


@pytest.mark.parametrize("what", sorted(BAD_ITEMS))
def test_malformed_items_with_valid_checksums_change_nothing(d, what):
    """A well-framed snapshot whose items are malformed (a bug or a hostile file) is refused whole."""
    good = _snapshot.encode_item("good", 1, 0)
    b = io.BytesIO()
    w = _snapshot.Writer(b)
    w.block(1, good)
    w.block(1, BAD_ITEMS[what])
    w.finish()
    d["mine"] = 1
    with pytest.raises(shmdict.CorruptError):
        d.load(io.BytesIO(b.getvalue()))
    assert contents(d) == {"mine": 1}
    with pytest.raises(shmdict.CorruptError):
        list(shmdict.read_snapshot(io.BytesIO(b.getvalue())))


def test_block_count_must_match_its_items(d):
    with pytest.raises(shmdict.CorruptError):
        d.load(io.BytesIO(craft([("a", 1, 0), ("b", 2, 0)], block_count=3)))
    assert len(d) == 0


class Trickle(io.RawIOBase):
    """An unbuffered file that takes at most 7 bytes per write() and gives at
    most 5 per read()."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)
        self.pos = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        part = bytes(b[:7])
        self.data += part
        return len(part)

    def readinto(self, b) -> int:  # type: ignore[override]
        part = self.data[self.pos : self.pos + min(5, len(b))]
        b[: len(part)] = part
        self.pos += len(part)
        return len(part)


def test_unbuffered_files_with_short_writes_and_reads(d):
    items = fill_all_types(d)
    f = Trickle()
    d.dump(f)
    with shmdict.new(unique_name(), "1m") as e:
        assert e.load(Trickle(bytes(f.data))) == len(items)
        assert contents(e) == items


def test_bad_file_arguments(d):
    with pytest.raises(TypeError):
        d.dump(42)
    with pytest.raises(TypeError):
        d.load(42)
    with pytest.raises(TypeError):
        d.dump(io.StringIO())
    with pytest.raises(TypeError):
        d.load(io.StringIO("text"))
    with pytest.raises(FileNotFoundError):
        d.load("/nonexistent/snapshot")


# ---- Full ------------------------------------------------------------------------------


def test_snapshot_that_can_never_fit_changes_nothing(d):
    with shmdict.new(unique_name(), "4m") as src:
        for i in range(2000):
            src[f"k{i}"] = "v" * 1000
        raw = snap(src)
    with shmdict.new(unique_name(), MIN_SIZE * 4) as small:
        small["mine"] = 1
        with pytest.raises(shmdict.Full, match="nothing was loaded"):
            small.load(io.BytesIO(raw))
        assert contents(small) == {"mine": 1}


def test_item_larger_than_the_dict_changes_nothing(d):
    raw = craft([("a", 1, 0), ("huge", b"x" * (2 << 20), 0)])
    with pytest.raises(shmdict.Full):
        d.load(io.BytesIO(raw))
    assert len(d) == 0


def test_full_midway_stores_a_prefix_in_file_order():
    """Room for the snapshot in an empty dict, not beside what is there: the
    items before the one that did not fit are stored, the rest not."""
    size = 1 << 18
    with shmdict.new(unique_name(), size) as src:
        for i in range(100):
            src[f"s{i:03d}"] = "v" * 1000
        raw = snap(src)
        order = [k for k, _, _ in shmdict.read_snapshot(io.BytesIO(raw))]
    with shmdict.new(unique_name(), size) as d:
        i = 0
        while True:
            try:
                d[f"mine{i}"] = "m" * 1000
            except shmdict.Full:
                break
            i += 1
        for j in range(i // 2):
            del d[f"mine{j}"]
        mine = {k: v for k, v in contents(d).items()}
        with pytest.raises(shmdict.Full) as exc:
            d.load(io.BytesIO(raw))
        stored = exc.value.stored
        assert 0 < stored < len(order)
        got = contents(d)
        assert {k for k in got if k.startswith("s")} == set(order[:stored])
        assert all(got[k] == v for k, v in mine.items())
        d.check()


def test_evicting_dict_loads_by_evicting(d):
    with shmdict.new(unique_name(), "1m") as src:
        for i in range(2000):
            src[f"k{i}"] = "v" * 200
        raw = snap(src)
    with shmdict.new(unique_name(), 1 << 18, evict=True) as e:
        with pytest.raises(shmdict.Full):  # more than it could hold even empty
            e.load(io.BytesIO(raw))
        assert len(e) == 0


# ---- consistency under concurrent changes ----------------------------------------------


def export_all(d: shmdict.SharedDict, between, count: int = 1) -> list[str]:
    """Keys of a dump driven batch by batch, calling between() after each batch."""
    h = d._handle()
    out = ffi.new("shmdict_out_t *")
    cap = 1 << 16
    buf = ffi.new("char[]", cap)
    keys: list[str] = []
    cursor = 0
    while True:
        rc = lib.shmdict_export(h, cursor, count, cap, time.time_ns(), buf, cap, out)
        assert rc >= 0
        if rc:
            keys += [k for k, _, _ in _snapshot.decode_items(rc, ffi.buffer(buf, out.len)[:])]
        cursor = out.i
        if cursor == 0:
            return keys
        between()


@SETTINGS
@given(
    initial=st.lists(st.integers(0, 399), min_size=1, max_size=300, unique=True),
    script=st.lists(st.tuples(st.booleans(), st.integers(0, 799)), max_size=400),
    count=st.integers(1, 20),
)
def test_export_returns_each_key_present_throughout_exactly_once(initial, script, count):
    """Deletes (backward shifts, across the end of the index too) and inserts
    between export batches never make a key present throughout go missing or
    appear twice; no key ever appears twice."""
    with shmdict.new(unique_name(), MIN_SIZE) as d:  # a small index: long probe runs that wrap
        for k in initial:
            d[f"k{k}"] = k
        steps = iter(script)
        touched: set[str] = set()

        def between() -> None:
            for _ in range(5):
                step = next(steps, None)
                if step is None:
                    return
                insert, k = step
                key = f"k{k}"
                touched.add(key)
                if insert:
                    try:
                        d[key] = k
                    except shmdict.Full:
                        pass
                else:
                    d.pop(key, None)

        keys = export_all(d, between, count)
        assert len(keys) == len(set(keys))
        throughout = {f"k{k}" for k in initial} - touched
        assert throughout <= set(keys)
        d.check()


def test_dump_while_other_processes_write(d):
    """Writers and deleters in other processes during dumps: every key never
    touched is in each snapshot exactly once, and each snapshot loads."""
    from redis_fixture import fork_children, wait_pids

    with shmdict.new(unique_name(), MIN_SIZE * 8) as big:
        for i in range(600):
            big[f"stable{i}"] = i
        stop = os.path.join(os.environ["SHMDICT_DIR"], "stop")

        def churn(n: int, name: str) -> None:
            c = shmdict.get(name)
            j = 0
            while not os.path.exists(stop):
                c[f"churn{n}-{j % 300}"] = "x" * (j % 50)
                c.pop(f"churn{n}-{(j * 7) % 300}", None)
                j += 1

        pids = fork_children(2, churn, big.name)
        try:
            for _ in range(20):
                raw = snap(big)
                keys = [k for k, _, _ in shmdict.read_snapshot(io.BytesIO(raw))]
                assert len(keys) == len(set(keys))
                assert {f"stable{i}" for i in range(600)} <= set(keys)
                with shmdict.new(unique_name(), MIN_SIZE * 8) as e:
                    e.load(io.BytesIO(raw))
                    e.check()
        finally:
            open(stop, "w").close()
            assert wait_pids(pids) == [0, 0]


def test_read_snapshot_inspects_offline(d):
    items = fill_all_types(d)
    d.set("t", 1, 100)
    got = {k: (v, ttl) for k, v, ttl in shmdict.read_snapshot(io.BytesIO(snap(d)))}
    assert {k: v for k, (v, _) in got.items()} == {**items, "t": 1}
    assert 0 < got["t"][1] <= 100 and got["int"][1] == 0

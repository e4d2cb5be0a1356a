"""A header that cannot lie quietly: every header word, scribbled in turn.

For each 8-byte word of the header from the magic to the end of the undo log
and the futex words (the mutex aside: a lock word cannot be validated, see
tests/test_fuzz.py), and of two stripes of keys after their mutexes (their
sequence word, event count, undo log and its count), and for a handful of values (one bit flipped low, a
byte flipped, the top bit flipped, 0, all ones, 1 -- the value that used to
make recovery redo a flush), the test writes the value into a copy of a
small dict holding every kind of item, free blocks, a stale compaction
cursor and wrapped events, then attaches, reads every item, stores one more
and reads them all again. The allowed outcomes:

- ``CorruptError`` (at attach, or from an operation -- and then
  ``flush_all()`` makes the dict whole again): refused, said aloud;
- every item still there with its value: a recovery, or a harmless word.

A silent loss or change of an item fails the test, naming the field.
The sweep runs in a forked child (a crash there names the word it was on).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import header_layout
from relutil import describe, fork, report, unique_name, wait

import shmdict

__all__ = ["shm_dir"]

MUTEX = (256, 320)
VALUES = (
    lambda v: v ^ 1,
    lambda v: v ^ (0xFF << 8),
    lambda v: v ^ (1 << 63),
    lambda v: 0,
    lambda v: (1 << 64) - 1,
    lambda v: 1,
)
FIELDS = [
    "magic", "layout_version", "file_size", "abi", "index_min", "ident_check", "arena_off", "seed",
    "creator_pid", "user_size", "flags", "events_off", "events_cap", "gen", "count", "tombs", "n_ttl",
    "used_bytes", "bump", "exp_hint", "flush_pending", "corrupt", "expire_hand", "clock_hand",
    "recoveries", "defrag_pending", "frees_since_compact", "st_hits", "geo_check", "ev_head", "ev_tail",
    "ev_seq", "ev_tail_seq", "free_head", "index_cap", "compact_at", "compact_piece", "size",
    "size_user", "max_size", "ulog_n", "ulog", "notify_seq", "backup", "stripes",
]


def _field_at(off: int) -> str:
    best = ""
    for f in FIELDS:
        o = header_layout.offset(f)
        if o <= off and (not best or o > header_layout.offset(best)):
            best = f
    return f"{best}+{off - header_layout.offset(best)}" if best else str(off)


def _setup(d: shmdict.SharedDict) -> dict[str, Any]:
    """Every kind of item, free blocks on several lists, a compaction done
    (its cursor left behind), wrapped events."""
    n = 0
    try:
        while True:  # full: the event ring wraps; blocks of many classes
            d[f"w{n:04d}"] = "x" * (20 + n % 50)
            n += 1
    except shmdict.Full:
        pass
    for k in range(0, n, 3):
        del d[f"w{k:04d}"]
    d["big"] = "B" * 3000  # needs the holes gathered: a compaction pass
    d["i"] = 40
    d.incr("i")  # in place: its stripe's log and count are not blank
    d["f"] = 1.5
    d["t"] = True
    d["b"] = b"\x00\xff" * 8
    d.set("ttl", "later", 1000)
    for v in (1, "two", b"3"):
        d.rpush("L", v)
    items = {k: d[k] for k in d.get_keys() if k != "L"}
    return items


def _read_all(d: shmdict.SharedDict, items: dict[str, Any]) -> str | None:
    """None if every item is there with its value (and its type), else what is not."""
    for k, v in items.items():
        got = d.get(k)
        if got != v or type(got) is not type(v):
            return f"{k!r}: {got!r} instead of {v!r}"
    if d.llen("L") != 3:
        return f"the list holds {d.llen('L')} elements instead of 3"
    return None


def _sweep(path: str, name: str, image: bytes, items: dict[str, Any], offsets: list[int], wfd: int) -> int:
    import struct

    for off in offsets:
        if MUTEX[0] <= off < MUTEX[1]:
            continue
        old = struct.unpack_from("<Q", image, off)[0]
        for make in VALUES:
            value = make(old)
            if value == old:
                continue
            buf = bytearray(image)
            struct.pack_into("<Q", buf, off, value)
            with open(path, "r+b") as f:
                f.write(buf)
            os.write(wfd, f"{off} {value:#x}\n".encode())
            try:
                d = shmdict.get(name, lock_timeout=5)
            except shmdict.CorruptError:
                continue
            try:
                lost = _read_all(d, items)
                if lost is None:
                    d["after-scribble"] = 1
                    lost = _read_all(d, items)
            except shmdict.CorruptError:
                lost = None
                try:  # said aloud; and flush_all() is the way out
                    d.flush_all()
                    d["fresh"] = 1
                    d.check()
                except shmdict.Error as e:
                    lost = f"flush_all() did not make it whole: {e!r}"
            finally:
                d.close()
            if lost:
                os.write(wfd, f"LOST {off} {value:#x} {lost}\n".encode())
    return 0


def test_every_header_word_scribbled(shm_dir: str) -> None:
    """No single scribbled header word loses or changes an item without CorruptError."""
    name = unique_name("hw")
    path = os.path.join(shm_dir, f"shmdict.{name}")
    with shmdict.new(name, 1 << 16) as d:
        items = _setup(d)
        assert d.stats()["compactions"] >= 1
        d.check()
        with open(path, "rb") as f:
            image = f.read()
        offsets = list(range(0, header_layout.offset("backup"), 8))
        # the stripes (a lock, sequence word and undo log each): the words after the mutex of
        # the stripe "i" was incremented in (its log names i's words) and of stripe 0
        first, stride = header_layout.offset("stripes"), header_layout.offset("stripes[1]") - header_layout.offset("stripes")
        gen = header_layout.offset("stripes[0].gen") - first
        used = [s for s in range(64) if struct.unpack_from("<Q", image, first + stride * s + gen)[0]]
        assert len(used) == 1, used
        for s in sorted({0, *used}):
            offsets += range(first + stride * s + header_layout.offset("stripes[0].seq") - first, first + stride * (s + 1), 8)
        r, w = os.pipe()
        pid = fork(_sweep, path, name, image, items, offsets, w, alarm=180)
        os.close(w)
        chunks = []
        while b := os.read(r, 1 << 16):
            chunks.append(b)
        os.close(r)
        status = wait(pid, timeout=180)
        lines = b"".join(chunks).decode().splitlines()
        lost = [ln for ln in lines if ln.startswith("LOST")]
        last = lines[-1] if lines else "nothing"
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
            f"the sweep died ({describe(status)}) at {last} ({_field_at(int(last.split()[0]))})"
        )
        assert not lost, "silent loss: " + "; ".join(
            f"{_field_at(int(ln.split()[1]))} = {ln.split()[2]}: {' '.join(ln.split()[3:])}" for ln in lost[:10]
        )
        assert len(lines) > 1000  # the sweep did write that many words
        report("header_words", files=len(lines), words=len({ln.split()[0] for ln in lines}))

"""Hostile files: hypothesis mutates a valid dict file -- header, index,
undo log and records -- and a forked child attaches to it and runs every
operation (list records and the header counters get regions of their own).
The only acceptable outcomes are correct behaviour or
``CorruptError`` (plus the exceptions a well-formed dict could raise:
``Full``, ``KeyError``, ``TypeError`` for incr on a non-number,
``OverflowError``); never a crash, a hang or an out-of-bounds access (the
sanitizer build in .ci/run turns the latter into a crash). After
``flush_all()`` the dict must be whole again: ``check()`` passes and it
stores and returns values.

Each example runs in its own child with a deadline, so a crash or a hang is
a failing, shrunk example rather than a dead test run.

THE MUTEX'S LOCK WORD IS FUZZED TOO. Beyond the attach-time kind check
(lock.c lock_looks_valid), a lock word cannot be validated -- a word naming
a live or recycled thread as owner blocks lockers exactly as a real holder
would. That is the trust boundary: whoever can write the file can hold the
lock. What the library guarantees is that nobody waits for it forever: the
child attaches with a short lock_timeout, so such a word gives LockTimeout
(and then nothing more can be asked of the dict). The rest of the mutex
(kind, owner, counters) is left alone: the kind check refuses it at attach.

Every file that ever failed is kept whole in tests/corpus/*.bin and
replayed by ``test_corpus_regressions``.

SHMDICT_FUZZ_EXAMPLES sets the number of examples (default 300; the long
run uses 20000).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import header_layout
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relutil import LONG, describe, fork, report, wait

import shmdict
from shmdict import _lib

__all__ = ["shm_dir"]

CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("SHMDICT_FUZZ_EXAMPLES") or (20000 if LONG else 300))
SIZE = 1 << 15  # the smallest dict: every region is small enough to hit often
MUTEX = range(256 + 4, 320)  # all but the lock word itself (__data.__lock, the first 4 bytes)
LOCK_WORD = (256, 260)
HDR_TABLE = (header_layout.offset("gen"), header_layout.offset("ulog_n"))  # the table state, all of it
ULOG = (HDR_TABLE[1], HDR_TABLE[1] + 8 + 16 * 64)
COUNTERS = (header_layout.offset("count"), header_layout.offset("exp_hint"))  # count, tombs, n_ttl, used_bytes, bump
OK_EXC = (shmdict.CorruptError, shmdict.Full, KeyError, TypeError, OverflowError, shmdict.LockTimeout)
KEYS = [f"key{n:03d}" for n in range(40)]
_count = 0


def _template(directory: str) -> bytes:
    """A small dict exercising every structure: mixed types, TTLs, a free
    list, an overwritten (moved) record; returns the file's bytes."""
    with shmdict.new("tmpl", SIZE) as d:
        for n, k in enumerate(KEYS):
            v: object = [n, n * 0.5, f"s{n}" * (n % 7 + 1), bytes([n]) * (n % 13), n % 2 == 0][n % 5]
            d.set(k, v, 1000 if n % 3 == 0 else 0)  # type: ignore[arg-type]
        for k in KEYS[::6]:
            del d[k]
        d["key001"] = "moved to a larger block" * 3
        for n in range(6):
            d.rpush("L", [n, f"e{n}", bytes([n]) * 3][n % 3])
        d.lpop("L")
        d.check()
        with open(os.path.join(directory, "shmdict.tmpl"), "rb") as f:
            return f.read()


def _list_record(blob: bytes, arena_off: int, used_end: int) -> tuple[int, int]:
    """(start, end) of the template's list record "L": its header, count and elements."""
    for off in range(arena_off + 16, used_end - 24, 8):
        klen, typ = struct.unpack_from("<HB", blob, off + 8)
        if klen == 1 and typ == _lib.lib.SHMDICT_T_LIST and blob[off + 24 : off + 25] == b"L":
            vlen, start = struct.unpack_from("<II", blob, off + 16)
            return off, min(off + 24 + 8 + 8 + start + vlen, len(blob))
    return arena_off, used_end  # no list (a file made for another test): the whole arena


def _geometry(blob: bytes) -> dict[str, int]:
    arena_off = struct.unpack_from("<Q", blob, 48)[0]
    index_cap = struct.unpack_from("<Q", blob, header_layout.offset("index_cap"))[0]
    size = struct.unpack_from("<Q", blob, header_layout.offset("size"))[0]
    index_off = size - index_cap * 8  # the index is the last index_cap slots before the dict's size
    arena_units = (index_off - arena_off) // 8
    events_off, events_cap = struct.unpack_from("<2Q", blob, 112)
    bump = struct.unpack_from("<Q", blob, header_layout.offset("bump"))[0]
    used_end = arena_off + bump * 8
    list_lo, list_hi = _list_record(blob, arena_off, used_end)
    return {"index_off": index_off, "index_cap": index_cap, "arena_off": arena_off,
            "arena_units": arena_units, "bump": bump, "list_lo": list_lo, "list_hi": list_hi,
            "events_off": events_off, "events_cap": events_cap, "used_end": used_end}


def _watch(d: shmdict.SharedDict) -> None:
    try:
        list(d.watch(timeout=0))
    except ValueError as e:
        if "events=0" not in str(e):  # a file without an event ring (as corpus files made before it)
            raise


def _exercise(name: str) -> int:
    """Attach to a hostile file and run every operation (in the child)."""
    try:
        d = shmdict.get(name, lock_timeout=0.05)
    except (shmdict.CorruptError, shmdict.LockTimeout):
        return 0
    ops = [
        lambda: len(d),
        lambda: d.get_keys(),
        lambda: [d.get(k) for k in KEYS],
        lambda: [d.ttl(k) for k in KEYS[:10]],
        lambda: d.check(),
        lambda: d.set("new", "fresh value" * 4),
        lambda: d.set("key002", b"replaced" * 9, 5),
        lambda: d.set("key003", 7),
        lambda: [d.delete(k) for k in KEYS[::4]],
        lambda: d.incr("key005", 1),
        lambda: d.incr("ctr", 1, init=0),
        lambda: d.expire("key007", 10),
        lambda: d.pop("key008", None),
        lambda: d.rpush("L", "tail"),
        lambda: d.get_many(["L", "key004", "new-list"]),
        lambda: d.items(),
        lambda: [d.llen("L"), d.lpop("L"), d.rpop("L"), d.llen("L")],
        lambda: d.lpush("new-list", 1),
        lambda: d.cas("key010", 10, 11),
        lambda: d.set_many({"m1": 1, "m2": "two"}),
        lambda: d.limit("rl", 5, 1),
        lambda: d.flush_expired(),
        lambda: d.scan(0, 50),
        lambda: d.stats(),
        lambda: [d.set(f"fill{n}", "x" * 200) for n in range(80)],
        lambda: d.version("key009"),
        lambda: _watch(d),
        lambda: d.check(),
    ]
    for op in ops:
        try:
            op()
        except OK_EXC:
            pass
    try:
        d.flush_all()
    except shmdict.LockTimeout:
        return 0  # a lock word naming a holder that never lets go: bounded, and that is all
    d.check()  # flush_all re-initialises the table: whole again
    try:
        d["after"] = "flush"
    except shmdict.Full:
        pass  # a geometry that is consistent but tiny (index_cap = 1, a 6-unit arena) holds nothing
    else:
        assert d["after"] == "flush"
    d.check()
    return 0


def _run(shm: str, blob: bytes) -> int:
    path = os.path.join(shm, "shmdict.fz")
    with open(path, "wb") as f:
        f.write(blob)
    try:
        return wait(fork(_exercise, "fz", alarm=20), timeout=20)
    finally:
        os.unlink(path)


def _apply(blob: bytes, muts: list[tuple[int, bytes]]) -> bytes:
    b = bytearray(blob)
    for off, data in muts:
        for j, byte in enumerate(data):
            if off + j < len(b) and off + j not in MUTEX:
                b[off + j] = byte
    return bytes(b)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    directory = tmp_path_factory.mktemp("tmpl")
    old = os.environ.get("SHMDICT_DIR")
    os.environ["SHMDICT_DIR"] = str(directory)
    try:
        return _template(str(directory))
    finally:
        if old is None:
            del os.environ["SHMDICT_DIR"]
        else:
            os.environ["SHMDICT_DIR"] = old


INTERESTING = [0, 1, 2, 3, 7, 8, 0xFF, 0x7F, 0x80, 0xFFFF, 2**31, 2**32 - 1, 2**32, 2**32 + 1,
               2**63, 2**64 - 1, 2**64 - 8, 4096, 8192, 1 << 20]


@st.composite
def mutations(draw: st.DrawFn, geo: dict[str, int], size: int) -> list[tuple[int, bytes]]:
    regions = [
        (0, 256),                                   # identity and geometry
        LOCK_WORD,                                  # the mutex's lock word (owner TID and flags)
        HDR_TABLE,                                  # counters, bump, flags, free-list heads
        COUNTERS,                                   # count, tombs, n_ttl, used_bytes, bump
        (geo["list_lo"], geo["list_hi"]),           # a list record: lengths, count, elements
        ULOG,                                       # the undo log
        (ULOG[1], ULOG[1] + 4096),                  # backup area
        (geo["index_off"], geo["index_off"] + geo["index_cap"] * 8),  # index slots
        (geo["arena_off"], min(geo["used_end"], size)),              # live and free records
        (geo["events_off"], geo["events_off"] + max(geo["events_cap"], 8)),  # the event ring
        (0, size),                                  # anywhere
    ]
    out = []
    for _ in range(draw(st.integers(1, 6))):
        lo, hi = draw(st.sampled_from(regions))
        kind = draw(st.integers(0, 3))
        if kind == 0:  # an aligned 64-bit word set to a boundary value
            off = lo + draw(st.integers(0, max(0, (hi - lo) // 8 - 1))) * 8
            base = draw(st.sampled_from(INTERESTING + [geo["index_cap"], geo["arena_units"], geo["bump"], size]))
            delta = draw(st.integers(-2, 2))
            out.append((off, struct.pack("<Q", (base + delta) % 2**64)))
        elif kind == 1:  # one 32-bit field (tags, lengths, versions)
            off = lo + draw(st.integers(0, max(0, (hi - lo) // 4 - 1))) * 4
            out.append((off, struct.pack("<I", draw(st.sampled_from(INTERESTING)) % 2**32)))
        elif kind == 2:  # random bytes
            out.append((draw(st.integers(lo, hi - 1)), draw(st.binary(min_size=1, max_size=16))))
        else:  # one flipped bit
            out.append((draw(st.integers(lo, hi - 1)), ("flip", draw(st.integers(0, 7)))))
    return out


def _resolve(blob: bytes, muts: list[tuple[int, object]]) -> list[tuple[int, bytes]]:
    """Turn bit flips into byte writes against the template."""
    res = []
    cur = bytearray(blob)
    for off, data in muts:
        if isinstance(data, tuple):
            data = bytes([cur[off] ^ (1 << data[1])])
        assert isinstance(data, bytes)
        for j, byte in enumerate(data):
            if off + j < len(cur):
                cur[off + j] = byte
        res.append((off, data))
    return res


def _save(blob: bytes) -> Path:
    """Keep a failing file whole: the template's hash seed differs per run, so
    replaying mutations would not reproduce it."""
    CORPUS.mkdir(exist_ok=True)
    path = CORPUS / f"crash-{hashlib.sha256(blob).hexdigest()[:16]}.bin"
    path.write_bytes(blob)
    return path


def test_fuzz_hostile_files(shm_dir: str, template: bytes) -> None:
    """Mutated files give CorruptError or correct behaviour, never a crash or hang."""
    geo = _geometry(template)

    failing: list[bytes] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutations(geo, len(template)))
    def run(muts: list[tuple[int, object]]) -> None:
        global _count
        blob = _apply(template, _resolve(template, muts))
        status = _run(shm_dir, blob)
        _count += 1
        if not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0):
            failing.append(blob)
            pytest.fail(f"hostile file: child {describe(status)}")

    try:
        run()
    finally:
        if failing:  # hypothesis replays the shrunk example last
            print(f"failing input saved as {_save(failing[-1])}")
    report("fuzz", executions=_count)


def test_fuzz_seed_file_is_valid(shm_dir: str, template: bytes) -> None:
    """The unmutated template passes every operation, so the fuzzer's failures are the mutations'."""
    status = _run(shm_dir, template)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)


@pytest.mark.parametrize("case", sorted(CORPUS.glob("*.bin")) if CORPUS.is_dir() else [], ids=lambda p: p.stem)
def test_corpus_regressions(shm_dir: str, case: Path) -> None:
    """Every hostile file the fuzzer ever found is handled."""
    status = _run(shm_dir, case.read_bytes())
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"{case.name}: {describe(status)}"


def test_refused_full_log_is_discarded_by_flush(shm_dir: str) -> None:
    """A full undo log that recovery refuses marks the dict corrupt; flush_all then resets it instead of aborting."""
    with shmdict.new("log", SIZE) as d:
        d["k"] = "v"
        with open(os.path.join(shm_dir, "shmdict.log"), "r+b") as f:
            f.seek(ULOG[0])
            f.write(struct.pack("<Q", 64))  # ULOG_MAX entries, all pointing at offset 0: not loggable
        with pytest.raises(shmdict.CorruptError):
            len(d)  # the next locker refuses the log (a keyed read may answer without the lock)
        with pytest.raises(shmdict.CorruptError):
            d["k"]  # a dict marked corrupt sends lock-free readers to the lock, which says so
        # Found by the fuzzer: flush_all used to abort() here (the log had no room left).
        status = wait(fork(lambda: shmdict.get("log").flush_all()))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)
        d.check()
        d["k"] = "back"
        assert d["k"] == "back"


def test_event_ring_beyond_the_arena_start_is_refused(shm_dir: str) -> None:
    """An events_off past arena_off is CorruptError at attach (it used to wrap a bounds check and segfault)."""
    with shmdict.new("ev", SIZE) as d:
        d["k"] = "v"
        path = os.path.join(shm_dir, "shmdict.ev")
        with open(path, "r+b") as f:
            geo = _geometry(f.read())
            assert geo["events_cap"] > 0
            for bad in (geo["arena_off"] + 16, 1 << 32, 2**64 - 16):
                f.seek(112)
                f.write(struct.pack("<Q", bad))
                f.flush()
                status = wait(fork(_exercise, "ev"))
                assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, describe(status)
                with pytest.raises(shmdict.CorruptError):
                    shmdict.get("ev")


def test_scribbled_count_is_corrupt_not_an_error_code(shm_dir: str) -> None:
    """A count beyond the index makes len() raise CorruptError (it came back as -7, i.e. "OSError: Success")."""
    with shmdict.new("cnt", SIZE) as d:
        d["k"] = "v"
        with open(os.path.join(shm_dir, "shmdict.cnt"), "r+b") as f:
            f.seek(HDR_TABLE[0] + 8)  # count, after gen
            f.write(struct.pack("<q", -7))
        with pytest.raises(shmdict.CorruptError):
            len(d)
        d.flush_all()
        assert len(d) == 0
        d.check()


# ---- list records and header counters: the report's cases, deterministically ----------


def _list_file(shm_dir: str) -> tuple[shmdict.SharedDict, str, int]:
    d = shmdict.new("lst", SIZE)
    for v in (1, "two", b"three"):
        d.rpush("L", v)
    path = os.path.join(shm_dir, "shmdict.lst")
    with open(path, "rb") as f:
        blob = f.read()
    geo = _geometry(blob)
    return d, path, geo["list_lo"]


@pytest.mark.parametrize("shrink", [1, 8, 13, 14, 27])
def test_list_record_with_a_shrunk_length(shm_dir: str, shrink: int) -> None:
    """A list record whose stored length shrank: readers raise CorruptError (never a truncated
    list or struct.error), and check() says so."""
    d, path, rec = _list_file(shm_dir)
    with d:
        assert d.get_many(["L"]) == {"L": [1, "two", b"three"]}
        with open(path, "r+b") as f:
            f.seek(rec + 16)
            (vlen,) = struct.unpack("<I", f.read(4))
            f.seek(rec + 16)
            f.write(struct.pack("<I", vlen - shrink))
        with pytest.raises(shmdict.CorruptError, match="list"):
            d.check()
        with pytest.raises(shmdict.CorruptError):
            d.get_many(["L"])
        with pytest.raises(shmdict.CorruptError):
            d.items()


def test_list_record_with_a_wrong_count(shm_dir: str) -> None:
    d, path, rec = _list_file(shm_dir)
    with d:
        with open(path, "r+b") as f:
            f.seek(rec + 24 + 8)  # after the key padded to 8: the element count
            f.write(struct.pack("<Q", 7))
        with pytest.raises(shmdict.CorruptError, match="count"):
            d.check()
        with pytest.raises(shmdict.CorruptError):
            d.get_many(["L"])
        with pytest.raises(shmdict.CorruptError):
            d.llen("L")  # 7 elements cannot fit in so few bytes


@pytest.mark.parametrize(("word", "value"), [(1, 0), (1, 2**64 - 1), (2, 2**64 - 1), (3, 2**63), (4, 2**64 - 8), (4, 0)])
def test_scribbled_header_counters(shm_dir: str, word: int, value: int) -> None:
    """A zeroed or wrapped count, tombs, n_ttl or used_bytes: CorruptError from check(), and from
    operations instead of KeyError(None), 'unknown error' or Full; flush_all() repairs it."""
    with shmdict.new("cnt", SIZE) as d:
        for n in range(10):
            d.set(f"k{n}", n, 100 if n % 2 else 0)
        with open(os.path.join(shm_dir, "shmdict.cnt"), "r+b") as f:
            f.seek(384 + 8 * word)
            f.write(struct.pack("<Q", value))
        with pytest.raises(shmdict.CorruptError):
            d.check()
        for op in (lambda: len(d), lambda: d.delete("k3"), lambda: d.set("new", 1), lambda: d.get("k4")):
            try:
                op()
            except shmdict.CorruptError:
                pass
        d.flush_all()
        d.check()
        d["after"] = 1
        assert len(d) == 1

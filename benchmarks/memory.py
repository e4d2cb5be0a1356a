"""Bytes per entry: what one key/value pair costs in shmdict and in its peers,
for several key and value sizes, measured side by side in one run.

Each workload stores N entries of one shape (key length, value type and
length) in each store and divides the memory the store took by the entries.
The stores keep their memory in different places, so each is measured where
its memory is (see NOTES, which go into the report):

- shmdict: the dict's whole file (header, event ring, index and records) over
  the entries it holds when a dict sized for about N entries is full; beside
  it, the ideal per-entry cost of the formula in docs/memory.md;
- lmdb: the data file's high-water mark (``last_pgno + 1`` pages), and the
  B-tree's own pages, after N ``put``s of one write transaction each;
- redis: the growth of ``used_memory`` (less client buffers) of a private
  redis-server, once its hash table has finished rehashing;
- dict: the RSS growth of a fresh interpreter building the dict from the same
  key and value objects (run in a child process, so memory freed by earlier
  work in this one cannot absorb it).

``python -m benchmarks.memory dict-child COL N`` is that child: it prints one
number. Everything else runs from ``python -m benchmarks --only memory``.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from .backends import LmdbBackend, RedisBackend, Unavailable

Value = Union[int, str, bytes]


@dataclass(frozen=True)
class Workload:
    col: str          # the key in benchmarks.json
    title: str        # the column title in benchmarks.md
    key_len: int      # bytes of every key (ASCII, so characters too)
    kind: str         # "int", "str" or "bytes"
    value_len: int    # bytes of every str/bytes value (0 for int)
    n: int            # entries in a full run
    n_quick: int      # entries in a --quick run

    def key(self, i: int) -> str:
        """Key number i: exactly key_len ASCII characters."""
        return "k" + str(i).zfill(self.key_len - 1)

    def value(self, i: int) -> Value:
        """Value number i, a new object each time (a dict holds its own)."""
        if self.kind == "int":
            return 1000 + i
        digits = str(i).zfill(10)
        s = (digits * (self.value_len // 10 + 1))[:self.value_len]
        return s if self.kind == "str" else s.encode()

    @property
    def user_bytes(self) -> int:
        """What the user stores: key plus value (8 for an int)."""
        return self.key_len + (8 if self.kind == "int" else self.value_len)


WORKLOADS = [
    Workload("k8_int", "8-byte key, int", 8, "int", 0, 1_000_000, 20_000),
    Workload("k16_str16", "16-byte key, 16-byte str", 16, "str", 16, 500_000, 10_000),
    Workload("k16_bytes100", "16-byte key, 100-byte bytes", 16, "bytes", 100, 250_000, 5_000),
    Workload("k32_bytes1000", "32-byte key, 1000-byte bytes", 32, "bytes", 1000, 50_000, 1_000),
]
BY_COL = {w.col: w for w in WORKLOADS}

# the stores measured here, in table order
BACKENDS = ["dict", "shmdict", "lmdb", "redis"]


def _size_class_bytes(nbytes: int) -> int:
    """A record's bytes in the dict: 8-byte units, exact up to 64 units
    (512 bytes), then rounded up to one of four classes per power of two."""
    units = (nbytes + 7) // 8
    if units <= 64:
        return units * 8
    base = 64
    while base * 2 < units:
        base *= 2
    step = base // 4
    return (base + step * math.ceil((units - base) / step)) * 8


def ideal(w: Workload) -> float:
    """docs/memory.md's cost of one entry in a full dict, its fixed header and
    event ring left out: the record (24-byte header, the key, a str/bytes
    value; rounded up to 8 bytes and, above 512, to its size class) plus an
    index slot of 8 bytes at 87.5% load -- or, for records so large that the
    index never outgrows its first 1/32 of the dict, record x 32/31."""
    record = _size_class_bytes(24 + w.key_len + (0 if w.kind == "int" else w.value_len))
    return max(record + 8 / 0.875, record * 32 / 31)


# ---- one function per store: (workload, N) -> figures -----------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _dict_child(w: Workload, n: int) -> float:
    """In a fresh interpreter: RSS growth per entry of {key: value} for n entries."""
    key, value = w.key, w.value
    try:  # give free heap pages back first, so that reusing them shows as growth (glibc)
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass
    before = _rss()
    d = {key(i): value(i) for i in range(n)}  # the key and value objects are part of the entry
    after = _rss()
    assert len(d) == n
    return (after - before) / n


def measure_dict(w: Workload, n: int) -> dict[str, Any]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", "dict-child", w.col, str(n)],
                         env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"dict child failed: {out.stderr.strip()[-500:]}")
    return {"bytes_per_entry": float(out.stdout.strip()), "entries": n}


def measure_shmdict(w: Workload, n: int) -> dict[str, Any]:
    """A dict sized for about n entries at the ideal cost, filled until Full."""
    import shmdict

    size = max(1 << 20, -(-int(ideal(w) * n) // 65536) * 65536)
    key, value = w.key, w.value
    with shmdict.new(f"bench-mem-{uuid.uuid4().hex[:12]}", size) as d:
        s = d.set
        held = 0
        try:
            for i in range(4 * n + 1000):
                s(key(i), value(i))
                held += 1
        except shmdict.Full:
            pass
        else:
            raise RuntimeError(f"a {size:,}-byte dict took {held:,} entries and was not full")
        st = d.stats()
        total = d.size
    return {"bytes_per_entry": total / held, "entries": held, "file_size": total, "ideal": ideal(w),
            "record_bytes_per_entry": st["used_bytes"] / held,
            "index_bytes_per_entry": 8 * st["index_cap"] / held}


def _shuffled(n: int) -> list[int]:
    order = list(range(n))
    random.Random(3).shuffle(order)
    return order


def measure_lmdb(w: Workload, n: int) -> dict[str, Any]:
    """n puts in a random key order, one write transaction each (as a shared
    dict is used); the file's high-water mark and the B-tree's pages."""
    b = LmdbBackend()
    b.open(n * (w.user_bytes + 64) * 2)
    try:
        set_, key, value = b.set, w.key, w.value
        for i in _shuffled(n):
            set_(key(i).encode(), value(i))
        info, st = b.env.info(), b.env.stat()
        psize = st["psize"]
        high = (info["last_pgno"] + 1) * psize
        pages = (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * psize
        return {"bytes_per_entry": high / n, "btree_bytes_per_entry": pages / n, "entries": n,
                "high_water": high, "btree_bytes": pages, "entries_in_db": st["entries"]}
    finally:
        b.close()


def _redis_mem(r: Any) -> tuple[int, int]:
    m = r.info("memory")
    return m["used_memory"] - m.get("mem_clients_normal", 0), m["used_memory_rss"]


def _redis_settled(r: Any, timeout: float = 10.0) -> tuple[int, int]:
    """Memory once the server stops changing it: an incremental rehash of its
    hash table holds both tables until the server's cron finishes it."""
    deadline = time.monotonic() + timeout
    last, same = _redis_mem(r), 0
    while same < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
        cur = _redis_mem(r)
        same = same + 1 if cur[0] == last[0] else 0
        last = cur
    return last


def measure_redis(w: Workload, n: int) -> dict[str, Any]:
    """n keys in a random order, by MSET batches of about 1 MB."""
    b = RedisBackend()
    b.open(0)
    try:
        r = b.r
        before, rss0 = _redis_settled(r)
        key, value = w.key, w.value
        order = _shuffled(n)
        batch = max(1, min(10_000, (1 << 20) // (w.user_bytes + 16)))
        for j in range(0, n, batch):
            r.mset({key(i): value(i) for i in order[j:j + batch]})
        after, rss1 = _redis_settled(r)
        assert r.dbsize() == n
        return {"bytes_per_entry": (after - before) / n, "rss_bytes_per_entry": (rss1 - rss0) / n,
                "entries": n}
    finally:
        b.close()


MEASURE: dict[str, Callable[[Workload, int], dict[str, Any]]] = {
    "dict": measure_dict, "shmdict": measure_shmdict, "lmdb": measure_lmdb, "redis": measure_redis,
}


def run(backends: list[str], quick: bool, log: Callable[[str], None]) -> tuple[dict[str, Any], list[str]]:
    """Every workload in every store; returns (the "memory" part of
    benchmarks.json, notes on stores that could not run)."""
    names = [x for x in BACKENDS if x in backends]
    res: dict[str, dict[str, Any]] = {x: {} for x in names}
    notes: list[str] = []
    down: set[str] = set()
    for w in WORKLOADS:
        n = w.n_quick if quick else w.n
        for x in names:
            if x in down:
                continue
            log(f"bytes per entry: {w.title}, {n:,} entries: {x}")
            try:
                res[x][w.col] = MEASURE[x](w, n)
            except Unavailable as e:
                down.add(x)
                notes.append(f"{x}: bytes per entry not measured: {e}")
    data = {"workloads": [{"col": w.col, "title": w.title, "key_len": w.key_len, "kind": w.kind,
                           "value_len": w.value_len, "n": w.n_quick if quick else w.n, "ideal": ideal(w)}
                          for w in WORKLOADS],
            "results": {x: r for x, r in res.items() if r}}
    return data, notes


# ---- reporting --------------------------------------------------------------------


def per_entry(mem: dict[str, Any], backend: str, col: str, field: str = "bytes_per_entry") -> Optional[float]:
    v = mem.get("results", {}).get(backend, {}).get(col, {}).get(field)
    return float(v) if v is not None else None


def table(mem: dict[str, Any]) -> list[str]:
    """The "Bytes per entry" table of benchmarks.md: a column per workload, a
    row per store, and shmdict's figure over each peer's."""
    ws = mem.get("workloads") or []
    if not ws or not mem.get("results"):
        return []
    lines = ["Bytes per entry, one column per key/value shape (N entries each; see notes for the method). "
             "In brackets: shmdict's bytes per entry ÷ the peer's, below 1× = shmdict is denser.", "",
             "| store | " + " | ".join(f"{w['title']} (N = {w['n']:,})" for w in ws) + " |",
             "|---|" + "---|" * len(ws)]
    rows = [("dict", "bytes_per_entry", "dict (RSS growth)"),
            ("shmdict", "bytes_per_entry", "**shmdict** (file size / entries when full)"),
            ("shmdict", "ideal", "shmdict, formula (docs/memory.md)"),
            ("lmdb", "bytes_per_entry", "lmdb (file high-water mark)"),
            ("lmdb", "btree_bytes_per_entry", "lmdb (B-tree pages only)"),
            ("redis", "bytes_per_entry", "redis (used_memory growth)")]
    for backend, field, label in rows:
        if backend not in mem["results"]:
            continue
        cells = []
        for w in ws:
            v = per_entry(mem, backend, w["col"], field)
            if v is None:
                cells.append("-")
                continue
            cell = f"{v:,.1f}"
            mine = per_entry(mem, "shmdict", w["col"])
            if backend != "shmdict" and mine:
                cell += f" ({mine / v:.2f}×)"
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    held = [f"{w['title']}: {mem['results']['shmdict'][w['col']]['entries']:,}"
            for w in ws if w["col"] in mem["results"].get("shmdict", {})]
    if held:
        lines += ["", "Entries a full shmdict held: " + "; ".join(held) + "."]
    return lines


NOTES = [
    "Bytes per entry: every store gets the same keys and values (keys of exactly the stated length; ints "
    "1000+i; str/bytes values of digits). dict = RSS growth of a fresh Python process building the dict, "
    "key and value objects included. shmdict = the dict's file size (header, event ring, index, records) / "
    "the entries it holds when full, for a dict sized for about N entries at the formula's cost; the formula "
    "row is docs/memory.md's record = 24 + key + value rounded up to 8 (and above 512 bytes to the size "
    "class), plus 8 / 0.875 for the index slot, or record × 32/31 where the index keeps its first 1/32 of "
    "the dict; it leaves out the fixed header and event ring (at most 264 KiB a dict).",
    "lmdb: N puts in a random key order, one write transaction each (writemap, no sync); file high-water "
    "mark = (last_pgno + 1) × page size, what the file occupies; B-tree pages = branch + leaf + overflow "
    "pages (excludes free-list pages and the unused part of the map). Keys in sorted order pack pages "
    "fuller and would look denser.",
    "redis: growth of INFO used_memory, less client buffers (mem_clients_normal), after N keys by MSET "
    "and once the server's hash table has settled (no rehash in progress); it counts the allocator's "
    "size classes but not fragmentation or the process's RSS beyond what jemalloc hands out "
    "(the RSS growth is in benchmarks.json). Values are int-encoded, embstr or raw strings as Redis "
    "chooses.",
]


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "dict-child":
        print(_dict_child(BY_COL[argv[1]], int(argv[2])))
        return 0
    print("usage: python -m benchmarks.memory dict-child COL N   (run by python -m benchmarks)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

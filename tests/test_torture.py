"""Kill torture: writers doing a random mix of operations are SIGKILLed at
random instants and restarted, for a bounded time.

Afterwards: the next operation returns promptly (no deadlock), ``check()``
passes, every stored value is whole (each carries its own key and a digest
of itself), and counters are exact. Each writer reports every value
``incr`` returned (one ``write`` of under PIPE_BUF bytes: a kill never leaves
half a report):

* its private counter's reported values go up by exactly 1, except across a
  kill, where one applied-but-unreported increment may hide (+2); the final
  value exceeds the last report by at most 1;
* the shared counter never returns the same value twice, and its final value
  is the number of reports plus at most one unreported increment per kill;
* every element left in the writers' lists (rpush / lpop) is whole too;
* a reader that is never killed reads the writers' keys and the shared
  counter throughout: every value whole, the counter never going back.

The dict grows while they are killed: it starts small with a ``max_size``, so
a full dict grows itself, and now and then a writer resizes it by a few
bytes to a few pages. Afterwards its size is at most that limit, the same in
every process, and it has grown.

Short in CI (4 writers, 3 s); ``SHMDICT_LONG=1`` or
``SHMDICT_TORTURE_SECONDS=N`` for a long run.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import time

from relutil import LONG, describe, fork, killed, promptly, report, unique_name, wait

import shmdict

__all__ = ["shm_dir"]

SECONDS = float(os.environ.get("SHMDICT_TORTURE_SECONDS") or (120 if LONG else 3))
WRITERS = 4
KEYS_PER_WRITER = 40
START_SIZE = 128 << 10
MAX_SIZE = (64 if LONG else 16) << 20  # both the automatic-growth limit and the resizes' cap


def _digest(key: str, payload: bytes) -> bytes:
    return hashlib.blake2b(key.encode() + payload, digest_size=8).digest()


def make_value(key: str, rng: random.Random) -> str | bytes:
    payload = rng.randbytes(rng.choice([0, 1, 7, 40, 300, 1500]))
    if rng.random() < 0.5:
        return payload + _digest(key, payload)
    text = payload.hex()
    return f"{key}|{text}|{_digest(key, text.encode()).hex()}"


def whole(key: str, value: object) -> bool:
    if isinstance(value, bytes):
        return len(value) >= 8 and value[-8:] == _digest(key, value[:-8])
    if isinstance(value, str):
        parts = value.split("|")
        return len(parts) == 3 and parts[0] == key and parts[2] == _digest(key, parts[1].encode()).hex()
    return False


def writer(name: str, w: int, gen: int, wfd: int) -> int:
    """Run random operations until killed; report every incr result."""
    rng = random.Random(os.getpid() ^ time.monotonic_ns())
    d = shmdict.get(name)
    mine = f"c{w}"
    while True:
        r = rng.random()
        k = f"w{w}k{rng.randrange(KEYS_PER_WRITER)}"
        try:
            if r < 0.25:
                v = d.incr(mine, 1, init=0)
                os.write(wfd, f"p {w} {gen} {v}\n".encode())
            elif r < 0.40:
                v = d.incr("shared", 1, init=0)
                os.write(wfd, f"s {w} {gen} {v}\n".encode())
            elif r < 0.60:
                d.set(k, make_value(k, rng), rng.choice([0, 0, 0, 1000]))
            elif r < 0.66:
                lk = f"l{w}"
                d.rpush(lk, make_value(lk, rng))
            elif r < 0.70:
                d.lpop(f"l{w}")
            elif r < 0.80:
                d.delete(k)
            elif r < 0.85:
                d.expire(k, rng.choice([0, 500]))
            elif r < 0.95:
                v2 = d.get(k)
                if v2 is not None and not whole(k, v2):
                    return 3  # a torn value seen live
            elif r < 0.9995:
                d.pop(k, None)
            else:
                d.resize(min(d.size + rng.choice([1, 4096, 20_000, 65536]), MAX_SIZE))
        except shmdict.Full:
            pass
        except ValueError:
            pass  # resize: another writer grew it past that meanwhile


def reader(name: str, seconds: float) -> int:
    """Never killed: reads the writers' keys (without the lock, csrc/optread.c) while they die.
    A value it gets is whole, a batch is whole, and the shared counter never goes back: a
    killed writer's half-done or rolled-back store is never seen."""
    rng = random.Random()
    d = shmdict.get(name)
    end = time.monotonic() + seconds
    last = n = 0
    while time.monotonic() < end:
        w = rng.randrange(WRITERS)
        k = f"w{w}k{rng.randrange(KEYS_PER_WRITER)}"
        v = d.get(k)
        if v is not None and not whole(k, v):
            return 3
        s = d.get("shared", 0)
        if s < last:
            return 4
        last = s
        if rng.random() < 0.1:
            ks = [f"w{w}k{i}" for i in range(0, KEYS_PER_WRITER, 4)]
            if not all(whole(kk, vv) for kk, vv in d.get_many(ks).items()):
                return 5
        n += 1
    return 0 if n >= 100 else 6


def test_kill_torture(shm_dir: str) -> None:
    """Writers SIGKILLed at random instants leave no deadlock, no corruption and exact counters."""
    name = unique_name()
    rng = random.Random()
    with shmdict.new(name, START_SIZE, max_size=MAX_SIZE) as d:
        r, wfd = os.pipe()
        os.set_blocking(r, False)
        gens = [0] * WRITERS
        pids = [fork(writer, name, w, 0, wfd, alarm=int(SECONDS) + 60) for w in range(WRITERS)]
        reader_pid = fork(reader, name, SECONDS, alarm=int(SECONDS) + 60)
        kills = [0] * WRITERS
        buf = bytearray()
        deadline = time.monotonic() + SECONDS

        def drain(timeout: float) -> None:
            if select.select([r], [], [], timeout)[0]:
                try:
                    while chunk := os.read(r, 1 << 16):
                        buf.extend(chunk)
                except BlockingIOError:
                    pass

        while time.monotonic() < deadline:
            drain(rng.uniform(0, 0.03))
            w = rng.randrange(WRITERS)
            os.kill(pids[w], signal.SIGKILL)
            status = wait(pids[w])
            assert killed(status), f"writer {w} died on its own: {describe(status)}"
            kills[w] += 1
            gens[w] += 1
            pids[w] = fork(writer, name, w, gens[w], wfd, alarm=int(SECONDS) + 60)
        drain(0.02)
        for w in range(WRITERS):
            os.kill(pids[w], signal.SIGKILL)
            status = wait(pids[w])
            assert killed(status), f"writer {w} died on its own: {describe(status)}"
            kills[w] += 1
        os.close(wfd)
        os.set_blocking(r, True)
        while chunk := os.read(r, 1 << 16):
            buf.extend(chunk)
        os.close(r)

        status = wait(reader_pid)  # 3: torn value, 4: the counter went back, 5: torn batch, 6: starved
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"reader: {describe(status)}"

        # No deadlock, no corruption.
        promptly(lambda: len(d))
        promptly(d.check)

        private: list[list[tuple[int, int]]] = [[] for _ in range(WRITERS)]
        shared: list[int] = []
        for line in buf.decode().splitlines():
            kind, w_, g_, v_ = line.split()
            if kind == "p":
                private[int(w_)].append((int(g_), int(v_)))
            else:
                shared.append(int(v_))

        for w in range(WRITERS):
            seq = private[w]
            for (g0, v0), (g1, v1) in zip(seq, seq[1:]):
                step = v1 - v0
                # Each killed generation may have applied one incr it never reported
                # (killed between the incr and the report), and no more.
                assert step == 1 or (g1 != g0 and 1 < step <= 1 + (g1 - g0)), \
                    f"writer {w}: {v0} -> {v1} (gen {g0} -> {g1})"
            final = d.get(f"c{w}", 0)
            last = seq[-1][1] if seq else 0
            assert 0 <= final - last <= 1, f"writer {w}: final {final}, last reported {last}"
        assert len(shared) == len(set(shared)), "the shared counter returned a value twice"
        final_shared = d.get("shared", 0)
        assert max(shared, default=0) <= final_shared
        assert 0 <= final_shared - len(shared) <= sum(kills), (final_shared, len(shared), sum(kills))

        for k in d.get_keys():
            if k.startswith("w"):
                assert whole(k, d[k]), f"{k} is torn"
        for w in range(WRITERS):
            lk = f"l{w}"
            while (x := d.lpop(lk)) is not None:
                assert whole(lk, x), f"an element of {lk} is torn"
        d["after"] = 1
        d.check()
        info = d._info()
        growths = d.stats()["growths"]
        assert START_SIZE < d.size <= MAX_SIZE and growths >= 1, (d.size, growths)
        with shmdict.get(name) as fresh:
            assert fresh.size == d.size and fresh["after"] == 1
            fresh.check()
        n_ops = sum(len(p) for p in private) + len(shared)
        report("torture", seconds=SECONDS, writers=WRITERS, kills=sum(kills),
               recoveries=info["recoveries"], incr_reports=n_ops, growths=growths, size=d.size)
        print(f"torture: {sum(kills)} kills, {info['recoveries']} inside the lock, {n_ops} incr results checked, "
              f"{growths} growths to {d.size} bytes")
        assert sum(kills) >= WRITERS

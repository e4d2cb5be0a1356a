"""One adapter per store, all with the same small interface.

Every adapter exposes plain callables (``set(k, v)``, ``get(k)``,
``incr(k)``, ``delete(k)``), bound once so the timed loops pay only the
store's own cost. Where a peer offers no atomic increment, ``incr`` is the
read-modify-write a user would write with the peer's own lock, or none if it
has no lock (``incr_kind`` says which). Keys are ``str``; peers that only take
bytes get keys encoded once, before timing, and return raw bytes (which
flatters them slightly). What each store's entries cost in memory is
measured in memory.py.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from typing import Any, Callable, Optional


class Unavailable(Exception):
    """The backend cannot run here (not installed, no server binary...)."""


class Backend:
    name = "?"
    incr_kind = "atomic"
    bytes_keys = False            # the store takes bytes keys
    max_keys = 10**6              # largest resident set it is filled with
    shared = True                 # usable from several processes
    forks = True                  # the multi-process workloads can fork workers
    get_many: Optional[Callable[[list[Any]], Any]] = None   # a batch call, where the store has one
    set_many: Optional[Callable[[list[tuple[Any, Any]]], Any]] = None
    set: Callable[[Any, Any], Any]
    get: Callable[[Any], Any]
    incr: Callable[[Any], Any]
    delete: Callable[[Any], Any]
    # incr that creates a missing key with a TTL (shmdict: init=0, init_ttl=60: the
    # rate-limit idiom); peers without that option run their plain incr
    incr_init: Optional[Callable[[Any], Any]] = None

    def open(self, size: int) -> "Backend":
        raise NotImplementedError

    def fill(self, keys: list[Any], vals: list[Any]) -> None:
        s = self.set
        for k, v in zip(keys, vals):
            s(k, v)

    def attach(self) -> "Backend":
        """This store, usable in a forked child."""
        return self

    def before_fork(self) -> None:
        """Called in the parent before workers fork."""

    def after_fork(self) -> None:
        """Called in the parent once the workers are done."""

    def close(self) -> None:
        pass


class DictBackend(Backend):
    name = "dict"
    incr_kind = "in-process only"
    shared = False

    def open(self, size: int) -> Backend:
        d: dict[Any, Any] = {}
        self.d = d
        self.set, self.get, self.delete = d.__setitem__, d.get, d.__delitem__

        def incr(k: Any) -> Any:
            d[k] = v = d.get(k, 0) + 1
            return v

        self.incr = incr
        return self


class ShmdictBackend(Backend):
    name = "shmdict"

    def _handle(self, d: Any) -> Any:
        return d

    def _bind(self, d: Any) -> None:
        self.d = d
        self.set, self.get, self.incr, self.delete = d.set, d.get, d.incr, d.delete
        self.get_many, self.set_many = d.get_many, d.set_many
        incr = d.incr
        self.incr_init = lambda k: incr(k, init=0, init_ttl=60.0)

    def open(self, size: int) -> Backend:
        import shmdict

        self._bind(self._handle(shmdict.new(f"bench-{uuid.uuid4().hex[:12]}", size)))
        return self

    def attach(self) -> Backend:
        import shmdict

        a = type(self)()
        a._bind(self._handle(shmdict.get(self.d.name)))
        return a

    def close(self) -> None:
        self.d.close()


class ShmdictPureBackend(ShmdictBackend):
    """shmdict's pure-Python hot methods over cffi (what PyPy and SHMDICT_PURE=1
    use), on another handle to the same kind of dict: the C type's baseline."""

    name = "shmdict-pure"
    shared = False  # single-process workloads only

    def _handle(self, d: Any) -> Any:
        import shmdict
        from shmdict._dict import _Base, _trust
        from shmdict._lib import check, ffi, lib
        from shmdict._pure import PureBase

        if _Base is PureBase:
            return d
        if not hasattr(ShmdictPureBackend, "cls"):
            ShmdictPureBackend.cls = type("PureSharedDict", (PureBase, shmdict.SharedDict), {"__slots__": ()})
        # a second handle on d's file, whose hot methods are the pure ones (d owns the name)
        self._owner = d
        p = ffi.new("shmdict_t **")
        flags, also = _trust(False)
        check(lib.shmdict_attach(d._dir.encode(), d.name.encode(), flags, also, ffi.new("shmdict_out_t *"), p))
        return ShmdictPureBackend.cls(p[0], d.name, d._dir, owner=False)

    def close(self) -> None:
        self.d.close()
        if getattr(self, "_owner", None) is not None:
            self._owner.close()


class ShmdictGilBackend(ShmdictBackend):
    """The C type releasing the GIL around every call, as cffi does: measures
    what keeping the GIL (the default) saves."""

    name = "shmdict-gil-released"
    shared = False

    def open(self, size: int) -> Backend:
        try:
            from shmdict import _speed
        except ImportError as e:
            raise Unavailable(f"no C type here ({e})") from None
        _speed._release_gil_per_call(True)
        return super().open(size)

    def close(self) -> None:
        from shmdict import _speed

        _speed._release_gil_per_call(False)
        super().close()


class LmdbBackend(Backend):
    name = "lmdb"
    incr_kind = "atomic (write txn read-modify-write)"
    bytes_keys = True

    def open(self, size: int) -> Backend:
        try:
            import lmdb
        except ImportError as e:
            raise Unavailable(f"py-lmdb not installed ({e})") from None
        self.lmdb = lmdb
        self.dir = tempfile.mkdtemp(prefix="bench-lmdb-", dir="/dev/shm")
        self.size = max(size * 4, 1 << 28)
        self._bind()
        return self

    def _bind(self) -> None:
        # As a shared dict is used: one transaction per operation. writemap and
        # no syncs: the fastest safe-to-share configuration on tmpfs.
        env = self.env = self.lmdb.open(self.dir, map_size=self.size, writemap=True, sync=False,
                                        metasync=False, lock=True, max_readers=256)
        begin = env.begin

        def set_(k: bytes, v: Any) -> None:
            with begin(write=True) as t:
                t.put(k, v if type(v) is bytes else str(v).encode())

        def get(k: bytes) -> Any:
            with begin() as t:
                return t.get(k)

        def incr(k: bytes) -> int:
            with begin(write=True) as t:
                v = int(t.get(k, b"0")) + 1
                t.put(k, b"%d" % v)
                return v

        def delete(k: bytes) -> bool:
            with begin(write=True) as t:
                return t.delete(k)

        self.set, self.get, self.incr, self.delete = set_, get, incr, delete

    def fill(self, keys: list[Any], vals: list[Any]) -> None:
        with self.env.begin(write=True) as t:
            for k, v in zip(keys, vals):
                t.put(k, str(v).encode())

    def attach(self) -> Backend:
        # py-lmdb refuses an environment inherited across fork ("already open
        # in this process"): the parent closes it before forking, the child
        # opens its own, and the parent reopens after.
        a = LmdbBackend()
        a.lmdb, a.dir, a.size = self.lmdb, self.dir, self.size
        a._bind()
        return a

    def before_fork(self) -> None:
        self.env.close()

    def after_fork(self) -> None:
        self._bind()

    def close(self) -> None:
        self.env.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """A private redis-server on a Unix socket, no persistence; stopped by pid."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server")
        if not exe:
            raise Unavailable("redis-server not found (apt-get install redis-server)")
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        self.proc = subprocess.Popen(
            [exe, "--port", "0", "--unixsocket", self.sock, "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            # not under test: keep a sanitizer runtime (LD_PRELOAD) of the caller out of it
            env={k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")})
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise Unavailable("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisBackend(Backend):
    name = "redis"
    incr_kind = "atomic (INCR)"
    server: Optional[RedisServer] = None

    def open(self, size: int) -> Backend:
        try:
            import redis
        except ImportError as e:
            raise Unavailable(f"redis-py not installed ({e})") from None
        if RedisBackend.server is None:
            RedisBackend.server = RedisServer()
        self.redis = redis
        self._bind()
        self.r.flushall()
        return self

    def _bind(self) -> None:
        assert RedisBackend.server is not None
        r = self.r = self.redis.Redis(unix_socket_path=RedisBackend.server.sock)
        self.set, self.get, self.incr, self.delete = r.set, r.get, r.incr, r.delete
        self.get_many = r.mget
        self.set_many = lambda items: r.mset(dict(items))

    def fill(self, keys: list[Any], vals: list[Any]) -> None:
        for i in range(0, len(keys), 10000):
            self.r.mset(dict(zip(keys[i:i + 10000], vals[i:i + 10000])))

    def attach(self) -> Backend:
        a = RedisBackend()
        a.redis = self.redis
        a._bind()
        return a

    def close(self) -> None:
        self.r.flushall()
        self.r.close()

    @classmethod
    def shutdown(cls) -> None:
        if cls.server is not None:
            cls.server.stop()
            cls.server = None


class DiskcacheBackend(Backend):
    name = "diskcache"
    incr_kind = "atomic (SQLite transaction)"
    max_keys = 10**5  # filling 1e6 takes about a minute

    def open(self, size: int) -> Backend:
        try:
            import diskcache
        except ImportError as e:
            raise Unavailable(f"diskcache not installed ({e})") from None
        self.dir = tempfile.mkdtemp(prefix="bench-diskcache-", dir="/dev/shm")
        self._bind()
        return self

    def _bind(self) -> None:
        import diskcache

        c = self.c = diskcache.Cache(self.dir, size_limit=1 << 40, eviction_policy="none")
        self.set, self.get, self.incr, self.delete = c.set, c.get, c.incr, c.delete

    def attach(self) -> Backend:
        a = DiskcacheBackend()
        a.dir = self.dir
        a._bind()
        return a

    def close(self) -> None:
        self.c.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class ManagerBackend(Backend):
    name = "manager"
    incr_kind = "locked read-modify-write (Manager().Lock)"
    max_keys = 10**5
    forks = False  # workers forked from the benchmark hang on the proxies' connections
    manager: Any = None

    def open(self, size: int) -> Backend:
        if ManagerBackend.manager is None:
            ManagerBackend.manager = multiprocessing.Manager()
        m = ManagerBackend.manager
        self.d, self.lock = m.dict(), m.Lock()
        self._bind()
        return self

    def _bind(self) -> None:
        d, lock = self.d, self.lock
        self.set, self.get, self.delete = d.__setitem__, d.get, d.__delitem__

        def incr(k: Any) -> Any:
            with lock:
                d[k] = v = d.get(k, 0) + 1
                return v

        self.incr = incr

    def fill(self, keys: list[Any], vals: list[Any]) -> None:
        for i in range(0, len(keys), 10000):
            self.d.update(zip(keys[i:i + 10000], vals[i:i + 10000]))

    def attach(self) -> Backend:
        # A forked child must not reuse the parent's connections: rebuild the
        # proxies (as multiprocessing does when it passes them to a worker).
        import pickle

        a = ManagerBackend()
        a.d, a.lock = pickle.loads(self._pickled[0]), pickle.loads(self._pickled[1])
        a._bind()
        return a

    def before_fork(self) -> None:
        import pickle

        self._pickled = pickle.dumps(self.d), pickle.dumps(self.lock)

    def close(self) -> None:
        self.d.clear()

    @classmethod
    def shutdown(cls) -> None:
        if cls.manager is not None:
            cls.manager.shutdown()
            cls.manager = None


class UltraDictBackend(Backend):
    name = "ultradict2"
    incr_kind = "locked read-modify-write (d.lock; fork-only RLock)"
    max_keys = 10**5

    def open(self, size: int) -> Backend:
        try:
            from UltraDict import UltraDict  # the ultradict2 distribution installs this module
        except ImportError:
            try:
                from UltraDict2 import UltraDict  # type: ignore[no-redef]
            except ImportError as e:
                raise Unavailable(f"ultradict2 not installed ({e})") from None
        self.name_ = f"bench{uuid.uuid4().hex[:10]}"
        # A large stream buffer: the default forces a full re-pickle every few hundred writes.
        self.d = d = UltraDict(name=self.name_, create=True, buffer_size=max(size, 1 << 26))
        self.set, self.get = d.__setitem__, d.get

        def incr(k: Any) -> Any:
            with d.lock:
                d[k] = v = d.get(k, 0) + 1
                return v

        def delete(k: Any) -> None:
            del d[k]

        self.incr, self.delete = incr, delete
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.d.close(unlink=True)
        for f in os.listdir("/dev/shm"):
            if f.startswith(self.name_):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join("/dev/shm", f))


class SharedMemoryDictBackend(Backend):
    name = "shared-memory-dict"
    incr_kind = "UNLOCKED read-modify-write (no incr, one global lock per op)"
    max_keys = 10**3  # every op pickles or unpickles the whole dict

    def open(self, size: int) -> Backend:
        os.environ["SHARED_MEMORY_USE_LOCK"] = "1"  # read at import
        try:
            from shared_memory_dict import SharedMemoryDict
        except ImportError as e:
            raise Unavailable(f"shared-memory-dict not installed ({e})") from None
        self.name_ = f"bench{uuid.uuid4().hex[:10]}"
        self.d = d = SharedMemoryDict(name=self.name_, size=1 << 22)
        self.set, self.get = d.__setitem__, d.get

        def incr(k: Any) -> Any:
            d[k] = v = d.get(k, 0) + 1
            return v

        def delete(k: Any) -> None:
            del d[k]

        self.incr, self.delete = incr, delete
        return self

    def attach(self) -> Backend:
        from shared_memory_dict import SharedMemoryDict

        a = SharedMemoryDictBackend()
        a.d = d = SharedMemoryDict(name=self.name_, size=1 << 22)
        a.set, a.get = d.__setitem__, d.get

        def incr(k: Any) -> Any:
            d[k] = v = d.get(k, 0) + 1
            return v

        a.incr = incr
        return a

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.d.shm.close()
            self.d.shm.unlink()


BACKENDS: dict[str, type[Backend]] = {
    b.name: b
    for b in (DictBackend, ShmdictBackend, ShmdictPureBackend, ShmdictGilBackend, LmdbBackend, RedisBackend, DiskcacheBackend, ManagerBackend,
              UltraDictBackend, SharedMemoryDictBackend)
}


def shutdown_servers() -> None:
    RedisBackend.shutdown()
    ManagerBackend.shutdown()

"""Snapshots on the Redis engine, and moves between the engines (same file
format), against a real redis-server; and the CLI's dump/load."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import unique_name
from redis_fixture import redis_dict, redis_server  # noqa: F401  (fixtures)
from test_snapshot import BAD_ITEMS, craft, fill_all_types

import shmdict
from shmdict import _snapshot


def redis_contents(r: shmdict.RedisDict) -> dict:
    out = dict(r.items())
    for k in r.get_keys():
        if k not in out:  # a list
            out[k] = [r.lpop(k) for _ in range(r.llen(k))]
    return out


def local_contents(d: shmdict.SharedDict) -> dict:
    return dict(d.items())


def test_redis_round_trip(redis_dict, redis_server):
    """Every type, lists and TTLs through a RedisDict dump and load."""
    r = redis_dict
    items = {"i": 7, "t": True, "f": 2.5, "s": "héllo", "b": b"\x00\x01", "e": "", "ключ": -1}
    for k, v in items.items():
        r[k] = v
    r.set("ttl", "x", 100)
    for v in (1, "two", b"3", 4.5, False):
        r.rpush("L", v)
    raw = io.BytesIO()
    assert r.dump(raw) == len(items) + 2
    prefix = f"t{unique_name()}:"
    with shmdict.connect(redis_server.url(prefix)) as r2:
        try:
            assert r2.load(io.BytesIO(raw.getvalue())) == len(items) + 2
            assert 0 < r2.ttl("ttl") <= 100 and r2.ttl("i") == 0
            got = redis_contents(r2)
            assert got == {**items, "ttl": "x", "L": [1, "two", b"3", 4.5, False]}
            assert all(type(got[k]) is type(v) for k, v in items.items())
        finally:
            r2.flush_all()


def test_local_to_redis_and_back(d, redis_dict):
    """A snapshot moves local -> Redis -> local with types, lists and TTLs."""
    items = fill_all_types(d)
    d.set("ttl", 5, 100)
    b = io.BytesIO()
    d.dump(b)
    assert redis_dict.load(io.BytesIO(b.getvalue())) == len(items) + 1
    assert 0 < redis_dict.ttl("ttl") <= 100
    b2 = io.BytesIO()
    assert redis_dict.dump(b2) == len(items) + 1
    with shmdict.new(unique_name(), "1m") as back:
        back.load(io.BytesIO(b2.getvalue()))
        assert local_contents(back) == {**items, "ttl": 5}
        assert 0 < back.ttl("ttl") <= 100 and back.ttl("int") == 0


def test_redis_load_keeps_other_keys_and_skips_expired(redis_dict):
    r = redis_dict
    r["mine"] = 1
    r["over"] = "old"
    r.rpush("was-list", 1)
    now = time.time_ns()
    raw = craft([("over", "new", 0), ("was-list", "scalar", 0), ("gone", 1, now - 10**9), ("later", 2, now + 60 * 10**9)])
    assert r.load(io.BytesIO(raw)) == 3
    assert redis_contents(r) == {"mine": 1, "over": "new", "was-list": "scalar", "later": 2}
    assert 50 < r.ttl("later") <= 60


@pytest.mark.parametrize("what", sorted(BAD_ITEMS))
def test_redis_load_of_malformed_items_writes_nothing(redis_dict, what):
    good = _snapshot.encode_item("good", 1, 0)
    b = io.BytesIO()
    w = _snapshot.Writer(b)
    w.block(1, good)
    w.block(1, BAD_ITEMS[what])
    w.finish()
    redis_dict["mine"] = 1
    with pytest.raises(shmdict.CorruptError):
        redis_dict.load(io.BytesIO(b.getvalue()))
    assert redis_contents(redis_dict) == {"mine": 1}


def test_redis_load_of_damaged_files_writes_nothing(redis_dict):
    raw = craft([("a", 1, 0), ("b", "two", 0)])
    redis_dict["mine"] = 1
    for bad in (raw[:-1], raw[:20], raw[:30] + bytes([raw[30] ^ 1]) + raw[31:], b"", b"junk" * 10):
        with pytest.raises(shmdict.CorruptError):
            redis_dict.load(io.BytesIO(bad))
    assert redis_contents(redis_dict) == {"mine": 1}


def test_redis_dump_many_items_each_once(redis_dict):
    r = redis_dict
    r.set_many([(f"k{i}", i) for i in range(3000)])
    b = io.BytesIO()
    assert r.dump(b) == 3000
    keys = [k for k, _, _ in shmdict.read_snapshot(io.BytesIO(b.getvalue()))]
    assert sorted(keys) == sorted(f"k{i}" for i in range(3000))


# ---- the CLI ---------------------------------------------------------------------------


def cli(*args: str, stdin: bytes | None = None, code: int = 0) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "shmdict", *args], input=stdin, capture_output=True, timeout=60)
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    return p


def test_cli_dump_and_load_files_and_pipes(shm_dir):
    with shmdict.new("src", "1m") as src, shmdict.new("dst", "1m") as dst, shmdict.new("dst2", "1m") as dst2:
        items = fill_all_types(src)
        src.set("ttl", 1, 100)
        path = os.path.join(shm_dir, "snap.bin")
        assert b"dumped 15 items" in cli("dump", "src", path).stdout
        out = json.loads(cli("--json", "load", "dst", path).stdout)
        assert out == {"name": "dst", "file": path, "items": 15}
        assert local_contents(dst) == {**items, "ttl": 1} and 0 < dst.ttl("ttl") <= 100
        # pipes: the snapshot on stdout, the report on stderr
        p = cli("dump", "src", "-")
        assert p.stdout[:12] == _snapshot.MAGIC and b"dumped 15 items" in p.stderr
        cli("load", "dst2", "-", stdin=p.stdout)
        assert local_contents(dst2) == local_contents(dst)


def test_cli_errors(shm_dir):
    with shmdict.new("dst", "1m") as dst:
        dst["mine"] = 1
        bad = os.path.join(shm_dir, "bad.bin")
        with open(bad, "wb") as f:
            f.write(b"not a snapshot")
        p = cli("load", "dst", bad, code=3)
        assert b"CorruptError" in p.stderr
        cli("load", "dst", "-", stdin=b"", code=3)
        cli("load", "dst", os.path.join(shm_dir, "missing"), code=1)
        cli("dump", "nosuchdict", os.path.join(shm_dir, "x"), code=1)
        assert local_contents(dst) == {"mine": 1}
        with shmdict.new("tiny", 1 << 15) as tiny:
            with shmdict.new("big", "4m") as big:
                for i in range(2000):
                    big[f"k{i}"] = "v" * 500
                big.dump(os.path.join(shm_dir, "big.bin"))
            p = cli("load", "tiny", os.path.join(shm_dir, "big.bin"), code=3)
            assert b"Full" in p.stderr and len(tiny) == 0


def test_cli_moves_a_dict_to_redis_and_back(shm_dir, redis_server):
    prefix = f"t{unique_name()}:"
    url = redis_server.url(prefix)
    with shmdict.new("src", "1m") as src, shmdict.new("back", "1m") as back:
        items = fill_all_types(src)
        p = cli("dump", "src", "-")
        cli("load", url, "-", stdin=p.stdout)
        p = cli("dump", url, "-")
        cli("load", "back", "-", stdin=p.stdout)
        assert local_contents(back) == items
    with shmdict.connect(url) as r:
        r.flush_all()

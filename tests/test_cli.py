"""The ``shmdict`` command, driven as a subprocess: output, JSON and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import shmdict
from shmdict import cli


def run(*args: str, code: int = 0) -> str:
    """Run ``python -m shmdict ARGS``; assert the exit code; return stdout."""
    p = subprocess.run([sys.executable, "-m", "shmdict", *args], capture_output=True, text=True, timeout=60)
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    if code:
        assert p.stderr.startswith("shmdict: error: ") or p.stderr.startswith("usage:"), p.stderr
        assert p.stderr.count("\n") <= 1 or p.stderr.startswith("usage:"), p.stderr
    return p.stdout


def jrun(*args: str, code: int = 0):
    return json.loads(run("--json", *args, code=code))


def test_new_set_get_incr_ttl_roundtrip(shm_dir):
    """A dict made by `new` persists after the command; values keep their types through set/get."""
    assert "created cfg" in run("new", "cfg", "256k")
    assert os.path.exists(os.path.join(shm_dir, "shmdict.cfg"))
    run("set", "cfg", "greeting", "hello world", "--ttl", "100")
    run("set", "cfg", "n", "41", "--type", "int")
    run("set", "cfg", "pi", "3.5", "--type", "float")
    run("set", "cfg", "flag", "true", "--type", "bool")
    run("set", "cfg", "raw", "abc", "--type", "bytes")
    assert run("get", "cfg", "greeting") == "hello world\n"
    assert run("incr", "cfg", "n") == "42\n"
    assert run("incr", "cfg", "n", "-2.5") == "39.5\n"
    assert run("incr", "cfg", "hits", "--init", "10", "--init-ttl", "30") == "11\n"
    with shmdict.get("cfg") as d:  # the library sees exactly what the CLI stored
        assert d["n"] == 39.5 and d["pi"] == 3.5 and d["flag"] is True and d["raw"] == b"abc"
        assert 0 < d.ttl("greeting") <= 100 and 0 < d.ttl("hits") <= 30
    assert jrun("get", "cfg", "flag") == {"key": "flag", "type": "bool", "value": True, "ttl": 0}
    assert jrun("get", "cfg", "raw")["value"] == "YWJj"  # bytes travel as base64 in JSON
    assert 90 < float(run("ttl", "cfg", "greeting")) <= 100
    assert run("ttl", "cfg", "n") == "never\n"
    run("expire", "cfg", "n", "50")
    assert 40 < jrun("ttl", "cfg", "n")["ttl"] <= 50


@pytest.mark.parametrize(
    "text, want",
    [("5", 5), ("-3", -3), ("0", 0), ("0.25", 0.25), ("1.5e3", 1500.0), ("-1.5", -1.5), ("1e6", 1e6),
     ("01234", "01234"), ("+5", "+5"), (" 5", " 5"), ("inf", "inf"), ("nan", "nan"), ("1_000", "1_000"),
     ("9223372036854775808", "9223372036854775808"), ("5.", "5."), ("hello", "hello")],
)
def test_set_stores_a_plain_number_as_a_number(shm_dir, text, want):
    """Without --type, a value written as Python and incr write numbers is stored as that number
    (so `set` then `incr` works); anything else, leading zeros and inf/nan included, stays a str."""
    cli.main(["new", "auto", "256k"])
    run("set", "auto", "k", text)
    with shmdict.get("auto") as d:
        got = d["k"]
    assert got == want and type(got) is type(want)


def test_set_then_incr_and_a_str_that_looks_like_a_number(shm_dir):
    """`set d n 5` then `incr d n` gives 6; incr of a str says what the key holds and how to store a number."""
    run("new", "sn", "256k")
    run("set", "sn", "n", "5")
    assert run("incr", "sn", "n") == "6\n"
    run("set", "sn", "s", "5", "--type", "str")
    p = subprocess.run([sys.executable, "-m", "shmdict", "incr", "sn", "s"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and "holds the str '5', not a number" in p.stderr and "shmdict set sn s VALUE" in p.stderr


def test_keys_del_flush(shm_dir):
    """keys filters by glob and limit; del reports how many existed; flush needs --yes."""
    with shmdict.new("k", "256k") as d:
        for i in range(5):
            d[f"user:{i}"] = i
        d["other"] = "x"
        assert run("keys", "k").split() == ["other"] + [f"user:{i}" for i in range(5)]
        assert jrun("keys", "k", "user:*", "--limit", "2") == ["user:0", "user:1"]
        assert run("del", "k", "user:0", "user:1", "nope") == "2\n"
        run("del", "k", "nope", code=1)
        run("flush", "k", code=2)
        assert jrun("flush", "k", "--yes") == {"flushed": 4}
        assert len(d) == 0


def test_exit_codes_and_errors(shm_dir):
    """Missing dicts and keys exit 1, bad input exits 2, failed operations exit 3; one line on stderr."""
    run("get", "ghost", "k", code=1)
    run("ls", "--dir", shm_dir + "/nope", code=1)
    with shmdict.new("e", "256k") as d:
        d["s"] = "text"
        run("get", "e", "missing", code=1)
        run("ttl", "e", "missing", code=1)
        run("expire", "e", "missing", "5", code=1)
        run("incr", "e", "missing", code=1)
        run("get", "../etc", "k", code=2)
        run("get", "e", "", code=2)
        run("new", "x", "12q", code=2)
        run("new", "x", "1", code=2)
        run("set", "e", "n", "nan?", "--type", "int", code=2)
        run("incr", "e", "s", "abc", code=2)
        run("bogus", code=2)
        run("incr", "e", "s", code=3)  # not a number
        run("new", "e", "256k", code=3)  # exists
        assert d["s"] == "text"
    with shmdict.new("small", 32768):
        run("set", "small", "big", "x" * 40_000, code=3)  # larger than the dict


def test_ls_stats_check(shm_dir):
    """ls and stats report size, keys, use and the creator; check says ok."""
    with shmdict.new("one", "1m") as d:
        d["a"] = 1
        d.set("b", "x" * 1000, 60)
        rows = jrun("ls")
        assert [r["name"] for r in rows] == ["one"]
        r = rows[0]
        assert r["size"] == 1 << 20 and r["keys"] == 2 and r["creator_pid"] == os.getpid()
        assert r["creator_alive"] is True and r["mapped_by"] == [os.getpid()]
        assert 0 < r["use_pct"] < 1
        human = run("ls")
        assert human.splitlines()[0].split() == ["NAME", "SIZE", "KEYS", "USED", "CREATOR", "STATE", "MAPPED", "NOTE"]
        assert human.splitlines()[1].split()[:6] == ["one", "1M", "2", f"{r['use_pct']}%", str(os.getpid()), "alive"]
        d.get("a")
        d.get("missing")
        d.stats()  # (hits and misses are counted per process and reach the file in batches, or at stats())
        s = jrun("stats", "one")
        assert s["keys"] == 2 and s["path"] == os.path.join(shm_dir, "shmdict.one")
        assert s["hits"] >= 1 and s["misses"] >= 1 and s["evict"] is False and s["evictions"] == 0
        assert "used_bytes" in run("stats", "one")
        assert run("check", "one") == "ok\n"
    run("new", "ev", "64k", "--evict")
    assert jrun("stats", "ev")["evict"] is True


def test_resize_grows_a_dict_in_use(shm_dir):
    """resize grows a dict another process holds open: its handle sees the new size, every item is kept;
    a smaller size is a usage error that changes nothing."""
    with shmdict.new("g", "64k") as d:
        for i in range(100):
            d[f"k{i}"] = i
        assert jrun("resize", "g", "256k") == {"name": "g", "old_size": 64 << 10, "size": 256 << 10}
        assert d.size == 256 << 10 and d["k99"] == 99 and len(d) == 100  # this process follows
        d["big"] = "x" * 100_000  # fits only in the grown dict
        assert run("resize", "g", "256k") == f"g stays {256 << 10} bytes\n"
        assert run("resize", "g", "1m") == f"resized g: {256 << 10} -> {1 << 20} bytes\n"
        s = jrun("stats", "g")
        assert s["size"] == s["file_size"] == 1 << 20 and s["growths"] == 2 and s["max_size"] is None
        assert s["capacity"] + s["index_bytes"] < s["size"] and s["keys"] == 101
        p = subprocess.run([sys.executable, "-m", "shmdict", "resize", "g", "512k"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 2 and "never shrinks" in p.stderr and p.stderr.count("\n") == 1
        assert d.size == 1 << 20 and d.stats()["growths"] == 2
        run("resize", "g", code=2)  # neither SIZE nor --max-size
        run("resize", "g", "12q", code=2)
        run("resize", "g", "8g", "--max-size", "2m", code=2)  # checked before anything grows
        assert d.size == 1 << 20 and d.stats()["max_size"] is None
        run("resize", "ghost", "1m", code=1)
        assert d.check() is None


def test_max_size_new_and_resize(shm_dir):
    """new --max-size makes a dict that grows itself when full; resize --max-size sets the limit of an
    existing dict; stats shows it beside the size ('none' without one), with growths and fragmentation."""
    assert jrun("new", "auto", "64k", "--max-size", "1m")["max_size"] == 1 << 20
    assert "grows to 1048576 bytes when full" in run("new", "auto2", "64k", "--max-size", "1m")
    with shmdict.get("auto") as d:
        for i in range(3000):
            d[f"key:{i}"] = "v" * 40  # more than 64k holds: the dict grows instead of raising Full
        assert d.size > 64 << 10 and len(d) == 3000
    s = jrun("stats", "auto")
    assert s["max_size"] == 1 << 20 and s["growths"] >= 1 and s["size"] == s["file_size"] > 64 << 10
    assert 0.0 <= s["fragmentation"] <= 1.0 and s["hole_bytes"] <= s["free_bytes"]
    rows = [ln.split() for ln in run("stats", "auto").splitlines()]
    fields = [r[0] for r in rows]
    assert fields[fields.index("size"):fields.index("size") + 4] == ["size", "file_size", "max_size", "growths"]
    assert fields[fields.index("free_bytes") + 1:fields.index("free_bytes") + 3] == ["hole_bytes", "fragmentation"]
    run("new", "fixed", "64k")
    assert ["max_size", "none"] in [ln.split() for ln in run("stats", "fixed").splitlines()]
    assert jrun("resize", "fixed", "--max-size", "2m") == {"name": "fixed", "old_size": 64 << 10,
                                                            "size": 64 << 10, "max_size": 2 << 20}
    assert jrun("stats", "fixed")["max_size"] == 2 << 20
    with shmdict.get("fixed") as d:
        d.set_many([(f"k{i}", "v" * 40) for i in range(3000)])
        assert d.size > 64 << 10
    run("resize", "fixed", "--max-size", "64k", code=2)  # below the size now
    run("new", "bad", "1m", "--max-size", "512k", code=2)
    run("new", "bad", "1m", "--max-size", "lots", code=2)
    assert not os.path.exists(os.path.join(shm_dir, "shmdict.bad"))


def test_resize_without_room_fails_and_keeps_the_dict(tmp_path):
    """resize on a filesystem without room exits 3 (ENOSPC) and leaves the dict as it was."""
    mnt = str(tmp_path / "small")
    os.mkdir(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        run("--dir", mnt, "new", "tight", "256k")
        run("--dir", mnt, "set", "tight", "k", "v")
        p = subprocess.run([sys.executable, "-m", "shmdict", "--dir", mnt, "resize", "tight", "64m"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 3 and "No space left" in p.stderr, p.stderr
        s = jrun("--dir", mnt, "stats", "tight")
        assert s["size"] == 256 << 10 and s["growths"] == 0 and s["keys"] == 1
        assert run("--dir", mnt, "check", "tight") == "ok\n"
    finally:
        subprocess.run(["umount", mnt], check=False)


def test_rm_and_orphans(shm_dir):
    """rm refuses a dict another process maps (unless --force); rm --orphans removes only dicts
    whose creator is dead and that nobody maps."""
    child = subprocess.run([sys.executable, "-c", "import shmdict,sys; shmdict.open('orphan', '64k')"],
                           timeout=60)
    assert child.returncode == 0
    with shmdict.new("live", "64k"):
        rows = {r["name"]: r for r in jrun("ls")}
        assert rows["orphan"]["creator_alive"] is False and rows["orphan"]["mapped_by"] == []
        assert "orphan" in run("ls").splitlines()[2]
        run("rm", "live", code=3)
        # Without --yes, only the list: a stopped application's dict looks orphaned too.
        assert run("rm", "--orphans") == "would remove orphan\n(add --yes to remove them)\n"
        assert jrun("rm", "--orphans") == {"orphans": ["orphan"], "removed": []}
        assert sorted(os.listdir(shm_dir)) == ["shmdict.live", "shmdict.orphan"]
        assert jrun("rm", "--orphans", "--yes") == {"orphans": ["orphan"], "removed": ["orphan"]}
        assert sorted(os.listdir(shm_dir)) == ["shmdict.live"]
        assert run("rm", "--orphans") == "no orphans\n"
        run("rm", "live", "--yes", code=2)  # --yes belongs to --orphans
        run("rm", "live", "--force")
        assert os.listdir(shm_dir) == []
    run("rm", "live", code=1)
    run("rm", code=2)


def test_console_script_and_help():
    """The installed `shmdict` script, `--help` and `--version` work."""
    out = run("--help")
    assert "exit codes" in out and "rm" in out
    assert "stopped" in run("rm", "--help")  # says why orphans are only listed without --yes
    assert "resize" in out and "never shrinks" in run("resize", "--help")
    assert "--max-size" in run("new", "--help") and "--max-size" in run("resize", "--help")
    assert run("--version") == f"shmdict {shmdict.__version__}\n"
    exe = os.path.join(os.path.dirname(sys.executable), "shmdict")
    if os.path.exists(exe):
        assert subprocess.run([exe, "--help"], capture_output=True, timeout=60).returncode == 0


def test_watch_prints_changes(shm_dir):
    """watch follows changes matching a glob as they happen (NDJSON with --json) and ends on --timeout."""
    import select

    with shmdict.new("w", "256k") as d:
        p = subprocess.Popen([sys.executable, "-m", "shmdict", "watch", "w", "job*", "--json", "--timeout", "2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lines = []
            deadline = time.monotonic() + 30
            i = 0
            while not lines and time.monotonic() < deadline:  # until the watcher is listening
                d["job:tick"] = i
                i += 1
                if select.select([p.stdout], [], [], 0.1)[0]:
                    lines.append(p.stdout.readline())
            assert lines, "watch printed nothing"
            d["other"] = 1  # does not match the glob
            d["job:a"] = "x"
            d.incr("job:n", init=0)
            del d["job:a"]
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 0, err
        events = [json.loads(line) for line in lines + out.splitlines()]
        tail = [e for e in events if e["key"] != "job:tick"]
        assert tail == [{"op": "set", "key": "job:a"}, {"op": "set", "key": "job:n"},
                        {"op": "delete", "key": "job:a"}]
        assert all(e["key"].startswith("job") for e in events)


def test_closed_pipe_is_quiet(shm_dir):
    """`shmdict keys NAME | head -1`: the reader leaves early; the command exits 0 and says nothing."""
    with shmdict.new("many", "8m") as d:
        for i in range(20_000):  # more output than a pipe buffers
            d[f"key:{i:06d}"] = i
        r, w = os.pipe()
        p = subprocess.Popen([sys.executable, "-m", "shmdict", "keys", "many"], stdout=w, stderr=subprocess.PIPE)
        os.close(w)
        with os.fdopen(r, "rb") as reader:
            assert reader.readline() == b"key:000000\n"
        _, err = p.communicate(timeout=60)  # the read end is closed now
        assert (p.returncode, err) == (0, b"")


def test_set_bytes_takes_python_escapes(shm_dir):
    """--type bytes reads the escapes of a Python bytes literal; a bad escape is a usage error."""
    with shmdict.new("b", "256k") as d:
        run("set", "b", "k", r"\x00\x01\n\t\\a\'\101\0é", "--type", "bytes")
        assert d["k"] == b"\x00\x01\n\t\\a'A\x00" + "é".encode()
        assert run("get", "b", "k") == repr(d["k"]) + "\n"
        for bad in (r"\q", r"\x4", r"\xzz", "end\\", r"\400"):
            run("set", "b", "bad", bad, "--type", "bytes", code=2)
        assert "bad" not in d
        run("set", "b", "s", r"\x00", "--type", "str")  # escapes are for bytes only
        assert d["s"] == "\\x00"


@given(st.binary(max_size=64))
def test_bytes_escapes_roundtrip_repr(value):
    """Whatever Python prints for a bytes value (its repr, without b'...') reads back as that value."""
    assert cli._unescape(repr(value)[2:-1]) == value

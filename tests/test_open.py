"""Opening, naming, ownership, close, fork and pickle."""

from __future__ import annotations

import errno
import gc
import multiprocessing
import os
import pickle
import stat
import subprocess
import tempfile

import pytest
from conftest import MIN_SIZE, dict_path, run_in_child, start_child, unique_name, wait_child

import shmdict

MAX_SIZE = 32 * 2**30


# ---- size --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "nbytes"),
    [
        ("512k", 512 * 1024),
        ("64m", 64 * 2**20),
        ("1m", 2**20),
        ("32k", 32 * 1024),
        (MIN_SIZE, MIN_SIZE),
        (100000, 100000),
        (2**20, 2**20),
    ],
)
def test_size_is_parsed(name, size, nbytes):
    """Sizes given as int or with a k/m suffix become that many bytes."""
    with shmdict.new(name, size) as d:
        assert d.size == nbytes
        d["k"] = "v"
        assert d["k"] == "v"
        attached = shmdict.get(name)
        assert attached.size == nbytes
        attached.close()


def test_size_in_gigabytes(name):
    """A 'g' suffix means GiB."""
    with shmdict.new(name, "1g") as d:
        assert d.size == 2**30
        assert os.stat(dict_path(name)).st_size >= 2**30 // 2
        d["k"] = 1
        assert d["k"] == 1


@pytest.mark.parametrize(
    "size",
    [
        0,
        -1,
        -(2**20),
        "0",
        "0k",
        "-1k",
        "-1",
        "abc",
        "10x",
        "",
        "k",
        "1.5m",
        "m64",
        "64 m",
        "100g",
        MAX_SIZE + 1,
        2**64,
        1,
        MIN_SIZE - 1,
        "31k",
    ],
)
def test_bad_size_is_valueerror(name, size):
    """Non-positive, malformed, too small or absurd sizes raise ValueError and create nothing."""
    with pytest.raises(ValueError):
        shmdict.new(name, size)
    assert not os.path.lexists(dict_path(name))
    with pytest.raises(ValueError):
        shmdict.open(name, size)
    assert not os.path.lexists(dict_path(name))


@pytest.mark.parametrize("size", [1.5, 65536.0, None, b"64m", [1]])
def test_size_of_wrong_type_is_refused(name, size):
    """A size that is neither int nor str raises TypeError or ValueError."""
    with pytest.raises((TypeError, ValueError)):
        shmdict.new(name, size)
    assert not os.path.lexists(dict_path(name))


def test_new_reports_enospc(tmp_path, monkeypatch):
    """new raises OSError(ENOSPC) when the filesystem cannot hold size bytes, leaving no file."""
    mnt = tempfile.mkdtemp(dir=tmp_path)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        monkeypatch.setenv("SHMDICT_DIR", mnt)
        with pytest.raises(OSError) as info:
            shmdict.new("big", "64m")
        assert info.value.errno == errno.ENOSPC
        assert not isinstance(info.value, shmdict.Error)
        assert [f for f in os.listdir(mnt) if f.startswith("shmdict.")] == []
        with pytest.raises(FileNotFoundError):
            shmdict.get("big")
    finally:
        subprocess.run(["umount", mnt], check=False)


# ---- names ----------------------------------------------------------------------

GOOD_NAMES = ["a", "A", "0", "a" * 200, "rates", "A.b_c-9", "x..y", "9-_.", "Z" * 199 + "."]
BAD_NAMES = [
    "",
    ".",
    "..",
    ".hidden",
    "-x",
    "_x",
    "a/b",
    "/a",
    "a/",
    "../x",
    "a b",
    "a" * 201,
    "é",
    "a\x00b",
    "abc\n",
    "\nabc",
    "a:b",
    "a\\b",
    "a*",
    "tab\t",
]
NON_STR_NAMES = [b"abc", 1, None, 1.5, ["a"]]


@pytest.mark.parametrize("good", GOOD_NAMES)
def test_valid_names_work(good):
    """Names matching [A-Za-z0-9][A-Za-z0-9._-]{0,199} create <dir>/shmdict.<name>."""
    with shmdict.new(good, "64k") as d:
        assert d.name == good
        assert os.path.isfile(dict_path(good))
        g = shmdict.get(good)
        d["k"] = 1
        assert g["k"] == 1
        g.close()
    assert not os.path.lexists(dict_path(good))


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_invalid_names_are_valueerror(bad, shm_dir):
    """Names outside that pattern raise ValueError in new, get, open and unlink."""
    with pytest.raises(ValueError):
        shmdict.new(bad, "64k")
    with pytest.raises(ValueError):
        shmdict.get(bad)
    with pytest.raises(ValueError):
        shmdict.open(bad, "64k")
    with pytest.raises(ValueError):
        shmdict.unlink(bad)
    assert os.listdir(shm_dir) == []


@pytest.mark.parametrize("bad", NON_STR_NAMES)
def test_non_str_names_are_typeerror(bad, shm_dir):
    """A non-str name raises TypeError in new, get, open and unlink."""
    with pytest.raises(TypeError):
        shmdict.new(bad, "64k")
    with pytest.raises(TypeError):
        shmdict.get(bad)
    with pytest.raises(TypeError):
        shmdict.open(bad, "64k")
    with pytest.raises(TypeError):
        shmdict.unlink(bad)
    assert os.listdir(shm_dir) == []


def test_dir_is_read_at_each_call(name, monkeypatch, shm_dir):
    """SHMDICT_DIR is read at every call, not once at import."""
    other = tempfile.mkdtemp(dir=shm_dir)
    monkeypatch.setenv("SHMDICT_DIR", other)
    with shmdict.new(name, "64k"):
        assert os.path.isfile(os.path.join(other, f"shmdict.{name}"))
        assert not os.path.exists(os.path.join(shm_dir, f"shmdict.{name}"))
        monkeypatch.setenv("SHMDICT_DIR", shm_dir)
        with pytest.raises(FileNotFoundError):
            shmdict.get(name)
        monkeypatch.setenv("SHMDICT_DIR", other)


# ---- new / get / open / unlink ---------------------------------------------------


def test_new_on_existing_name_is_fileexistserror(d, name):
    """new on an existing name raises FileExistsError and leaves the dict alone."""
    d["k"] = "v"
    with pytest.raises(FileExistsError):
        shmdict.new(name, "1m")
    with pytest.raises(FileExistsError):
        shmdict.new(name, "64k")
    assert d["k"] == "v"
    assert shmdict.get(name)["k"] == "v"


def test_get_on_missing_name_is_filenotfounderror(name):
    """get on a missing name raises FileNotFoundError and creates nothing."""
    with pytest.raises(FileNotFoundError):
        shmdict.get(name)
    assert not os.path.lexists(dict_path(name))


def test_unlink_missing_name_is_filenotfounderror(name):
    """unlink on a missing name raises FileNotFoundError."""
    with pytest.raises(FileNotFoundError):
        shmdict.unlink(name)


def test_open_creates_then_attaches(name):
    """open creates a missing dict, then attaches to it, never as owner."""
    a = shmdict.open(name, "1m")
    assert not a.owner
    assert a.size == 2**20
    assert os.path.isfile(dict_path(name))
    a["k"] = 1
    b = shmdict.open(name, "1m")
    assert not b.owner
    assert b["k"] == 1
    b["j"] = 2
    assert a["j"] == 2
    a.close()
    b.close()
    assert os.path.isfile(dict_path(name))  # no owner: the name stays
    shmdict.unlink(name)
    assert not os.path.lexists(dict_path(name))


def test_open_existing_keeps_its_size(d, name):
    """open on an existing dict attaches to it whatever size it asks for."""
    d["k"] = 1
    o = shmdict.open(name, "64k")
    assert o["k"] == 1
    assert o.size == d.size
    o.close()


def test_attributes(d, name):
    """name, size, owner and closed describe the handle."""
    assert d.name == name
    assert d.size == 2**20
    assert d.owner is True
    assert d.closed is False
    g = shmdict.get(name)
    assert g.name == name
    assert g.size == 2**20
    assert g.owner is False
    assert g.closed is False
    g.close()
    assert g.closed is True
    assert isinstance(d, shmdict.SharedDict)


def test_handles_keep_working_after_unlink(d, name):
    """unlink removes the name while attached handles keep sharing the data."""
    g = shmdict.get(name)
    d["before"] = 1
    shmdict.unlink(name)
    assert not os.path.lexists(dict_path(name))
    with pytest.raises(FileNotFoundError):
        shmdict.get(name)
    d["after"] = 2
    assert g["after"] == 2
    assert g["before"] == 1
    g["from_g"] = b"x"
    assert d["from_g"] == b"x"
    d.check()
    g.close()


def test_new_after_unlink_is_a_different_dict(d, name):
    """A dict re-created under an unlinked name is separate from the old one."""
    d["k"] = "old"
    shmdict.unlink(name)
    with shmdict.new(name, "64k") as fresh:
        assert "k" not in fresh
        fresh["k"] = "new"
        assert d["k"] == "old"


def test_default_mode_is_0600(d, name):
    """Files are created with mode 0o600 by default."""
    assert stat.S_IMODE(os.stat(dict_path(name)).st_mode) == 0o600


def test_mode_is_honoured(name):
    """mode= sets the file mode for new and for a creating open."""
    old = os.umask(0o022)
    try:
        with shmdict.new(name, "64k", mode=0o640):
            assert stat.S_IMODE(os.stat(dict_path(name)).st_mode) == 0o640
        other = unique_name()
        o = shmdict.open(other, "64k", mode=0o640)
        assert stat.S_IMODE(os.stat(dict_path(other)).st_mode) == 0o640
        o.close()
        shmdict.unlink(other)
    finally:
        os.umask(old)


def test_created_file_is_regular_and_sized(d, name):
    """The backing file is a regular file holding at least the requested bytes."""
    st = os.lstat(dict_path(name))
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size >= 2**20


# ---- symlinks and corrupt files --------------------------------------------------------


def test_get_refuses_symlink(d, name):
    """get never follows a symlink, even to a valid dict."""
    alias = unique_name("alias")
    os.symlink(dict_path(name), dict_path(alias))
    with pytest.raises(OSError):
        shmdict.get(alias)
    with pytest.raises(OSError):
        shmdict.open(alias, "1m")
    assert os.path.islink(dict_path(alias))


def test_new_refuses_symlink(name, shm_dir):
    """new never follows a symlink at the path, dangling or not, and never creates its target."""
    target = os.path.join(shm_dir, "target")
    os.symlink(target, dict_path(name))
    with pytest.raises(OSError):
        shmdict.new(name, "64k")
    assert not os.path.lexists(target)
    with pytest.raises(OSError):
        shmdict.open(name, "64k")
    assert not os.path.lexists(target)
    assert os.path.islink(dict_path(name))


def test_new_refuses_symlink_to_existing_file(name, shm_dir):
    """new on a symlink to an existing file raises and leaves the file untouched."""
    target = os.path.join(shm_dir, "target")
    with open(target, "wb") as f:
        f.write(b"precious")
    os.symlink(target, dict_path(name))
    with pytest.raises(OSError):
        shmdict.new(name, "64k")
    with pytest.raises(OSError):
        shmdict.get(name)
    with pytest.raises(OSError):
        shmdict.open(name, "64k")
    with open(target, "rb") as f:
        assert f.read() == b"precious"


def _valid_image(nbytes: int | str = "64k") -> bytes:
    n = unique_name("img")
    with shmdict.new(n, nbytes) as src:
        for i in range(50):
            src[f"k{i}"] = f"value {i}" * 3
        with open(dict_path(n), "rb") as f:
            return f.read()


def _write(name: str, data: bytes) -> None:
    fd = os.open(dict_path(name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _bad_images() -> dict[str, bytes]:
    good = _valid_image()
    flipped_magic = bytearray(good)
    flipped_magic[0] ^= 0xFF
    flipped_magic7 = bytearray(good)
    flipped_magic7[7] ^= 0x01
    version2 = bytearray(good)
    version2[8:12] = (int.from_bytes(good[8:12], "little") + 1).to_bytes(4, "little")
    version0 = bytearray(good)
    version0[8:12] = b"\0\0\0\0"
    version_max = bytearray(good)
    version_max[8:12] = b"\xff\xff\xff\xff"
    rnd = bytes(os.urandom(len(good)))
    return {
        "empty": b"",
        "tiny": b"SHMDICT",
        "magic_only": good[:8],
        "header_only": good[:64],
        "zeros": bytes(len(good)),
        "zeros_1m": bytes(2**20),
        "random": rnd,
        "truncated_half": good[: len(good) // 2],
        "truncated_4k": good[:4096],
        "truncated_by_one_page": good[:-4096],
        "flipped_magic": bytes(flipped_magic),
        "flipped_magic_last_byte": bytes(flipped_magic7),
        "version_plus_one": bytes(version2),
        "version_zero": bytes(version0),
        "version_max": bytes(version_max),
        "text": b"hello, I am not a dict\n" * 100,
    }


BAD_IMAGE_KINDS = [
    "empty",
    "tiny",
    "magic_only",
    "header_only",
    "zeros",
    "zeros_1m",
    "random",
    "truncated_half",
    "truncated_4k",
    "truncated_by_one_page",
    "flipped_magic",
    "flipped_magic_last_byte",
    "version_plus_one",
    "version_zero",
    "version_max",
    "text",
]


def test_valid_image_copy_attaches(name):
    """A byte-for-byte copy of a closed dict's file attaches and holds its data (the control case)."""
    _write(name, _valid_image())
    with shmdict.get(name) as g:
        assert g["k7"] == "value 7" * 3
        assert len(g) == 50
        g.check()


@pytest.mark.parametrize("kind", BAD_IMAGE_KINDS)
def test_bad_file_is_corrupterror(name, kind):
    """A file that is not a shmdict of this layout raises CorruptError and is left unchanged."""
    data = _bad_images()[kind]
    _write(name, data)
    with pytest.raises(shmdict.CorruptError):
        run_with_alarm(shmdict.get, name)
    with pytest.raises(shmdict.CorruptError):
        run_with_alarm(shmdict.open, name, "64k")
    with pytest.raises(FileExistsError):
        shmdict.new(name, "64k")
    with open(dict_path(name), "rb") as f:
        assert f.read() == data


def run_with_alarm(fn, *args):
    from conftest import call_with_timeout

    return call_with_timeout(lambda: fn(*args), 10)


def test_directory_at_path_is_refused(name):
    """A directory where the file should be raises OSError or CorruptError."""
    os.mkdir(dict_path(name))
    with pytest.raises((OSError, shmdict.CorruptError)):
        shmdict.get(name)
    with pytest.raises((OSError, shmdict.CorruptError)):
        shmdict.open(name, "64k")
    with pytest.raises(OSError):
        shmdict.new(name, "64k")


def test_no_half_initialised_attach(name):
    """Processes racing get against new either find nothing or a complete dict."""

    def attacher() -> int:
        while True:
            try:
                g = shmdict.get(name)
            except FileNotFoundError:
                continue
            g.check()
            assert g.size == 2**20
            g.close()
            return 0

    for _ in range(5):
        pids = [start_child(attacher) for _ in range(3)]
        d = shmdict.new(name, "1m")
        results = [wait_child(p, 20) for p in pids]
        d.close()
        assert [r.exitcode for r in results] == [0, 0, 0], results


def test_open_race_all_end_on_one_dict(name):
    """Many processes calling open at once all share one dict."""
    n = 8
    ctx = multiprocessing.get_context("fork")
    for rnd in range(4):
        nm = f"{name}r{rnd}"
        barrier = ctx.Barrier(n)

        def opener(i: int, nm: str, barrier) -> int:
            barrier.wait()
            o = shmdict.open(nm, "1m")
            assert not o.owner
            o[f"p{i}"] = i
            o.incr("count", 1, init=0)
            barrier.wait()  # everyone has written: each must see all writes
            seen = {k: o[k] for k in o.get_keys() if k.startswith("p")}
            assert seen == {f"p{j}": j for j in range(n)}, seen
            assert o["count"] == n
            o.close()
            return 0

        pids = [start_child(opener, i, nm, barrier) for i in range(n)]
        results = [wait_child(p, 30) for p in pids]
        assert [r.exitcode for r in results] == [0] * n, results
        with shmdict.get(nm) as g:
            assert g["count"] == n
            g.check()
        shmdict.unlink(nm)


# ---- ownership and close ----------------------------------------------------------------


def test_owner_close_unlinks(name):
    """Closing the owner handle unlinks the name."""
    d = shmdict.new(name, "64k")
    assert os.path.exists(dict_path(name))
    d.close()
    assert not os.path.lexists(dict_path(name))
    with pytest.raises(FileNotFoundError):
        shmdict.get(name)


def test_owner_close_keeps_other_handles_working(name):
    """Closing the owner leaves attached handles working on the same data."""
    d = shmdict.new(name, "64k")
    g = shmdict.get(name)
    d["k"] = 1
    d.close()
    assert g["k"] == 1
    g["k"] = 2
    assert g["k"] == 2
    g.check()
    g.close()


def test_owner_close_never_unlinks_a_recreated_name(name):
    """An owner closing after its name was re-created elsewhere leaves the new dict alone."""
    d = shmdict.new(name, "64k")
    shmdict.unlink(name)
    other = shmdict.new(name, "64k")
    other["mine"] = 1
    d.close()
    assert os.path.exists(dict_path(name))
    with shmdict.get(name) as g:
        assert g["mine"] == 1
    other.close()


def test_non_owner_close_does_not_unlink(d, name):
    """Closing a get or open handle keeps the name."""
    shmdict.get(name).close()
    shmdict.open(name, "1m").close()
    assert os.path.exists(dict_path(name))


def test_owner_garbage_collection_unlinks(name):
    """A garbage-collected owner handle unlinks the name."""
    d = shmdict.new(name, "64k")
    d["k"] = 1
    del d
    gc.collect()
    assert not os.path.lexists(dict_path(name))


def test_non_owner_garbage_collection_keeps_name(d, name):
    """A garbage-collected non-owner handle keeps the name."""
    g = shmdict.get(name)
    del g
    gc.collect()
    assert os.path.exists(dict_path(name))
    d["k"] = 1
    assert d["k"] == 1


def test_close_is_idempotent(d, name):
    """close may be called any number of times."""
    d.close()
    d.close()
    assert d.closed
    g = shmdict.new(name, "64k")  # the name is free again
    g.close()
    g.close()


CLOSED_OPS = [
    ("get", lambda d: d.get("k")),
    ("set", lambda d: d.set("k", 1)),
    ("getitem", lambda d: d["k"]),
    ("setitem", lambda d: d.__setitem__("k", 1)),
    ("delitem", lambda d: d.__delitem__("k")),
    ("delete", lambda d: d.delete("k")),
    ("contains", lambda d: "k" in d),
    ("len", lambda d: len(d)),
    ("iter", lambda d: list(d)),
    ("incr", lambda d: d.incr("k", 1, init=0)),
    ("ttl", lambda d: d.ttl("k")),
    ("expire", lambda d: d.expire("k", 1)),
    ("flush_all", lambda d: d.flush_all()),
    ("get_keys", lambda d: d.get_keys()),
    ("check", lambda d: d.check()),
    ("keys", lambda d: list(d.keys())),
    ("items", lambda d: list(d.items())),
    ("pop", lambda d: d.pop("k", None)),
    ("setdefault", lambda d: d.setdefault("k", 1)),
    ("clear", lambda d: d.clear()),
    ("update", lambda d: d.update({"k": 1})),
    ("enter", lambda d: d.__enter__()),
]


@pytest.mark.parametrize(("op", "fn"), CLOSED_OPS, ids=[o for o, _ in CLOSED_OPS])
def test_ops_on_closed_handle_raise_valueerror(name, op, fn):
    """Every operation other than close on a closed handle raises ValueError."""
    d = shmdict.new(name, "64k")
    g = shmdict.get(name)
    g["k"] = 1
    g.close()
    with pytest.raises(ValueError):
        fn(g)
    assert d["k"] == 1  # the other handle is undisturbed
    d.close()
    with pytest.raises(ValueError):
        fn(d)


def test_context_manager_closes_and_unlinks(name):
    """Leaving a with block closes the handle; for the owner that unlinks the name."""
    with shmdict.new(name, "64k") as d:
        assert isinstance(d, shmdict.SharedDict)
        d["k"] = 1
        assert not d.closed
    assert d.closed
    assert not os.path.lexists(dict_path(name))


def test_context_manager_closes_on_error(name):
    """An exception leaving the with block still closes the handle and propagates."""
    with pytest.raises(RuntimeError):
        with shmdict.new(name, "64k") as d:
            raise RuntimeError("boom")
    assert d.closed
    assert not os.path.lexists(dict_path(name))


def test_non_owner_context_manager_keeps_name(d, name):
    """Leaving a with block on a non-owner keeps the name."""
    with shmdict.get(name) as g:
        g["k"] = 1
    assert g.closed
    assert d["k"] == 1


# ---- fork -----------------------------------------------------------------------------


def test_forked_child_close_never_unlinks(d, name):
    """A forked child closing its inherited owner handle does not unlink the name."""

    def child() -> int:
        d["child"] = 1
        d.close()
        return 0

    assert run_in_child(child).exitcode == 0
    assert os.path.exists(dict_path(name))
    assert d["child"] == 1


def test_forked_child_gc_never_unlinks(name):
    """A forked child garbage-collecting its owner handle does not unlink the name."""
    holder = {"d": shmdict.new(name, "64k")}

    def child() -> int:
        holder.pop("d")
        gc.collect()
        return 0

    assert run_in_child(child).exitcode == 0
    assert os.path.exists(dict_path(name))
    holder["d"].close()
    assert not os.path.lexists(dict_path(name))


def test_multiprocessing_fork_child_exit_never_unlinks(d, name):
    """A multiprocessing fork child that exits normally leaves the name in place."""
    ctx = multiprocessing.get_context("fork")
    p = ctx.Process(target=_mp_child_touch, args=(d,))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    assert os.path.exists(dict_path(name))
    assert d["mp"] == p.pid


def _mp_child_touch(sd):
    sd["mp"] = os.getpid()


def test_fork_parent_and_child_share(d):
    """A handle survives fork and both sides see each other's writes."""
    d["parent"] = "p"

    def child() -> int:
        assert d["parent"] == "p"
        d["child"] = "c"
        d.incr("n", 1, init=0)
        return 0

    assert run_in_child(child).exitcode == 0
    assert d["child"] == "c"
    assert d["n"] == 1
    d.check()


# ---- pickle -------------------------------------------------------------------------


def test_pickle_is_non_owner_reference(d, name):
    """A pickled handle loads as a non-owner attached to the same dict by name."""
    d["k"] = "v"
    p = pickle.loads(pickle.dumps(d))
    assert isinstance(p, shmdict.SharedDict)
    assert p is not d
    assert p.name == name
    assert p.owner is False
    assert p["k"] == "v"
    p["j"] = 1
    assert d["j"] == 1
    p.close()
    assert os.path.exists(dict_path(name))


def test_pickle_of_non_owner(d, name):
    """A pickled non-owner handle also loads as a non-owner."""
    g = shmdict.get(name)
    p = pickle.loads(pickle.dumps(g, protocol=pickle.HIGHEST_PROTOCOL))
    assert p.owner is False
    d["x"] = 1
    assert p["x"] == 1
    p.close()
    g.close()


def test_unpickle_after_unlink_is_filenotfounderror(d, name):
    """Unpickling a handle whose name is gone raises FileNotFoundError."""
    data = pickle.dumps(d)
    shmdict.unlink(name)
    with pytest.raises(FileNotFoundError):
        pickle.loads(data)


def _spawn_worker(sd, key):
    sd[key] = os.getpid()
    return sd.owner, sd.get("from_parent"), sd.incr("n", 1, init=0)


def test_spawn_worker_uses_pickled_handle(d, name):
    """A spawn-started worker receives a pickled handle and uses the same dict."""
    d["from_parent"] = "hello"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        owner, seen, n = pool.apply(_spawn_worker, (d, "spawned"))
    assert owner is False
    assert seen == "hello"
    assert n == 1
    assert d["spawned"] not in (None, os.getpid())
    assert os.path.exists(dict_path(name))

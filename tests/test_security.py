"""Security checks: permissions, names, symlinks, foreign files, sizes, a full
filesystem."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import struct
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from relutil import describe, fork, unique_name, wait

import shmdict
from shmdict import _lib

__all__ = ["shm_dir"]

NOBODY = 65534


def _path(directory: str, name: str) -> str:
    return os.path.join(directory, f"shmdict.{name}")


def _as_nobody(name: str, shared: bool = False) -> int:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    try:
        d = shmdict.get(name, shared=shared)
    except PermissionError:
        return 13
    d["visitor"] = 1
    return 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to another uid")
@pytest.mark.parametrize(("mode", "shared", "code"), [
    (0o600, False, 13), (0o660, False, 13), (0o666, False, 13), (0o600, True, 13), (0o666, True, 0)])
def test_other_user(shm_dir: str, mode: int, shared: bool, code: int) -> None:
    """Another uid gets PermissionError on a 0600 (or 0660) dict, and on a 0666 one unless it
    says the dict is shared (shared=True); then it can use it."""
    os.chmod(shm_dir, 0o755)  # the directory is not what stops them: the file mode is
    name = unique_name()
    with shmdict.new(name, "64k", mode=mode) as d:
        assert os.stat(_path(shm_dir, name)).st_mode & 0o777 == mode
        status = wait(fork(_as_nobody, name, shared))
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == code, describe(status)
        assert ("visitor" in d) == (code == 0)


def test_default_mode_is_0600(shm_dir: str) -> None:
    """A dict is created 0600 whatever the umask."""
    old = os.umask(0)
    try:
        with shmdict.new(unique_name(), "64k") as d:
            assert os.stat(_path(shm_dir, d.name)).st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


BAD_NAMES = ["", ".", "..", "../x", "a/b", "/abs", ".hidden", "-dash", "x" * 201, "a\x00b", "é", "a b", "a\n"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_cannot_escape(shm_dir: str, bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every name outside [A-Za-z0-9][A-Za-z0-9._-]{0,199} is refused by new, get, open and unlink."""
    inner = os.path.join(shm_dir, "inner")  # so the parent directory is private to this test too
    os.mkdir(inner)
    monkeypatch.setenv("SHMDICT_DIR", inner)
    before = set(os.listdir(inner)), set(os.listdir(shm_dir))
    for call in (lambda: shmdict.new(bad, "64k"), lambda: shmdict.get(bad),
                 lambda: shmdict.open(bad, "64k"), lambda: shmdict.unlink(bad)):
        with pytest.raises(ValueError):
            call()
    assert (set(os.listdir(inner)), set(os.listdir(shm_dir))) == before


@pytest.mark.parametrize("bad", [None, 1, b"name", ["x"]])
def test_name_types(bad: object) -> None:
    """A name that is not a str raises TypeError."""
    with pytest.raises(TypeError):
        shmdict.new(bad, "64k")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        shmdict.get(bad)  # type: ignore[arg-type]


def test_c_layer_refuses_slashes(shm_dir: str) -> None:
    """The C core refuses a name with a slash even if Python's check were bypassed."""
    p = _lib.ffi.new("shmdict_t **")
    for bad in (b"../evil", b"a/b", b""):
        assert _lib.lib.shmdict_create(shm_dir.encode(), bad, 1 << 16, 0o600, -1, 0, p) == _lib.lib.SHMDICT_EINVAL
        assert _lib.lib.shmdict_attach(shm_dir.encode(), bad, 0, -1, _lib.ffi.NULL, p) == _lib.lib.SHMDICT_EINVAL
    assert not os.path.exists(os.path.join(os.path.dirname(shm_dir), "shmdict.evil"))


def test_symlink_refused_on_create(shm_dir: str) -> None:
    """new() on a name that is a symlink raises FileExistsError and never writes through it."""
    target = os.path.join(shm_dir, "target")
    with open(target, "wb") as f:
        f.write(b"precious")
    name = unique_name()
    os.symlink(target, _path(shm_dir, name))
    with pytest.raises(FileExistsError):
        shmdict.new(name, "64k")
    dangling = unique_name()
    os.symlink(os.path.join(shm_dir, "nowhere"), _path(shm_dir, dangling))
    with pytest.raises(FileExistsError):
        shmdict.new(dangling, "64k")
    assert not os.path.exists(os.path.join(shm_dir, "nowhere"))
    with open(target, "rb") as f:
        assert f.read() == b"precious"


def test_symlink_refused_on_attach(shm_dir: str) -> None:
    """get() and open() refuse a name that is a symlink, even to a valid dict."""
    real = unique_name()
    with shmdict.new(real, "64k") as d:
        d["k"] = 1
        alias = unique_name()
        os.symlink(_path(shm_dir, real), _path(shm_dir, alias))
        with pytest.raises(OSError) as e:
            shmdict.get(alias)
        assert e.value.errno == errno.ELOOP
        with pytest.raises(OSError):
            shmdict.open(alias, "64k")
        assert os.path.islink(_path(shm_dir, alias))


def test_not_a_regular_file(shm_dir: str) -> None:
    """A directory or FIFO in the dict's place is refused without blocking."""
    a, b = unique_name(), unique_name()
    os.mkdir(_path(shm_dir, a))
    os.mkfifo(_path(shm_dir, b))
    with pytest.raises((OSError, shmdict.CorruptError)):
        shmdict.get(a)
    with pytest.raises((OSError, shmdict.CorruptError)):
        shmdict.get(b)


# header fields (layout.h): magic 0, layout_version 8, abi 24, endian 28
@pytest.mark.parametrize(("offset", "fmt", "value"), [
    (0, "8s", b"SHMDICT\x02"),
    (0, "8s", b"\x00" * 8),
    (8, "<I", 1),  # a fixed index before the arena
    (8, "<I", 2),  # a merge pass, unguarded pending words
    (8, "<I", 3),  # the format before lock-free readers (its writers would not mark them)
    (8, "<I", 4),  # the format before stripe locks (its writers would not take them)
    (8, "<I", 6),
    (8, "<I", 0),
    (24, "<I", 0xDEADBEEF),
    (28, "<I", 0x04030201),
])
def test_incompatible_layout_refused(shm_dir: str, offset: int, fmt: str, value: object) -> None:
    """A file stamped with another magic, layout version, ABI or byte order raises CorruptError."""
    name = unique_name()
    with shmdict.new(name, "64k") as d:
        d["k"] = "v"
        with open(_path(shm_dir, name), "r+b") as f:
            f.seek(offset)
            f.write(struct.pack(fmt, value))
        with pytest.raises(shmdict.CorruptError):
            shmdict.get(name)
        with pytest.raises(shmdict.CorruptError):
            shmdict.open(name, "64k")


def test_foreign_file_refused(shm_dir: str) -> None:
    """A file that is not a dict at all -- empty, short, or random -- raises CorruptError."""
    for n, content in enumerate([b"", b"hello", os.urandom(16384), b"\x00" * 65536]):
        name = f"foreign{n}"
        with open(_path(shm_dir, name), "wb") as f:
            f.write(content)
        with pytest.raises(shmdict.CorruptError):
            shmdict.get(name)


def test_absurd_sizes() -> None:
    """Sizes beyond the format's limit are ValueError before any system call."""
    for size in ("33g", "1000g", 2**63, 2**70, "99999999999999999999k"):
        with pytest.raises(ValueError):
            shmdict.new(unique_name(), size)


def test_larger_than_the_machine(shm_dir: str) -> None:
    """A size the tmpfs cannot hold fails with OSError(ENOSPC) and leaves nothing behind."""
    st = os.statvfs(shm_dir)
    size = st.f_blocks * st.f_frsize + (1 << 20)  # more than the whole filesystem: refused up front
    if size > _lib.lib.SHMDICT_MAX_SIZE_MB << 20:
        pytest.skip(f"the filesystem holds more than the format's maximum ({size} bytes)")
    before = os.listdir(shm_dir)
    with pytest.raises(OSError) as e:
        shmdict.new(unique_name(), size)
    assert e.value.errno == errno.ENOSPC
    assert os.listdir(shm_dir) == before


@contextlib.contextmanager
def tiny_tmpfs(size: str) -> Iterator[str | None]:
    """A freshly mounted tmpfs of the given size, or None if mounting is not allowed."""
    path = tempfile.mkdtemp(prefix="shmdict-tiny-")
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        r = None
    try:
        yield path if r is not None and r.returncode == 0 else None
    finally:
        if r is not None and r.returncode == 0:
            subprocess.run(["umount", "-l", path], capture_output=True, timeout=10)
        os.rmdir(path)


def test_full_tmpfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a full 1 MiB tmpfs new() raises OSError(ENOSPC), leaves no file, and a dict that fits still works."""
    with tiny_tmpfs("1m") as path:
        if path is None:
            pytest.skip("mounting a tmpfs is not allowed here (test_rlimit_fsize covers the failure path)")
        monkeypatch.setenv("SHMDICT_DIR", path)
        with pytest.raises(OSError) as e:
            shmdict.new(unique_name(), "2m")
        assert e.value.errno == errno.ENOSPC
        assert os.listdir(path) == []
        with shmdict.new("fits", "512k") as d:  # half the filesystem
            with pytest.raises(OSError) as e:
                shmdict.new("second", "768k")  # the rest cannot hold it
            assert e.value.errno == errno.ENOSPC
            d["still"] = "works"
            assert d["still"] == "works"
            assert os.listdir(path) == ["shmdict.fits"]


def _create_under_fsize_limit(name: str) -> int:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        shmdict.new(name, "4m")
    except OSError as e:
        return 10 if e.errno == errno.EFBIG else 11
    return 12


def test_rlimit_fsize(shm_dir: str) -> None:
    """A creation that the file-size limit stops raises OSError (EFBIG) and leaves no file."""
    name = unique_name()
    status = wait(fork(_create_under_fsize_limit, name))
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 10, describe(status)
    assert not os.path.exists(_path(shm_dir, name))

"""The ``shmdict`` command: inspect and edit dicts from a shell.

``shmdict ls`` lists the dicts in the directory (``/dev/shm`` or
``$SHMDICT_DIR``, or ``--dir``) with their size now (grown included), entries,
use, creator PID and whether anything still maps them; the other commands act
on one dict by name (``resize`` grows one while processes use it). Output is
an aligned table for people, or JSON with ``--json`` (one object per command;
``keys`` prints a JSON list, ``watch`` one JSON object per line).

Exit codes, for scripts:

- 0: success;
- 1: the dict or the key does not exist (``get``/``ttl``/``expire``/``del``/
  ``incr`` without ``--init`` on a missing key, or any command on a missing dict);
- 2: usage error: unknown command or option, bad name, size, value or number
  (``resize`` to a size smaller than the dict's: a dict never shrinks);
- 3: the operation failed: the dict is corrupt or full, the stored value is
  not a number, a number overflowed, a system call failed, the dict's file
  is not trusted (owned by another user, or writable by others: see
  ``--shared``), its lock was not acquired within ``--lock-timeout``, or
  ``rm`` refused because processes still map the dict.

Errors are one line on stderr: ``shmdict: error: ...``. Output piped into a
command that stops reading early (``shmdict ls | head -1``) ends the command
quietly with exit code 0.

``set --type bytes`` reads VALUE with the escapes of a Python bytes literal
(``\\x00``, ``\\n``, ``\\t``, ``\\\\``, octal ``\\0``...), so any byte can be typed;
other characters are stored as their UTF-8 bytes.

.. versionadded:: 0.1
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import re
import sys
from typing import Any, Iterable, NoReturn, Optional, Sequence

import shmdict
from shmdict import _lib, _timeouts
from shmdict._dict import _dir, _path

__all__ = ["main"]

EXIT_OK, EXIT_NOTFOUND, EXIT_USAGE, EXIT_FAIL = 0, 1, 2, 3
PREFIX = "shmdict."


class _Exit(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code


def _fail(code: int, msg: str) -> NoReturn:
    raise _Exit(code, msg)


# ---- helpers ------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    """Whether a process with this PID exists in our PID namespace."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _mappers(paths: Iterable[str]) -> dict[str, list[int]]:
    """PIDs (other than ours) that map each path, from /proc/*/maps.

    A mapping is matched by device and inode, not by name: a dict is built
    under a temporary name and linked into place, so /proc shows the
    temporary name as "(deleted)". Processes whose maps we may not read (other
    users', when not root) are not seen.
    """
    ids: dict[tuple[int, int, int], str] = {}
    found: dict[str, list[int]] = {}
    for p in paths:
        found[p] = []
        try:
            st = os.stat(p, follow_symlinks=False)
        except OSError:
            continue
        ids[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)] = p
    me = os.getpid()
    try:
        pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == me or not ids:
            continue
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                seen = set()
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) < 5 or parts[4] == b"0":
                        continue
                    major, _, minor = parts[3].partition(b":")
                    key = (int(major, 16), int(minor, 16), int(parts[4]))
                    if key in ids and key not in seen:
                        seen.add(key)
                        found[ids[key]].append(pid)
        except (OSError, ValueError):
            continue
    return found


# How every command attaches: --shared and --lock-timeout (set by main()).
_ATTACH: dict[str, Any] = {}


def _get(name: str) -> shmdict.SharedDict:
    return shmdict.get(name, **_ATTACH)


def _open(name: str) -> shmdict.SharedDict:
    try:
        return _get(name)
    except FileNotFoundError:
        _fail(EXIT_NOTFOUND, f"no dict named {name!r} in {_dir()}")


def _summary(name: str, d: shmdict.SharedDict, mappers: list[int]) -> dict[str, Any]:
    info = d._info()
    cap = info["capacity"] or 1
    pid = info["creator_pid"]
    return {
        "name": name,
        "size": info["size"],
        "file_size": info["file_size"],
        "capacity": info["capacity"],
        "keys": len(d),
        "records": info["count"],
        "used_bytes": info["used_bytes"],
        "free_bytes": info["free_bytes"],
        "use_pct": round(100.0 * info["used_bytes"] / cap, 1),
        "index_slots": info["index_cap"],
        "recoveries": info["recoveries"],
        "creator_pid": pid,
        "creator_alive": _pid_alive(pid),
        "mapped_by": mappers,
        "layout_version": info["layout_version"],
    }


def _human_size(n: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}".replace(".0", "")
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    return v


def _type_name(v: Any) -> str:
    return type(v).__name__


def _emit(args: argparse.Namespace, obj: Any, human: str) -> None:
    print(json.dumps(obj) if args.json else human)


def _number(s: str, what: str) -> int | float:
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            _fail(EXIT_USAGE, f"{what} must be a number, not {s!r}")


# The escapes of a Python bytes literal (a backslash-newline continues the line).
_SIMPLE_ESCAPES = {"\\": b"\\", "'": b"'", '"': b'"', "a": b"\a", "b": b"\b", "f": b"\f",
                   "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v", "\n": b""}
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.?)", re.S)


def _unescape(s: str) -> bytes:
    """VALUE of ``--type bytes``: Python bytes-literal escapes decoded, the rest UTF-8.

    An unknown or incomplete escape (``\\q``, ``\\x4``, a trailing backslash) is
    a usage error rather than kept literally, so a typo never stores bytes the
    user did not mean.
    """
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(s):
        out += os.fsencode(s[pos : m.start()])
        esc = m.group(1)
        if esc[:1] == "x" and len(esc) == 3:
            out.append(int(esc[1:], 16))
        elif esc[:1].isdigit() and esc[0] in "01234567":
            code = int(esc, 8)
            if code > 0o377:
                raise ValueError(f"octal escape \\{esc} is larger than one byte (\\377)")
            out.append(code)
        elif esc in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[esc]
        else:
            shown = "a trailing \\" if not esc else f"\\{esc}"
            raise ValueError(f"{shown} is not a bytes escape (use \\xHH, \\n, \\t, \\\\, ...)")
        pos = m.end()
    out += os.fsencode(s[pos:])
    return bytes(out)


# ``set`` without --type: a number written the way Python and ``incr`` write it
# is stored as that number, so ``set d n 5`` then ``incr d n`` works. Leading
# zeros, a sign of +, spaces, "inf"/"nan" and anything else stay a str (a zip
# code such as 01234 is not a number); --type str stores a number as text.
_AUTO_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_AUTO_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)")


def _auto(s: str) -> shmdict.Value:
    if _AUTO_INT.fullmatch(s) and -(2**63) <= int(s) < 2**63:
        return int(s)
    if _AUTO_FLOAT.fullmatch(s) and math.isfinite(float(s)):
        return float(s)
    return s


def _value(s: str, typ: str) -> shmdict.Value:
    try:
        if typ == "auto":
            return _auto(s)
        if typ == "str":
            return s
        if typ == "int":
            return int(s)
        if typ == "float":
            return float(s)
        if typ == "bytes":
            try:
                return _unescape(s)
            except ValueError as e:
                _fail(EXIT_USAGE, f"{s!r} is not a valid bytes value: {e}")
        if typ == "bool":
            low = s.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
    except ValueError:
        pass
    _fail(EXIT_USAGE, f"{s!r} is not a valid {typ}")


# ---- commands -------------------------------------------------------------------


def _names() -> list[str]:
    try:
        entries = os.listdir(_dir())
    except FileNotFoundError:
        _fail(EXIT_NOTFOUND, f"directory {_dir()} does not exist")
    return sorted(e[len(PREFIX) :] for e in entries if e.startswith(PREFIX) and len(e) > len(PREFIX))


def _peek(name: str, mappers: list[int]) -> dict[str, Any]:
    """ls's row for one dict, from its header alone: attached with the same
    trust check as every command, read without taking the dict's lock
    (shmdict_peek), so a stopped or stuck lock holder never delays it."""
    from shmdict._dict import _trust, _untrusted

    path = _path(_dir(), name)
    flags, also = _trust(_ATTACH.get("shared", False))
    p = _lib.ffi.new("shmdict_t **")
    why = _lib.ffi.new("shmdict_out_t *")
    rc = _lib.lib.shmdict_attach(_dir().encode(), name.encode(), flags, also, why, p)
    if rc == _lib.lib.SHMDICT_EUNTRUSTED:
        raise _untrusted(path, int(why.i), int(why.len))
    if rc:
        _lib.raise_rc(rc, path=path)
    h = _lib.ffi.gc(p[0], _lib.lib.shmdict_close)
    info = _lib.ffi.new("shmdict_info_t *")
    _lib.check(_lib.lib.shmdict_peek(h, info))
    cap = int(info.capacity) or 1
    pid = int(info.creator_pid)
    return {
        "name": name,
        "size": int(info.size),
        "file_size": int(info.file_size),
        "capacity": int(info.capacity),
        "keys": int(info.count),  # records: expired ones not reclaimed yet count too (no lock, no walk)
        "records": int(info.count),
        "used_bytes": int(info.used_bytes),
        "free_bytes": int(info.free_bytes),
        "use_pct": round(100.0 * int(info.used_bytes) / cap, 1),
        "index_slots": int(info.index_cap),
        "recoveries": int(info.recoveries),
        "creator_pid": pid,
        "creator_alive": _pid_alive(pid),
        "mapped_by": mappers,
        "layout_version": int(info.layout_version),
    }


def cmd_ls(args: argparse.Namespace) -> int:
    names = _names()
    mappers = _mappers(_path(_dir(), n) for n in names)
    rows = []
    for n in names:
        try:
            rows.append(_peek(n, mappers[_path(_dir(), n)]))
        except (OSError, ValueError, shmdict.Error) as e:
            rows.append({"name": n, "error": str(e)})
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["name"], "-", "-", "-", "-", "-", "-", f"error: {r['error']}"])
            continue
        alive = "alive" if r["creator_alive"] else "dead"
        orphan = not r["creator_alive"] and not r["mapped_by"]
        table.append([r["name"], _human_size(r["size"]), r["keys"], f"{r['use_pct']}%",
                      r["creator_pid"], alive, len(r["mapped_by"]), "orphan" if orphan else ""])
    print(_table(table, ["NAME", "SIZE", "KEYS", "USED", "CREATOR", "STATE", "MAPPED", "NOTE"]))
    return EXIT_OK


# In `stats`, each of these follows the field named: the size and its limit
# together, then the index/arena split, then the free space and its holes.
_STATS_NEAR = {"file_size": ("max_size", "growths"), "capacity": ("index_bytes",),
               "free_bytes": ("hole_bytes", "fragmentation")}


STATS_LOCK_TIMEOUT = 1.0
"""stats waits this long for the dict's lock unless --lock-timeout says
otherwise: a diagnostic must answer promptly, and a holder that keeps the
lock this long is itself the diagnosis (the error names it)."""


def cmd_stats(args: argparse.Namespace) -> int:
    _ATTACH.setdefault("lock_timeout", STATS_LOCK_TIMEOUT)
    with _open(args.name) as d:
        s = _summary(args.name, d, _mappers([_path(_dir(), args.name)])[_path(_dir(), args.name)])
        st = d.stats()  # hits, misses, evictions, lock waits, growths...
    out: dict[str, Any] = {}
    near = {f for fs in _STATS_NEAR.values() for f in fs}
    for k, v in s.items():
        out[k] = v
        for f in _STATS_NEAR.get(k, ()):
            out[f] = st[f]
    out.update((k, v) for k, v in st.items() if k not in out and k not in near)
    out["path"] = _path(_dir(), args.name)
    rows = [[k, "none" if v is None else v] for k, v in out.items()]  # max_size None: no automatic growth
    _emit(args, out, "\n".join(_table(rows, ["FIELD", "VALUE"]).splitlines()[1:]))
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    with _open(args.name) as d:
        keys = sorted(d.get_keys(match=args.pattern))  # the glob is matched in C, under the lock
    if args.limit:
        keys = keys[: args.limit]
    _emit(args, keys, "\n".join(keys))
    return EXIT_OK


def cmd_get(args: argparse.Namespace) -> int:
    with _open(args.name) as d:
        v = d.get(args.key)
        ttl = d.ttl(args.key) if v is not None else None
    if v is None:
        _fail(EXIT_NOTFOUND, f"no key {args.key!r} in {args.name!r}")
    obj = {"key": args.key, "type": _type_name(v), "value": _jsonable(v), "ttl": ttl}
    _emit(args, obj, repr(v) if isinstance(v, bytes) else str(v))
    return EXIT_OK


def cmd_set(args: argparse.Namespace) -> int:
    v = _value(args.value, args.type)
    with _open(args.name) as d:
        d.set(args.key, v, args.ttl)
    _emit(args, {"key": args.key, "type": _type_name(v), "value": _jsonable(v)}, "OK")
    return EXIT_OK


def cmd_del(args: argparse.Namespace) -> int:
    with _open(args.name) as d:
        n = sum(d.delete(k) for k in args.keys)
    if not n:
        _fail(EXIT_NOTFOUND, f"none of the keys exist in {args.name!r}")
    _emit(args, {"deleted": n}, str(n))
    return EXIT_OK


def cmd_incr(args: argparse.Namespace) -> int:
    delta = _number(args.delta, "DELTA")
    init = None if args.init is None else _number(args.init, "--init")
    with _open(args.name) as d:
        try:
            v = d.incr(args.key, delta, init=init, init_ttl=args.init_ttl)
        except KeyError:
            _fail(EXIT_NOTFOUND, f"no key {args.key!r} in {args.name!r} (use --init to create it)")
        except TypeError:
            held = d.get(args.key)
            _fail(EXIT_FAIL, f"{args.key!r} in {args.name!r} holds the {_type_name(held)} {held!r}, not a number; "
                              f"store a number with `shmdict set {args.name} {args.key} VALUE` (VALUE such as 5 or 0.5)")
    _emit(args, {"key": args.key, "value": v}, str(v))
    return EXIT_OK


def cmd_ttl(args: argparse.Namespace) -> int:
    with _open(args.name) as d:
        t = d.ttl(args.key)
    if t is None:
        _fail(EXIT_NOTFOUND, f"no key {args.key!r} in {args.name!r}")
    _emit(args, {"key": args.key, "ttl": t}, "never" if t == 0 else f"{t:.3f}")
    return EXIT_OK


def cmd_expire(args: argparse.Namespace) -> int:
    with _open(args.name) as d:
        ok = d.expire(args.key, args.seconds)
    if not ok:
        _fail(EXIT_NOTFOUND, f"no key {args.key!r} in {args.name!r}")
    _emit(args, {"key": args.key, "ttl": max(args.seconds, 0)}, "OK")
    return EXIT_OK


def cmd_flush(args: argparse.Namespace) -> int:
    if not args.yes:
        _fail(EXIT_USAGE, f"flush deletes every key of {args.name!r}: add --yes")
    with _open(args.name) as d:
        n = len(d)
        d.flush_all()
    _emit(args, {"flushed": n}, f"flushed {n} keys")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    with _open(args.name) as d:
        d.check()
    _emit(args, {"name": args.name, "ok": True}, "ok")
    return EXIT_OK


def cmd_new(args: argparse.Namespace) -> int:
    try:
        mode = int(args.mode, 8)
    except ValueError:
        _fail(EXIT_USAGE, f"--mode must be octal, such as 600, not {args.mode!r}")
    try:
        d = shmdict.new(args.name, args.size, mode=mode, group=args.group, evict=args.evict,
                        max_size=args.max_size,
                        lock_timeout=_ATTACH.get("lock_timeout", shmdict.DEFAULT_LOCK_TIMEOUT))
    except FileExistsError:
        _fail(EXIT_FAIL, f"a dict named {args.name!r} already exists in {_dir()}")
    # The dict outlives this command: drop ownership so closing does not unlink it.
    if d._finalizer is not None:
        d._finalizer.detach()
    d._owner_pid, d._finalizer = 0, None
    size = d.size
    d.close()
    limit = None if args.max_size is None else _lib.parse_size(args.max_size)
    grows = f", grows to {limit} bytes when full" if limit else ""
    _emit(args, {"name": args.name, "size": size, "max_size": limit, "path": _path(_dir(), args.name)},
          f"created {args.name} ({size} bytes{grows})")
    return EXIT_OK


def cmd_resize(args: argparse.Namespace) -> int:
    if args.size is None and args.max_size is None:
        _fail(EXIT_USAGE, "resize needs SIZE, --max-size, or both")
    # Both checked before anything changes: a bad --max-size must not leave a grown dict.
    size = None if args.size is None else _lib.parse_size(args.size)
    limit = None if args.max_size is None else _lib.parse_size(args.max_size)
    with _open(args.name) as d:
        old = d.size
        if size is not None and size < old:
            _fail(EXIT_USAGE, f"{args.name!r} is {old} bytes now, more than {args.size!r}: a dict never shrinks")
        if limit is not None and limit < max(old, size or 0):
            _fail(EXIT_USAGE, f"--max-size {args.max_size!r} is smaller than the size of {args.name!r} "
                              f"({max(old, size or 0)} bytes)")
        if size is not None:
            d.resize(size)  # ValueError if another process grew it past SIZE meanwhile
        if limit is not None:
            _lib.check(_lib.lib.shmdict_set_max_size(d._handle(), limit))
        new = d.size
    obj: dict[str, Any] = {"name": args.name, "old_size": old, "size": new}
    human = f"resized {args.name}: {old} -> {new} bytes" if new != old else f"{args.name} stays {new} bytes"
    if args.max_size is not None:
        obj["max_size"] = limit
        human += f"; grows to {limit} bytes when full"
    _emit(args, obj, human)
    return EXIT_OK


def _unlink(name: str) -> None:
    try:
        shmdict.unlink(name)
    except FileNotFoundError:
        _fail(EXIT_NOTFOUND, f"no dict named {name!r} in {_dir()}")


def cmd_rm(args: argparse.Namespace) -> int:
    if args.orphans:
        if args.names:
            _fail(EXIT_USAGE, "rm --orphans takes no names")
        names = _names()
        mappers = _mappers(_path(_dir(), n) for n in names)
        orphans = []
        for n in names:
            try:
                with _get(n) as d:
                    pid = d._info()["creator_pid"]
            except (OSError, ValueError, shmdict.Error):
                continue  # not ours to judge: leave unreadable files alone
            if not _pid_alive(pid) and not mappers[_path(_dir(), n)]:
                orphans.append(n)
        if not args.yes:  # a dry run: the list, for a person to judge
            _emit(args, {"orphans": orphans, "removed": []},
                  "\n".join([f"would remove {n}" for n in orphans] + ["(add --yes to remove them)"])
                  if orphans else "no orphans")
            return EXIT_OK
        removed = []
        for n in orphans:
            try:
                shmdict.unlink(n)
            except FileNotFoundError:
                continue  # removed meanwhile by someone else
            removed.append(n)
        _emit(args, {"orphans": orphans, "removed": removed},
              "\n".join(f"removed {n}" for n in removed) or "no orphans")
        return EXIT_OK
    if not args.names:
        _fail(EXIT_USAGE, "rm needs NAME... or --orphans")
    if args.yes:
        _fail(EXIT_USAGE, "--yes goes with --orphans; rm NAME... removes without asking")
    for n in args.names:
        shmdict._dict._check_name(n)
    if not args.force:
        mappers = _mappers(_path(_dir(), n) for n in args.names)
        for n in args.names:
            if not os.path.lexists(_path(_dir(), n)):
                _fail(EXIT_NOTFOUND, f"no dict named {n!r} in {_dir()}")
            if mappers[_path(_dir(), n)]:
                pids = " ".join(map(str, mappers[_path(_dir(), n)]))
                _fail(EXIT_FAIL, f"{n!r} is mapped by pid {pids}; a later open would create a new dict: use --force")
    for n in args.names:
        _unlink(n)
    _emit(args, {"removed": list(args.names)}, "\n".join(f"removed {n}" for n in args.names))
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    with _open(args.name) as d:
        try:
            events = d.watch(args.pattern, timeout=args.timeout)
            for ev in events:
                if args.json:
                    print(json.dumps({"op": ev.op, "key": ev.key}), flush=True)
                else:
                    print(f"{ev.op}\t{'' if ev.key is None else ev.key}", flush=True)
        except ValueError as e:  # no event ring (created with events=0)
            _fail(EXIT_FAIL, str(e))
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from shmdict import demo

    demo.main()
    return EXIT_OK


# ---- snapshots: dump NAME FILE / load NAME FILE --------------------------------------


def _target(name: str) -> Any:
    """A dict by name, or a Redis dict by URL (``redis://...``): snapshots move
    between the two engines."""
    if "://" in name:
        return shmdict.connect(name)
    return _open(name)


def _snapshot_report(args: argparse.Namespace, obj: dict[str, Any], human: str) -> None:
    # `dump NAME -` writes the snapshot itself to stdout: the report goes to stderr.
    stream = sys.stderr if args.command == "dump" and args.file == "-" else sys.stdout
    print(json.dumps(obj) if args.json else human, file=stream)


def cmd_dump(args: argparse.Namespace) -> int:
    with _target(args.name) as d:
        if args.file == "-":
            n = d.dump(sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            n = d.dump(args.file)
    _snapshot_report(args, {"name": args.name, "file": args.file, "items": n},
                     f"dumped {n} items of {args.name} to {args.file}")
    return EXIT_OK


def cmd_load(args: argparse.Namespace) -> int:
    with _target(args.name) as d:
        n = d.load(sys.stdin.buffer if args.file == "-" else args.file)
    _snapshot_report(args, {"name": args.name, "file": args.file, "items": n},
                     f"loaded {n} items into {args.name} from {args.file}")
    return EXIT_OK


def cmd_salvage(args: argparse.Namespace) -> int:
    n, refused = shmdict.salvage(args.name, args.file, shared=_ATTACH.get("shared", False))
    _snapshot_report(args, {"name": args.name, "file": args.file, "items": n, "refused": refused},
                     f"salvaged {n} items of {args.name} to {args.file}"
                     + (f" ({refused} damaged records left out)" if refused else ""))
    return EXIT_OK


def cmd_repair(args: argparse.Namespace) -> int:
    done = shmdict.repair(args.name, force=args.force, shared=_ATTACH.get("shared", False))
    human = f"re-initialised the lock of {args.name}" if done else f"the lock of {args.name} was usable"
    print(json.dumps({"name": args.name, "repaired": done}) if args.json else human)
    return EXIT_OK


def _add_snapshot_commands(add: Any) -> None:
    sp = add("dump", cmd_dump, "write a snapshot of every live item to FILE ('-': stdout)")
    sp.add_argument("name", help="a dict name, or a redis:// URL")
    sp.add_argument("file")
    sp = add("load", cmd_load, "store the items of a snapshot FILE ('-': stdin); other keys are kept")
    sp.add_argument("name", help="a dict name, or a redis:// URL")
    sp.add_argument("file")
    sp = add("salvage", cmd_salvage, "write every item still readable in a corrupt dict to a snapshot FILE, "
                                     "without its lock and without changing it")
    sp.add_argument("name")
    sp.add_argument("file")
    sp = add("repair", cmd_repair, "re-initialise a dict's lock that can never be taken again "
                                   "(safe while processes stay attached)")
    sp.add_argument("name")
    sp.add_argument("--force", action="store_true",
                    help="also when the lock word names an owner thread that does not exist "
                         "(all processes in this PID namespace)")


# ---- parser ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts")
    common.add_argument("--dir", default=argparse.SUPPRESS, help="directory of the dicts (default $SHMDICT_DIR or /dev/shm)")
    common.add_argument("--shared", nargs="?", const=True, default=argparse.SUPPRESS, metavar="USER",
                        help="trust a dict shared between users: writable by its group or others, "
                             "and (with USER, a name or uid) owned by USER")
    common.add_argument("--lock-timeout", default=argparse.SUPPRESS, metavar="SECONDS",
                        help=f"wait at most this long for a dict's lock ('none': no bound; "
                             f"default {shmdict.DEFAULT_LOCK_TIMEOUT:g})")

    p = argparse.ArgumentParser(prog="shmdict", description="Inspect and edit shmdict shared-memory dicts.",
                                parents=[common],
                                epilog="exit codes: 0 ok, 1 dict or key not found, 2 usage error, 3 operation failed")
    p.add_argument("--version", action="version", version=f"shmdict {shmdict.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Any, help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    add("ls", cmd_ls, "list dicts: size now, records, use, creator PID and whether it is alive "
        "(read from each header without the dict's lock: never waits)")
    add("stats", cmd_stats, "every counter of one dict: sizes and growth, index/arena split, fragmentation, hits... "
        f"(waits at most {STATS_LOCK_TIMEOUT:g} s for the dict's lock unless --lock-timeout is given)").add_argument("name")
    sp = add("keys", cmd_keys, "list live keys, optionally matching a glob PATTERN")
    sp.add_argument("name")
    sp.add_argument("pattern", nargs="?")
    sp.add_argument("--limit", type=int, default=0, help="print at most N keys")
    sp = add("get", cmd_get, "print the value of KEY")
    sp.add_argument("name")
    sp.add_argument("key")
    sp = add("set", cmd_set, "store VALUE under KEY")
    sp.add_argument("name")
    sp.add_argument("key")
    sp.add_argument("value")
    sp.add_argument("--type", choices=["auto", "str", "int", "float", "bool", "bytes"], default="auto",
                    help="type to store VALUE as. Default auto: an int or float written plainly (5, -3, 0.25, "
                         "1e6) is stored as that number, anything else (01234, inf, text) as str; for bytes, "
                         "VALUE takes the escapes of a Python bytes literal: \\x00, \\n, \\t, \\\\ ...")
    sp.add_argument("--ttl", type=float, default=0, help="expire after this many seconds")
    sp = add("del", cmd_del, "delete keys; exit 1 if none existed")
    sp.add_argument("name")
    sp.add_argument("keys", nargs="+", metavar="key")
    sp = add("incr", cmd_incr, "add DELTA (default 1) to a number, atomically")
    sp.add_argument("name")
    sp.add_argument("key")
    sp.add_argument("delta", nargs="?", default="1")
    sp.add_argument("--init", help="create a missing key with this value first")
    sp.add_argument("--init-ttl", type=float, default=None, help="TTL of a key created by --init")
    sp = add("ttl", cmd_ttl, "remaining seconds of KEY ('never' if it does not expire)")
    sp.add_argument("name")
    sp.add_argument("key")
    sp = add("expire", cmd_expire, "set KEY to expire in SECONDS (<= 0: never)")
    sp.add_argument("name")
    sp.add_argument("key")
    sp.add_argument("seconds", type=float)
    sp = add("flush", cmd_flush, "delete every key")
    sp.add_argument("name")
    sp.add_argument("--yes", action="store_true", help="really delete everything")
    sp = add("new", cmd_new, "create a dict of SIZE bytes (e.g. 64m); it stays until rm")
    sp.add_argument("name")
    sp.add_argument("size")
    sp.add_argument("--mode", default="600", help="file permissions, octal, read/write bits only (default 600)")
    sp.add_argument("--group", default=None, help="the file's group (a name or gid), e.g. with --mode 660")
    sp.add_argument("--evict", action="store_true", help="evict old items when full instead of failing")
    sp.add_argument("--max-size", default=None, metavar="SIZE",
                    help="when full, grow itself (doubling, up to SIZE bytes) before evicting or failing")
    sp = add("resize", cmd_resize, "grow a dict to SIZE bytes while processes use it; a dict never shrinks")
    sp.add_argument("name")
    sp.add_argument("size", nargs="?", help="the new size (e.g. 128m), at least the size now")
    sp.add_argument("--max-size", default=None, metavar="SIZE",
                    help="set the dict's automatic-growth limit: when full, it grows up to SIZE bytes")
    sp = add("rm", cmd_rm, "remove dicts by name, or every orphan")
    sp.description = (
        "Remove dicts by name, or list the orphans (dicts whose creator is dead and that no "
        "process maps) and, with --yes, remove them. An orphan is not always garbage: the dict "
        "of an application that is stopped right now (a web site that is down, a cron job "
        "between runs) looks exactly the same and would lose its data, so read the list first.")
    sp.add_argument("names", nargs="*", metavar="name")
    sp.add_argument("--orphans", action="store_true",
                    help="list every dict whose creator is dead and that no process maps; remove them with --yes")
    sp.add_argument("--yes", action="store_true", help="with --orphans: really remove the listed dicts")
    sp.add_argument("--force", action="store_true", help="remove even if processes still map it")
    sp = add("watch", cmd_watch, "print changes (op and key) as they happen, until Ctrl-C or --timeout")
    sp.add_argument("name")
    sp.add_argument("pattern", nargs="?", default="*", help="glob the keys must match (default *)")
    sp.add_argument("--timeout", type=float, default=None, help="stop after this many seconds without a change")
    add("check", cmd_check, "verify the whole table; exit 3 if corrupt").add_argument("name")
    add("demo", cmd_demo, "run the multi-process counter demo")
    _add_snapshot_commands(add)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``shmdict`` command; returns the exit code.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0, 1 (not found), 2 (usage) or 3 (operation failed).

    .. versionadded:: 0.1
    """
    parser = _parser()
    args = parser.parse_args(argv)
    args.json = getattr(args, "json", False)
    if getattr(args, "dir", None):
        os.environ["SHMDICT_DIR"] = args.dir
    try:
        _ATTACH.clear()
        if getattr(args, "shared", None) is not None:
            _ATTACH["shared"] = args.shared
        lt = getattr(args, "lock_timeout", None)
        if lt is not None:
            try:
                _ATTACH["lock_timeout"] = None if lt.lower() == "none" else _timeouts.check(float(lt), "--lock-timeout")
            except ValueError:
                _fail(EXIT_USAGE, f"--lock-timeout must be seconds or 'none', not {lt!r}")
        rc = int(args.fn(args))
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return rc
    except BrokenPipeError:
        # The reader went away (`shmdict ls | head -1`): it has all it wanted.
        # Point stdout at /dev/null so the interpreter's final flush is quiet too.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        return EXIT_OK
    except _Exit as e:
        code, msg = e.code, str(e)
    except KeyError as e:
        code, msg = EXIT_NOTFOUND, f"no key {e.args[0]!r}"
    except FileNotFoundError as e:
        code, msg = EXIT_NOTFOUND, f"{e.strerror}: {e.filename}" if e.filename else str(e)
    except (shmdict.Error, TypeError, OverflowError, MemoryError) as e:
        code, msg = EXIT_FAIL, f"{type(e).__name__}: {e}"
    except ValueError as e:  # bad name, size, key or number (CorruptError is caught above)
        code, msg = EXIT_USAGE, str(e)
    except OSError as e:
        code, msg = EXIT_FAIL, str(e)
    print(f"shmdict: error: {msg}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())

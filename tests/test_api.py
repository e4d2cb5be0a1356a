"""The API is defined once (shmdict/_api.py) and both engines follow it.

Checked on the classes, without opening a dict: every method of the contract
exists on ``SharedDict`` (whichever base binding is in use: the C type, or
PureBase with SHMDICT_PURE=1) and on ``RedisDict`` -- and every method of
the lock contract on ``NamedLock`` and ``RedisLock`` -- with a compatible
signature, and its docstring is the contract's text -- followed, at most, by
a note of that engine's own -- so the engines cannot drift apart.
"""

from __future__ import annotations

import inspect
import pydoc
from typing import Any

import pytest

from shmdict import NamedLock, SharedDict, _api
from shmdict._api import DictAPI, LockAPI
from shmdict._pure import PureBase
from shmdict._redis import RedisDict, RedisLock

ENGINES = [SharedDict, RedisDict]
# What each engine implements: the dict, and the lock that lock() returns.
IMPLEMENTS = {SharedDict: DictAPI, RedisDict: DictAPI, NamedLock: LockAPI, RedisLock: LockAPI}
# Public names that only one engine has (what its storage makes possible).
ONLY = {
    SharedDict: {"capacity", "check", "free_space", "lock_timeout", "salvage"},
    RedisDict: {"client", "url"},
    NamedLock: set(),
    RedisLock: {"extend"},  # a Redis lock has a lease; a kernel lock needs none
}
# What both inherit unchanged from collections.abc.MutableMapping.
MIXINS = {"keys", "popitem", "update"}
CONTRACT = _api.names()
PUBLIC = [n for n in CONTRACT if not n.startswith("_")]
CASES = [
    pytest.param(cls, name, id=f"{cls.__name__}.{name}") for cls, api in IMPLEMENTS.items() for name in _api.names(api)
]


def public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def doc_of(cls: type, name: str) -> str:
    attr = inspect.getattr_static(cls, name)
    return (attr.__doc__ if isinstance(attr, property) else getattr(cls, name).__doc__) or ""


def is_c_slot(cls: type, name: str) -> bool:
    """A dunder the C base type implements as a slot (its __doc__ is CPython's)."""
    attr = inspect.getattr_static(cls, name)
    return type(attr).__name__ in ("wrapper_descriptor", "slot wrapper")


def signature(cls: type, name: str) -> inspect.Signature:
    fn = getattr(cls, name)
    try:
        return inspect.signature(fn)
    except ValueError:  # a C method without a text signature (pop): it mirrors PureBase's
        assert type(fn).__name__ == "method_descriptor", name
        return inspect.signature(getattr(PureBase, name))


def test_engines_expose_the_same_public_names():
    for cls in ENGINES:
        assert public(cls) - ONLY[cls] - MIXINS == set(PUBLIC), cls.__name__
    assert set(PUBLIC) <= public(SharedDict) & public(RedisDict)
    for cls in (NamedLock, RedisLock):
        assert public(cls) - ONLY[cls] == {n for n in _api.names(LockAPI) if not n.startswith("_")}, cls


@pytest.mark.parametrize(("cls", "name"), CASES)
def test_docstring_is_the_contracts(cls: type, name: str):
    """help(Engine.name) shows the contract's text, then any engine note."""
    if is_c_slot(cls, name):
        pytest.skip("a slot of the C type: CPython fixes its docstring")
    contract = _api.contract_doc(name, IMPLEMENTS[cls])
    head, sep, tail = contract.rpartition("\n\n.. versionadded::")
    doc = doc_of(cls, name)
    assert doc.startswith(head if sep else contract), (cls.__name__, name, doc)
    if sep:
        assert doc.endswith(sep + tail), (cls.__name__, name, doc)
    if name in PUBLIC:
        assert (head if sep else contract).splitlines()[0] in pydoc.render_doc(getattr(cls, name), renderer=pydoc.plaintext)


@pytest.mark.parametrize("cls", [SharedDict, PureBase, RedisDict, NamedLock, RedisLock], ids=lambda c: c.__name__)
def test_engine_notes_do_not_copy_the_contract(cls: type):
    """An engine's own docstring is a note: no line of it repeats the contract."""
    for name, note in _api.notes(cls).items():
        assert ".. versionadded" not in note, (cls.__name__, name)
        contract = set(_api.contract_doc(name, IMPLEMENTS.get(cls, DictAPI)).splitlines())
        copied = [line for line in note.splitlines() if len(line) > 20 and line in contract]
        assert not copied, (cls.__name__, name, copied)


def _compatible(contract: inspect.Signature, engine: inspect.Signature, where: str) -> None:
    want = list(contract.parameters.values())[1:]  # without self
    have = list(engine.parameters.values())
    if have and have[0].name in ("self", "$self"):
        have = have[1:]
    assert len(have) >= len(want), (where, engine)
    for c, e in zip(want, have):
        assert e.name == c.name or c.kind is c.POSITIONAL_ONLY, (where, c, e)
        if c.kind is c.POSITIONAL_ONLY:  # an engine may also take it by keyword
            assert e.kind in (e.POSITIONAL_ONLY, e.POSITIONAL_OR_KEYWORD), (where, c, e)
        else:
            assert e.kind is c.kind, (where, c, e)
        assert (e.default is e.empty) == (c.default is c.empty), (where, c, e)
        if c.default is not c.empty and type(c.default) is not object:  # a sentinel: each engine has its own
            assert e.default == c.default and type(e.default) is type(c.default), (where, c, e)
    for extra in have[len(want) :]:  # an engine's own options: keyword-only, with a default
        assert extra.kind is extra.KEYWORD_ONLY and extra.default is not extra.empty, (where, extra)


@pytest.mark.parametrize(("cls", "name"), CASES)
def test_signature_is_compatible(cls: type, name: str):
    spec = inspect.getattr_static(IMPLEMENTS[cls], name)
    attr = inspect.getattr_static(cls, name)
    where = f"{cls.__name__}.{name}"
    if isinstance(spec, property):
        assert isinstance(attr, property), where
        return
    assert not isinstance(attr, property), where
    fn: Any = getattr(cls, name)
    assert inspect.iscoroutinefunction(fn) == inspect.iscoroutinefunction(spec), where
    assert inspect.isasyncgenfunction(fn) == inspect.isasyncgenfunction(spec), where
    if is_c_slot(cls, name):
        return  # a C slot has CPython's fixed signature for the protocol
    _compatible(inspect.signature(spec), signature(cls, name), where)


def test_the_c_type_shows_the_same_text_as_purebase():
    """The hot methods read the same whichever binding SharedDict uses."""
    for name in ("get", "set", "incr", "pop", "delete", "get_many", "set_many"):
        assert getattr(SharedDict, name).__doc__ == getattr(PureBase, name).__doc__, name


def test_compatibility_check_can_fail():
    """The checker above rejects what would be drift."""

    def contract(self, key, default=None): ...

    def renamed(self, k, default=None): ...

    def no_default(self, key, default): ...

    def extra_positional(self, key, default=None, other=1): ...

    def extra_keyword(self, key, default=None, *, other=1): ...

    c = inspect.signature(contract)
    for bad in (renamed, no_default, extra_positional):
        with pytest.raises(AssertionError):
            _compatible(c, inspect.signature(bad), bad.__name__)
    _compatible(c, inspect.signature(extra_keyword), "extra_keyword")

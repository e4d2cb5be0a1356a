# shmdict._speed: the C type with SharedDict's hot methods (csrc/python/pytype.c).
from typing import Any

class SharedDictBase:
    def __getattr__(self, name: str) -> Any: ...

def bind(
    api_address: int, raise_rc: Any, text: Any, pairs: Any, unpack_list: Any, docs: dict[str, str], /
) -> None: ...
def _release_gil_per_call(flag: bool, /) -> None: ...

"""Construct parsers compiled on first use.

Compiling a construct declaration costs about a millisecond a message; done at import it was
paid by every command, even one that never speaks the protocol (``salesmgr list``, ``merge``).
A `CompiledOnUse` compiles each body the first time it is looked up, then keeps it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K")


class CompiledOnUse(dict[K, Any], Generic[K]):
    """``declared[key]`` compiled by ``compile`` when first asked for (KeyError for a key
    that was never declared, as a plain dict would)."""

    def __init__(self, declared: Mapping[K, Any], compile: Callable[[Any], Any]) -> None:
        super().__init__()
        self.declared = declared
        self.compile = compile

    def __missing__(self, key: K) -> Any:
        compiled = self[key] = self.compile(self.declared[key])
        return compiled

"""Plugin markers and hook specifications. Built-in and third-party heads register the same way."""

import pluggy

PROJECT = "edged"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_heads(register):
    """Register head classes by calling ``register(HeadClass)`` once per class.

    A head class subclasses :class:`edged.heads.Head`; the contract it follows is in
    :mod:`edged.heads.base`.
    """

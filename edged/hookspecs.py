"""Plugin markers and hook specifications. Heads live in plugins, built-in or third-party alike."""

import pluggy

PROJECT = "edged"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_heads(register):
    """Register head classes by calling ``register(HeadClass)`` once per class.

    A head class subclasses :class:`edged.heads.Head`, sets ``name`` and ``kind``
    (``"classes"`` or ``"boxes"``) and ``Options`` (a dataclass of its settings).
    """

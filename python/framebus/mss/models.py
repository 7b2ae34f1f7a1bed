"""``framebus.mss.models``: the small types of mss's public API (11 and 10.2).

``Monitor`` is immutable and read either way: ``mon.left`` / ``mon.is_primary``
(mss 11) or ``mon["left"]`` / ``"is_primary" in mon`` (mss 10, where monitors
were dicts). It is a ``dict`` subclass holding the geometry and only the
metadata that is known, so it compares equal to the dict mss 10.2 returns for
the same monitor; metadata that is not known reads as ``None`` (mss 11).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from typing import Any, NamedTuple, NoReturn

_GEOMETRY = ("left", "top", "width", "height")
_METADATA = ("is_primary", "name", "unique_id", "output")
_FIELDS = _GEOMETRY + _METADATA


@dataclass
class Region:
    """Rectangular screen region (mutable, as mss 11's ``Region``)."""

    __slots__ = ("height", "left", "top", "width")
    left: int
    top: int
    width: int
    height: int


class Monitor(dict):  # type: ignore[type-arg]
    """Monitor geometry and optional metadata (mss 11's ``Monitor``), immutable.

    ``is_primary``: whether this is the primary monitor (``None``: unknown);
    ``name``: human-readable device name; ``unique_id``: a stable identifier;
    ``output``: the xrandr output name. ``None`` means unavailable.
    """

    __slots__ = ()

    def __init__(
        self,
        left: int,
        top: int,
        width: int,
        height: int,
        is_primary: bool | None = None,
        name: str | None = None,
        unique_id: str | None = None,
        output: str | None = None,
    ) -> None:
        known = {"left": left, "top": top, "width": width, "height": height}
        meta = {"is_primary": is_primary, "name": name, "unique_id": unique_id, "output": output}
        known.update((k, v) for k, v in meta.items() if v is not None)
        super().__init__(known)

    left = property(lambda self: dict.__getitem__(self, "left"), doc="X of the upper-left corner.")
    top = property(lambda self: dict.__getitem__(self, "top"), doc="Y of the upper-left corner.")
    width = property(lambda self: dict.__getitem__(self, "width"), doc="Width in pixels.")
    height = property(lambda self: dict.__getitem__(self, "height"), doc="Height in pixels.")
    is_primary = property(lambda self: self.get("is_primary"), doc="Primary monitor, or None.")
    name = property(lambda self: self.get("name"), doc="Device name, or None.")
    unique_id = property(lambda self: self.get("unique_id"), doc="Stable identifier, or None.")
    output = property(lambda self: self.get("output"), doc="xrandr output name, or None.")

    def as_region(self) -> Region:
        """This monitor's geometry as a capture region."""
        return Region(self.left, self.top, self.width, self.height)

    def __getitem__(self, key: str, /) -> Any:
        """String-key access (mss 10); unknown metadata reads as None, as in mss 11."""
        if key in _METADATA:
            return self.get(key)
        return dict.__getitem__(self, key)

    def __repr__(self) -> str:
        return f"Monitor({', '.join(f'{k}={self[k]!r}' for k in _FIELDS)})"

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self[k] for k in _FIELDS))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), tuple(self[k] for k in _FIELDS))

    def __copy__(self) -> Monitor:
        return self

    def __deepcopy__(self, _memo: object) -> Monitor:
        return self

    def _immutable(self, *_: object, **__: object) -> NoReturn:
        msg = "Monitor is immutable: build a new Monitor (or a dict) with the values you need"
        raise TypeError(msg)

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _immutable
    __ior__ = _immutable

    def __setattr__(self, name: str, value: object) -> NoReturn:
        msg = f"cannot assign to field {name!r}"
        raise FrozenInstanceError(msg)

    def __delattr__(self, name: str) -> NoReturn:
        msg = f"cannot delete field {name!r}"
        raise FrozenInstanceError(msg)


Monitors = list[Monitor]

Pixel = tuple[int, int, int]
Pixels = list[tuple[Pixel, ...]]


class Pos(NamedTuple):
    #: The horizontal X coordinate of the position.
    left: int
    #: The vertical Y coordinate of the position.
    top: int


class Size(NamedTuple):
    #: The horizontal X width.
    width: int
    #: The vertical Y height.
    height: int

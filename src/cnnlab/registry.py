"""Named things a config may select (models, augmentation presets): names in, objects out.

Configs choose from registries and never import code, so a YAML file cannot run anything the
package did not register. A wrong name is answered with the closest known one and the full list:
`unknown model 'carlosnett'; did you mean 'carlosnet'? (basenet, carlosnet, ...)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from cnnlab.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table for one kind of thing ("model", "augment preset", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@MODELS.register("carlosnet")`. A second entry of one name is a bug."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")

        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        """The entry called `name`; the reports write `CarlosNet`, so case is forgiven."""
        return self._entries[self.resolve(name)]

    def resolve(self, name: str) -> str:
        """The registered spelling of `name` (`CarlosNet` -> `carlosnet`), or ConfigError."""
        if name in self._entries:
            return name
        folded = [known for known in self._entries if known.casefold() == str(name).casefold()]
        if len(folded) == 1:
            return folded[0]
        raise ConfigError(self._unknown_message(name))

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def _unknown_message(self, name: object) -> str:
        known = self.names()
        listing = f" ({', '.join(known)})" if known else f" (no {self.kind} is registered)"
        lowered = {k.casefold(): k for k in known}
        close = difflib.get_close_matches(str(name).casefold(), list(lowered), n=1)
        hint = f"; did you mean {lowered[close[0]]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint}{listing}"

"""One helper for every name -> entry table of the kit (timm's model registry, in miniature).

Profiles, backbones, architectures, losses, augmentation pipelines and TTA view sets are all `Registry`s:
looking up an unknown name raises a one-line `KitError` that lists the valid choices, and the command line
takes its `choices` from the same table. An entry may be a `"package.module:attribute"` reference, imported on
first `load`, so a table can name TensorFlow builders while its module stays TensorFlow-free (bundling,
pushing and `--help` never load TensorFlow).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from an2dl_kit.errors import KitError

T = TypeVar("T")


class UnknownName(KitError, KeyError):
    """A name that is not in a registry; a `KeyError` too, so `name in registry` keeps working."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class Registry(Mapping[str, T], Generic[T]):
    """A read-only name -> entry table whose misses name the valid choices.

    Args:
        kind: what the names are ("backbone", "loss", "cells profile"...), used in error messages.
        entries: name -> entry, in the order `choices` lists them.
    """

    def __init__(self, kind: str, entries: Mapping[str, T]):
        self.kind = kind
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownName(f"{self.kind} {name!r}: unknown; choose one of {', '.join(self.choices)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def check(self, name: str) -> str:
        """`name` itself when registered; else the one-line `KitError`."""
        self[name]
        return name

    def load(self, name: str) -> Any:
        """The entry, with a `"module:attribute"` reference imported."""
        return resolve_reference(self[name])


def resolve_reference(entry: Any) -> Any:
    """Import `"package.module:attribute"`; any other value is returned as is."""
    if not isinstance(entry, str) or ":" not in entry:
        return entry
    module, _, attribute = entry.partition(":")
    return getattr(importlib.import_module(module), attribute)

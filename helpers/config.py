"""Configurations as dataclasses that reject unknown keys, in one place.

``GPTConfig``, ``GPTRecipe`` and ``CifarRecipe`` derive from :class:`Config`: build one from a
dict (a checkpoint, a JSON file) with ``from_dict``, change a copy with ``replace``, and a
misspelt key is an error that lists the known ones instead of a silently ignored setting.
"""

from __future__ import annotations

import dataclasses


class Config:
    """Mixin for dataclasses: ``from_dict``, ``to_dict`` and ``replace``, keys checked."""

    @classmethod
    def check_keys(cls, keys) -> None:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(keys) - set(known))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; the known keys are {known}.")

    @classmethod
    def from_dict(cls, values: dict):
        cls.check_keys(values)
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain Python values (tuples become lists), ready for a checkpoint or JSON."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def replace(self, **changes):
        """A copy with ``changes`` applied: ``recipe.replace(epochs=2)``."""
        self.check_keys(changes)
        return dataclasses.replace(self, **changes)

"""Named recipes: tested sets of config values (model, schedule, augmentation...) for a dataset.

`recipe=NAME` in a config fills these values in; any field the user also gives wins. Adding a
recipe is one registered entry here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .registry import Registry


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    values: dict[str, Any] = field(default_factory=dict)  # RunConfig fields


RECIPES: Registry[Recipe] = Registry("recipe")


def add_recipe(name: str, description: str, **values: Any) -> None:
    RECIPES.add(name, Recipe(name, description, values))


add_recipe("digits-cnn", "Digits: CNN with batch norm, 1-px shifts, one-cycle, label smoothing (~97% test)",
           dataset="digits", model="digits-cnn", batch_norm=True, augment="translate", translate=1,
           optimizer="adam", schedule="onecycle", lr=3e-3, label_smoothing=0.1, epochs=40, batch_size=64)


def recipe_values(name: str) -> dict[str, Any]:
    return dict(RECIPES.get(name).values)

"""Targets and recipes: data files with a versioned schema, loaded into frozen typed objects."""

from .loader import (
    deep_merge,
    list_recipes,
    list_targets,
    load_recipe,
    load_target,
    recipe_files,
    target_files,
)
from .models import SCHEMA_VERSION, Golden, Quality, Recipe, Source, Target

__all__ = [
    "SCHEMA_VERSION",
    "Golden",
    "Quality",
    "Recipe",
    "Source",
    "Target",
    "deep_merge",
    "list_recipes",
    "list_targets",
    "load_recipe",
    "load_target",
    "recipe_files",
    "target_files",
]

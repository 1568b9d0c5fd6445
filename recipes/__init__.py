"""Recipes: presets (registered models), data, training and evaluation for each job.

Every sub-package with a ``presets`` module is a recipe; importing this package registers its presets.
"""
import importlib as _importlib
import pkgutil as _pkgutil

RECIPES = sorted(m.name for m in _pkgutil.iter_modules(__path__) if m.ispkg and not m.name.startswith("_"))

for _recipe in RECIPES:
    if _importlib.util.find_spec(f"{__name__}.{_recipe}.presets") is not None:
        _importlib.import_module(f"{__name__}.{_recipe}.presets")

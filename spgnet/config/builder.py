"""``model.builder``: a network of your own, named by an import path (``package.module:function``)
that lives outside the package (issue 24, ``docs/own-data.md``), like mmsegmentation's
``custom_imports`` or detectron2's registries, without a registration step.

:func:`import_builder` imports the module (from ``sys.path``: the project root when the workflow
runs, or ``PYTHONPATH``) and returns the function; :func:`spgnet.models.build_model_from_config`
calls it. The settings check it as they resolve a row (:func:`spgnet.config.build.resolve`), so a
path that does not import is one line before any work starts.
"""

from __future__ import annotations

import importlib
import os
import sys

from spgnet.config.types import ConfigError
from spgnet.errors import first_line


def import_builder(path: str, where: str | None = None):
    """The callable ``path`` (``module:function``) names. Raises :class:`ConfigError` starting with
    ``where`` (default ``model.builder '<path>'``) when the module does not import, has no such
    name, or the name is not callable."""
    where = where or f"model.builder '{path}'"
    module_name, _, function_name = path.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:  # `spgnet` run from a folder holding the module
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any error of the user's module is one line
        raise ConfigError(f"{where}: module '{module_name}' does not import ({first_line(err)})") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise ConfigError(f"{where}: module '{module_name}' ({getattr(module, '__file__', '?')}) has no "
                          f"'{function_name}'")
    if not callable(function):
        raise ConfigError(f"{where}: '{path}' is a {type(function).__name__}, not a function")
    return function

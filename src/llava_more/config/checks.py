"""Small validators shared by the params.yaml parsers: each failure is a ``ConfigError`` naming the key path."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from llava_more.errors import ConfigError

# Names that become params.yaml keys, paths, Snakemake wildcards and DVC stage and params keys
# (studies, datasets, protocols, suites). No dots: DVC reads a dot in a params key as nesting.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")


def where(path: str, key: str | int) -> str:
    """``path.key`` (or ``path[i]``): the place of a value in params.yaml, for messages."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def check_keys(mapping: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    """Fail on a non-mapping, an unknown key (with a did-you-mean) or a missing required key."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{path or 'params.yaml'}: expected a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{where(path, key)}: unknown key{hint}; allowed keys here: {', '.join(allowed)}"
            )
    for key in required:
        if key not in mapping:
            raise ConfigError(f"{where(path, key)}: required key is missing")
    return dict(mapping)


def typed(value: Any, kind: type | tuple[type, ...], path: str) -> Any:
    """``value`` if it has type ``kind`` (an int is accepted for a float); ``ConfigError`` otherwise."""
    # bool is an int in Python; a YAML `true` where a number belongs is a typo, not a 1.
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if kind is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{path}: expected {names}, got {value!r}")
    return value


def choice(value: Any, choices: tuple[str, ...], path: str) -> str:
    if value not in choices:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(choices)}")
    return value


def safe_name(name: Any, path: str) -> str:
    """A study, dataset, protocol or suite name that is safe as a path, a wildcard and a DVC key."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ConfigError(
            f"{path}: the name {name!r} is not allowed; use letters, digits, '_', '+' and '-' (starting with a "
            "letter or digit; no spaces, dots or slashes: names become folder names, Snakemake wildcards and "
            "DVC params keys)"
        )
    return name

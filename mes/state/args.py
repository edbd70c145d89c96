"""Checks of command arguments inside apply (the edge validates too; apply trusts nothing)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from mes.state.errors import InvalidCommand

ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
# A stored file's id: the SHA-256 of its content, in lower-case hex.
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
OPCUA_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
MAX_GRAMS = 100_000

MISSING = object()


class Args:
    """Typed access to a command's arguments that raises InvalidCommand on bad values."""

    def __init__(self, raw: Any) -> None:
        if not isinstance(raw, Mapping):
            raise InvalidCommand("invalid_arguments", "command arguments must be a mapping")
        self._raw = raw

    def raw(self, name: str) -> Any:
        """The argument as given (None when absent), for a handler that checks it itself."""
        return self._raw.get(name)

    def without(self, name: str) -> Args:
        """These arguments without `name` (a newer format's extra argument)."""
        return Args({k: v for k, v in self._raw.items() if k != name})

    def has(self, name: str) -> bool:
        """Whether the argument is present (even if null)."""
        return name in self._raw

    def reject_unknown(self, allowed: Iterable[str]) -> None:
        """Raise if an argument outside `allowed` is present."""
        unknown = sorted(set(self._raw) - set(allowed))
        if unknown:
            raise InvalidCommand("unknown_field", f"unknown field {unknown[0]!r}", unknown[0])

    def _get(self, name: str, required: bool) -> Any:
        value = self._raw.get(name, MISSING)
        if value is MISSING and required:
            raise InvalidCommand("missing_field", f"{name} is required", name)
        return value

    def ident(self, name: str, required: bool = True) -> str | None:
        """An id: 1-64 letters, digits, '_', '.', '-', starting with a letter or digit."""
        value = self._get(name, required)
        if value is MISSING or (value is None and not required):
            return None
        if not isinstance(value, str) or not ID_PATTERN.match(value):
            raise InvalidCommand("invalid_id", f"{name} must be 1-64 of A-Z a-z 0-9 _ . -", name)
        return value

    def text(self, name: str, max_len: int, required: bool = True, nullable: bool = False) -> Any:
        """A string of at most `max_len` characters (None allowed when `nullable`)."""
        value = self._get(name, required)
        if value is MISSING:
            return MISSING
        if value is None and nullable:
            return None
        if not isinstance(value, str):
            raise InvalidCommand("invalid_type", f"{name} must be a string", name)
        if len(value) > max_len:
            raise InvalidCommand("too_long", f"{name} is longer than {max_len} characters", name)
        if any(ord(c) < 32 for c in value):
            raise InvalidCommand("invalid_text", f"{name} contains control characters", name)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidCommand("invalid_text", f"{name} is not valid Unicode text",
                                 name) from None
        return value

    def grams(self, name: str, minimum: int, required: bool = True) -> Any:
        """An integer weight in grams between `minimum` and MAX_GRAMS."""
        return self.integer(name, minimum, MAX_GRAMS, required)

    def integer(self, name: str, minimum: int, maximum: int, required: bool = True) -> Any:
        """An integer between `minimum` and `maximum` (booleans are not integers)."""
        value = self._get(name, required)
        if value is MISSING:
            return MISSING
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidCommand("invalid_type", f"{name} must be an integer", name)
        if not minimum <= value <= maximum:
            raise InvalidCommand(
                "out_of_range", f"{name} must be between {minimum} and {maximum}", name
            )
        return value

    def number(self, name: str, minimum: float, maximum: float, required: bool = True,
               nullable: bool = False) -> Any:
        """A finite int or float between `minimum` and `maximum`."""
        value = self._get(name, required)
        if value is MISSING or (value is None and nullable):
            return value
        if not isinstance(value, int | float) or isinstance(value, bool) or \
                not math.isfinite(value) or not minimum <= value <= maximum:
            raise InvalidCommand("out_of_range",
                                 f"{name} must be a number between {minimum} and {maximum}", name)
        return float(value)

    def choice(self, name: str, options: Iterable[str], required: bool = True,
               nullable: bool = False) -> Any:
        """One of `options`, matched case-insensitively, returned in canonical spelling."""
        value = self._get(name, required)
        if value is MISSING:
            return MISSING
        if value is None and nullable:
            return None
        if isinstance(value, str):
            for option in options:
                if option.lower() == value.lower():
                    return option
        raise InvalidCommand(
            "invalid_choice", f"{name} must be one of {', '.join(options)}", name
        )

    def flag(self, name: str, required: bool = True) -> Any:
        """A boolean."""
        value = self._get(name, required)
        if value is MISSING:
            return MISSING
        if not isinstance(value, bool):
            raise InvalidCommand("invalid_type", f"{name} must be true or false", name)
        return value

    def pattern(self, name: str, regex: re.Pattern[str], hint: str, nullable: bool = True) -> Any:
        """A string matching `regex` (or None when `nullable`)."""
        value = self._get(name, False)
        if value is MISSING:
            return MISSING
        if value is None and nullable:
            return None
        if not isinstance(value, str) or not regex.match(value):
            raise InvalidCommand("invalid_format", f"{name} must be {hint}", name)
        return value


def present(**values: Any) -> dict[str, Any]:
    """Drop the arguments that were not given."""
    return {k: v for k, v in values.items() if v is not MISSING}

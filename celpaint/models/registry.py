"""One small registry of network architectures: ``register(name)`` and ``build(name, **kwargs)``.

The architectures register themselves when ``celpaint.models`` is imported (its ``__init__``
imports every architecture module), so ``build`` knows them all without importing upwards.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import nn

_ARCHITECTURES: dict[str, type[nn.Module]] = {}

ModuleType = TypeVar("ModuleType", bound=type[nn.Module])


def register(name: str) -> Callable[[ModuleType], ModuleType]:
    """Class decorator that makes an ``nn.Module`` buildable by ``name``."""

    def decorator(cls: ModuleType) -> ModuleType:
        if name in _ARCHITECTURES and _ARCHITECTURES[name] is not cls:
            raise ValueError(f"architecture {name!r} is already registered")
        _ARCHITECTURES[name] = cls
        return cls

    return decorator


def build(name: str, **kwargs) -> nn.Module:
    """Build the architecture registered as ``name`` with its constructor arguments."""
    try:
        cls = _ARCHITECTURES[name]
    except KeyError:
        known = ", ".join(sorted(_ARCHITECTURES)) or "none"
        raise KeyError(f"unknown architecture {name!r}; known: {known}") from None
    return cls(**kwargs)


def available() -> list[str]:
    """Names of all registered architectures."""
    return sorted(_ARCHITECTURES)

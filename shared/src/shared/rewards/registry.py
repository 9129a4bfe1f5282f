"""Rewards by name: `@register_reward("name")` on a class (or factory), `build_reward(name, **kwargs)`.

Adding a reward is one decorated class; configs select it by name (STYLE.md "Follow" 4, "Avoid" 5).
"""

from __future__ import annotations

from collections.abc import Callable

from shared.errors import ConfigError
from shared.rewards.base import Reward

_REGISTRY: dict[str, Callable[..., Reward]] = {}


def register_reward(name: str) -> Callable[[Callable[..., Reward]], Callable[..., Reward]]:
    """Register a reward class or factory under `name` (the built object's `name` attribute should match)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def deco(factory: Callable[..., Reward]) -> Callable[..., Reward]:
        old = _REGISTRY.get(name)
        if old is not None and _key(old) != _key(factory):  # re-registering the same class (a reload) is fine
            raise ValueError(f"reward {name!r} is already registered to {old!r}")
        _REGISTRY[name] = factory
        return factory

    return deco


def _key(obj: object) -> tuple[str, str]:
    return getattr(obj, "__module__", ""), getattr(obj, "__qualname__", repr(obj))


def available_rewards() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REGISTRY)


def build_reward(name: str, **kwargs) -> Reward:
    """Build the reward registered as `name` with `kwargs`; an unknown name raises `ConfigError` listing the known."""
    try:
        factory = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown reward {name!r}; available rewards: {', '.join(available_rewards())}") from None
    return factory(**kwargs)

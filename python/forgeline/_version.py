"""The SDK's version: the installed distribution's (Cargo.toml's, through maturin)."""

from __future__ import annotations

__all__ = ["__version__"]


def _installed_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return "0+unknown"
    try:
        return version("forgeline")
    except PackageNotFoundError:
        return "0+unknown"


__version__: str = _installed_version()

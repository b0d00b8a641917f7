"""Rate-limit tiers: named RPM/TPM pairs from the packaged ``tiers.yaml`` plus config overrides.

Validated at load so a typo in an operator's config fails at startup naming the tier
and field, instead of silently leaving a key unlimited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

__all__ = ["Limits", "Tier", "load_tiers"]

_PACKAGED = "tiers.yaml"
_FIELDS = ("rpm", "tpm")
# Batch lines draw on their own pool; a tier without these leaves batches bounded only by the
# runner's concurrency.
_BATCH_FIELDS = ("batch_rpm", "batch_tpm")


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-minute limits; ``None`` means that dimension is unlimited."""

    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    limits: Limits
    batch_limits: Limits = Limits(None, None)


def load_tiers(overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Tier]:
    """The packaged tiers, then ``overrides`` (tier name → {rpm, tpm}) added or replaced whole.

    Raises ``ValueError`` naming the tier and field for anything that is not a
    non-negative int or null.
    """
    text = resources.files("switchyard.limits").joinpath(_PACKAGED).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"switchyard.limits/{_PACKAGED}: expected a mapping of tier name to limits")
    tiers = {name: _parse_tier(name, entry) for name, entry in data.items()}
    for name, entry in (overrides or {}).items():
        tiers[name] = _parse_tier(name, entry)
    return tiers


def _parse_tier(name: Any, entry: Any) -> Tier:
    if not isinstance(name, str) or not name:
        raise ValueError(f"tier {name!r}: tier name must be a non-empty string")
    if not isinstance(entry, Mapping):
        raise ValueError(f"tier {name!r}: expected a mapping with 'rpm' and 'tpm', got {type(entry).__name__}")
    unknown = sorted(str(k) for k in entry if k not in _FIELDS + _BATCH_FIELDS)
    if unknown:
        raise ValueError(
            f"tier {name!r}: field {unknown[0]!r}: unknown field (expected 'rpm', 'tpm', 'batch_rpm', 'batch_tpm')")
    values: dict[str, int | None] = {}
    for field in _FIELDS + _BATCH_FIELDS:
        if field not in entry:
            if field in _BATCH_FIELDS:
                values[field] = None
                continue
            # Missing is an error rather than "unlimited" so a forgotten line cannot lift a limit.
            raise ValueError(f"tier {name!r}: field {field!r}: missing (use null for unlimited)")
        value = entry[field]
        # bool is an int subclass; `rpm: yes` is a typo, not a limit of 1.
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"tier {name!r}: field {field!r}: must be a non-negative integer or null, got {value!r}")
        values[field] = value
    return Tier(name=name, limits=Limits(rpm=values["rpm"], tpm=values["tpm"]),
                batch_limits=Limits(rpm=values["batch_rpm"], tpm=values["batch_tpm"]))

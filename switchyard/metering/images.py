"""Image input tokens per model, from the catalog's ``ImageTokenSpec``.

Two methods, as in OpenAI's Images & Vision guide (version C):

- ``patch``: fit the image to the detail level's pixel limit, count 32px patches,
  shrink to the detail level's patch budget if over it, then multiply by the model's
  multiplier and round up.
- ``tile``: ``low`` costs the base tokens; ``high``/``auto`` fit within 2048px, cap
  the shortest side at 768px and pay per 512px tile.

All arithmetic is on integers (and Decimal for the multiplier): the guide's
"full precision" scale factor is irrational, and a rounded sqrt lands on the wrong
side of a floor exactly when the true value is an integer, so the budget step is
done in closed form with ``math.isqrt`` instead (see ``_budget_patches``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any

from switchyard.catalog import ImageTokenSpec

__all__ = ["image_tokens", "worst_case_image_tokens"]


def image_tokens(spec: ImageTokenSpec, width: int, height: int, detail: str = "auto") -> int:
    """Input tokens one image of ``width`` x ``height`` pixels costs at ``detail``."""
    _check_dim("width", width)
    _check_dim("height", height)
    level, rule = _rule(spec, detail)
    if spec.method == "patch":
        return _patch_tokens(spec, rule, width, height)
    if spec.method == "tile":
        return _tile_tokens(spec, level, rule, width, height)
    raise ValueError(f"unknown image token method {spec.method!r}")


def worst_case_image_tokens(spec: ImageTokenSpec, detail: str = "auto") -> int:
    """The most any image could cost at ``detail``, for images whose size is unknown at
    admission (remote URLs). Never below what ``image_tokens`` returns for any size."""
    level, rule = _rule(spec, detail)
    if spec.method == "patch":
        max_dim, budget = _patch_limits(spec, rule)
        if max_dim is None and budget is None:
            raise ValueError(f"image detail {detail!r} has neither max_dim nor patch_budget: no finite worst case")
        # Fitted images have at most side x side patches; over-budget ones are capped at
        # the budget. The smaller bound is reached by some image for every catalog entry
        # (1600x1600 = 50x50 = a 2,500 budget; 2048x2048 = 64x64 = 4,096 < a 6,144 budget).
        bounds = [budget] if budget is not None else []
        if max_dim is not None:
            side = _ceil_div(max_dim, _patch_size(spec))
            bounds.append(side * side)
        return _apply_multiplier(spec, min(bounds))
    if spec.method == "tile":
        base, per_tile, tile = _tile_params(spec)
        if _is_fixed(level, rule):
            return base
        max_dim = rule.get("max_dim", spec.max_dim)
        if max_dim is None:
            raise ValueError(f"image detail {detail!r} has no max_dim: no finite worst case")
        short = max_dim if spec.short_side is None else min(spec.short_side, max_dim)
        # After fitting, sides are at most short x max_dim, and that size is reachable.
        return base + _ceil_div(short, tile) * _ceil_div(max_dim, tile) * per_tile
    raise ValueError(f"unknown image token method {spec.method!r}")


# ---------------------------------------------------------------- patch method


def _patch_tokens(spec: ImageTokenSpec, rule: Mapping[str, Any], width: int, height: int) -> int:
    max_dim, budget = _patch_limits(spec, rule)
    size = _patch_size(spec)
    if max_dim is not None:
        width, height = _fit_round(width, height, max_dim)
    patches = _ceil_div(width, size) * _ceil_div(height, size)
    if budget is not None and patches > budget:
        patches = _budget_patches(width, height, budget, size)
    return _apply_multiplier(spec, patches)


def _budget_patches(w: int, h: int, budget: int, p: int) -> int:
    """Steps B and C of the guide, exactly.

    The guide: r = sqrt(p²·B/(w·h)); r *= min(⌊w·r/p⌋/(w·r/p), ⌊h·r/p⌋/(h·r/p));
    w', h' = ⌊w·r⌋, ⌊h·r⌋; patches = ⌈w'/p⌉·⌈h'/p⌉, capped at B.

    With a = w·r/p = sqrt(B·w/h) and b = h·r/p = sqrt(B·h/w), and a/b = w/h:
      ⌊a⌋ = isqrt(⌊B·w/h⌋)                (floor of a square root of a real)
      w·r' = p·min(⌊a⌋, ⌊b⌋·w/h)           h·r' = p·min(⌊a⌋·h/w, ⌊b⌋)
    so the whole step is integer arithmetic, with no rounded sqrt to misjudge a floor
    (e.g. 1200x2048 at B=1536: a is exactly 30; a 50-digit Decimal sqrt gives
    29.99…9 and 1450 patches instead of 1530).
    """
    fa = math.isqrt(budget * w // h)
    fb = math.isqrt(budget * h // w)
    new_w = min(p * fa, p * fb * w // h)
    new_h = min(p * fa * h // w, p * fb)
    # An image always covers at least one pixel; only absurd aspect ratios reach 0.
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    return min(budget, _ceil_div(new_w, p) * _ceil_div(new_h, p))


def _patch_limits(spec: ImageTokenSpec, rule: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(max_dim, patch_budget) of a concrete detail rule."""
    if rule.get("fixed"):
        raise ValueError("'fixed' detail levels apply only to the tile method")
    return rule.get("max_dim", spec.max_dim), rule.get("patch_budget")


def _patch_size(spec: ImageTokenSpec) -> int:
    if spec.patch_size is None:
        raise ValueError("patch method needs patch_size")
    return spec.patch_size


def _apply_multiplier(spec: ImageTokenSpec, patches: int) -> int:
    if spec.multiplier is None:
        raise ValueError("patch method needs a multiplier")
    with localcontext() as ctx:
        ctx.prec = 50  # patches × multiplier is exact at this precision
        tokens = (Decimal(patches) * spec.multiplier).to_integral_value(rounding=ROUND_CEILING)
    return int(tokens)


def _fit_round(w: int, h: int, max_dim: int) -> tuple[int, int]:
    """Fit within max_dim x max_dim keeping aspect ratio, never enlarging; the other
    side is rounded half up (the guide says "rounding to integers")."""
    long_side = max(w, h)
    if long_side <= max_dim:
        return w, h
    if w >= h:
        return max_dim, max(1, (2 * h * max_dim + w) // (2 * w))
    return max(1, (2 * w * max_dim + h) // (2 * h)), max_dim


# ---------------------------------------------------------------- tile method


def _tile_tokens(spec: ImageTokenSpec, level: str, rule: Mapping[str, Any], width: int, height: int) -> int:
    base, per_tile, tile = _tile_params(spec)
    if _is_fixed(level, rule):
        return base
    max_dim = rule.get("max_dim", spec.max_dim)
    if max_dim is not None and max(width, height) > max_dim:
        # Round down, like the guide's short-side step and OpenAI's cookbook (int()).
        if width >= height:
            width, height = max_dim, max(1, height * max_dim // width)
        else:
            width, height = max(1, width * max_dim // height), max_dim
    short = spec.short_side
    if short is not None and min(width, height) > short:
        if width <= height:
            width, height = short, max(1, height * short // width)
        else:
            width, height = max(1, width * short // height), short
    return base + _ceil_div(width, tile) * _ceil_div(height, tile) * per_tile


def _tile_params(spec: ImageTokenSpec) -> tuple[int, int, int]:
    if spec.base_tokens is None or spec.tile_tokens is None or spec.tile_size is None:
        raise ValueError("tile method needs base_tokens, tile_tokens and tile_size")
    return spec.base_tokens, spec.tile_tokens, spec.tile_size


def _is_fixed(level: str, rule: Mapping[str, Any]) -> bool:
    return level == "low" or bool(rule.get("fixed"))


# ---------------------------------------------------------------- shared


def _rule(spec: ImageTokenSpec, detail: str) -> tuple[str, Mapping[str, Any]]:
    """The concrete detail level and its rule, following ``same_as`` (one hop: the
    catalog guarantees the target is concrete)."""
    rule = spec.details.get(detail) if isinstance(detail, str) else None
    if rule is None:
        allowed = ", ".join(sorted(spec.details))
        raise ValueError(f"image detail {detail!r} is not supported by this model (allowed: {allowed})")
    target = rule.get("same_as")
    if target is not None:
        return target, spec.details[target]
    return detail, rule


def _check_dim(name: str, value: int) -> None:
    if type(value) is not int or value < 1:
        raise ValueError(f"image {name} must be a positive integer, got {value!r}")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)

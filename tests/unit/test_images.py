"""Image input tokens: the guide's worked examples, hand-computed cases, and properties
checked against a literal, high-precision transcription of the guide's steps."""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switchyard.catalog import ImageTokenSpec, load_catalog
from switchyard.metering.images import image_tokens, worst_case_image_tokens

CATALOG = load_catalog()
SPECS: dict[str, ImageTokenSpec] = {m.id: m.image_tokens for m in CATALOG if m.image_tokens is not None}
PATCH = sorted(k for k, s in SPECS.items() if s.method == "patch")
TILE = sorted(k for k, s in SPECS.items() if s.method == "tile")
MODEL_DETAILS = sorted((model, detail) for model, s in SPECS.items() for detail in s.details)

sizes = st.integers(min_value=1, max_value=20_000)
FAST = settings(max_examples=200, deadline=None)


def spec(model: str) -> ImageTokenSpec:
    return SPECS[model]


# ---------------------------------------------------------------- worked examples

# (model, width, height, detail, tokens). The arithmetic for each is written out.
EXAMPLES = [
    # Reference section 1, version A, gpt-4o: 1024x1024 high -> short side 768 -> 768x768,
    # 2x2 tiles, 85 + 4*170 = 765.
    ("gpt-4o", 1024, 1024, "high", 765),
    # 4096x8192 low: base tokens only = 85.
    ("gpt-4o", 4096, 8192, "low", 85),
    # Version C, gpt-5.4 high: 1024x1024 = 32*32 = 1024 patches, ceil(1024*1.2) = ceil(1228.8) = 1229.
    ("gpt-5.4", 1024, 1024, "high", 1229),
    # Very wide, gpt-5.2 auto (= high: 2048 px, 6,144 budget): 8000x100 fits to 2048 x
    # round(100*2048/8000 = 25.6) = 26; patches ceil(2048/32)*ceil(26/32) = 64*1 = 64,
    # under budget; ceil(64*1.2 = 76.8) = 77.
    ("gpt-5.2", 8000, 100, "auto", 77),
    # Tiny, gpt-5.2: 10x10 = 1 patch; ceil(1.2) = 2.
    ("gpt-5.2", 10, 10, "high", 2),
    # Tiny, gpt-4o high: never enlarged, 1 tile: 85 + 170 = 255.
    ("gpt-4o", 10, 10, "high", 255),
    # Over budget, clean: gpt-5.4 high (2048 px, 2,500 patches): 2048x2048 = 64*64 = 4096 > 2500.
    # r = sqrt(1024*2500/(2048*2048)) = 0.78125; w*r/32 = h*r/32 = 50 (already whole);
    # 1600x1600 -> 50*50 = 2500 patches; 2500*1.2 = 3000.
    ("gpt-5.4", 2048, 2048, "high", 3000),
    # Over budget after fitting: gpt-5.4 high, 4000x3000 -> 2048x1536 = 64*48 = 3072 > 2500.
    # r = sqrt(1024*2500/(2048*1536)) = 0.902111...; w*r/32 = 57.735, h*r/32 = 43.301;
    # min(57/57.735, 43/43.301) = 0.987269 -> r = 0.890625 (= 57/64);
    # 2048*r = 1824, 1536*r = 1368 -> 57 * ceil(42.75) = 57*43 = 2451; ceil(2451*1.2 = 2941.2) = 2942.
    ("gpt-5.4", 4000, 3000, "high", 2942),
    # Version A's own example, on o4-mini (2048 px, 1,536 budget, 1.72): 1800x2400 -> fits to
    # 1536x2048 = 48*64 = 3072 > 1536. r = sqrt(1024*1536/(1536*2048)) = 0.70711;
    # w*r/32 = 33.941, h*r/32 = 45.255; min(33/33.941, 45/45.255) -> r = 0.6875 (= 33/48);
    # 1056x1408 -> 33*44 = 1452 patches (A says 1452); ceil(1452*1.72 = 2497.44) = 2498.
    ("o4-mini", 1800, 2400, "high", 2498),
    # Over budget where a is exactly whole: o4-mini 1200x2048 = 38*64 = 2432 > 1536.
    # w*r/32 = sqrt(1536*1200/2048) = sqrt(900) = 30 exactly; h*r/32 = sqrt(2621.44) = 51.2;
    # min(30/30, 51/51.2) = 0.99609375 -> 1200*r = 956.25, 2048*r = 1632 -> 956x1632
    # -> ceil(29.875)*51 = 30*51 = 1530; ceil(1530*1.72 = 2631.6) = 2632.
    # (A 50-digit Decimal sqrt gives w*r/32 = 29.99...9, floor 29, and 1450 patches.)
    ("o4-mini", 1200, 2048, "high", 2632),
    # Tile, wide: gpt-4o 3000x1000 high -> fit 2048 x floor(1000*2048/3000 = 682.67) = 682;
    # short side 682 <= 768; tiles ceil(2048/512)*ceil(682/512) = 4*2 = 8; 85 + 8*170 = 1445.
    ("gpt-4o", 3000, 1000, "high", 1445),
    # Tile, short side over 768: 2000x1500 -> 1024x768 (2000*768/1500 = 1024); 2*2 tiles = 765.
    ("gpt-4o", 2000, 1500, "auto", 765),
    # gpt-5.4 low can cost more than high (version C): 2048x2048 low = 4096 patches under the
    # 6,144 budget; ceil(4096*1.2 = 4915.2) = 4916 (vs 3000 at high).
    ("gpt-5.4", 2048, 2048, "low", 4916),
    # original: 6000x4000 stays (6000 px max); 188*125 = 23500 > 10000. w*r/32 = sqrt(15000) =
    # 122.47, h*r/32 = sqrt(6666.67) = 81.65; min(122/122.47, 81/81.65) -> 81/81.65;
    # widths 32*min(122, 81*1.5 = 121.5) = 3888, 32*81 = 2592 -> 122*81 = 9882; *1.2 = 11858.4 -> 11859.
    ("gpt-5.4", 6000, 4000, "original", 11859),
    # gpt-4o-mini tile: 1024x1024 high = 4 tiles: 2833 + 4*5667 = 25501.
    ("gpt-4o-mini", 1024, 1024, "high", 25501),
]


@pytest.mark.parametrize(("model", "width", "height", "detail", "tokens"), EXAMPLES)
def test_worked_examples(model: str, width: int, height: int, detail: str, tokens: int) -> None:
    assert image_tokens(spec(model), width, height, detail) == tokens
    assert literal_guide(spec(model), width, height, detail) == tokens


def test_default_detail_is_auto() -> None:
    assert image_tokens(spec("gpt-4o"), 1024, 1024) == 765
    assert image_tokens(spec("gpt-5.4"), 2048, 2048) == 3000  # auto = high for gpt-5.4


@pytest.mark.parametrize(
    ("model", "detail", "tokens"),
    [
        ("gpt-5.4", "high", 3000),  # 1600x1600 reaches the 2,500 budget: 2500*1.2
        ("gpt-5.4", "low", 4916),  # 2048x2048 = 4096 < 6144 budget
        ("gpt-5.4", "original", 12000),  # 3200x3200 = 100*100 = the 10,000 budget
        ("gpt-5.2", "auto", 4916),
        ("gpt-5-mini", "high", 1844),  # 1536 * 1.2 = 1843.2
        ("gpt-4o", "high", 1445),  # 768x2048 -> 2*4 tiles: 85 + 8*170
        ("gpt-4o", "low", 85),
        ("gpt-4o-mini", "auto", 2833 + 8 * 5667),
    ],
)
def test_worst_case_values(model: str, detail: str, tokens: int) -> None:
    assert worst_case_image_tokens(spec(model), detail) == tokens


@pytest.mark.parametrize(("model", "detail"), MODEL_DETAILS)
def test_worst_case_is_reached(model: str, detail: str) -> None:
    s = spec(model)
    worst = worst_case_image_tokens(s, detail)
    size = _largest_image(s, detail)
    assert image_tokens(s, *size, detail) == worst
    assert image_tokens(s, size[1], size[0], detail) == worst


def _largest_image(s: ImageTokenSpec, detail: str) -> tuple[int, int]:
    rule = s.details[detail]
    rule = s.details[rule["same_as"]] if "same_as" in rule else rule
    if s.method == "tile":
        return s.short_side or 1, rule.get("max_dim", s.max_dim)
    max_dim, budget = rule.get("max_dim", s.max_dim), rule.get("patch_budget")
    side = -(-max_dim // 32)
    if budget is None or side * side <= budget:
        return max_dim, max_dim
    p = next(p for p in range(side, 0, -1) if budget % p == 0 and budget // p <= side)
    return min(32 * p, max_dim), min(32 * (budget // p), max_dim)


# ---------------------------------------------------------------- errors


def test_unsupported_detail_names_detail_and_allowed() -> None:
    with pytest.raises(ValueError, match=r"'original'.*auto, high, low"):
        image_tokens(spec("gpt-5.2"), 100, 100, "original")
    with pytest.raises(ValueError, match="'original'"):
        worst_case_image_tokens(spec("gpt-4o"), "original")
    with pytest.raises(ValueError, match="'medium'"):
        image_tokens(spec("gpt-5.4"), 100, 100, "medium")


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "100", None])
def test_bad_dimensions(bad: object) -> None:
    with pytest.raises(ValueError):
        image_tokens(spec("gpt-5.4"), bad, 100)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        image_tokens(spec("gpt-4o"), 100, bad)  # type: ignore[arg-type]


def test_operator_defined_rules() -> None:
    """A gpt-5.5-style low level (fits 512 px, no patch budget) from an operator entry."""
    catalog = CATALOG.with_overrides({"my-vision": {
        "provider": "openai", "owned_by": "me", "created": 0, "context_window": 1000, "max_output_tokens": 100,
        "prices": {"input": "1", "cached_input": None, "output": "2"},
        "capabilities": ["vision"], "endpoints": ["responses"],
        "image_tokens": {"method": "patch", "patch_size": 32, "multiplier": "1.2", "details": {
            "low": {"max_dim": 512}, "high": {"max_dim": 2048, "patch_budget": 2500}, "auto": {"same_as": "low"},
        }},
    }})
    s = catalog.get("my-vision").image_tokens
    # 4096x1024 -> 512x128 = 16*4 = 64 patches; 64*1.2 = 76.8 -> 77.
    assert image_tokens(s, 4096, 1024, "auto") == 77
    # Worst: 512x512 = 16*16 = 256 patches; 256*1.2 = 307.2 -> 308.
    assert worst_case_image_tokens(s, "low") == 308
    assert image_tokens(s, 512, 512, "low") == 308


# ---------------------------------------------------------------- properties


@FAST
@given(st.sampled_from(MODEL_DETAILS), sizes, sizes)
def test_matches_literal_guide_and_stays_under_worst_case(md: tuple[str, str], w: int, h: int) -> None:
    s = spec(md[0])
    tokens = image_tokens(s, w, h, md[1])
    assert type(tokens) is int and tokens >= 1
    assert tokens == literal_guide(s, w, h, md[1])
    assert tokens <= worst_case_image_tokens(s, md[1])
    # Symmetric in width and height, so EXIF rotation cannot change the count.
    assert image_tokens(s, h, w, md[1]) == tokens


@FAST
@given(st.sampled_from(PATCH), st.sampled_from(["low", "high", "auto", "original"]), sizes, sizes)
def test_patch_tokens_never_exceed_budget(model: str, detail: str, w: int, h: int) -> None:
    s = spec(model)
    if detail not in s.details:
        with pytest.raises(ValueError):
            image_tokens(s, w, h, detail)
        return
    rule = s.details[detail]
    rule = s.details[rule["same_as"]] if "same_as" in rule else rule
    ceiling = math.ceil(Decimal(rule["patch_budget"]) * s.multiplier)
    assert image_tokens(s, w, h, detail) <= ceiling


@FAST
@given(
    st.sampled_from(PATCH),
    st.integers(1, 16), st.integers(1, 16),  # aspect ratio p:q
    st.integers(1, 128), st.integers(1, 128),  # two scales
)
def test_patch_monotone_in_area_within_budget(model: str, p: int, q: int, k1: int, k2: int) -> None:
    s = spec(model)
    small, large = sorted((k1, k2))
    rule = s.details["high"]
    budget, max_dim = rule["patch_budget"], rule["max_dim"]

    def within(k: int) -> bool:
        w, h = p * k, q * k
        return max(w, h) <= max_dim and -(-w // 32) * -(-h // 32) <= budget

    if within(large):
        assert image_tokens(s, p * small, q * small, "high") <= image_tokens(s, p * large, q * large, "high")


@FAST
@given(st.sampled_from(TILE), st.sampled_from(["high", "auto"]), sizes, sizes)
def test_tile_tokens_are_base_plus_whole_tiles(model: str, detail: str, w: int, h: int) -> None:
    s = spec(model)
    extra = image_tokens(s, w, h, detail) - s.base_tokens
    assert extra % s.tile_tokens == 0
    assert 1 <= extra // s.tile_tokens <= 8  # at most 768x2048 -> 2x4 tiles


@FAST
@given(st.sampled_from(TILE), sizes, sizes)
def test_tile_low_is_constant(model: str, w: int, h: int) -> None:
    s = spec(model)
    assert image_tokens(s, w, h, "low") == s.base_tokens == worst_case_image_tokens(s, "low")


# ---------------------------------------------------------------- the oracle

# Values this close to an integer are that integer: Decimal at 100 digits is off by
# ~1e-97, while a true non-integer here (square roots and ratios of numbers below
# 1e9) is at least ~1e-9 away from one.
_SNAP = Decimal("1e-60")


def _floor(x: Decimal) -> int:
    nearest = x.to_integral_value()
    return int(nearest) if abs(x - nearest) < _SNAP else math.floor(x)


def literal_guide(s: ImageTokenSpec, w: int, h: int, detail: str) -> int:
    """The guide's steps as written (version C), with a 100-digit Decimal sqrt for r.
    Like Pillow's thumbnail(), a side never shrinks below one pixel."""
    rule = s.details[detail]
    if "same_as" in rule:
        detail, rule = rule["same_as"], s.details[rule["same_as"]]
    if s.method == "tile":
        if detail == "low" or rule.get("fixed"):
            return s.base_tokens
        W, H = Fraction(w), Fraction(h)
        m = rule.get("max_dim", s.max_dim)
        if max(W, H) > m:  # fit within m x m, rounding down
            scale = Fraction(m) / max(W, H)
            W, H = Fraction(max(1, math.floor(W * scale))), Fraction(max(1, math.floor(H * scale)))
        if min(W, H) > s.short_side:  # shortest side down to 768, rounding down
            scale = Fraction(s.short_side) / min(W, H)
            W, H = Fraction(max(1, math.floor(W * scale))), Fraction(max(1, math.floor(H * scale)))
        tiles = math.ceil(W / s.tile_size) * math.ceil(H / s.tile_size)
        return s.base_tokens + tiles * s.tile_tokens
    m, budget = rule.get("max_dim", s.max_dim), rule.get("patch_budget")
    if max(w, h) > m:  # fit, rounding to the nearest integer (half up)
        scale = Fraction(m, max(w, h))
        w, h = (max(1, math.floor(x * scale + Fraction(1, 2))) for x in (w, h))
    patches = math.ceil(w / Fraction(32)) * math.ceil(h / Fraction(32))
    if budget is not None and patches > budget:
        with localcontext() as ctx:
            ctx.prec = 100
            r = (Decimal(32 * 32 * budget) / Decimal(w * h)).sqrt()
            a, b = Decimal(w) * r / 32, Decimal(h) * r / 32
            r = r * min(Decimal(_floor(a)) / a, Decimal(_floor(b)) / b)
            new_w, new_h = max(1, _floor(Decimal(w) * r)), max(1, _floor(Decimal(h) * r))
        patches = min(budget, math.ceil(Fraction(new_w, 32)) * math.ceil(Fraction(new_h, 32)))
    with localcontext() as ctx:
        ctx.prec = 50
        return int((patches * s.multiplier).to_integral_value(rounding=ROUND_CEILING))

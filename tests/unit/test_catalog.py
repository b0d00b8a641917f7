"""Unit tests for the model catalog loader and the packaged data."""

from __future__ import annotations

import copy
import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from switchyard.catalog import Catalog, CatalogError, ImageTokenSpec, ModelSpec, Prices, load_catalog


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def minimal_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "provider": "openai",
        "owned_by": "acme",
        "created": 1700000000,
        "context_window": 1000,
        "max_output_tokens": 100,
        "prices": {"input": "1", "cached_input": None, "output": "2"},
        "capabilities": ["streaming"],
        "endpoints": ["chat.completions"],
    }
    entry.update(changes)
    return entry


# ---------------------------------------------------------------- packaged data


def test_packaged_catalog_has_the_required_models(catalog: Catalog) -> None:
    required = {
        "gpt-5.2", "gpt-5.2-pro", "gpt-5.2-chat-latest", "gpt-5.4", "gpt-5.4-mini",
        "gpt-5", "gpt-5.1", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini",
        "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o3", "o4-mini",
        "claude-3-5-sonnet", "claude-3-7-sonnet", "smollm2-135m-instruct",
    }  # fmt: skip
    assert required <= {m.id for m in catalog}
    assert len(catalog) == len(list(catalog))
    assert any(m.provider == "anthropic" and "haiku" in m.id for m in catalog)
    assert sum(m.provider == "gemini" for m in catalog) >= 2
    # The seeds' invented variants must not leak in.
    for fake in ("gpt-5.2-ultra", "gpt-5.2-turbo", "gpt-5.2-mini"):
        assert fake not in catalog


def test_gpt_5_2_numbers(catalog: Catalog) -> None:
    m = catalog.get("gpt-5.2")
    assert m is not None
    assert m.provider == "openai" and m.owned_by == "openai"
    assert m.created == 1765411200
    assert m.context_window == 400_000
    assert m.max_output_tokens == 128_000
    assert m.prices == Prices(Decimal("1.75"), Decimal("0.175"), Decimal("14"), None)
    assert dict(m.multipliers) == {"batch": Decimal("0.5"), "flex": Decimal("0.5"), "priority": Decimal("2")}
    assert m.reasoning_efforts == ("none", "low", "medium", "high", "xhigh")
    assert m.default_reasoning_effort == "none"
    assert m.endpoints == {"chat.completions", "responses"}
    caps = ("streaming", "tools", "parallel_tool_calls", "vision", "json_object", "json_schema", "reasoning")
    assert m.supports("logprobs")
    assert all(m.supports(cap) for cap in caps)
    assert not m.supports("teleportation")
    # Batch price from the reference table: $0.875 input, exactly.
    assert m.prices.input * m.multipliers["batch"] == Decimal("0.875")

    img = m.image_tokens
    assert isinstance(img, ImageTokenSpec)
    assert (img.method, img.patch_size, img.multiplier) == ("patch", 32, Decimal("1.2"))
    assert dict(img.details["high"]) == {"max_dim": 2048, "patch_budget": 6144}
    assert dict(img.details["low"]) == {"max_dim": 2048, "patch_budget": 6144}
    assert img.details["auto"]["same_as"] == "high"
    assert "original" not in img.details


def test_gpt_5_2_pro_is_responses_only(catalog: Catalog) -> None:
    m = catalog.get("gpt-5.2-pro")
    assert m is not None
    assert m.endpoints == frozenset({"responses"})
    assert m.prices.input == Decimal("21") and m.prices.output == Decimal("168")
    assert m.prices.cached_input is None
    assert m.supports("reasoning")


def test_tile_model_parameters(catalog: Catalog) -> None:
    img = catalog.get("gpt-4o").image_tokens
    assert (img.method, img.base_tokens, img.tile_tokens, img.tile_size) == ("tile", 85, 170, 512)
    assert (img.max_dim, img.short_side) == (2048, 768)
    assert img.details["low"]["fixed"] is True
    assert catalog.get("gpt-4o-mini").image_tokens.base_tokens == 2833


def test_local_model(catalog: Catalog) -> None:
    m = catalog.get("smollm2-135m-instruct")
    assert m is not None
    assert (m.provider, m.owned_by) == ("local", "switchyard")
    assert m.prices.input == m.prices.output == m.prices.cached_input == Decimal("0")
    assert (m.context_window, m.max_output_tokens) == (8192, 8192)
    assert m.capabilities == {"streaming", "tools", "json_object", "json_schema", "logprobs"}
    assert m.endpoints == {"chat.completions", "responses", "completions"}
    assert m.image_tokens is None and m.reasoning_efforts == () and m.default_reasoning_effort is None


def test_media_prices_in_their_units(catalog: Catalog) -> None:
    from switchyard.metering.cost import TokenUsage
    from switchyard.metering.units import media_cost_nanos

    whisper, dalle, tts, image = (catalog.get(m) for m in ("whisper-1", "dall-e-3", "tts-1", "gpt-image-1"))
    assert media_cost_nanos(whisper, TokenUsage(0), {"audio_ms": 60_000}) == 6_000_000  # $0.006 a minute
    assert media_cost_nanos(dalle, TokenUsage(0), {"image.hd.1792x1024": 1}) == 120_000_000
    assert media_cost_nanos(tts, TokenUsage(0), {"character": 1_000_000}) == 15 * 10**9
    # GPT image: text input at `prices`, image tokens (part of input_tokens) at their own price.
    assert media_cost_nanos(image, TokenUsage(input_tokens=110, output_tokens=6240), {"image_input_token": 100}) == (
        10 * 5_000 + 100 * 10_000 + 6240 * 40_000)
    assert image.image_output_tokens["high"]["1024x1536"] == image.max_output_tokens == 6240
    with pytest.raises(ValueError, match="no price for unit 'character'"):
        media_cost_nanos(whisper, TokenUsage(0), {"character": 1})
    for spec in catalog:  # every endpoint a media model lists has a way to be billed
        if spec.endpoints & {"images.generations", "images.edits", "images.variations"}:
            assert spec.image_output_tokens or any(u.startswith("image.") for u in spec.units), spec.id
        if spec.endpoints & {"audio.transcriptions", "audio.translations", "audio.speech"}:
            assert spec.units, spec.id


def test_snapshot_resolution(catalog: Catalog) -> None:
    assert catalog.get("gpt-5.2-2025-12-11") is catalog.get("gpt-5.2")
    assert catalog.get("gpt-5.2-pro-2025-12-11") is catalog.get("gpt-5.2-pro")
    assert "gpt-5.2-2025-12-11" in catalog
    assert "gpt-5.2-2025-12-11" not in {m.id for m in catalog}  # aliases are not listed as models
    assert catalog.get("no-such-model") is None
    assert "no-such-model" not in catalog
    assert 42 not in catalog


def test_data_sanity(catalog: Catalog) -> None:
    for m in catalog:
        p = m.prices
        assert p.input >= 0 and p.output >= 0, m.id
        if p.cached_input is not None:
            assert p.cached_input <= p.input, m.id
        assert set(m.multipliers) <= {"batch", "flex", "priority", "scale"}, m.id
        assert m.max_output_tokens <= m.context_window, m.id
        assert m.created > 1_600_000_000, m.id
        assert m.supports("reasoning") == bool(m.reasoning_efforts), m.id
        if m.provider == "anthropic":
            # Anthropic list prices: cache read 0.1x, 5-minute cache write 1.25x input.
            assert p.cached_input == p.input * Decimal("0.1"), m.id
            assert p.cache_write == p.input * Decimal("1.25"), m.id
        if m.provider == "openai":
            assert p.cache_write is None, m.id
            if m.supports("vision"):
                assert m.image_tokens is not None, m.id
        if m.image_tokens is not None:
            assert {"low", "high", "auto"} <= set(m.image_tokens.details), m.id


def test_specs_are_immutable(catalog: Catalog) -> None:
    m = catalog.get("gpt-5.2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.context_window = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        m.multipliers["batch"] = Decimal("0")  # type: ignore[index]
    assert isinstance(hash(m), int)
    assert isinstance(m, ModelSpec)


# ---------------------------------------------------------------- overrides


def test_override_adds_a_model(catalog: Catalog) -> None:
    new = catalog.with_overrides({"my-vllm-llama": minimal_entry(provider="openai", owned_by="me")})
    assert new.get("my-vllm-llama").owned_by == "me"
    assert len(new) == len(catalog) + 1
    assert "my-vllm-llama" not in catalog  # the original is untouched


def test_override_deep_merges_existing(catalog: Catalog) -> None:
    new = catalog.with_overrides(
        {"gpt-5.2": {"prices": {"input": "1.50"}, "multipliers": {"batch": "0.4"}, "endpoints": ["responses"]}}
    )
    m = new.get("gpt-5.2")
    assert m.prices.input == Decimal("1.50")
    assert m.prices.output == Decimal("14")  # untouched sibling fields survive
    assert m.prices.cached_input == Decimal("0.175")
    assert dict(m.multipliers) == {"batch": Decimal("0.4"), "flex": Decimal("0.5"), "priority": Decimal("2")}
    assert m.endpoints == {"responses"}  # lists are replaced, not appended
    assert m.image_tokens == catalog.get("gpt-5.2").image_tokens
    assert new.get("gpt-5.2-2025-12-11") is m
    assert catalog.get("gpt-5.2").prices.input == Decimal("1.75")


def test_load_catalog_applies_overrides() -> None:
    c = load_catalog(overrides={"gpt-4o": {"context_window": 64000}})
    assert c.get("gpt-4o").context_window == 64000


def test_override_with_bad_data_is_rejected(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match=r"gpt-5\.2.*prices\.output"):
        catalog.with_overrides({"gpt-5.2": {"prices": {"output": 14.0}}})
    with pytest.raises(CatalogError, match="half-entry.*provider"):
        catalog.with_overrides({"half-entry": {"prices": {"input": "1", "cached_input": None, "output": "1"}}})


def test_a_real_id_wins_over_a_snapshot_alias(catalog: Catalog) -> None:
    pinned = catalog.with_overrides({"gpt-5.2-2025-12-11": minimal_entry(owned_by="pinned")})
    assert pinned.get("gpt-5.2-2025-12-11").owned_by == "pinned"
    assert pinned.get("gpt-5.2").owned_by == "openai"


# ---------------------------------------------------------------- bad data


def _without(entry: dict[str, Any], *path: str) -> dict[str, Any]:
    entry = copy.deepcopy(entry)
    node = entry
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return entry


def _with_price(**prices: Any) -> dict[str, Any]:
    return minimal_entry(prices={"input": "1", "cached_input": None, "output": "2", **prices})


BAD_ENTRIES = [
    pytest.param(_without(minimal_entry(), "provider"), "provider", id="missing-field"),
    pytest.param(_without(minimal_entry(), "prices", "output"), "prices.output", id="missing-price"),
    pytest.param(_with_price(input=1.75), "prices.input", id="float-price"),
    pytest.param(_with_price(output=14), "prices.output", id="int-price"),
    pytest.param(_with_price(input="cheap"), "prices.input", id="non-decimal-price"),
    pytest.param(_with_price(input="NaN"), "prices.input", id="nan-price"),
    pytest.param(_with_price(output="-1"), "prices.output", id="negative-price"),
    pytest.param(_with_price(cache_write=1.25), "prices.cache_write", id="float-cache-write"),
    pytest.param(_with_price(cached="0.1"), "prices.cached", id="unknown-price-field"),
    pytest.param(minimal_entry(multipliers={"batch": 0.5}), "multipliers.batch", id="float-multiplier"),
    pytest.param(minimal_entry(multipliers={"bulk": "0.5"}), "multipliers.bulk", id="unknown-tier"),
    pytest.param(minimal_entry(provider="azure-magic"), "provider", id="unknown-provider"),
    pytest.param(minimal_entry(capabilities=["streaming", "telepathy"]), "capabilities", id="unknown-capability"),
    pytest.param(minimal_entry(endpoints=["completions.legacy"]), "endpoints", id="unknown-endpoint"),
    pytest.param(minimal_entry(context_window=-5), "context_window", id="negative-context"),
    pytest.param(minimal_entry(created=-1), "created", id="negative-created"),
    pytest.param(minimal_entry(max_output_tokens=True), "max_output_tokens", id="bool-as-int"),
    pytest.param(minimal_entry(max_output_tokens=5000), "max_output_tokens", id="output-exceeds-context"),
    pytest.param(minimal_entry(context_windw=5), "context_windw", id="typo-field"),
    pytest.param(
        minimal_entry(capabilities=["reasoning"], reasoning_efforts=["low"], default_reasoning_effort="high"),
        "default_reasoning_effort",
        id="default-effort-not-allowed",
    ),
    pytest.param(minimal_entry(reasoning_efforts=["low"]), "reasoning_efforts", id="efforts-without-reasoning"),
    pytest.param(
        minimal_entry(capabilities=["reasoning"], reasoning_efforts=["turbo"]), "reasoning_efforts", id="unknown-effort"
    ),
    pytest.param(
        minimal_entry(image_tokens={"method": "patch", "patch_size": 32, "multiplier": "1.2", "details": {}}),
        "image_tokens",
        id="image-tokens-without-vision",
    ),
    pytest.param(
        minimal_entry(
            capabilities=["vision"],
            image_tokens={"method": "patch", "patch_size": 32, "multiplier": 1.2, "details": {"high": {}}},
        ),
        "image_tokens.multiplier",
        id="float-image-multiplier",
    ),
    pytest.param(
        minimal_entry(capabilities=["vision"], image_tokens={"method": "tile", "base_tokens": 85, "details": {}}),
        "image_tokens.tile_tokens",
        id="tile-missing-field",
    ),
    pytest.param(
        minimal_entry(
            capabilities=["vision"],
            image_tokens={
                "method": "patch", "patch_size": 32, "multiplier": "1.2", "details": {"auto": {"same_as": "hi"}},
            },
        ),
        "image_tokens.details.auto.same_as",
        id="dangling-same-as",
    ),
    pytest.param(minimal_entry(units={"audio_ms": {"usd": 0.006, "per": 60000}}), "units.audio_ms.usd", id="float-unit"),
    pytest.param(minimal_entry(units={"audio_ms": {"usd": "0.006", "per": 0}}), "units.audio_ms.per", id="zero-per"),
    pytest.param(minimal_entry(units={"audio_ms": {"usd": "0.006", "every": 1}}), "units.audio_ms.every",
                 id="unknown-unit-field"),
    pytest.param(minimal_entry(image_output_tokens={"high": {"1024x1024": -1}}), "image_output_tokens.high.1024x1024",
                 id="negative-image-tokens"),
    pytest.param(minimal_entry(audio_tokens_per_second=0), "audio_tokens_per_second", id="zero-audio-rate"),
]


@pytest.mark.parametrize(("entry", "field"), BAD_ENTRIES)
def test_bad_entry_raises_naming_model_and_field(entry: dict[str, Any], field: str) -> None:
    with pytest.raises(CatalogError) as info:
        Catalog({"broken-model": entry})
    message = str(info.value)
    assert "broken-model" in message
    assert repr(field) in message, message
    assert isinstance(info.value, ValueError)


def test_minimal_entry_is_valid() -> None:
    m = Catalog({"ok": minimal_entry()}).get("ok")
    assert m.prices == Prices(Decimal("1"), None, Decimal("2"), None)
    assert dict(m.multipliers) == {} and m.snapshots == () and m.image_tokens is None


def test_snapshot_claimed_by_two_models_is_rejected() -> None:
    with pytest.raises(CatalogError, match="b.*snapshots.*shared-snap"):
        Catalog({"a": minimal_entry(snapshots=["shared-snap"]), "b": minimal_entry(snapshots=["shared-snap"])})


def test_load_from_path_and_yaml_float_price(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "m1:\n  provider: local\n  owned_by: me\n  created: 0\n  context_window: 10\n  max_output_tokens: 10\n"
        '  prices: {input: "0.1", cached_input: null, output: "0.2"}\n'
        "  capabilities: []\n  endpoints: [responses]\n"
    )
    c = load_catalog(good)
    assert c.get("m1").prices.input == Decimal("0.1")

    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace('input: "0.1"', "input: 0.1"))
    with pytest.raises(CatalogError, match=r"m1.*prices\.input.*quoted decimal string"):
        load_catalog(bad)


def test_unparseable_or_empty_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("gpt-x: [unclosed\n")
    with pytest.raises(CatalogError, match="invalid YAML"):
        load_catalog(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(CatalogError, match="empty"):
        load_catalog(empty)
    listy = tmp_path / "list.yaml"
    listy.write_text("- gpt-5.2\n")
    with pytest.raises(CatalogError, match="mapping"):
        load_catalog(listy)


def test_the_console_words_each_unit_price(catalog: Catalog) -> None:
    from switchyard.console.prices import unit_prices

    assert unit_prices(catalog.get("whisper-1")) == ["$0.006 / minute of audio"]
    assert unit_prices(catalog.get("tts-1"), Decimal("0.5")) == ["$7.5 / 1M characters"]
    assert "$0.12 / image (hd, 1024x1792)" in unit_prices(catalog.get("dall-e-3"))
    assert unit_prices(catalog.get("gpt-image-1")) == ["$10 / 1M image input tokens"]

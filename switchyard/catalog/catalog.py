"""The model catalog: typed, validated, read-only view of ``models.yaml``.

Numbers live in the data file, not in code. This module only parses and checks
them, so a bad price or a typo fails at startup with the model id and field in
the message instead of mis-billing requests later.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as _field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

__all__ = [
    "CAPABILITIES",
    "ENDPOINTS",
    "PROVIDERS",
    "REASONING_EFFORTS",
    "SERVICE_TIERS",
    "Catalog",
    "CatalogError",
    "ImageTokenSpec",
    "ModelSpec",
    "Prices",
    "UnitPrice",
    "PromptOverhead",
    "load_catalog",
]

PROVIDERS = frozenset({"openai", "anthropic", "gemini", "local"})
CAPABILITIES = frozenset(
    {"streaming", "tools", "parallel_tool_calls", "vision", "json_object", "json_schema", "reasoning", "logprobs"}
)
ENDPOINTS = frozenset({
    "chat.completions", "responses", "completions", "embeddings", "moderations",
    "images.generations", "images.edits", "images.variations",
    "audio.transcriptions", "audio.translations", "audio.speech",
})
# Every value any SDK version accepts for reasoning_effort.
REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
SERVICE_TIERS = frozenset({"batch", "flex", "priority", "scale"})
DETAIL_LEVELS = frozenset({"low", "high", "auto", "original"})

_REQUIRED = (
    "provider", "owned_by", "created", "context_window", "max_output_tokens", "prices", "capabilities", "endpoints",
)
_OPTIONAL = (
    "snapshots", "multipliers", "reasoning_efforts", "default_reasoning_effort", "image_tokens", "prompt_overhead", "notes",
    "units", "image_output_tokens", "audio_tokens_per_second",
)
_PRICE_FIELDS = ("input", "cached_input", "output", "cache_write")
_IMAGE_FIELDS = (
    "method", "patch_size", "multiplier", "base_tokens", "tile_tokens", "tile_size", "max_dim", "short_side", "details",
)
_DETAIL_FIELDS = frozenset({"max_dim", "patch_budget", "fixed", "same_as"})
_OVERHEAD_FIELDS = ("per_request", "per_message", "tools", "image")

_PACKAGED = "models.yaml"


class CatalogError(ValueError):
    """Bad catalog data; the message names the model id and the field."""


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per 1M tokens."""

    input: Decimal
    cached_input: Decimal | None
    output: Decimal
    cache_write: Decimal | None


@dataclass(frozen=True, slots=True)
class UnitPrice:
    """A price in something other than text tokens: ``usd`` per ``per`` units, e.g. $0.006 per
    60,000 ms of audio (a minute), $15 per 1,000,000 characters, $0.04 per image."""

    usd: Decimal
    per: int


@dataclass(frozen=True, slots=True)
class ImageTokenSpec:
    """Image-input accounting parameters, as written in the data file.

    ``method`` is ``patch`` (32px patches × multiplier) or ``tile`` (base + 512px
    tiles). ``details`` maps a detail level to how the image is fit before
    counting, e.g. ``{"max_dim": 2048, "patch_budget": 6144}``, ``{"fixed": True}``
    or ``{"same_as": "high"}``. The arithmetic lives in metering.
    """

    method: str
    patch_size: int | None
    multiplier: Decimal | None
    base_tokens: int | None
    tile_tokens: int | None
    tile_size: int | None
    max_dim: int | None
    short_side: int | None
    details: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class PromptOverhead:
    """Tokens an upstream adds to a prompt beyond its text: chat-template framing, injected
    system prompts, a tool-use preamble; and, for models whose image tokens follow no
    OpenAI rule (``image_tokens`` absent), the most one image can cost. Admission adds
    these to the prompt's byte bound, so the bound stays an upper bound on what is billed."""

    per_request: int = 0
    per_message: int = 0
    tools: int = 0  # once, when the request has tools
    image: int = 0  # per image, only for models without ``image_tokens``


@dataclass(frozen=True, slots=True)
class ModelSpec:
    id: str
    provider: str
    owned_by: str
    created: int
    context_window: int
    max_output_tokens: int
    prices: Prices
    multipliers: Mapping[str, Decimal]
    capabilities: frozenset[str]
    endpoints: frozenset[str]
    reasoning_efforts: tuple[str, ...]
    default_reasoning_effort: str | None
    image_tokens: ImageTokenSpec | None
    snapshots: tuple[str, ...]
    prompt_overhead: PromptOverhead = PromptOverhead()
    # Non-token prices by unit name (`audio_ms`, `character`, `image_input_token`,
    # `image.<quality>.<size>`): what the media endpoints bill beside `prices`.
    units: Mapping[str, UnitPrice] = _field(default_factory=lambda: MappingProxyType({}))
    # GPT image models: output tokens of one image by quality and size (the worst case at admission).
    image_output_tokens: Mapping[str, Mapping[str, int]] = _field(default_factory=lambda: MappingProxyType({}))
    # Token-billed audio models: the most audio tokens one second of input can count (admission's bound).
    audio_tokens_per_second: int | None = None

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    # The mapping fields are read-only proxies, which are unhashable; an id is
    # unique within a catalog, so hash by it (equality still compares all fields).
    def __hash__(self) -> int:
        return hash(self.id)


class Catalog:
    """All known models, looked up by id or snapshot id. Immutable."""

    __slots__ = ("_raw", "_models", "_aliases")

    def __init__(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        if not isinstance(entries, Mapping):
            raise CatalogError(f"catalog must be a mapping of model id to entry, got {type(entries).__name__}")
        # Keep the raw data so with_overrides can merge and re-validate as a whole.
        self._raw: dict[str, Any] = copy.deepcopy(dict(entries))
        self._models: dict[str, ModelSpec] = {}
        for model_id, entry in self._raw.items():
            if not isinstance(model_id, str) or not model_id:
                raise CatalogError(f"model id must be a non-empty string, got {model_id!r}")
            self._models[model_id] = _parse_model(model_id, entry)
        self._aliases: dict[str, str] = {}
        for spec in self._models.values():
            for snap in spec.snapshots:
                other = self._aliases.get(snap)
                if other is not None and other != spec.id:
                    problem = f"{snap!r} is already a snapshot of {other!r}"
                    raise CatalogError(f"model {spec.id!r}: field 'snapshots': {problem}")
                self._aliases[snap] = spec.id

    def get(self, model_id: str) -> ModelSpec | None:
        # A real id wins over a snapshot alias, so an operator can pin a snapshot
        # as its own entry (with its own price) without removing the alias.
        spec = self._models.get(model_id)
        if spec is None and model_id in self._aliases:
            spec = self._models[self._aliases[model_id]]
        return spec

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and self.get(model_id) is not None

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __repr__(self) -> str:
        return f"Catalog({len(self)} models)"

    def with_overrides(self, entries: Mapping[str, Mapping[str, Any]]) -> Catalog:
        """A new catalog: new ids are added whole; existing ids get the given
        fields deep-merged over the packaged entry (lists are replaced)."""
        merged = dict(self._raw)
        for model_id, patch in entries.items():
            if not isinstance(patch, Mapping):
                raise CatalogError(f"model {model_id!r}: override must be a mapping, got {type(patch).__name__}")
            base = merged.get(model_id)
            merged[model_id] = _deep_merge(base, patch) if isinstance(base, Mapping) else patch
        return Catalog(merged)


def load_catalog(path: Path | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Catalog:
    """Load and validate a catalog file (default: the packaged ``models.yaml``)."""
    if path is None:
        source = f"switchyard.catalog/{_PACKAGED}"
        text = resources.files("switchyard.catalog").joinpath(_PACKAGED).read_text(encoding="utf-8")
    else:
        source = str(path)
        text = Path(path).read_text(encoding="utf-8")
    try:
        # libyaml's parser when PyYAML has it: the pure-Python one took about 0.15 s of every start.
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: invalid YAML: {exc}") from None
    if data is None:
        raise CatalogError(f"{source}: empty catalog")
    try:
        catalog = Catalog(data)
        return catalog.with_overrides(overrides) if overrides else catalog
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from None


# ---------------------------------------------------------------- parsing


def _deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class _Entry:
    """Reads fields of one model entry; every error names the model and field."""

    __slots__ = ("model_id",)

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def error(self, field: str, problem: str) -> CatalogError:
        return CatalogError(f"model {self.model_id!r}: field {field!r}: {problem}")

    def mapping(self, field: str, value: Any, known: tuple[str, ...] | frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(field, f"must be a mapping, got {_kind(value)}")
        for key in value:
            if key not in known:  # most likely a typo; silently ignoring it would hide the intent
                where = f"{field}.{key}" if field else str(key)
                raise self.error(where, f"unknown field (known: {', '.join(sorted(known))})")
        return value

    def string(self, field: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(field, f"must be a non-empty string, got {_kind(value)}")
        return value

    def integer(self, field: str, value: Any, minimum: int = 0) -> int:
        # bool is an int subclass; YAML `yes` must not become 1.
        if type(value) is not int:
            raise self.error(field, f"must be an integer, got {_kind(value)}")
        if value < minimum:
            raise self.error(field, f"must be >= {minimum}, got {value}")
        return value

    def decimal(self, field: str, value: Any) -> Decimal:
        # Strings only: a YAML float has already lost precision by the time we see it.
        if not isinstance(value, str):
            raise self.error(field, f'must be a quoted decimal string such as "1.75", got {_kind(value)} {value!r}')
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise self.error(field, f"{value!r} is not a decimal number") from None
        if not number.is_finite():
            raise self.error(field, f"{value!r} is not a finite number")
        if number < 0:
            raise self.error(field, f"must not be negative, got {value!r}")
        return number

    def optional_decimal(self, field: str, value: Any) -> Decimal | None:
        return None if value is None else self.decimal(field, value)

    def names(self, field: str, value: Any, allowed: frozenset[str] | None = None) -> tuple[str, ...]:
        """A list of strings; with ``allowed``, each must be one of them."""
        if not isinstance(value, list):
            raise self.error(field, f"must be a list, got {_kind(value)}")
        for item in value:
            if not isinstance(item, str) or not item:
                raise self.error(field, f"items must be non-empty strings, got {_kind(item)} {item!r}")
            if allowed is not None and item not in allowed:
                raise self.error(field, f"unknown value {item!r} (allowed: {', '.join(sorted(allowed))})")
        return tuple(value)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _parse_model(model_id: str, entry: Any) -> ModelSpec:
    e = _Entry(model_id)
    if not isinstance(entry, Mapping):
        raise CatalogError(f"model {model_id!r}: entry must be a mapping, got {_kind(entry)}")
    e.mapping("", entry, _REQUIRED + _OPTIONAL)
    for field in _REQUIRED:
        if field not in entry:
            raise e.error(field, "missing")

    provider = e.string("provider", entry["provider"])
    if provider not in PROVIDERS:
        raise e.error("provider", f"unknown provider {provider!r} (allowed: {', '.join(sorted(PROVIDERS))})")

    context_window = e.integer("context_window", entry["context_window"], minimum=1)
    max_output_tokens = e.integer("max_output_tokens", entry["max_output_tokens"], minimum=1)
    if max_output_tokens > context_window:
        raise e.error("max_output_tokens", f"{max_output_tokens} exceeds context_window {context_window}")

    capabilities = frozenset(e.names("capabilities", entry["capabilities"], CAPABILITIES))
    endpoints = frozenset(e.names("endpoints", entry["endpoints"], ENDPOINTS))
    if not endpoints:
        raise e.error("endpoints", "must list at least one endpoint")

    efforts = e.names("reasoning_efforts", _or(entry.get("reasoning_efforts"), []), REASONING_EFFORTS)
    default_effort = entry.get("default_reasoning_effort")
    if default_effort is not None and default_effort not in efforts:
        raise e.error("default_reasoning_effort", f"{default_effort!r} is not one of reasoning_efforts {list(efforts)}")
    if bool(efforts) != ("reasoning" in capabilities):
        raise e.error("reasoning_efforts", "must be given exactly when capabilities include 'reasoning'")

    snapshots = e.names("snapshots", _or(entry.get("snapshots"), []))
    multipliers = e.mapping("multipliers", _or(entry.get("multipliers"), {}), SERVICE_TIERS)

    image_tokens = None
    if entry.get("image_tokens") is not None:
        if "vision" not in capabilities:
            raise e.error("image_tokens", "given but capabilities lack 'vision'")
        image_tokens = _parse_image_tokens(e, entry["image_tokens"])

    overhead = PromptOverhead()
    if entry.get("prompt_overhead") is not None:
        raw = e.mapping("prompt_overhead", entry["prompt_overhead"], _OVERHEAD_FIELDS)
        overhead = PromptOverhead(**{k: e.integer(f"prompt_overhead.{k}", v) for k, v in raw.items()})

    if entry.get("notes") is not None and not isinstance(entry["notes"], str):
        raise e.error("notes", f"must be a string, got {_kind(entry['notes'])}")

    raw_units = _or(entry.get("units"), {})
    if not isinstance(raw_units, Mapping):
        raise e.error("units", f"must be a mapping, got {_kind(raw_units)}")
    units: dict[str, UnitPrice] = {}
    for name, unit in raw_units.items():
        fields = e.mapping(f"units.{name}", unit, ("usd", "per"))
        units[str(name)] = UnitPrice(e.decimal(f"units.{name}.usd", fields.get("usd")),
                                     e.integer(f"units.{name}.per", fields.get("per"), minimum=1))
    output_images: dict[str, Mapping[str, int]] = {}
    raw_images = _or(entry.get("image_output_tokens"), {})
    if not isinstance(raw_images, Mapping):
        raise e.error("image_output_tokens", f"must be a mapping, got {_kind(raw_images)}")
    for quality, sizes in raw_images.items():
        if not isinstance(sizes, Mapping) or not sizes:
            raise e.error(f"image_output_tokens.{quality}", "must map sizes to token counts")
        output_images[str(quality)] = MappingProxyType(
            {str(size): e.integer(f"image_output_tokens.{quality}.{size}", n, minimum=1) for size, n in sizes.items()})

    return ModelSpec(
        id=model_id,
        provider=provider,
        owned_by=e.string("owned_by", entry["owned_by"]),
        created=e.integer("created", entry["created"]),
        context_window=context_window,
        max_output_tokens=max_output_tokens,
        prices=_parse_prices(e, entry["prices"]),
        multipliers=MappingProxyType({tier: e.decimal(f"multipliers.{tier}", v) for tier, v in multipliers.items()}),
        capabilities=capabilities,
        endpoints=endpoints,
        reasoning_efforts=efforts,
        default_reasoning_effort=default_effort,
        image_tokens=image_tokens,
        snapshots=snapshots,
        prompt_overhead=overhead,
        units=MappingProxyType(units),
        image_output_tokens=MappingProxyType(output_images),
        audio_tokens_per_second=(None if entry.get("audio_tokens_per_second") is None else
                                 e.integer("audio_tokens_per_second", entry["audio_tokens_per_second"], minimum=1)),
    )


def _or(value: Any, default: Any) -> Any:
    # Optional fields may be omitted or written as null.
    return default if value is None else value


def _parse_prices(e: _Entry, value: Any) -> Prices:
    prices = e.mapping("prices", value, _PRICE_FIELDS)
    for field in ("input", "cached_input", "output"):
        if field not in prices:
            raise e.error(f"prices.{field}", "missing (use null for cached_input when there is no cached price)")
    return Prices(
        input=e.decimal("prices.input", prices["input"]),
        cached_input=e.optional_decimal("prices.cached_input", prices["cached_input"]),
        output=e.decimal("prices.output", prices["output"]),
        cache_write=e.optional_decimal("prices.cache_write", prices.get("cache_write")),
    )


def _parse_image_tokens(e: _Entry, value: Any) -> ImageTokenSpec:
    spec = e.mapping("image_tokens", value, _IMAGE_FIELDS)
    method = spec.get("method")
    if method not in ("patch", "tile"):
        raise e.error("image_tokens.method", f"must be 'patch' or 'tile', got {method!r}")
    required = ("patch_size", "multiplier") if method == "patch" else ("base_tokens", "tile_tokens", "tile_size")
    for field in required:
        if spec.get(field) is None:
            raise e.error(f"image_tokens.{field}", f"missing (required for method {method!r})")

    def opt_int(field: str) -> int | None:
        return None if spec.get(field) is None else e.integer(f"image_tokens.{field}", spec[field], minimum=1)

    details = e.mapping("image_tokens.details", spec.get("details"), DETAIL_LEVELS)
    parsed: dict[str, Mapping[str, Any]] = {}
    for level, rule in details.items():
        where = f"image_tokens.details.{level}"
        rule = e.mapping(where, rule if rule is not None else {}, _DETAIL_FIELDS)
        for field in ("max_dim", "patch_budget"):
            if field in rule:
                e.integer(f"{where}.{field}", rule[field], minimum=1)
        if "fixed" in rule and not isinstance(rule["fixed"], bool):
            raise e.error(f"{where}.fixed", f"must be true or false, got {_kind(rule['fixed'])}")
        if "same_as" in rule:
            target = rule["same_as"]
            concrete = isinstance(target, str) and target in details and "same_as" not in (details[target] or {})
            if target == level or not concrete:
                raise e.error(f"{where}.same_as", f"must name another, concrete detail level, got {target!r}")
        parsed[level] = MappingProxyType(dict(rule))

    return ImageTokenSpec(
        method=method,
        patch_size=opt_int("patch_size"),
        multiplier=e.optional_decimal("image_tokens.multiplier", spec.get("multiplier")),
        base_tokens=opt_int("base_tokens"),
        tile_tokens=opt_int("tile_tokens"),
        tile_size=opt_int("tile_size"),
        max_dim=opt_int("max_dim"),
        short_side=opt_int("short_side"),
        details=MappingProxyType(parsed),
    )

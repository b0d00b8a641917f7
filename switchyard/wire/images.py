"""OpenAI's Images API: generations (JSON), edits and variations (multipart), checked against
the model's catalog entry (sizes, qualities, how many), priced as OpenAI prices them.

GPT image models (`image_output_tokens` in the catalog) bill text input, image input and image
output tokens; DALL·E bills each image by quality and size (`units` image.<quality>.<size>).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from switchyard.catalog import ModelSpec
from switchyard.files.registry import sniff_image
from switchyard.metering.cost import TokenUsage
from switchyard.metering.image_size import image_size
from switchyard.metering.units import Metered, media_cost_nanos
from switchyard.wire.errors import GatewayError, invalid_request
from switchyard.wire.forms import Form, Upload

KINDS = {"generations": "images.generations", "edits": "images.edits", "variations": "images.variations"}
RESPONSE_FORMATS = ("url", "b64_json")
OUTPUT_FORMATS = ("png", "jpeg", "webp")
BACKGROUNDS = ("transparent", "opaque", "auto")
PARTIAL_IMAGE_TOKENS = 100  # OpenAI: each partial image of a stream adds 100 image output tokens
MAX_IMAGES = 16  # input images of one edit (OpenAI's limit)
# Fields passed to the upstream as the client sent them (after their checks here).
_FORWARDED = ("prompt", "n", "size", "quality", "background", "output_format", "output_compression", "moderation",
              "style", "user", "partial_images", "input_fidelity", "stream")


@dataclass(slots=True)
class ImageRequest:
    kind: str  # generations | edits | variations
    model: str
    prompt: str
    n: int
    size: str  # "auto" or WIDTHxHEIGHT
    quality: str  # "auto" or the model's own
    response_format: str  # what the client gets: url or b64_json
    stream: bool
    partial_images: int
    fields: dict[str, Any]  # forwarded to the upstream
    images: list[Upload] = field(default_factory=list)
    mask: Upload | None = None

    @property
    def endpoint(self) -> str:
        return KINDS[self.kind]


def parse_generation(raw: Any) -> ImageRequest:
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    return _request("generations", {k: v for k, v in raw.items() if v is not None}, [], None)


def parse_form(kind: str, form: Form) -> ImageRequest:
    """An edit or a variation, from its multipart form (numbers arrive as strings)."""
    raw: dict[str, Any] = {name: form.get(name) for name in form.fields if not name.endswith("[]")}
    for name in ("n", "partial_images", "output_compression"):
        if raw.get(name) is not None:
            raw[name] = _integer_text(raw[name], name)
    if raw.get("stream") is not None:
        raw["stream"] = str(raw["stream"]).lower() == "true"
    images = form.uploads("image")
    if not images:
        raise invalid_request("Missing required parameter: 'image'.", param="image", code="missing_required_parameter")
    masks = form.uploads("mask")
    return _request(kind, raw, images, masks[0] if masks else None)


def _request(kind: str, raw: dict[str, Any], images: list[Upload], mask: Upload | None) -> ImageRequest:
    model = raw.get("model", "dall-e-2")  # OpenAI's default
    if not isinstance(model, str) or not model:
        raise invalid_request("Invalid 'model': expected a string.", param="model")
    prompt = raw.get("prompt")
    if kind != "variations":
        if prompt is None:
            raise invalid_request("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid_request("Invalid 'prompt': expected a non-empty string.", param="prompt")
    n = raw.get("n", 1)
    if type(n) is not int or not 1 <= n <= 10:
        raise invalid_request(f"Invalid 'n': {n!r}; it must be an integer from 1 to 10.", param="n")
    response_format = raw.get("response_format", "b64_json" if _gpt_image_name(model) else "url")
    if response_format not in RESPONSE_FORMATS:
        raise invalid_request(f"Invalid 'response_format': {str(response_format)[:40]!r}; one of url, b64_json.",
                              param="response_format")
    stream = raw.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid_request("Invalid 'stream': expected a boolean.", param="stream")
    partial = raw.get("partial_images", 0)
    if type(partial) is not int or not 0 <= partial <= 3:
        raise invalid_request(f"Invalid 'partial_images': {partial!r}; it must be from 0 to 3.", param="partial_images")
    for name, allowed in (("output_format", OUTPUT_FORMATS), ("background", BACKGROUNDS)):
        if name in raw and raw[name] not in allowed:
            raise invalid_request(f"Invalid '{name}': {str(raw[name])[:40]!r}; one of {', '.join(allowed)}.", param=name)
    if len(images) > MAX_IMAGES:
        raise invalid_request(f"Too many images: at most {MAX_IMAGES}.", param="image")
    return ImageRequest(
        kind=kind, model=model, prompt=prompt or "", n=n, size=str(raw.get("size") or "auto"),
        quality=str(raw.get("quality") or "auto"), response_format=response_format, stream=stream,
        partial_images=partial if stream else 0, fields={k: raw[k] for k in _FORWARDED if k in raw},
        images=images, mask=mask,
    )


def _integer_text(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise invalid_request(f"Invalid '{name}': {value[:40]!r} is not an integer.", param=name) from None


def _gpt_image_name(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


# ---- what a model accepts -------------------------------------------------------------------


class ImagePricing:
    """A request's prices at one model: the check of its size and quality, the worst case held
    at admission, and the bill of the answer."""

    def __init__(self, req: ImageRequest, spec: ModelSpec) -> None:
        self.req, self.spec = req, spec
        self.token_billed = bool(spec.image_output_tokens)
        self.sizes, self.qualities = self._offered()
        self._check()

    def _offered(self) -> tuple[list[str], list[str]]:
        spec = self.spec
        if self.token_billed:
            qualities = list(spec.image_output_tokens)
            sizes = sorted({size for table in spec.image_output_tokens.values() for size in table})
            return sizes, qualities
        per_image = [name.split(".") for name in spec.units if name.startswith("image.")]
        return sorted({p[2] for p in per_image if len(p) == 3}), sorted({p[1] for p in per_image if len(p) == 3})

    def _check(self) -> None:
        req = self.req
        if req.size != "auto" and req.size not in self.sizes:
            raise invalid_request(f"Invalid 'size': '{req.size[:40]}' is not supported by {self.spec.id}; supported: "
                                  f"{', '.join(self.sizes)}{', auto' if self.token_billed else ''}.", param="size")
        if req.size == "auto" and not self.token_billed and req.kind == "generations" and "1024x1024" not in self.sizes:
            raise invalid_request(f"'size' is required for {self.spec.id}.", param="size")
        if req.quality != "auto" and req.quality not in self.qualities:
            raise invalid_request(f"Invalid 'quality': '{req.quality[:40]}' is not supported by {self.spec.id}; "
                                  f"supported: {', '.join(self.qualities)}, auto.", param="quality")
        if not self.token_billed:
            if self.spec.id.startswith("dall-e-3") and req.n != 1:
                raise invalid_request("Invalid 'n': dall-e-3 makes one image per request.", param="n")
            if req.stream:
                raise invalid_request(f"Streaming is only for the GPT image models, not {self.spec.id}.", param="stream")
            for name in ("background", "output_format", "output_compression", "moderation", "input_fidelity"):
                if name in req.fields:
                    raise invalid_request(f"'{name}' is only for the GPT image models, not {self.spec.id}.", param=name)

    def dall_e_unit(self, quality: str | None = None, size: str | None = None) -> str:
        q = quality or (self.req.quality if self.req.quality != "auto" else "standard")
        if q not in self.qualities:
            q = self.qualities[0]
        s = size or (self.req.size if self.req.size != "auto" else "1024x1024")
        return f"image.{q}.{s}"

    def worst_case(self, text_bound: int) -> int:
        """The most the request can cost at list price: the prompt at its byte bound, every input
        image at the catalog's per-image bound, every output image at its largest token count."""
        spec, req = self.spec, self.req
        if not self.token_billed:
            return media_cost_nanos(spec, TokenUsage(0), {self.dall_e_unit(): req.n})
        image_in = len(req.images) * spec.prompt_overhead.image + (spec.prompt_overhead.image if req.mask else 0)
        output = req.n * (self._largest_output() + req.partial_images * PARTIAL_IMAGE_TOKENS)
        usage = TokenUsage(input_tokens=text_bound + spec.prompt_overhead.per_request + image_in, output_tokens=output)
        return media_cost_nanos(spec, usage, {"image_input_token": image_in})

    def _largest_output(self) -> int:
        tables = self.spec.image_output_tokens
        qualities = [self.req.quality] if self.req.quality != "auto" else list(tables)
        return max(count for q in qualities for size, count in tables[q].items()
                   if self.req.size in ("auto", size))

    def metered(self, answer: dict[str, Any], counted_prompt: int) -> Metered:
        """The bill of an answer: the upstream's usage for GPT image models (or, when it sends
        none, each image at its table count and the prompt as we count it); per image for DALL·E."""
        images = answer.get("data") if isinstance(answer.get("data"), list) else []
        if not self.token_billed:
            size = answer.get("size") if answer.get("size") in self.sizes else None
            return Metered(TokenUsage(0), {self.dall_e_unit(size=size): len(images)})
        usage = answer.get("usage")
        if isinstance(usage, dict) and _count(usage.get("output_tokens")) is not None:
            details = usage.get("input_tokens_details") if isinstance(usage.get("input_tokens_details"), dict) else {}
            image_in = _count(details.get("image_tokens")) or 0
            text_in = _count(details.get("text_tokens"))
            total_in = _count(usage.get("input_tokens"))
            total_in = total_in if total_in is not None else (text_in or 0) + image_in
            return Metered(TokenUsage(input_tokens=max(total_in, image_in), output_tokens=_count(usage["output_tokens"]) or 0),
                           {"image_input_token": image_in})
        quality = answer.get("quality") if answer.get("quality") in self.spec.image_output_tokens else None
        size = answer.get("size")
        table = self.spec.image_output_tokens
        per_image = (table[quality].get(size) if quality and isinstance(size, str) else None) or self._largest_output()
        image_in = len(self.req.images) * self.spec.prompt_overhead.image
        return Metered(TokenUsage(input_tokens=counted_prompt + image_in, output_tokens=per_image * max(len(images), 1)),
                       {"image_input_token": image_in})


def _count(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


# ---- uploads ------------------------------------------------------------------------------


def check_uploads(req: ImageRequest, spec: ModelSpec, max_bytes: int) -> list[tuple[str, tuple[int, int]]]:
    """Each input image is PNG, JPEG or WebP (by its bytes, not its name) within `max_bytes`;
    DALL·E 2 wants square PNGs under 4 MB; a mask is a PNG the size of the first image.
    Returns each image's content type and size."""
    dall_e = not spec.image_output_tokens
    found = []
    for i, upload in enumerate(req.images):
        param = "image" if len(req.images) == 1 else f"image[{i}]"
        kind = sniff_image(upload.data[:16])
        if kind not in ("image/png", "image/jpeg", "image/webp") or (dall_e and kind != "image/png"):
            wanted = "a PNG" if dall_e else "a PNG, JPEG or WebP image"
            raise invalid_request(f"Invalid '{param}': the file '{upload.filename[:100]}' is not {wanted}.", param=param,
                                  code="invalid_image_format")
        limit = 4 * 1024 * 1024 if dall_e else max_bytes
        if len(upload.data) > limit:
            raise GatewayError(413, f"Invalid '{param}': images must be smaller than {limit // (1024 * 1024)} MB.",
                               param=param, code="image_too_large")
        try:
            size = image_size(upload.data)
        except ValueError as exc:
            raise invalid_request(f"Invalid '{param}': {exc}", param=param, code="invalid_image") from None
        if dall_e and size[0] != size[1]:
            raise invalid_request(f"Invalid '{param}': {spec.id} needs a square image, not {size[0]}x{size[1]}.",
                                  param=param, code="invalid_image")
        found.append((kind, size))
    if req.mask is not None:
        if sniff_image(req.mask.data[:16]) != "image/png":
            raise invalid_request("Invalid 'mask': the mask must be a PNG image.", param="mask", code="invalid_image_format")
        try:
            mask_size = image_size(req.mask.data)
        except ValueError as exc:
            raise invalid_request(f"Invalid 'mask': {exc}", param="mask", code="invalid_image") from None
        if found and mask_size != found[0][1]:
            w, h = found[0][1]
            raise invalid_request(f"Invalid 'mask': it is {mask_size[0]}x{mask_size[1]}; it must be the size of the "
                                  f"image, {w}x{h}.", param="mask", code="invalid_image_dimensions")
    return found

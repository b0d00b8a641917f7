"""OpenAI's Audio API: transcriptions and translations (multipart), speech (JSON); the transcript
formats (text, srt, vtt) rendered from the upstream's JSON, and what each is billed on."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from switchyard.catalog import ModelSpec
from switchyard.metering.audio_duration import AudioError, audio_duration_ms, audio_format
from switchyard.metering.cost import TokenUsage
from switchyard.metering.units import Metered, media_cost_nanos
from switchyard.wire.errors import invalid_request
from switchyard.wire.forms import Form, Upload

TRANSCRIPT_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
SPEECH_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
                "pcm": "audio/pcm"}
MAX_SPEECH_CHARACTERS = 4096
_CONTENT_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "ogg": "audio/ogg", "mp4": "audio/mp4",
                  "webm": "audio/webm"}
_FORWARDED = ("language", "prompt", "temperature", "chunking_strategy")


@dataclass(slots=True)
class TranscriptionRequest:
    task: str  # transcriptions | translations
    model: str
    file: Upload
    content_type: str  # of the audio, by its bytes
    duration_ms: int  # read from the file, never from the client
    response_format: str
    stream: bool
    prompt: str
    fields: dict[str, Any]  # forwarded (response_format is ours to choose)
    granularities: list[str]
    include: list[str]

    @property
    def endpoint(self) -> str:
        return f"audio.{self.task}"


def parse_transcription(task: str, form: Form) -> TranscriptionRequest:
    model = form.get("model")
    if not model:
        raise invalid_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    files = form.uploads("file")
    if not files:
        raise invalid_request("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
    upload = files[0]
    kind = audio_format(upload.data)
    try:
        duration = audio_duration_ms(upload.data)
    except AudioError as exc:
        raise invalid_request(f"Invalid file format: {exc}.", param="file", code="invalid_value") from None
    assert kind is not None
    response_format = form.get("response_format") or "json"
    if response_format not in TRANSCRIPT_FORMATS:
        raise invalid_request(f"Invalid 'response_format': '{response_format[:40]}'; one of "
                              f"{', '.join(TRANSCRIPT_FORMATS)}.", param="response_format")
    stream = (form.get("stream") or "false").lower() == "true"
    granularities = form.all("timestamp_granularities")
    if any(g not in ("word", "segment") for g in granularities):
        raise invalid_request("Invalid 'timestamp_granularities': each is 'word' or 'segment'.",
                              param="timestamp_granularities")
    if granularities and response_format != "verbose_json":
        raise invalid_request("'timestamp_granularities' needs response_format 'verbose_json'.",
                              param="timestamp_granularities")
    fields: dict[str, Any] = {name: form.get(name) for name in _FORWARDED if form.get(name) is not None}
    if task == "translations":
        fields.pop("language", None)  # translations are always into English
        if stream:
            raise invalid_request("Translations are not streamed.", param="stream")
    temperature = fields.get("temperature")
    if temperature is not None:
        try:
            if not 0 <= float(temperature) <= 1:
                raise ValueError
        except ValueError:
            raise invalid_request("Invalid 'temperature': a number from 0 to 1.", param="temperature") from None
    return TranscriptionRequest(
        task=task, model=model, file=upload, content_type=_CONTENT_TYPES[kind], duration_ms=duration,
        response_format=response_format, stream=stream, prompt=str(fields.get("prompt") or ""), fields=fields,
        granularities=granularities, include=form.all("include"),
    )


class TranscriptionPricing:
    """A transcription at one model: per minute of audio (whisper) or per token (GPT-4o audio)."""

    def __init__(self, req: TranscriptionRequest, spec: ModelSpec) -> None:
        self.req, self.spec = req, spec
        self.per_minute = "audio_ms" in spec.units
        if not self.per_minute and "audio_input_token" not in spec.units:
            raise invalid_request(f"Model {spec.id} has no audio price in the catalog.", param="model")
        if not self.per_minute and req.response_format in ("srt", "vtt", "verbose_json"):
            raise invalid_request(f"response_format '{req.response_format}' is not supported by {spec.id}; use json "
                                  "or text.", param="response_format")
        if self.per_minute and req.stream:
            raise invalid_request(f"Streaming is not supported by {spec.id}.", param="stream")

    def upstream_format(self) -> str:
        """What to ask the upstream for: JSON always, with segments when a timed format is wanted."""
        return "verbose_json" if self.req.response_format in ("srt", "vtt", "verbose_json") else "json"

    def _audio_bound(self) -> int:
        return math.ceil(self.req.duration_ms * (self.spec.audio_tokens_per_second or 50) / 1000)

    def worst_case(self) -> int:
        if self.per_minute:
            return media_cost_nanos(self.spec, TokenUsage(0), {"audio_ms": self.req.duration_ms})
        audio = self._audio_bound()
        text = len(self.req.prompt.encode()) + self.spec.prompt_overhead.per_request
        usage = TokenUsage(input_tokens=audio + text, output_tokens=self.spec.max_output_tokens)
        return media_cost_nanos(self.spec, usage, {"audio_input_token": audio})

    def metered(self, usage: Any) -> Metered:
        """Whisper: the file's own duration. GPT-4o audio: the upstream's token usage (when it
        sends none, the audio at its bound: the hold, never more)."""
        if self.per_minute:
            return Metered(TokenUsage(0), {"audio_ms": self.req.duration_ms})
        if isinstance(usage, dict) and usage.get("type", "tokens") == "tokens" and _n(usage.get("input_tokens")) is not None:
            details = usage.get("input_token_details") if isinstance(usage.get("input_token_details"), dict) else {}
            total_in = _n(usage.get("input_tokens")) or 0
            audio = min(_n(details.get("audio_tokens")) if _n(details.get("audio_tokens")) is not None else total_in,
                        total_in)
            return Metered(TokenUsage(input_tokens=total_in, output_tokens=_n(usage.get("output_tokens")) or 0),
                           {"audio_input_token": audio})
        audio = self._audio_bound()
        text = len(self.req.prompt.encode()) + self.spec.prompt_overhead.per_request
        return Metered(TokenUsage(input_tokens=audio + text, output_tokens=self.spec.max_output_tokens),
                       {"audio_input_token": audio})


def _n(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


# ---- transcript formats --------------------------------------------------------------------


def render_transcript(answer: dict[str, Any], response_format: str) -> tuple[str | dict[str, Any], str]:
    """(body, media type) in the format the client asked for, from the upstream's JSON."""
    if response_format in ("json", "verbose_json"):
        return answer, "application/json"
    text = str(answer.get("text") or "")
    if response_format == "text":
        return text + "\n", "text/plain; charset=utf-8"
    segments = [s for s in answer.get("segments") or () if isinstance(s, dict)] or [
        {"start": 0, "end": float(answer.get("duration") or 0), "text": text}]
    lines = ["WEBVTT", ""] if response_format == "vtt" else []
    for i, seg in enumerate(segments, start=1):
        start, end = _stamp(seg.get("start"), response_format), _stamp(seg.get("end"), response_format)
        if response_format == "srt":
            lines.append(str(i))
        lines += [f"{start} --> {end}", str(seg.get("text") or "").strip(), ""]
    return "\n".join(lines) + "\n", "text/plain; charset=utf-8"


def _stamp(seconds: Any, response_format: str) -> str:
    ms = round(float(seconds or 0) * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    sep = "," if response_format == "srt" else "."
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


# ---- speech --------------------------------------------------------------------------------


@dataclass(slots=True)
class SpeechRequest:
    model: str
    input: str
    response_format: str
    stream_format: str  # audio (raw bytes) or sse (the client's choice; upstream's is the provider's)
    fields: dict[str, Any]


def parse_speech(raw: Any) -> SpeechRequest:
    if not isinstance(raw, dict):
        raise invalid_request("The request body must be a JSON object.")
    for name in ("model", "input", "voice"):
        if raw.get(name) in (None, ""):
            raise invalid_request(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    text = raw["input"]
    if not isinstance(text, str):
        raise invalid_request("Invalid 'input': expected a string.", param="input")
    if len(text) > MAX_SPEECH_CHARACTERS:
        raise invalid_request(f"Invalid 'input': {len(text):,} characters, at most {MAX_SPEECH_CHARACTERS:,}.",
                              param="input", code="string_above_max_length")
    fmt = raw.get("response_format") or "mp3"
    if fmt not in SPEECH_FORMATS:
        raise invalid_request(f"Invalid 'response_format': '{str(fmt)[:40]}'; one of {', '.join(SPEECH_FORMATS)}.",
                              param="response_format")
    stream_format = raw.get("stream_format") or "audio"
    if stream_format not in ("audio", "sse"):
        raise invalid_request("Invalid 'stream_format': 'audio' or 'sse'.", param="stream_format")
    speed = raw.get("speed")
    if speed is not None and (not isinstance(speed, (int, float)) or isinstance(speed, bool) or not 0.25 <= speed <= 4):
        raise invalid_request("Invalid 'speed': a number from 0.25 to 4.0.", param="speed")
    return SpeechRequest(model=str(raw["model"]), input=text, response_format=fmt, stream_format=stream_format,
                         fields={k: v for k, v in raw.items() if k not in ("model", "stream_format") and v is not None})


class SpeechPricing:
    """Speech at one model: per input character (tts-1), or text and audio tokens (gpt-4o-mini-tts)."""

    def __init__(self, req: SpeechRequest, spec: ModelSpec) -> None:
        self.req, self.spec = req, spec
        self.per_character = "character" in spec.units
        if not self.per_character and "audio_output_token" not in spec.units:
            raise invalid_request(f"Model {spec.id} has no speech price in the catalog.", param="model")
        if self.per_character and req.stream_format == "sse":
            raise invalid_request(f"stream_format 'sse' is not supported by {spec.id}.", param="stream_format")
        if self.per_character and "instructions" in req.fields:
            raise invalid_request(f"'instructions' are not supported by {spec.id}.", param="instructions")

    def _text_bound(self) -> int:
        instructions = str(self.req.fields.get("instructions") or "")
        return len(self.req.input.encode()) + len(instructions.encode()) + self.spec.prompt_overhead.per_request

    def worst_case(self) -> int:
        if self.per_character:
            return media_cost_nanos(self.spec, TokenUsage(0), {"character": len(self.req.input)})
        out = self.spec.max_output_tokens
        return media_cost_nanos(self.spec, TokenUsage(input_tokens=self._text_bound(), output_tokens=out),
                                {"audio_output_token": out})

    def metered(self, usage: dict[str, Any] | None, counted_input: int) -> Metered:
        """tts-1: the characters asked for (billed whether or not all the audio was heard).
        GPT-4o speech: the upstream's usage; without one (the client left early) the text only."""
        if self.per_character:
            return Metered(TokenUsage(0), {"character": len(self.req.input)})
        if isinstance(usage, dict) and _n(usage.get("output_tokens")) is not None:
            out = _n(usage.get("output_tokens")) or 0
            details = usage.get("output_token_details") if isinstance(usage.get("output_token_details"), dict) else {}
            audio = _n(details.get("audio_tokens"))
            return Metered(TokenUsage(input_tokens=_n(usage.get("input_tokens")) or counted_input, output_tokens=out),
                           {"audio_output_token": out if audio is None else min(audio, out)})
        return Metered(TokenUsage(input_tokens=counted_input), {"audio_output_token": 0})

"""`POST /v1/audio/transcriptions`, `/translations` and `/speech`: transcripts billed per minute
of the file's own duration (whisper) or per token (GPT-4o audio); speech per input character or
per token, its audio streamed through as it is made and billed before the last bytes go out."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson

from switchyard.accounts.billing import usd_number
from switchyard.accounts.records import Principal
from switchyard.gateway import Gateway, Outcome, Trace, first_batch, new_trace
from switchyard.metering.tokens import count_text
from switchyard.providers import MediaCall, Speech
from switchyard.routing.table import Deployment
from switchyard.wire.audio import (
    SPEECH_TYPES, SpeechPricing, SpeechRequest, TranscriptionPricing, TranscriptionRequest, render_transcript,
)
from switchyard.wire.errors import GatewayError
from switchyard.wire.sse import event_frame


async def transcribe(gw: Gateway, req: TranscriptionRequest, principal: Principal, request_id: str) -> Outcome:
    path = f"/v1/audio/{req.task}"
    trace = new_trace({"model": req.model, "stream": req.stream}, principal, request_id, path, False)
    return await gw.traced(trace, _transcribe(gw, req, trace, path))


async def _transcribe(gw: Gateway, req: TranscriptionRequest, trace: Trace, path: str) -> Outcome:
    admitted = await gw.admit_inputs(trace, req.model, [req.prompt or "."], req.endpoint, path,
                                     worst=lambda dep: TranscriptionPricing(req, dep.spec).worst_case(), stream=req.stream)
    ticket = admitted.ticket

    def call(dep: Deployment) -> MediaCall:
        pricing = TranscriptionPricing(req, dep.spec)
        fields: dict[str, Any] = {**req.fields, "response_format": pricing.upstream_format()}
        if req.granularities:
            fields["timestamp_granularities"] = req.granularities
        if req.include:
            fields["include"] = req.include
        if req.stream:
            fields["stream"] = True
        return MediaCall(f"/audio/{req.task}", fields, [("file", req.file.filename or "audio", req.content_type,
                                                          req.file.data)], dep.config.model, trace.request_id)

    if req.stream:
        return admitted.headed(await gw.media_stream(
            ticket, admitted.candidates, lambda dep: dep.provider.transcribe_stream(call(dep)),
            lambda e: e.get("type") == "transcript.text.done",
            lambda dep, finals: TranscriptionPricing(req, dep.spec).metered(finals[-1].get("usage") if finals else None)))

    async def transcribe_at(dep: Deployment) -> dict[str, Any]:
        await gw.deployment_limits(dep, ticket.rate_tokens)
        return await dep.provider.transcribe(call(dep))

    outcome = await gw.answered(ticket, admitted.candidates, transcribe_at, None, None,
                                meter=lambda body, dep: TranscriptionPricing(req, dep.spec).metered(body.get("usage")))
    assert outcome.body is not None
    if req.response_format == "json":
        outcome.body = {k: v for k, v in outcome.body.items() if k in ("text", "usage", "logprobs")}
    body, media_type = render_transcript(outcome.body, req.response_format)
    if isinstance(body, str):
        outcome.body, outcome.content, outcome.media_type = None, body.encode(), media_type
    return admitted.headed(outcome)


async def speak(gw: Gateway, req: SpeechRequest, principal: Principal, request_id: str) -> Outcome:
    trace = new_trace({"model": req.model}, principal, request_id, "/v1/audio/speech", False)
    trace.stream = True
    return await gw.traced(trace, _speak(gw, req, trace))


async def _speak(gw: Gateway, req: SpeechRequest, trace: Trace) -> Outcome:
    admitted = await gw.admit_inputs(trace, req.model, [req.input], "audio.speech", "/v1/audio/speech",
                                     worst=lambda dep: SpeechPricing(req, dep.spec).worst_case(), stream=True)
    ticket = admitted.ticket
    counted_input = count_text(req.input + str(req.fields.get("instructions") or ""))

    async def open_at(dep: Deployment) -> tuple[Speech, bytes]:
        await gw.deployment_limits(dep, ticket.rate_tokens)
        SpeechPricing(req, dep.spec)
        speech = await dep.provider.speak(MediaCall("/audio/speech", dict(req.fields), [], dep.config.model,
                                                    trace.request_id))
        return speech, await first_batch(dep, speech.chunks)

    dep, (speech, first), attempts = await gw.first_stream(ticket, admitted.candidates, open_at)
    pricing = SpeechPricing(req, dep.spec)
    frames = _speech_frames(gw, ticket, speech, first, pricing, counted_input, req.stream_format == "sse")
    outcome = gw.stream_outcome(ticket, dep, frames, speech.chunks, attempts)
    outcome.media_type = "text/event-stream" if req.stream_format == "sse" else SPEECH_TYPES[req.response_format]
    return admitted.headed(outcome)


async def _speech_frames(
    gw: Gateway, ticket: Any, speech: Speech, first: bytes, pricing: SpeechPricing, counted_input: int, sse: bool,
) -> AsyncGenerator[bytes, None]:
    """The audio as it comes, one piece held back until the bill is committed; as SSE events
    (`speech.audio.delta`, then `speech.audio.done` with usage) when the client asked for them."""
    chunks: AsyncIterator[bytes] = speech.chunks
    held: bytes | None = first
    try:
        while (piece := await anext(chunks, None)) is not None:
            if held:
                yield _audio_event(held) if sse else held
            held = piece
        metered = pricing.metered(speech.usage, counted_input)
        cost = await gw.settle_metered(ticket, metered, "completed")
        if held:
            yield _audio_event(held) if sse else held
        if sse:
            usage = {"input_tokens": metered.usage.input_tokens, "output_tokens": metered.usage.output_tokens,
                     "total_tokens": metered.usage.input_tokens + metered.usage.output_tokens,
                     "cost": usd_number(cost)}
            yield event_frame("speech.audio.done", orjson.dumps({"type": "speech.audio.done", "usage": usage}))
    except GatewayError as exc:
        if not ticket.settled:
            await gw.settle_metered(ticket, pricing.metered(speech.usage, counted_input), "partial", error_code=exc.code)
        if sse:
            yield event_frame("error", orjson.dumps({"type": "error", **exc.to_dict()}))
        # Raw audio has no way to say so but ending early: the client sees a short body.
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
        if not ticket.settled:
            await gw.shielded_settle(ticket, gw.settle_metered(ticket, pricing.metered(speech.usage, counted_input),
                                                               "cancelled"))


def _audio_event(data: bytes) -> bytes:
    return event_frame("speech.audio.delta", orjson.dumps({"type": "speech.audio.delta",
                                                           "audio": base64.b64encode(data).decode()}))

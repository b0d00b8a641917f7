"""The Audio API through the official SDK against a real server: transcriptions and translations
(multipart; every response format; streamed), speech streamed through; billed per minute of the
file's own duration, per character or per token, as the catalog says."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from fractions import Fraction

import httpx
import pytest

from tests.audio_files import wav
from tests.conftest import USER_KEY, Gateway, start_gateway
from tests.openapi_spec import Validate
from tests.standins.openai_media import TRANSCRIPT
from tests.standins.openai_upstream import StandInUpstream


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstream: StandInUpstream) -> Iterator[Gateway]:
    def model(upstream_model: str, catalog: str) -> dict:
        return {"deployments": [{"provider": "openai", "base_url": upstream.base_url, "api_key_env": "STANDIN_KEY",
                                 "model": upstream_model, "catalog": catalog}]}

    models = {name: model(name, name) for name in ("whisper-1", "gpt-4o-transcribe", "tts-1", "gpt-4o-mini-tts")}
    gateway = start_gateway(tmp_path_factory.mktemp("audio-gw"), config={"models": models},
                            env={"STANDIN_KEY": "sk-upstream-audio"})
    yield gateway
    gateway.stop()


def record(gw: Gateway, request_id: str) -> dict:
    return httpx.get(f"{gw.base_url}/requests/{request_id}", headers={"authorization": f"Bearer {USER_KEY}"}).json()


def last_sent(upstream: StandInUpstream, path: str) -> dict:
    return [r for r in upstream.received if r.path == path][-1].body


def test_whisper_bills_the_files_own_minutes_to_the_nano_dollar(gw: Gateway, upstream: StandInUpstream,
                                                                openapi: Validate) -> None:
    audio = wav(90.5)
    client = gw.client()
    raw = client.audio.transcriptions.with_raw_response.create(model="whisper-1", file=("talk.wav", audio, "audio/wav"),
                                                               language="en")
    answer = raw.parse()
    assert answer.text == TRANSCRIPT
    forwarded = last_sent(upstream, "/v1/audio/transcriptions")
    assert (forwarded["model"], forwarded["language"], forwarded["response_format"]) == ("whisper-1", "en", "json")
    assert forwarded["_files"][0]["size"] == len(audio) and forwarded["_files"][0]["content_type"] == "audio/wav"
    row = record(gw, raw.headers["x-request-id"])
    minutes = Fraction(90_500, 60_000)  # 1.5083... minutes, read from the WAV header
    assert row["usage"]["units"] == {"audio_ms": 90_500}
    assert row["cost_nanos"] == minutes * Fraction("0.006") * 10**9 == 9_050_000
    body = httpx.post(f"{gw.base_url}/audio/transcriptions", headers={"authorization": f"Bearer {USER_KEY}"},
                      data={"model": "whisper-1"}, files={"file": ("a.wav", wav(2.0), "audio/wav")}).json()
    assert body["usage"].pop("cost") == 0.0002  # two seconds at $0.006 a minute, beside OpenAI's fields
    openapi(body, "CreateTranscriptionResponseJson")


def test_every_transcript_format(gw: Gateway, openapi: Validate) -> None:
    client = gw.client()
    audio = ("clip.wav", wav(8.0), "audio/wav")
    text = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="text")
    assert text.strip() == TRANSCRIPT
    srt = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> 00:00:04,000\nThe quick brown fox\n\n2\n00:00:04,000 --> 00:00:08,000")
    vtt = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:04.000\nThe quick brown fox\n")
    verbose = httpx.post(f"{gw.base_url}/audio/transcriptions", headers={"authorization": f"Bearer {USER_KEY}"},
                         data={"model": "whisper-1", "response_format": "verbose_json"}, files={"file": audio}).json()
    assert verbose["duration"] == 8.0 and len(verbose["segments"]) == 2
    verbose.pop("usage")
    openapi(verbose, "CreateTranscriptionResponseVerboseJson")
    translated = client.audio.translations.create(model="whisper-1", file=audio)
    assert translated.text.startswith("Translated:")


def test_gpt4o_transcription_is_billed_by_token_and_streams(gw: Gateway) -> None:
    client = gw.client()
    audio = ("note.wav", wav(12.0), "audio/wav")
    raw = client.audio.transcriptions.with_raw_response.create(model="gpt-4o-transcribe", file=audio)
    row = record(gw, raw.headers["x-request-id"])
    audio_tokens, out = 120, len(TRANSCRIPT.split())  # the stand-in: ten audio tokens a second
    assert row["usage"]["units"] == {"audio_input_token": audio_tokens}
    assert row["cost_nanos"] == audio_tokens * 6_000 + out * 10_000
    events = list(client.audio.transcriptions.create(model="gpt-4o-transcribe", file=audio, stream=True))
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done" and events[-1].text == TRANSCRIPT
    assert "".join(e.delta for e in events[:-1]).strip() == TRANSCRIPT
    rows = httpx.get(f"{gw.base_url}/requests", headers={"authorization": f"Bearer {USER_KEY}"},
                     params={"model": "gpt-4o-transcribe"}).json()["data"]
    assert rows[0]["stream"] is True and rows[0]["cost_nanos"] == audio_tokens * 6_000 + out * 10_000


def test_speech_is_streamed_through_and_billed_per_character(gw: Gateway, upstream: StandInUpstream) -> None:
    client = gw.client()
    text = "Hello there, this is switchyard speaking."
    with client.audio.speech.with_streaming_response.create(model="tts-1", voice="alloy", input=text) as response:
        assert response.headers["content-type"] == "audio/mpeg"
        audio = b"".join(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    assert audio.startswith(b"ID3") and len(audio) == max(12_000, len(text) * 100)
    assert last_sent(upstream, "/v1/audio/speech") == {"model": "tts-1", "voice": "alloy", "input": text, "_files": []}
    row = record(gw, request_id)
    assert row["usage"]["units"] == {"character": len(text)} and row["cost_nanos"] == len(text) * 15_000  # $15 per 1M


def test_gpt4o_speech_is_billed_by_the_upstreams_tokens(gw: Gateway, upstream: StandInUpstream) -> None:
    client = gw.client()
    text = "Tokens, not characters."
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="coral", input=text,
                                                            instructions="cheerful") as response:
        audio = b"".join(response.iter_bytes())
        request_id = response.headers["x-request-id"]
    assert last_sent(upstream, "/v1/audio/speech")["stream_format"] == "sse"  # asked so the usage is theirs
    assert len(audio) == 12_000 and audio.startswith(b"ID3")  # decoded from the events, byte for byte
    row = record(gw, request_id)
    tokens_in, tokens_out = len(text.split()), 12_000 // 100
    assert row["usage"]["units"] == {"audio_output_token": tokens_out}
    assert row["cost_nanos"] == tokens_in * 600 + tokens_out * 12_000  # $0.60 and $12 per 1M
    # Asked for as events, the client gets OpenAI's speech events with the usage at the end.
    with httpx.stream("POST", f"{gw.base_url}/audio/speech", headers={"authorization": f"Bearer {USER_KEY}"},
                      json={"model": "gpt-4o-mini-tts", "voice": "coral", "input": text, "stream_format": "sse"}) as r:
        body = r.read().decode()
    datas = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    events = [json.loads(d) for d in datas]
    assert {e["type"] for e in events[:-1]} == {"speech.audio.delta"}
    assert b"".join(base64.b64decode(e["audio"]) for e in events[:-1]) == audio
    assert events[-1]["type"] == "speech.audio.done" and events[-1]["usage"]["output_tokens"] == tokens_out


@pytest.mark.parametrize(("path", "data", "files", "json_body", "param"), [
    ("transcriptions", {"model": "whisper-1"}, {"file": ("x.wav", b"this is not audio, just text", "audio/wav")},
     None, "file"),
    ("transcriptions", {"model": "gpt-4o-transcribe", "response_format": "srt"}, {"file": ("a.wav", wav(1), "audio/wav")},
     None, "response_format"),
    ("transcriptions", {"model": "whisper-1", "stream": "true"}, {"file": ("a.wav", wav(1), "audio/wav")}, None, "stream"),
    ("transcriptions", {"model": "whisper-1"}, None, None, "file"),
    ("transcriptions", {"model": "tts-1"}, {"file": ("a.wav", wav(1), "audio/wav")}, None, "model"),
    ("speech", None, None, {"model": "tts-1", "voice": "alloy", "input": "x" * 4097}, "input"),
    ("speech", None, None, {"model": "tts-1", "input": "hi"}, "voice"),
    ("speech", None, None, {"model": "tts-1", "voice": "alloy", "input": "hi", "stream_format": "sse"}, "stream_format"),
    ("speech", None, None, {"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "ogg"},
     "response_format"),
])
def test_bad_audio_requests_get_openai_errors(gw: Gateway, path: str, data: dict | None, files: dict | None,
                                              json_body: dict | None, param: str) -> None:
    headers = {"authorization": f"Bearer {USER_KEY}"}
    if json_body is not None:
        answer = httpx.post(f"{gw.base_url}/audio/{path}", headers=headers, json=json_body, timeout=30)
    else:
        answer = httpx.post(f"{gw.base_url}/audio/{path}", headers=headers, data=data, files=files or {"x": ("", b"")},
                            timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param

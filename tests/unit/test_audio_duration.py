"""Audio durations read from the files themselves, in every container OpenAI accepts."""

from __future__ import annotations

import pytest

from switchyard.metering.audio_duration import AudioError, audio_duration_ms, audio_format
from tests.audio_files import flac, m4a, mp3, ogg_opus, wav, webm


@pytest.mark.parametrize(("data", "kind", "ms"), [
    (wav(90.5), "wav", 90_500),
    (wav(1.0, rate=44100), "wav", 1000),
    (flac(44100 * 61), "flac", 61_000),
    (mp3(100), "mp3", 2613),  # 100 x 1152 / 44100 s = 2.6122 s, rounded up
    (mp3(38, id3=False), "mp3", 993),
    (ogg_opus(48000 * 5), "ogg", 5000),
    (m4a(44100 * 3 + 22050), "mp4", 3500),
    (webm(12_345.6), "webm", 12_346),
])
def test_each_container_says_how_long_it_plays(data: bytes, kind: str, ms: int) -> None:
    assert audio_format(data) == kind
    assert audio_duration_ms(data) == ms


@pytest.mark.parametrize("data", [
    b"hello, this is plain text and no audio at all",
    b"RIFF\x10\x00\x00\x00WAVEjunk",  # no fmt or data chunk
    flac(0),  # no sample count
    webm(1000)[:-11],  # Info cut off before Duration
    wav(0.0),
    b"",
])
def test_files_that_do_not_say_their_length_are_refused(data: bytes) -> None:
    with pytest.raises(AudioError):
        audio_duration_ms(data)

"""How long an audio file plays, read from its own headers and frames (never the client's word):
what per-minute transcription is billed on. WAV, FLAC, MP3, Ogg (Opus, Vorbis), MP4/M4A and
WebM/Matroska, the formats OpenAI accepts. The answer is in milliseconds, rounded up.

Every reader walks a bounded structure of the bytes it was given; a file that does not say
its length (a WebM recorded without a Duration, a FLAC without its sample count) is refused
rather than guessed at.
"""

from __future__ import annotations

import struct
from fractions import Fraction

__all__ = ["AudioError", "audio_duration_ms", "audio_format"]


class AudioError(ValueError):
    """Not audio this module can measure; the message says why, for the client."""


def audio_format(data: bytes) -> str | None:
    """The container named by the first bytes, or None."""
    head = data[:64]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "webm"
    if head[:3] == b"ID3" or _mp3_frame(data, 0) is not None:
        return "mp3"
    return None


def audio_duration_ms(data: bytes) -> int:
    kind = audio_format(data)
    if kind is None:
        raise AudioError("the file is not audio in a supported format (flac, m4a, mp3, mp4, mpeg, mpga, oga, ogg, "
                         "wav, webm)")
    try:
        seconds = _READERS[kind](data)
    except (struct.error, IndexError, ZeroDivisionError):
        raise AudioError(f"the {kind} file is truncated or corrupt") from None
    if seconds <= 0:
        raise AudioError(f"the {kind} file holds no audio")
    return -(-seconds.numerator * 1000 // seconds.denominator)


# ---- WAV -------------------------------------------------------------------------------------


def _wav(data: bytes) -> Fraction:
    pos, byte_rate, rate, samples, data_size = 12, 0, 0, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            rate, byte_rate = struct.unpack_from("<I", data, body + 4)[0], struct.unpack_from("<I", data, body + 8)[0]
        elif cid == b"fact" and size >= 4:
            samples = struct.unpack_from("<I", data, body)[0]
        elif cid == b"data":
            data_size = min(size, len(data) - body)  # a streamed WAV says 0xFFFFFFFF: what is there counts
            break
        pos = body + size + (size & 1)
    if data_size is None or not byte_rate:
        raise AudioError("the wav file has no fmt or data chunk")
    if samples is not None and rate:  # compressed WAV: the fact chunk counts the samples
        return Fraction(samples, rate)
    return Fraction(data_size, byte_rate)


# ---- FLAC ------------------------------------------------------------------------------------


def _flac(data: bytes) -> Fraction:
    block = data[8:26]  # STREAMINFO, always the first metadata block
    bits = int.from_bytes(block[10:18], "big")
    rate = bits >> 44
    total = bits & ((1 << 36) - 1)
    if not rate or not total:
        raise AudioError("the flac file does not say how many samples it holds")
    return Fraction(total, rate)


# ---- MP3 -------------------------------------------------------------------------------------

_BITRATES = {  # kbit/s by (MPEG version 1 or 2/2.5, layer)
    (1, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (1, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (1, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (2, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (2, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits


def _mp3_frame(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(frame length, samples, sample rate) of a frame header at `pos`, or None."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    version_bits, layer_bits = (data[pos + 1] >> 3) & 3, (data[pos + 1] >> 1) & 3
    rate_index, bitrate_index = (data[pos + 2] >> 2) & 3, data[pos + 2] >> 4
    if version_bits == 1 or layer_bits == 0 or rate_index == 3 or bitrate_index in (0, 15):
        return None
    layer = 4 - layer_bits
    version = 1 if version_bits == 3 else 2
    bitrate = _BITRATES[(version, layer) if version == 1 else (2, 1 if layer == 1 else 2)][bitrate_index] * 1000
    rate = _RATES[version_bits][rate_index]
    padding = (data[pos + 2] >> 1) & 1
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4, 384, rate
    samples = 1152 if layer == 2 or version == 1 else 576
    return samples // 8 * bitrate // rate + padding, samples, rate


def _mp3(data: bytes) -> Fraction:
    pos = 0
    if data[:3] == b"ID3":
        size = data[6:10]
        pos = 10 + ((size[0] << 21) | (size[1] << 14) | (size[2] << 7) | size[3])
    while pos < len(data) and _mp3_frame(data, pos) is None:
        pos += 1
        if pos > 64 * 1024:
            raise AudioError("the mp3 file has no audio frames")
    first = _mp3_frame(data, pos)
    if first is None:
        raise AudioError("the mp3 file has no audio frames")
    _, samples, rate = first
    # A VBR file's first frame may say how many frames follow (Xing / Info header).
    for tag in (b"Xing", b"Info"):
        at = data.find(tag, pos, pos + 64)
        if at != -1 and struct.unpack_from(">I", data, at + 4)[0] & 1:
            return Fraction(struct.unpack_from(">I", data, at + 8)[0] * samples, rate)
    total = 0
    while (frame := _mp3_frame(data, pos)) is not None and frame[0] > 0:
        total += frame[1]
        pos += frame[0]
    return Fraction(total, rate)


# ---- Ogg -------------------------------------------------------------------------------------


def _ogg(data: bytes) -> Fraction:
    segments = data[26]
    packet = data[27 + segments:27 + segments + 64]
    if packet.startswith(b"OpusHead"):
        rate, skip = 48000, struct.unpack_from("<H", data, 27 + segments + 10)[0]
    elif packet.startswith(b"\x01vorbis"):
        rate, skip = struct.unpack_from("<I", packet, 12)[0], 0
    else:
        raise AudioError("the ogg file holds neither Opus nor Vorbis audio")
    last = data.rfind(b"OggS")
    while last > 0 and data[last + 4] != 0:  # a match inside audio data: look further back
        last = data.rfind(b"OggS", 0, last)
    granule = struct.unpack_from("<q", data, last + 6)[0]
    return Fraction(max(granule - skip, 0), rate)


# ---- MP4 / M4A -------------------------------------------------------------------------------


def _mp4(data: bytes) -> Fraction:
    moov = _box(data, 0, len(data), b"moov")
    if moov is None:
        raise AudioError("the mp4 file has no moov box")
    mvhd = _box(data, moov[0], moov[1], b"mvhd")
    if mvhd is None:
        raise AudioError("the mp4 file has no mvhd box")
    at = mvhd[0]
    if data[at] == 1:
        scale, duration = struct.unpack_from(">IQ", data, at + 20)
    else:
        scale, duration = struct.unpack_from(">II", data, at + 12)
    return Fraction(duration, scale)


def _box(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    """(body start, body end) of the first box of `kind` among the boxes in [start, end)."""
    pos = start
    while pos + 8 <= end:
        size, name = struct.unpack_from(">I4s", data, pos)
        head = 8
        if size == 1:
            size, head = struct.unpack_from(">Q", data, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head:
            return None
        if name == kind:
            return pos + head, min(pos + size, end)
        pos += size
    return None


# ---- WebM / Matroska -------------------------------------------------------------------------

_SEGMENT, _INFO, _SCALE, _DURATION = 0x18538067, 0x1549A966, 0x2AD7B1, 0x4489


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise AudioError("the webm file is corrupt")
    value = first if keep_marker else first & (0xFF >> length)
    for b in data[pos + 1:pos + length]:
        value = (value << 8) | b
    return value, pos + length


def _webm(data: bytes) -> Fraction:
    pos, end = 0, len(data)
    scale, duration = 1_000_000, None
    while pos < end:
        element, pos = _vint(data, pos, keep_marker=True)
        size, pos = _vint(data, pos, keep_marker=False)
        if element in (_SEGMENT, _INFO):
            end = min(end, pos + size) if element == _INFO else end
            continue  # descend
        if element == _SCALE:
            scale = int.from_bytes(data[pos:pos + size], "big")
        elif element == _DURATION:
            duration = struct.unpack(">d" if size == 8 else ">f", data[pos:pos + size])[0]
        pos += size
    if duration is None:
        raise AudioError("the webm file does not say how long it is (no Duration)")
    return Fraction(duration) * scale / 1_000_000_000


_READERS = {"wav": _wav, "flac": _flac, "mp3": _mp3, "ogg": _ogg, "mp4": _mp4, "webm": _webm}

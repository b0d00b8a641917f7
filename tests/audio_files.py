"""Audio files of a known length in each container switchyard measures, built byte by byte as
the format specifications lay them out (no encoder is needed: the payload is silence)."""

from __future__ import annotations

import io
import struct
import wave


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * round(seconds * rate))
    return out.getvalue()


def flac(samples: int, rate: int = 44100) -> bytes:
    # STREAMINFO: min/max block 4096, frame sizes 0, then rate(20) channels-1(3) bps-1(5) total(36), md5.
    bits = (rate << 44) | (0 << 41) | (15 << 36) | samples
    info = struct.pack(">HH", 4096, 4096) + b"\0" * 6 + bits.to_bytes(8, "big") + b"\0" * 16
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info + b"\xff\xf8" + b"\0" * 32


def mp3(frames: int, id3: bool = True) -> bytes:
    """MPEG-1 Layer III, 128 kbit/s, 44.1 kHz: 1152 samples in 417 bytes a frame."""
    header = b"\xff\xfb\x90\x64"
    frame = header + b"\0" * (417 - 4)
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\0" * 10 if id3 else b""
    return tag + frame * frames


def ogg_opus(samples_48k: int, pre_skip: int = 312) -> bytes:
    def page(granule: int, sequence: int, packet: bytes, flags: int = 0) -> bytes:
        return (b"OggS" + bytes([0, flags]) + struct.pack("<qII", granule, 1, sequence) + b"\0\0\0\0"
                + bytes([1, len(packet)]) + packet)

    head = b"OpusHead" + bytes([1, 1]) + struct.pack("<HIhB", pre_skip, 48000, 0, 0)
    return (page(0, 0, head, flags=2) + page(0, 1, b"OpusTags" + b"\0" * 8)
            + page(samples_48k + pre_skip, 2, b"\0" * 50, flags=4))


def m4a(duration: int, timescale: int = 44100) -> bytes:
    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", 8 + len(body)) + kind + body

    mvhd = box(b"mvhd", bytes([0, 0, 0, 0]) + struct.pack(">IIII", 0, 0, timescale, duration) + b"\0" * 80)
    return box(b"ftyp", b"M4A \0\0\0\0M4A isom") + box(b"mdat", b"\0" * 64) + box(b"moov", mvhd)


def webm(milliseconds: float) -> bytes:
    def element(ident: bytes, body: bytes) -> bytes:
        return ident + bytes([0x80 | len(body)]) + body if len(body) < 127 else (
            ident + b"\x40" + bytes([len(body)]) + body)

    info = element(b"\x2a\xd7\xb1", (1_000_000).to_bytes(3, "big")) + element(b"\x44\x89", struct.pack(">d", milliseconds))
    ebml = element(b"\x1a\x45\xdf\xa3", element(b"\x42\x82", b"webm"))
    return ebml + b"\x18\x53\x80\x67" + b"\x01\xff\xff\xff\xff\xff\xff\xff" + element(b"\x15\x49\xa9\x66", info)

"""Minimal PNG encoding/decoding of uint8 images (no Pillow needed)."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def encode_png(image: np.ndarray, compression: int = 3) -> bytes:
    """Encode a uint8 ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA image as PNG."""
    a = np.ascontiguousarray(image)
    if a.dtype != np.uint8:
        raise TypeError(f"encode_png needs uint8, got {a.dtype}")
    if a.ndim == 2:
        color_type, channels = 0, 1
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        color_type, channels = (2, 3) if a.shape[2] == 3 else (6, 4)
    else:
        raise ValueError(f"encode_png needs (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    h, w = a.shape[:2]
    raw = np.empty((h, 1 + w * channels), dtype=np.uint8)
    raw[:, 0] = 0
    raw[:, 1:] = a.reshape(h, w * channels)
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw.tobytes(), compression))
        + _chunk(b"IEND", b"")
    )


def decode_png(data: bytes) -> np.ndarray:
    """Decode a PNG written by :func:`encode_png` (8-bit, filter type 0 or any standard filter)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            w, h, depth, color_type = struct.unpack(">IIBB", body[:10])
            if depth != 8:
                raise ValueError("only 8-bit PNGs are supported")
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * channels)
    out = np.zeros((h, w * channels), dtype=np.int32)
    bpp = channels
    for r in range(h):
        f, line = raw[r, 0], raw[r, 1:].astype(np.int32)
        prev = out[r - 1] if r else np.zeros(w * channels, np.int32)
        if f == 0:
            cur = line
        elif f == 2:
            cur = (line + prev) % 256
        else:
            cur = np.zeros_like(line)
            for i in range(len(line)):
                left = cur[i - bpp] if i >= bpp else 0
                up = prev[i]
                if f == 1:
                    cur[i] = (line[i] + left) % 256
                elif f == 3:
                    cur[i] = (line[i] + (left + up) // 2) % 256
                else:
                    ul = prev[i - bpp] if i >= bpp else 0
                    p = left + up - ul
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
                    cur[i] = (line[i] + pred) % 256
        out[r] = cur
    img = out.astype(np.uint8)
    return img.reshape(h, w) if channels == 1 else img.reshape(h, w, channels)

"""Encoded test images of every format and mode Pillow writes, valid or deliberately broken."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

# Formats Pillow can write, with the modes each accepts (the first is the format's natural mode).
WRITABLE: dict[str, tuple[str, ...]] = {
    "PNG": ("L", "RGB", "RGBA", "LA", "P", "1", "I;16"),
    "JPEG": ("L", "RGB", "CMYK"),
    "GIF": ("P", "L", "RGB"),
    "WEBP": ("RGB", "RGBA"),
    "BMP": ("RGB", "L", "P", "1"),
    "TIFF": ("RGB", "L", "CMYK", "I;16", "F", "RGBA", "1", "LAB"),
    "ICO": ("RGBA", "RGB"),
    "PPM": ("RGB", "L", "1", "I;16"),
    "TGA": ("RGB", "L", "RGBA", "P"),
    "PCX": ("RGB", "L", "P", "1"),
    "SGI": ("RGB", "L", "RGBA"),
    "IM": ("RGB", "L", "P", "F", "I"),
    "QOI": ("RGB", "RGBA"),
    "DDS": ("RGB", "RGBA", "L"),
    "BLP": ("P",),
    "SPIDER": ("F",),
    "JPEG2000": ("RGB", "L"),
    "MSP": ("1",),
    "XBM": ("1",),
}


def synthetic(mode: str, width: int, height: int, seed: int = 0) -> Image.Image:
    """A noisy gradient image of `mode`, so every encoder has real content to compress."""
    rng = np.random.default_rng(seed)
    base = (
        np.add.outer(np.arange(height), np.arange(width)) * 7 + rng.integers(0, 40, (height, width))
    ) % 256
    gray = Image.fromarray(base.astype(np.uint8), "L")
    if mode in ("I;16", "I"):
        return Image.fromarray((base * 257).astype(np.uint16 if mode == "I;16" else np.int32))
    if mode == "F":
        return Image.fromarray(base.astype(np.float32) / 255, "F")
    if mode == "P":
        return gray.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return gray.convert("RGB").convert(mode) if mode not in ("L", "1") else gray.convert(mode)


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def animated_gif(frames: int = 5, size: int = 32) -> bytes:
    images = [synthetic("P", size, size, seed) for seed in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=50, loop=0)


def animated_webp(frames: int = 4, size: int = 32) -> bytes:
    images = [synthetic("RGB", size, size, seed) for seed in range(frames)]
    return encode(images[0], "WEBP", save_all=True, append_images=images[1:], duration=50)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG of width x height 1-bit pixels, all zero: a few hundred KB that would decode to 900 MB as L."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    )


def png_text_bomb() -> bytes:
    """A valid 8x8 PNG carrying a zTXt chunk that inflates to 64 MB of text."""
    small = encode(synthetic("L", 8, 8), "PNG")
    text = zlib.compress(b"\x00" * (64 * 1024 * 1024), 9)
    chunk = png_chunk(b"zTXt", b"comment\x00\x00" + text)
    return small[:33] + chunk + small[33:]


def with_size(data: bytes, fmt: str, width: int, height: int) -> bytes:
    """A small image file whose header claims `width` x `height` (a decompression bomb by its header)."""
    data = bytearray(data)
    if fmt == "PNG":
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    elif fmt == "GIF":  # logical screen and first image descriptor
        data[6:10] = struct.pack("<HH", width, height)
        descriptor = data.index(b",", 13)
        data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    elif fmt == "BMP":
        data[18:26] = struct.pack("<ii", width, height)
    elif fmt == "JPEG":  # the SOF0/SOF2 frame header
        for marker in (b"\xff\xc0", b"\xff\xc2"):
            at = data.find(marker)
            if at >= 0:
                data[at + 5 : at + 9] = struct.pack(">HH", height, width)
                break
    elif fmt == "WEBP":  # VP8 lossy: 14-bit sizes after the start code
        at = data.index(b"\x9d\x01\x2a")
        data[at + 3 : at + 7] = struct.pack("<HH", min(width, 16383), min(height, 16383))
    elif fmt == "TIFF":
        image = Image.new("L", (1, 1))
        return encode(image, "TIFF") if width * height == 1 else _tiff_claiming(width, height)
    elif fmt == "PPM":
        return f"P5 {width} {height} 255\n".encode() + b"\x00" * 64
    else:
        raise ValueError(fmt)
    return bytes(data)


def _tiff_claiming(width: int, height: int) -> bytes:
    """An uncompressed one-strip grayscale TIFF whose tags claim width x height, with 64 bytes of data."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),
        (277, 3, 1, 1),
        (278, 4, 1, height),
        (279, 4, 1, 64),
    ]
    ifd = (
        struct.pack("<H", len(entries))
        + b"".join(
            struct.pack("<HHII", tag, kind, count, value)
            if kind == 4
            else struct.pack("<HHIHH", tag, kind, count, value, 0)
            for tag, kind, count, value in entries
        )
        + struct.pack("<I", 0)
    )
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64


def valid_image(fmt: str, mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> bytes:
    """A synthetic image of `mode` in `fmt`."""
    return encode(synthetic(mode, *size, seed=3), fmt)


# Images the service must answer correctly: unusual modes, depths and containers.
UNUSUAL_IMAGES = {
    "cmyk-jpeg": valid_image("JPEG", "CMYK"),
    "16-bit-png": valid_image("PNG", "I;16"),
    "16-bit-tiff": valid_image("TIFF", "I;16"),
    "float-tiff": valid_image("TIFF", "F"),
    "palette-png": valid_image("PNG", "P"),
    "palette-gif": valid_image("GIF", "P"),
    "rgba-png": valid_image("PNG", "RGBA"),
    "la-png": valid_image("PNG", "LA"),
    "rgba-webp": valid_image("WEBP", "RGBA"),
    "1-bit-bmp": valid_image("BMP", "1"),
    "animated-gif": animated_gif(),
    "animated-webp": animated_webp(),
    "1x1-png": valid_image("PNG", "L", (1, 1)),
    "tall-strip-png": valid_image("PNG", "L", (1, 5000)),
    **{
        f"{fmt.lower()}-{WRITABLE[fmt][0].lower()}": valid_image(fmt, WRITABLE[fmt][0], (32, 32))
        for fmt in WRITABLE
    },
}

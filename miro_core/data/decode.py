"""Decoding one stored image with a cap on decoded pixels, so a pathological image costs bounded time and memory.

Web data holds legal but enormous images: a 9000x9000 PNG of 1 MB decodes to 243 MB of RGB and made
annotation take minutes. Pillow's own guard (``Image.MAX_IMAGE_PIXELS``, about 89 Mpx, an error only
above twice that) is far above what any reward or training step needs, so decoding here is capped lower
(``max_pixels``, default 50 Mpx):

- the size is read from the header before any pixel is decoded;
- a JPEG above the cap is decoded at 1/2, 1/4 or 1/8 scale by libjpeg itself (``Image.draft``): the
  full-size image never exists in memory and decoding is several times faster;
- a JPEG 2000 above the cap is decoded at a reduced resolution level (its ``reduce`` setting);
- any other format above the cap (PNG, WebP, TIFF, ...) cannot be decoded at a lower resolution, so it
  is refused with a reason naming its size and the cap, in the time it takes to read its header.

The decoded image keeps its mode as stored (16-bit, float, CMYK, palette...): callers that want 8-bit
RGB use :func:`miro_core.image_modes.to_rgb8`. Reasons never contain memory addresses, so the error
tables of two identical runs are identical.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

#: Default cap on decoded pixels (width x height): 50 Mpx, well below Pillow's bomb limit (~179 Mpx).
DEFAULT_MAX_PIXELS = 50_000_000
#: The decode scales libjpeg offers (``Image.draft``).
JPEG_SCALES = (2, 4, 8)

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def strip_addresses(text: str) -> str:
    """``<_io.BytesIO object at 0x7f..>`` -> ``<_io.BytesIO object>``: reasons must not differ between runs."""
    return _ADDRESS.sub("", text)


def describe_error(err: BaseException) -> str:
    """``Type: message`` with memory addresses removed, for error tables."""
    text = strip_addresses(str(err))
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def megapixels(width: int, height: int) -> str:
    return f"{width * height / 1e6:.1f} Mpx"


def decode_image(data: bytes | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image | None, str | None]:
    """Decode ``data`` into a loaded PIL image of at most ``max_pixels``; returns (image, None) or (None, reason).

    Never raises for bad data: every failure is a reason string a row-level error table can hold.
    """
    from PIL import Image, UnidentifiedImageError

    if data is None:
        return None, "no image in the sample"
    if not data:
        return None, "the image file is empty (0 bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the cap below is stricter
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return None, f"cannot decode image: not a known image format ({len(data)} bytes)"
    except Image.DecompressionBombError:
        return None, f"cannot decode image: larger than Pillow's decompression-bomb limit ({len(data)} bytes)"
    except Exception as err:  # noqa: BLE001 - any decoder failure is a row-level error
        return None, f"cannot decode image: {describe_error(err)}"
    width, height = image.size
    if width <= 0 or height <= 0:
        return None, f"cannot decode image: its size is {width}x{height}"
    if width * height > max_pixels and not _reduce_while_decoding(image, max_pixels):
        return None, (
            f"image is {width}x{height} ({megapixels(width, height)}), above the cap of "
            f"{max_pixels / 1e6:g} Mpx (--max-pixels); {image.format or 'this format'} cannot be decoded at a "
            "lower resolution, so it was not decoded"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Exception as err:  # noqa: BLE001 - truncated data, bad chunks, decoder errors
        return None, f"cannot decode image: {describe_error(err)}"
    return image, None


def _reduce_while_decoding(image: Image, max_pixels: int) -> bool:
    """Ask the decoder for a reduced resolution that fits ``max_pixels``; False when the format cannot."""
    width, height = image.size
    if image.format == "JPEG":
        for scale in JPEG_SCALES:
            if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
                # draft() picks the largest scale whose result is at least the requested size.
                image.draft(image.mode, (width // scale, height // scale))
                return image.size[0] * image.size[1] <= max_pixels
        return False
    if image.format == "JPEG2000":
        for level in range(1, 6):
            power, adjust = 2**level, 2 ** (level - 1)
            # Jpeg2KImageFile.load decodes resolution level ``reduce``: (size + adjust) // power per side.
            if ((width + adjust) // power) * ((height + adjust) // power) <= max_pixels:
                image.reduce = level  # type: ignore[method-assign,assignment]
                return True
        return False
    return False

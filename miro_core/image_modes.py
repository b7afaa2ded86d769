"""One place that turns a decoded image of any PIL mode into 8-bit RGB.

Web data holds every mode Pillow can open: 16-bit grey PNGs (``I;16``, or ``I`` in some Pillow
versions), float TIFFs (``F``), CMYK JPEGs, palettes with a transparent index, grey with alpha. Two
conversions are needed, and both live here so that no module writes its own:

- ``high_bit_depth="rescale"`` (the framework's own default, for training data, encoding, evaluation
  and the shapes rewards): 16-bit values are scaled to 8 bits (``round(v / 257)``) and float images in
  [0, 1] are scaled by 255, so a 16-bit gradient becomes the 8-bit gradient it depicts.
  ``high_bit_depth="clip"`` is what PIL's ``image.convert("RGB")`` does and what every reference reward
  scorer does: values are clipped to [0, 255] without scaling, so a 16-bit image comes out nearly white
  and a float image in [0, 1] nearly black. The paper's rewards use it by default to reproduce their
  references' scores; it is wrong for anything else.
- ``alpha="white"`` composites transparency (an alpha band, or a palette/grey/RGB ``transparency``
  entry) onto white, as transformers 5 and most viewers do; ``alpha="drop"`` discards it and keeps
  the hidden colours, as PIL's ``convert("RGB")`` and transformers 4.x's ``convert_to_rgb`` did.

PIL is imported inside the functions, so importing this module stays free for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL.Image import Image

HighBitDepth = Literal["rescale", "clip"]
Alpha = Literal["white", "drop"]

#: Pillow modes that hold more than 8 bits per sample.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
HIGH_BIT_DEPTH_MODES = SIXTEEN_BIT_MODES | {"I", "F"}


def has_transparency(image: Image) -> bool:
    """Whether the image carries transparency: an alpha band or a ``transparency`` entry."""
    return bool({"A", "a"} & set(image.getbands())) or image.info.get("transparency") is not None


def rescale_to_8bit(image: Image) -> Image:
    """A high-bit-depth image scaled (not clipped) to 8-bit grey ``L``; other modes are returned as they are.

    - ``I;16*``: ``round(v / 257)``, so 0..65535 maps onto 0..255.
    - ``I`` (32-bit integer, how Pillow opens some 16-bit PNGs): read as 16-bit when any value exceeds
      255, otherwise as 8-bit values; clipped to the range. The mode does not say which it is, so the
      values decide.
    - ``F``: values in [0, 1] are fractions (``round(v * 255)``), anything larger is taken as 0..255
      intensities; NaN becomes 0; clipped.
    """
    import numpy as np
    from PIL import Image as PILImage

    mode = image.mode
    if mode not in HIGH_BIT_DEPTH_MODES:
        return image
    values = np.asarray(image).astype(np.float64)
    if mode in SIXTEEN_BIT_MODES:
        scaled = values / 257.0
    elif mode == "I":
        scaled = values / 257.0 if values.size and values.max() > 255 else values
    else:
        finite = values[np.isfinite(values)]
        fraction = finite.size == 0 or float(finite.max()) <= 1.0
        scaled = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0) * (255.0 if fraction else 1.0)
    return PILImage.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def composite_on_white(image: Image) -> Image:
    """RGB with any transparency composited onto opaque white (transformers 5's ``convert_to_rgb``)."""
    from PIL import Image as PILImage

    rgba = image.convert("RGBA")
    white = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
    return PILImage.alpha_composite(white, rgba).convert("RGB")


def check_choices(high_bit_depth: str, alpha: str) -> None:
    """Raise ``ValueError`` naming the accepted values when a choice is misspelled."""
    if high_bit_depth not in ("rescale", "clip"):
        raise ValueError(f"high_bit_depth must be 'rescale' or 'clip', not {high_bit_depth!r}")
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha must be 'white' or 'drop', not {alpha!r}")


def apply_choices(image: Image, *, high_bit_depth: HighBitDepth = "rescale", alpha: Alpha = "white") -> Image:
    """``image`` in a mode whose plain ``convert("RGB")`` gives the chosen conversion.

    Rescaled high bit depth becomes 8-bit ``L``; transparency composited onto white becomes ``RGB``.
    With ``high_bit_depth="clip"`` and ``alpha="drop"`` the image itself is returned: PIL's own
    ``convert("RGB")`` already clips and drops. This is the step that must run *before* a reference
    that resizes in the image's own mode (the OpenAI ``clip`` transform), so that the saner choices can
    be offered there too; ``image`` is never modified.
    """
    check_choices(high_bit_depth, alpha)
    if high_bit_depth == "rescale":
        image = rescale_to_8bit(image)
    if alpha == "white" and has_transparency(image):
        image = composite_on_white(image)
    return image


def to_rgb8(image: Image, *, high_bit_depth: HighBitDepth = "rescale", alpha: Alpha = "white") -> Image:
    """A new 8-bit RGB image from ``image`` of any mode; ``image`` itself is never modified.

    With ``high_bit_depth="clip"`` and ``alpha="drop"`` the result equals ``image.convert("RGB")``
    exactly (the reference scorers' conversion).
    """
    check_choices(high_bit_depth, alpha)
    if image.mode == "RGB" and (alpha == "drop" or not has_transparency(image)):
        return image.copy()
    converted = apply_choices(image, high_bit_depth=high_bit_depth, alpha=alpha)
    if converted is not image and converted.mode == "RGB":
        return converted
    return converted.convert("RGB")

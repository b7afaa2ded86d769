"""Image preprocessing paths of the reference implementations, reproduced with PIL, numpy and torch.

Every function takes a PIL image of any mode and size and never modifies it (PIL operations return
new images). Four paths exist because the references differ:

- :func:`openai_clip_pixels` - the OpenAI ``clip`` transform (aesthetic, ImageReward, jina-clip):
  shortest side to ``size`` with PIL bicubic *in the image's own mode* (so a palette image is resized
  with nearest neighbour, RGBA/LA with premultiplied alpha, 16-bit and float images in their own
  depth), centre crop with torchvision's rounding, and only then ``convert("RGB")``.
- :func:`hf_clip_pixels` - the Hugging Face ``CLIPImageProcessor`` PIL path (PickScore, SciScore,
  VQAScore): RGB first, shortest side with PIL bicubic, centre crop with floor division.
- :func:`hpsv2_tensor` - the HPSv2 validation transform: RGB, to a float tensor, longest side to
  ``size`` with torchvision's tensor bicubic resize, zero padding to a square (no crop).
- :func:`expand_to_square` - VQAScore's padding to a square with the mean colour before the processor.

Mode conversion goes through :mod:`miro_core.image_modes` only. Every reference converts with PIL's
``convert("RGB")``, which clips 16-bit and float values and drops transparency (transformers 4.x's
``convert_to_rgb`` too); that is the default here (``high_bit_depth="clip"``, ``alpha="drop"``), and the
saner ``"rescale"`` / ``"white"`` are each reward's options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miro_core.image_modes import apply_choices, to_rgb8

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

#: Mean and standard deviation of the OpenAI CLIP training images (every reference uses them).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: The references' conversion: PIL's ``convert("RGB")`` (clip high bit depth, drop alpha).
REFERENCE_HIGH_BIT_DEPTH = "clip"
REFERENCE_ALPHA = "drop"


def shortest_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(new_width, new_height) with the shorter side at ``size``; the longer side is truncated.

    This is the rule shared by torchvision's ``Resize(int)`` and transformers' ``shortest_edge``.
    """
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _resample(name_or_code: Any) -> Any:
    from PIL import Image as PILImage

    if isinstance(name_or_code, str):
        return getattr(PILImage.Resampling, name_or_code.upper())
    return PILImage.Resampling(int(name_or_code))


def openai_clip_pixels(
    image: Image, size: int, *, high_bit_depth: str = REFERENCE_HIGH_BIT_DEPTH, alpha: str = REFERENCE_ALPHA
) -> np.ndarray:
    """The OpenAI ``clip`` transform up to ``ToTensor``: a ``size`` x ``size`` x 3 uint8 array.

    ``Resize(size, BICUBIC)`` and ``CenterCrop(size)`` act on the PIL image in its own mode and
    ``convert("RGB")`` comes last, as in ``clip.clip._transform``: an RGBA image is resized with
    premultiplied alpha (fully transparent pixels lose their colour) before its alpha is dropped, a
    palette image is resized with nearest neighbour (PIL's rule for ``P`` and ``1``), a 16-bit image is
    resized at 16 bits and then clipped. ``high_bit_depth="rescale"`` / ``alpha="white"`` convert first.
    """
    import numpy as np
    from PIL import Image as PILImage

    img = apply_choices(image, high_bit_depth=high_bit_depth, alpha=alpha)  # type: ignore[arg-type]
    new_w, new_h = shortest_side_size(img.width, img.height, size)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), PILImage.Resampling.BICUBIC)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    return np.asarray(to_rgb8(img, high_bit_depth="clip", alpha="drop"))


def hf_clip_pixels(
    image: Image,
    size: int,
    crop: int | None = None,
    resample: Any = "bicubic",
    *,
    high_bit_depth: str = REFERENCE_HIGH_BIT_DEPTH,
    alpha: str = REFERENCE_ALPHA,
) -> np.ndarray:
    """The Hugging Face CLIP image processor's PIL path up to rescaling: ``crop`` x ``crop`` x 3 uint8.

    transformers 4.x's ``convert_to_rgb`` is ``image.convert("RGB")`` (alpha dropped, high bit depth
    clipped), the defaults here; transformers 5 composites onto white instead (``alpha="white"``).
    """
    import numpy as np

    crop = size if crop is None else crop
    img = to_rgb8(image, high_bit_depth=high_bit_depth, alpha=alpha)  # type: ignore[arg-type]
    new_w, new_h = shortest_side_size(img.width, img.height, size)
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), _resample(resample))
    top = (new_h - crop) // 2
    left = (new_w - crop) // 2
    if top < 0 or left < 0:
        raise ValueError(f"crop {crop} is larger than the resized image {new_w}x{new_h}")
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


def expand_to_square(image: Image, fill: Sequence[int]) -> Image:
    """Paste ``image`` centred on a square canvas of colour ``fill`` (LLaVA's ``expand2square``)."""
    from PIL import Image as PILImage

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = PILImage.new(image.mode, (side, side), tuple(fill))
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def mean_colour(mean: Sequence[float] = OPENAI_CLIP_MEAN) -> tuple[int, ...]:
    """The padding colour VQAScore derives from the processor mean: ``int(m * 255)`` per channel."""
    return tuple(int(m * 255) for m in mean)


def normalize(pixels: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]) -> Any:
    """Stack H x W x 3 uint8 arrays into a (B, 3, H, W) float32 tensor: ``(x / 255 - mean) / std``."""
    import numpy as np
    import torch

    batch = torch.from_numpy(np.stack([np.asarray(p, dtype=np.uint8) for p in pixels]))
    batch = batch.permute(0, 3, 1, 2).to(torch.float32).div(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (batch - m) / s


def letterbox_padding(height: int, width: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """HPSv2 geometry: ((new_h, new_w), (left, top, right, bottom)) for a longest side of ``size``."""
    scale = size / float(max(height, width))
    new_h, new_w = (round(height * scale), round(width * scale)) if scale != 1.0 else (height, width)
    pad_h, pad_w = size - new_h, size - new_w
    return (new_h, new_w), (pad_w // 2, pad_h // 2, pad_w - pad_w // 2, pad_h - pad_h // 2)


def hpsv2_tensor(
    image: Image,
    size: int,
    mean: Sequence[float] = OPENAI_CLIP_MEAN,
    std: Sequence[float] = OPENAI_CLIP_STD,
    antialias: bool = True,
    *,
    high_bit_depth: str = REFERENCE_HIGH_BIT_DEPTH,
    alpha: str = REFERENCE_ALPHA,
) -> Any:
    """The HPSv2 validation transform: a normalised (3, size, size) float32 tensor.

    ``convert("RGB")`` -> ``ToTensor`` -> longest side to ``size`` (torchvision bicubic on the float
    tensor, no clamping) -> zero padding split evenly (extra pixel right/bottom) -> normalise, so the
    padding reads ``-mean / std``. Two departures from the reference, which raises instead: an RGBA
    image loses its alpha channel like every other mode (the reference keeps RGBA's four channels and
    the model fails on them), and an image whose longest side is already ``size`` but is not square is
    padded (the reference skips the padding then and the model fails on the non-square input).
    """
    import numpy as np
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as tvf

    img = to_rgb8(image, high_bit_depth=high_bit_depth, alpha=alpha)  # type: ignore[arg-type]
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32).div(255.0)
    (new_h, new_w), (left, top, right, bottom) = letterbox_padding(x.shape[1], x.shape[2], size)
    if (new_h, new_w) != tuple(x.shape[1:]):
        x = tvf.resize(x, [new_h, new_w], InterpolationMode.BICUBIC, antialias=antialias)
    x = torch.nn.functional.pad(x, (left, right, top, bottom), value=0.0)
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (x - m) / s

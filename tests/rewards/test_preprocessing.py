"""The reference preprocessing paths, pixel by pixel, against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from miro_reward_common import images as ip
from PIL import Image
from reward_helpers import odd_images, reference_letterbox, reference_openai

MEAN = torch.tensor(ip.OPENAI_CLIP_MEAN).view(3, 1, 1)
STD = torch.tensor(ip.OPENAI_CLIP_STD).view(3, 1, 1)


def test_rescale_rounds_deep_images():
    from miro_core.image_modes import rescale_to_8bit

    deep = np.array([[0, 128, 129, 257, 385, 65535]], dtype=np.uint16)
    out = rescale_to_8bit(Image.fromarray(deep))
    assert out.mode == "L"
    # round(v / 257): 128 -> 0.498, 129 -> 0.502, 385 -> 1.498
    assert np.asarray(out).tolist() == [[0, 0, 1, 1, 1, 255]]
    floats = np.array([[0.0, 0.5, 0.998, 1.0]], dtype=np.float32)
    assert np.asarray(rescale_to_8bit(Image.fromarray(floats, "F"))).tolist() == [[0, 128, 254, 255]]
    wide = np.array([[0.0, 127.4, 300.0]], dtype=np.float32)
    assert np.asarray(rescale_to_8bit(Image.fromarray(wide, "F"))).tolist() == [[0, 127, 255]]
    ints = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32), "I")
    assert np.asarray(rescale_to_8bit(ints)).tolist() == [[0, 4, 255]]
    rgb = Image.new("RGB", (3, 2), (1, 2, 3))
    assert rescale_to_8bit(rgb) is rgb


def test_reference_conversion_clips_and_drops():
    """The default (the references'): PIL's convert("RGB"), which clips deep images and drops alpha."""
    from miro_core.image_modes import to_rgb8

    deep = Image.fromarray(np.array([[0, 100, 300, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb8(deep, high_bit_depth="clip", alpha="drop"))[0, :, 0].tolist() == [0, 100, 255, 255]
    assert np.asarray(to_rgb8(deep))[0, :, 0].tolist() == [0, 0, 1, 255]
    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0, 200.7]], dtype=np.float32), "F")
    assert np.asarray(to_rgb8(floats, high_bit_depth="clip", alpha="drop"))[0, :, 0].tolist() == [0, 0, 1, 200]
    for image in odd_images():
        ours = to_rgb8(image, high_bit_depth="clip", alpha="drop")
        assert ours.mode == "RGB" and np.array_equal(np.asarray(ours), np.asarray(image.convert("RGB")))


@pytest.mark.parametrize("size", [16, 20, 23])
def test_openai_clip_path_matches_torchvision(size):
    """Resize and crop in the image's own mode, then convert("RGB"), exactly as the clip package."""
    cases = odd_images() + [Image.new("RGB", (47, 30), (5, 6, 7))]
    rng = np.random.default_rng(size)
    cases.append(Image.fromarray(rng.integers(0, 256, (30, 47, 3), dtype=np.uint8)))  # odd crop offset
    for image in cases:
        ours = ip.normalize([ip.openai_clip_pixels(image, size)], ip.OPENAI_CLIP_MEAN, ip.OPENAI_CLIP_STD)[0]
        torch.testing.assert_close(ours, reference_openai(image, size), rtol=0, atol=1e-6)


def test_openai_crop_rounds_like_torchvision_not_floor():
    # 47x30 -> shortest side 20 -> 31x20: 11 columns to drop, torchvision keeps from round(5.5) = 6, HF from 5.
    ramp = np.tile(np.arange(47, dtype=np.uint8) * 5, (30, 1))
    image = Image.fromarray(np.stack([ramp] * 3, axis=-1))
    resized = np.asarray(image.resize((31, 20), Image.Resampling.BICUBIC))
    assert np.array_equal(ip.openai_clip_pixels(image, 20), resized[:, 6:26])
    assert np.array_equal(ip.hf_clip_pixels(image, 20), resized[:, 5:25])


def test_alpha_is_dropped_by_default_and_white_on_request():
    rgba = Image.new("RGBA", (10, 10), (200, 0, 0, 0))
    rgba.putpixel((0, 0), (200, 0, 0, 255))
    # The clip transform resizes RGBA with premultiplied alpha: hidden colour survives only where opaque.
    assert ip.hf_clip_pixels(rgba, 10)[5, 5].tolist() == [200, 0, 0]
    assert ip.hf_clip_pixels(rgba, 10, alpha="white")[5, 5].tolist() == [255, 255, 255]
    assert ip.openai_clip_pixels(rgba, 10)[0, 0].tolist() == [200, 0, 0]
    assert ip.openai_clip_pixels(rgba, 10, alpha="white")[5, 5].tolist() == [255, 255, 255]
    deep = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))  # 128 * 257
    assert ip.hf_clip_pixels(deep, 4)[0, 0].tolist() == [255, 255, 255]
    assert ip.hf_clip_pixels(deep, 4, high_bit_depth="rescale")[0, 0].tolist() == [128, 128, 128]
    with pytest.raises(ValueError, match="alpha must be"):
        ip.hf_clip_pixels(rgba, 10, alpha="black")


@pytest.mark.parametrize("size,crop", [(16, 16), (21, 21), (24, 20)])
def test_hf_clip_path_matches_transformers_pil_processor(size, crop):
    from transformers import CLIPImageProcessorPil

    proc = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop})
    for image in odd_images():
        ours = ip.normalize([ip.hf_clip_pixels(image, size, crop)], ip.OPENAI_CLIP_MEAN, ip.OPENAI_CLIP_STD)[0]
        rgb = Image.fromarray(np.asarray(image.convert("RGB")))  # transformers 4.x: convert("RGB"), nothing else
        theirs = proc(images=[rgb], return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(23, 37), (41, 19), (24, 10), (10, 24), (24, 24), (7, 5)])
def test_hpsv2_letterbox(shape):
    h, w = shape
    size = 24
    rng = np.random.default_rng(h * 100 + w)
    image = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    out = ip.hpsv2_tensor(image, size)
    assert out.shape == (3, size, size)

    torch.testing.assert_close(out, reference_letterbox(image, size), rtol=0, atol=1e-6)
    scale = size / max(h, w)
    nh, nw = (round(h * scale), round(w * scale)) if scale != 1 else (h, w)
    top, left = (size - nh) // 2, (size - nw) // 2

    pad_value = (-MEAN / STD).view(3)
    assert max(nh, nw) == size
    for row in list(range(top)) + list(range(top + nh, size)):
        torch.testing.assert_close(out[:, row, :], pad_value[:, None].expand(3, size))
    for col in list(range(left)) + list(range(left + nw, size)):
        torch.testing.assert_close(out[:, :, col], pad_value[:, None].expand(3, size))
    assert (size - nh) - top >= top and (size - nw) - left >= left  # the odd pixel goes right / bottom


def test_hpsv2_modes_become_rgb():
    for image in odd_images():
        out = ip.hpsv2_tensor(image, 16)
        assert out.shape == (3, 16, 16) and torch.isfinite(out).all()
    grey = Image.new("L", (16, 8), 100)
    out = ip.hpsv2_tensor(grey, 16)
    unnormalised = out * STD + MEAN
    centre = unnormalised[:, 4:12, :]  # rows 0-3 and 12-15 are padding for a 16x8 image
    torch.testing.assert_close(centre, torch.full_like(centre, 100 / 255.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(unnormalised[:, :4], torch.zeros(3, 4, 16), rtol=0, atol=1e-6)


def test_expand_to_square_uses_mean_colour():
    fill = ip.mean_colour()
    assert fill == (122, 116, 104)
    wide = Image.new("RGB", (10, 4), (1, 2, 3))
    square = ip.expand_to_square(wide, fill)
    arr = np.asarray(square)
    assert square.size == (10, 10)
    assert arr[:3].reshape(-1, 3).tolist() == [[122, 116, 104]] * 30
    assert arr[3:7].reshape(-1, 3).tolist() == [[1, 2, 3]] * 40
    assert arr[7:].reshape(-1, 3).tolist() == [[122, 116, 104]] * 30
    tall = Image.new("RGB", (3, 8), (9, 9, 9))
    arr = np.asarray(ip.expand_to_square(tall, fill))
    assert arr[:, 2:5].reshape(-1, 3).tolist() == [[9, 9, 9]] * 24
    assert arr[:, :2].reshape(-1, 3).tolist() == [[122, 116, 104]] * 16
    assert ip.expand_to_square(square, fill) is square

"""The boundary between the engine and network plugins: what a backbone, text encoder, autoencoder or sampler
hands back is checked before it is used.

A plugin's tensor goes straight into the next stage, so a wrong one would otherwise surface far away as a
broadcasting error deep in the training loop, or not at all: a NaN text embedding is cached into every
record, a NaN sample decodes to a black image, a latent of the wrong size is resized into a plausible picture.
These checks are shape and dtype comparisons (no device synchronisation) plus a finiteness test where a
result is produced once per batch, and each violation raises :class:`~miro_core.errors.PluginError` naming
the component, its distribution, and the conformance check that would have caught it.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

from miro_core.errors import PluginError
from miro_core.plugin_blame import broken, describe

#: How far outside [-1, 1] decoded images may lie (float rounding of a clamp in another dtype).
DECODE_TOLERANCE = 1e-3


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return str(tuple(shape)) if shape is not None else type(value).__name__


def checked_text_encoding(encoder: Any, count: int, result: Any, registry: Any = None) -> tuple[Any, Any]:
    """``encoder.encode(captions)``'s result as ``(tokens (B, L, dim), mask (B, L) bool)``, or PluginError."""
    import torch

    who = lambda: describe(encoder, "text_encoders", registry)  # noqa: E731 - built only on failure
    if not (isinstance(result, tuple | list) and len(result) == 2
            and all(isinstance(part, torch.Tensor) for part in result)):
        raise broken(who(), "text encoder", f"encode() returned {type(result).__name__}, not (tokens, mask) tensors")
    tokens, mask = result
    dim = encoder.dim
    if tokens.ndim != 3 or tokens.shape[0] != count or tokens.shape[2] != dim:
        raise broken(who(), "text encoder",
                     f"tokens have shape {tuple(tokens.shape)} for {count} caption(s); expected ({count}, L, {dim}) "
                     "(dim is the encoder's `dim`)")
    if mask.dtype != torch.bool or tuple(mask.shape) != tuple(tokens.shape[:2]):
        raise broken(who(), "text encoder",
                     f"the mask is {mask.dtype} {tuple(mask.shape)}; expected torch.bool {tuple(tokens.shape[:2])} "
                     "(True for real tokens)")
    if not bool(torch.isfinite(tokens).all()):
        raise broken(who(), "text encoder", "the token embeddings have NaN or infinite values")
    if count and not bool(mask.any(dim=1).all()):
        raise broken(who(), "text encoder", "a caption has no real token (its mask is all False); every caption, "
                     "even an empty one, needs at least one")
    return tokens, mask


def checked_decoded(autoencoder: Any, images: Any, latents: Any, image_size: int | None,
                    registry: Any = None) -> Any:
    """``autoencoder.decode(latents)``: finite ``(B, 3, H, W)`` images in [-1, 1], or PluginError."""
    import torch

    who = lambda: describe(autoencoder, "autoencoders", registry)  # noqa: E731 - built only on failure
    batch = latents.shape[0]
    expected = (batch, 3, image_size, image_size) if image_size else None
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[:2] != (batch, 3) or (
            expected is not None and tuple(images.shape) != expected):
        want = expected or f"({batch}, 3, H, W)"
        raise broken(who(), "autoencoder", f"decode() of latents {tuple(latents.shape)} returned {_shape(images)}; "
                     f"expected {want}")
    if not bool(torch.isfinite(images).all()):
        raise broken(who(), "autoencoder", "decode() returned NaN or infinite pixels")
    peak = float(images.detach().abs().max()) if images.numel() else 0.0
    if peak > 1.0 + DECODE_TOLERANCE:
        raise broken(who(), "autoencoder", f"decode() returned values up to {peak:.3g} in magnitude; images must lie "
                     "in [-1, 1] (clamp them)")
    return images


def checked_velocity_call(sampler: Any, x: Any, t: Any, step: Any, noise: Any, registry: Any = None) -> float:
    """The arguments a sampler passes to ``velocity(x, t, step, state)``; returns ``t`` as a float."""
    import torch

    def fail(problem: str) -> PluginError:
        return broken(describe(sampler, "samplers", registry), "sampler", problem)

    if not isinstance(x, torch.Tensor) or x.shape != noise.shape:
        raise fail(f"velocity() was called with x of shape {_shape(x)}; it must be shaped like the noise "
                   f"{tuple(noise.shape)}")
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise fail(f"velocity() was called with step={step!r}; the call is velocity(x, t, step, state) with step "
                   "the 0-based step index")
    if isinstance(t, torch.Tensor) and t.numel() == 1:
        t = t.item()
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not (0.0 <= float(t) <= 1.0):
        raise fail(f"velocity() was called with t={t!r}; t is the flow time, a float from 1 (noise) to 0")
    return float(t)


def checked_sample(sampler: Any, x0: Any, noise: Any, velocities_finite: Callable[[], bool], backbone: str,
                   registry: Any = None) -> Any:
    """The sampler's ``x_0``: a finite tensor shaped like the noise, or PluginError naming who broke it (the
    backbone when ``velocities_finite()`` says one of its velocities was not finite)."""
    import torch

    who = describe(sampler, "samplers", registry)
    if not isinstance(x0, torch.Tensor) or x0.shape != noise.shape:
        raise broken(who, "sampler", f"it returned {_shape(x0)} from noise {tuple(noise.shape)}; x_0 must be shaped "
                     "like the noise")
    if not bool(torch.isfinite(x0).all()):
        if not velocities_finite():
            raise PluginError(f"{backbone} returned NaN or infinite velocities while sampling, so the images would "
                              "be blank; check its weights (a diverged run) or the network with "
                              "miro_core.conformance.check_backbone")
        raise broken(who, "sampler", "it returned NaN or infinite values from finite velocities")
    return x0


def checked_backbone_output(label: str, output: Any, x: Any, stateful: bool) -> tuple[Any, Any]:
    """A network's forward result as ``(velocity, state)``: a tensor shaped like ``x``, or PluginError."""
    import torch

    state = None
    if stateful:
        if not (isinstance(output, tuple | list) and len(output) == 2):
            raise broken(label, "backbone", f"a stateful network's forward returned {type(output).__name__}, "
                         "not (velocity, state)")
        output, state = output
    if not isinstance(output, torch.Tensor):
        raise broken(label, "backbone", f"forward(x, t, cond) returned {type(output).__name__}, not a tensor "
                     "shaped like x")
    if output.shape != x.shape:
        raise broken(label, "backbone", f"forward returned shape {tuple(output.shape)} for x of shape "
                     f"{tuple(x.shape)}; the velocity must be shaped like x")
    return output, state


def non_finite_loss_message(step: int, loss: float, first_update: bool, backbone: str) -> str:
    """Why training stopped on a NaN or infinite loss: the backbone itself when no update had happened yet."""
    if first_update:
        return (f"the loss is {loss} at step {step}, before any update: {backbone} returns NaN or infinite "
                "velocities from its initial weights (or the records hold non-finite values). Check the network "
                "with miro_core.conformance.check_backbone")
    return f"training diverged at step {step} (loss {loss}) with {backbone}; lower --lr"

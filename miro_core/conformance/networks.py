"""Contract checks of the networks around the generator: backbones, text encoders and autoencoders."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from miro_core.conformance.runner import UNKNOWN_OPTION, CheckRun, Report, SkipCheck, check_common, require
from miro_core.errors import ConfigError
from miro_core.network_contract import checked_decoded, checked_text_encoding


# -- backbones --------------------------------------------------------------------------------------------------------
def check_backbone(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    in_channels: int = 4,
    image_size: int = 16,
    cond_dim: int = 32,
    text_tokens: int = 6,
    atol: float = 1e-4,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.backbone.Backbone` subclass: shapes, batching, masking, weights round trip."""
    import torch

    from miro_core.backbone import Backbone, BackboneSpec
    from miro_core.conditioning import Conditioning

    sizes = list(getattr(cls, "sizes", {}) or {})
    default_size = "tiny" if "tiny" in sizes else (sizes[0] if sizes else None)
    options = {**({"size": default_size} if default_size else {}), **dict(options or {})}
    run = CheckRun(cls)
    if not check_common(run, cls, Backbone, options, light_import):
        return run.finish(raise_on_failure)
    spec = BackboneSpec(in_channels=in_channels, image_size=image_size, cond_dim=cond_dim)
    generator = torch.Generator().manual_seed(0)
    batch, length = 3, text_tokens
    x = torch.randn(batch, in_channels, image_size, image_size, generator=generator)
    t = torch.tensor([0.9, 0.5, 0.1])
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[:, -2:] = False  # two padding tokens per sample
    # the released design has no pooled vector (see miro_core.backbone)
    pooled = torch.randn(batch, cond_dim, generator=generator) if "framework" in getattr(
        cls, "designs", frozenset({"framework"})) else None
    cond = Conditioning(torch.randn(batch, length, cond_dim, generator=generator), mask, pooled)
    state: dict[str, Any] = {}

    def forward(net: Any, x: Any, t: Any, cond: Any) -> Any:
        """The velocity; a stateful network (self-conditioning) is called with no state, as at the first step."""
        if getattr(net, "stateful", False):
            velocity, _ = net(x, t, cond, None)
            return velocity
        return net(x, t, cond)

    def part(cond: Any, i: int) -> Any:
        return Conditioning(cond.tokens[i : i + 1], cond.mask[i : i + 1],
                            None if cond.pooled is None else cond.pooled[i : i + 1])

    def build() -> None:
        torch.manual_seed(0)
        network = cls(options).build(spec)
        require(isinstance(network, torch.nn.Module), f"build() returned {type(network).__name__}, not nn.Module")
        network.eval()
        with torch.no_grad():
            out = forward(network, x, t, cond)
        require(tuple(out.shape) == tuple(x.shape), f"output shape {tuple(out.shape)} != input {tuple(x.shape)}")
        require(bool(torch.isfinite(out).all()), "the output has NaN or infinite values")
        state["network"], state["out"] = network, out

    if not run("build and forward: output shaped like x", build):
        run.skip(["batch equals one at a time", "padding tokens are ignored", "inputs are not modified",
                  "weights survive a safetensors round trip", "gradients reach the parameters", "deterministic",
                  "the output depends on the conditioning"],
                 "build or forward failed")
        return run.finish(raise_on_failure)
    network, out = state["network"], state["out"]

    def one_at_a_time() -> None:
        with torch.no_grad():
            single = torch.cat([forward(network, x[i : i + 1], t[i : i + 1], part(cond, i)) for i in range(batch)])
        require(torch.allclose(out, single, atol=atol, rtol=1e-4),
                 f"a batch differs from one sample at a time by {float((out - single).abs().max()):.2e}")

    def padding() -> None:
        noisy = cond.tokens.clone()
        noisy[:, -2:] = torch.randn(batch, 2, cond_dim, generator=torch.Generator().manual_seed(1)) * 10
        with torch.no_grad():
            again = forward(network, x, t, Conditioning(noisy, cond.mask, cond.pooled))
        require(torch.allclose(out, again, atol=atol, rtol=1e-4),
                 "tokens whose mask is False (text padding) changed the output; they must be ignored")

    def untouched() -> None:
        tensors = [v for v in (x, t, cond.tokens, cond.mask, cond.pooled) if v is not None]
        copies = [v.clone() for v in tensors]
        with torch.no_grad():
            forward(network, x, t, cond)
        require(all(torch.equal(a, b) for a, b in zip(copies, tensors)), "forward() modified its inputs")

    def deterministic() -> None:
        with torch.no_grad():
            again = forward(network, x, t, cond)
        require(torch.equal(out, again), "two forward passes in eval mode differ")

    def weights_round_trip() -> None:
        import tempfile

        from safetensors.torch import load_file, save_file

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.safetensors")
            save_file({k: v.detach().contiguous() for k, v in network.state_dict().items()}, path)
            torch.manual_seed(123)
            fresh = cls(options).build(spec).eval()
            fresh.load_state_dict(load_file(path))
        with torch.no_grad():
            again = forward(fresh, x, t, cond)
        require(torch.equal(out, again), "a freshly built network with the saved weights gives other outputs")

    def gradients() -> None:
        require(any(p.requires_grad for p in network.parameters()), "the network has no trainable parameters")
        network.train()
        network.zero_grad()
        target = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
        (forward(network, x, t, cond) - target).pow(2).mean().backward()  # not out**2: zero-initialised outputs
        grads = [p.grad for p in network.parameters() if p.requires_grad]
        require(any(g is not None and bool(g.abs().sum() > 0) for g in grads), "no parameter received a gradient")
        require(all(g is None or bool(torch.isfinite(g).all()) for g in grads), "a gradient is NaN or infinite")
        network.zero_grad()
        network.eval()

    def conditioned() -> None:
        torch.manual_seed(0)
        fresh = cls(options).build(spec).eval()
        with torch.no_grad():  # move zero-initialised output layers (adaLN-zero) off zero, so inputs can show
            noise = torch.Generator().manual_seed(3)
            for parameter in fresh.parameters():
                parameter.add_(torch.randn(parameter.shape, generator=noise).to(parameter.dtype) * 0.1)
            base = forward(fresh, x, t, cond)
            tokens = cond.tokens.clone()
            tokens[:, :-2] = torch.randn(batch, length - 2, cond_dim, generator=noise)  # the real tokens only
            changes = {
                "the text and reward tokens (mask True)": forward(
                    fresh, x, t, Conditioning(tokens, cond.mask, cond.pooled)),
                "the time t": forward(fresh, x, 1.0 - t, cond),
            }
            if cond.pooled is not None and "pooled" in cls.reward_conditioning:
                changes["the pooled reward vector"] = forward(
                    fresh, x, t, Conditioning(cond.tokens, cond.mask, torch.randn(
                        cond.pooled.shape, generator=noise)))
        ignored = [what for what, again in changes.items() if torch.allclose(base, again, atol=1e-7, rtol=0)]
        require(not ignored, f"the output does not depend on {' or '.join(ignored)}: the network ignores its "
                             "conditioning")

    def overrides() -> None:
        if cls.network_options is None:
            raise SkipCheck("network_options is not set, so overrides are not checked by name")
        try:
            cls({**options, "overrides": {UNKNOWN_OPTION: 1}}).build(spec)
        except ConfigError as err:
            require(UNKNOWN_OPTION in str(err), f"the error does not name the override: {err}")
            return
        raise AssertionError("an unknown size override was accepted")

    run("batch equals one at a time", one_at_a_time)
    run("padding tokens are ignored", padding)
    run("inputs are not modified", untouched)
    run("deterministic", deterministic)
    run("weights survive a safetensors round trip", weights_round_trip)
    run("gradients reach the parameters", gradients)
    run("the output depends on the conditioning", conditioned)
    run("unknown overrides are rejected", overrides)
    return run.finish(raise_on_failure)


# -- text encoders and autoencoders -------------------------------------------------------------------------------
def check_text_encoder(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    captions: Sequence[str] = ("a red circle", "", "two blue squares left of a green triangle " * 8, "ünïcödé"),
    device: str = "cpu",
    atol: float = 1e-4,
    require_weights: bool = False,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check a :class:`~miro_core.text_encoder.TextEncoder` subclass: shapes, mask, batching, determinism."""
    import torch

    from miro_core.text_encoder import TextEncoder

    options = dict(options or {})
    run = CheckRun(cls)
    if not check_common(run, cls, TextEncoder, options, light_import):
        return run.finish(raise_on_failure)
    encoder = cls(options)
    names = ["shapes and mask", "batch equals one at a time", "deterministic", "captions are not modified"]
    if not run.load(lambda: encoder.load(device), names, require_weights):
        return run.finish(raise_on_failure)
    texts = list(captions)
    state: dict[str, Any] = {}

    def shapes() -> None:  # what the engine checks of every encoding (miro_core.network_contract)
        tokens, mask = checked_text_encoding(encoder, len(texts), encoder.encode(texts))
        state["tokens"], state["mask"] = tokens.float(), mask

    if not run("shapes and mask", shapes):
        return run.finish(raise_on_failure)

    def one_at_a_time() -> None:
        for i, text in enumerate(texts):
            tokens, mask = encoder.encode([text])
            require(torch.equal(mask[0], state["mask"][i]), f"caption {i}: the mask depends on the batch")
            real = mask[0]
            require(torch.allclose(tokens[0].float()[real], state["tokens"][i][real], atol=atol),
                     f"caption {i}: its embedding depends on the rest of the batch")

    def deterministic() -> None:
        tokens, _ = encoder.encode(texts)
        require(torch.allclose(tokens.float(), state["tokens"], atol=atol), "the same call gave other embeddings")

    def untouched() -> None:
        require(texts == list(captions), "encode() modified the caption list")

    run("batch equals one at a time", one_at_a_time)
    run("deterministic", deterministic)
    run("captions are not modified", untouched)
    return run.finish(raise_on_failure)


def check_autoencoder(
    cls: type[Any],
    options: Mapping[str, Any] | None = None,
    *,
    image_size: int = 16,
    device: str = "cpu",
    atol: float = 1e-4,
    require_weights: bool = False,
    light_import: bool = True,
    raise_on_failure: bool = True,
) -> Report:
    """Check an :class:`~miro_core.autoencoder.Autoencoder` subclass: shapes, range, batching, determinism."""
    import torch

    from miro_core.autoencoder import Autoencoder

    options = dict(options or {})
    run = CheckRun(cls)
    if not check_common(run, cls, Autoencoder, options, light_import):
        return run.finish(raise_on_failure)
    codec = cls(options)
    names = ["encode and decode shapes", "decoded images lie in [-1, 1]", "batch equals one at a time",
             "deterministic", "inputs are not modified"]
    if not run.load(lambda: codec.load(device), names, require_weights):
        return run.finish(raise_on_failure)
    images = torch.rand(3, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    state: dict[str, Any] = {}

    def shapes() -> None:
        channels, size = codec.latent_shape(image_size)
        original = images.clone()
        with torch.no_grad():
            latents = codec.encode(images)
            decoded = codec.decode(latents)
        require(torch.equal(images, original), "encode() modified the images")
        require(tuple(latents.shape) == (3, channels, size, size),
                 f"latents {tuple(latents.shape)} but latent_shape({image_size}) = {(channels, size)}")
        require(tuple(decoded.shape) == tuple(images.shape), f"decoded shape {tuple(decoded.shape)}")
        state["latents"], state["decoded"] = latents, decoded

    if not run("encode and decode shapes", shapes):
        return run.finish(raise_on_failure)

    def value_range() -> None:  # what the engine checks of every decoded batch (miro_core.network_contract)
        checked_decoded(codec, state["decoded"], state["latents"], image_size)

    def one_at_a_time() -> None:
        with torch.no_grad():
            single = torch.cat([codec.encode(images[i : i + 1]) for i in range(3)])
        require(torch.allclose(single, state["latents"], atol=atol), "a batch encodes differently from one image")

    def deterministic() -> None:
        with torch.no_grad():
            again = codec.encode(images)
        require(torch.allclose(again, state["latents"], atol=atol), "encode() is not deterministic (use the mean)")

    def untouched() -> None:
        latents = state["latents"].clone()
        with torch.no_grad():
            codec.decode(latents)
        require(torch.equal(latents, state["latents"]), "decode() modified the latents")

    run("decoded images lie in [-1, 1]", value_range)
    run("batch equals one at a time", one_at_a_time)
    run("deterministic", deterministic)
    run("inputs are not modified", untouched)
    return run.finish(raise_on_failure)

"""The Python API: load a run folder and sample with multi-reward guidance.

    pipe = MiroPipeline.from_pretrained("runs/demo")
    images = pipe("a red circle", reward_targets={"shapes-aesthetic": 1.0}, guidance_scale=3.0,
                  num_inference_steps=50, generator=torch.Generator().manual_seed(0))

``miro sample`` is a thin layer over this class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL.Image import Image

from miro_core.errors import ConfigError
from miro_core.guidance import check_reward_keys
from miro_core.sampling import Branch, guided_sample


def levels_tensor(keys: Sequence[str], targets: Mapping[str, float], batch: int, device: Any) -> torch.Tensor | None:
    if not keys:
        return None
    row = torch.tensor([float(targets[k]) for k in keys], dtype=torch.float32, device=device)
    return row[None].expand(batch, -1).contiguous()


class MiroPipeline:
    """A trained MIRO model with its text encoder, ready to sample."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], registry: Any, device: str = "cpu") -> None:
        self.model = model.eval().to(device)
        self.config = config
        self.registry = registry
        self.device = device
        text = config["text_encoder"]
        self.text_encoder = registry.text_encoders.create(text["name"], text["options"])
        self._text_loaded = False
        autoencoder = config.get("autoencoder", {"name": "pixels", "options": {}})
        self.autoencoder = registry.autoencoders.create(autoencoder["name"], autoencoder["options"])
        self.autoencoder.load(device)

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, run: str | Path, device: str = "cpu", weights: str = "ema", registry: Any = None
    ) -> MiroPipeline:
        """Load ``RUN/config.json`` and the latest checkpoint's EMA (or raw) weights."""
        from miro_core.model import ModelSpec, build_model
        from miro_core.run_folder import latest_checkpoint, load_weights, read_run_config

        if registry is None:
            from miro_core.plugins import get_registry

            registry = get_registry()
        run = Path(run)
        config = read_run_config(run)
        checkpoint = latest_checkpoint(run)
        if checkpoint is None:
            raise ConfigError(f"{run} has no checkpoint yet (no latest.json); train it with `miro train`")
        spec = ModelSpec(**config["model"])
        model = build_model(spec, registry)
        name = "model_ema.safetensors" if weights == "ema" else "model.safetensors"
        model.load_state_dict(load_weights(checkpoint / name))
        pipe = cls(model, config, registry, device)
        pipe.run_dir = run
        pipe.step = int(checkpoint.name.removeprefix("step-"))
        return pipe

    # -- facts about the run ----------------------------------------------------------------------
    @property
    def reward_keys(self) -> list[str]:
        """The reward keys the run was trained on (empty for a baseline)."""
        return list(self.config.get("reward_keys", []))

    @property
    def num_bins(self) -> int | None:
        return self.config.get("num_bins")

    def level_grid(self) -> list[float]:
        """The levels the model saw in training (what UI sliders snap to)."""
        bins = self.num_bins or 2
        return [i / (bins - 1) for i in range(bins)]

    @property
    def image_size(self) -> int:
        """Pixel size of the images (the model's own size is the latent size for latent runs)."""
        return int(self.config.get("autoencoder", {}).get("image_size") or self.config["model"]["image_size"])

    @property
    def example_prompts(self) -> list[str]:
        return list(self.config.get("example_prompts", []))

    # -- sampling -------------------------------------------------------------------------------
    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._text_loaded:
            self.text_encoder.load(self.device)
            self._text_loaded = True
        tokens, mask = self.text_encoder.encode(list(prompts))
        return tokens.to(self.device).float(), mask.to(self.device)

    def resolve_targets(
        self,
        reward_targets: Mapping[str, float] | None,
        negative_reward_targets: Mapping[str, float] | None,
        strategy: Any,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Defaults s+ = 1 and s- = 0 for every reward (MIRO-NOTES section 6), overridden per key."""
        keys = self.reward_keys
        given_pos = dict(reward_targets or {})
        given_neg = dict(negative_reward_targets or {})
        check_reward_keys(given_pos, keys, "reward_targets")
        check_reward_keys(given_neg, keys, "negative_reward_targets")
        positive = {k: float(given_pos.get(k, 1.0)) for k in keys}
        negative_defaults = {k: float(given_neg.get(k, 0.0)) for k in keys}
        negative = strategy.negative_targets(keys, positive, negative_defaults)
        return positive, negative

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        num_images_per_prompt: int = 1,
        reward_targets: Mapping[str, float] | None = None,
        negative_reward_targets: Mapping[str, float] | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int = 50,
        sampler: str = "euler",
        strategy: str = "miro",
        strategy_options: Mapping[str, Any] | None = None,
        negative_prompt: str | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
    ) -> list[Image] | torch.Tensor:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ConfigError("give at least one prompt")
        if num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        scale = self.config.get("guidance_scale", 7.0) if guidance_scale is None else guidance_scale
        options = {"scale": float(scale), **dict(strategy_options or {})}
        guide = self.registry.guidance.create(strategy, options)
        ode = self.registry.samplers.create(sampler)
        positive, negative = self.resolve_targets(reward_targets, negative_reward_targets, guide)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        n = len(prompts)
        tokens, mask = self.encode_prompts(prompts)
        if negative_prompt is not None:
            neg_texts = [negative_prompt] * n
        elif guide.options.negative_text == "same":
            neg_texts = prompts
        else:
            neg_texts = [""] * n
        neg_tokens, neg_mask = self.encode_prompts(neg_texts)
        channels, size = self.config["model"]["in_channels"], self.config["model"]["image_size"]
        noise = torch.randn((n, channels, size, size), generator=generator).to(self.device)
        x0 = guided_sample(
            self.model,
            noise,
            Branch(tokens, mask, levels_tensor(self.reward_keys, positive, n, self.device)),
            Branch(neg_tokens, neg_mask, levels_tensor(self.reward_keys, negative, n, self.device)),
            guide,
            ode,
            num_inference_steps,
        )
        images = self.autoencoder.decode(x0)
        if output_type == "pt":
            return images
        from miro_core.grid import to_pil

        return to_pil(images)


def sample_grid_for_model(
    model: torch.nn.Module, registry: Any, cfg: Any, data: Any, prompts: Sequence[str], steps: int, seed: int
) -> Image:
    """A milestone grid during training: each prompt with all rewards high (and low, if any)."""
    from miro_core.grid import make_grid, to_pil

    model.eval()
    device = next(model.parameters()).device
    codec_config = getattr(data, "autoencoder", None) or {"name": "pixels", "options": {}}
    codec = registry.autoencoders.create(codec_config["name"], codec_config.get("options", {}))
    codec.load(str(device))
    position = {c: i for i, c in enumerate(data.captions)}
    missing = [p for p in prompts if p not in position]
    if missing:
        encoder = registry.text_encoders.create(cfg.text_encoder, cfg.text_encoder_options)
        encoder.load()
        extra_tokens, extra_mask = encoder.encode(missing)

    def text(prompt: str, per: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The cached (or freshly encoded) embedding of one prompt, repeated ``per`` times."""
        if prompt in position:
            tokens, mask = data.text_tokens[position[prompt]], data.text_mask[position[prompt]]
        else:
            tokens, mask = extra_tokens[missing.index(prompt)], extra_mask[missing.index(prompt)]
        return tokens.float()[None].expand(per, -1, -1).to(device), mask[None].expand(per, -1).to(device)

    keys = data.reward_keys
    settings = [("high", 1.0)] + ([("low", 0.0)] if keys else [])
    per = 2
    # The same negative text (empty caption), strategy, solver and noise serve every cell of the grid.
    neg_tokens = data.text_tokens[0].float()[None].expand(per, -1, -1).to(device)
    neg_mask = data.text_mask[0][None].expand(per, -1).to(device)
    strategy = registry.guidance.create("miro" if keys else "cfg", {"scale": cfg.guidance_scale})
    solver = registry.samplers.create("euler")
    noise = torch.randn((per, *data.images.shape[1:]), generator=torch.Generator().manual_seed(seed)).to(device)
    images: list[Image] = []
    for prompt in prompts:
        tokens, mask = text(prompt, per)
        for _, value in settings:
            pos_levels = levels_tensor(keys, {k: value for k in keys}, per, device)
            neg_levels = levels_tensor(keys, {k: 1.0 - value for k in keys}, per, device)
            x0 = guided_sample(
                model, noise, Branch(tokens, mask, pos_levels), Branch(neg_tokens, neg_mask, neg_levels),
                strategy, solver, steps,
            )
            images += to_pil(codec.decode(x0))
    labels = [f"{p} | " + " / ".join(name for name, _ in settings) for p in prompts]
    return make_grid(images, columns=per * len(settings), labels=labels)

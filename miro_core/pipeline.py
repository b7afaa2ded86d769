"""The Python API: load a run folder or a released MIRO checkpoint and sample with multi-reward guidance.

    pipe = MiroPipeline.from_pretrained("runs/demo")          # a run folder written by `miro train`
    pipe = MiroPipeline.from_pretrained("nicolas-dufour/miro-ablations", variant="miro-only-clip")  # local HF cache
    images = pipe("a red circle", reward_targets={"shapes-aesthetic": 1.0}, guidance_scale=3.0,
                  num_inference_steps=50, generator=torch.Generator().manual_seed(0))
    latents = pipe(prompt_embeds=embeds, prompt_attention_mask=mask, latents=noise, output_type="latent")

The call follows diffusers' conventions (``prompt_embeds``, ``prompt_attention_mask``, ``latents`` as the
initial noise, ``output_type`` ``"pil"``, ``"pt"``, ``"np"`` or ``"latent"``). A released checkpoint (the
authors' 3-file layout, :mod:`miro_core.authors_layout`) samples as miro-t2i 0.1.4 does: its shipped
one-token negative text, its reward keys, self-conditioning carried per branch, uint8 images by truncation,
bf16 autocast on CUDA. ``miro sample`` is a thin layer over this class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL.Image import Image

from miro_core.errors import ConfigError, DataError, MiroError, UnknownComponentError
from miro_core.guidance import check_reward_keys
from miro_core.guidance_contract import checked_negative_targets
from miro_core.sampling import Branch, guided_sample

OUTPUT_TYPES = ("pil", "pt", "np", "numpy", "latent")
AUTOCAST_CHOICES = ("auto", "bf16", "fp16", "none")


def levels_tensor(keys: Sequence[str], targets: Mapping[str, float], batch: int, device: Any) -> torch.Tensor | None:
    if not keys:
        return None
    row = torch.tensor([float(targets[k]) for k in keys], dtype=torch.float32, device=device)
    return row[None].expand(batch, -1).contiguous()


def pad_text(tokens: torch.Tensor, mask: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad token states (and a False mask) to ``length`` positions."""
    extra = length - tokens.shape[1]
    if extra <= 0:
        return tokens, mask
    tokens = torch.cat([tokens, tokens.new_zeros(tokens.shape[0], extra, tokens.shape[2])], dim=1)
    return tokens, torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], dim=1)


def resolve_autocast(choice: str, device_type: str) -> torch.dtype | None:
    """The autocast dtype: ``auto`` is the release's behaviour (bf16 on CUDA, fp16 where bf16 is missing;
    nothing on CPU)."""
    if choice not in AUTOCAST_CHOICES:
        raise ConfigError(f"autocast must be one of {', '.join(AUTOCAST_CHOICES)}, got {choice!r}")
    if choice == "none" or (choice == "auto" and device_type != "cuda"):
        return None
    if choice == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if choice == "bf16" else torch.float16


def _is_run_folder(folder: Path) -> bool:
    import json

    config = folder / "config.json"
    if not config.is_file():
        return False
    if (folder / "latest.json").is_file() or (folder / "checkpoints").is_dir():
        return True  # a run folder, even with a damaged config.json (reading it then says so)
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model" in data


#: The components a run folder records (config.json ``components``) that sampling needs, and their tables.
RUN_COMPONENT_TABLES = {"backbone": "backbones", "text_encoder": "text_encoders", "autoencoder": "autoencoders"}


def require_run_components(run: Path, config: Mapping[str, Any], registry: Any) -> None:
    """Name the distribution to install when a run's backbone, text encoder or autoencoder plugin is missing
    (instead of a bare "unknown text encoder")."""
    for role, table in RUN_COMPONENT_TABLES.items():
        record = (config.get("components") or {}).get(role)
        if not isinstance(record, Mapping) or record.get("name") in getattr(registry, table):
            continue
        raise UnknownComponentError(
            f"{run} was trained with the {role.replace('_', ' ')} {record.get('name')!r} of the distribution "
            f"{record.get('distribution')} {record.get('distribution_version')}, which is not loaded here: install "
            "it (or load it with --plugins-dir) and rerun; see `miro plugins`"
        )


class MiroPipeline:
    """A trained MIRO model with its text encoder, ready to sample."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: dict[str, Any],
        registry: Any,
        device: str = "cpu",
        negative_text_embedding: torch.Tensor | None = None,
        autocast: str = "auto",
    ) -> None:
        self.model = model.eval().to(device)
        self.config = config
        self.registry = registry
        self.device = device
        resolve_autocast(autocast, torch.device(device).type)
        #: ``auto`` (the release: bf16 autocast on CUDA, none on CPU), ``bf16``, ``fp16`` or ``none``.
        self.autocast = autocast
        #: ``(L, D)`` fixed embedding of the negative text (the release ships one), or None to encode "".
        self.negative_text_embedding = negative_text_embedding
        text = config["text_encoder"]
        self.text_encoder = registry.text_encoders.create(text["name"], text["options"])
        self._text_loaded = False
        autoencoder = config.get("autoencoder", {"name": "pixels", "options": {}})
        self.autoencoder = registry.autoencoders.create(autoencoder["name"], autoencoder["options"])
        self._autoencoder_loaded = False
        self.run_dir: Path | None = None
        self.step = 0

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        run: str | Path,
        device: str = "cpu",
        weights: str = "ema",
        registry: Any = None,
        variant: str | None = None,
        autocast: str = "auto",
        autoencoder_options: Mapping[str, Any] | None = None,
        cache_dir: str | Path | None = None,
        revision: str | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> MiroPipeline:
        """Load a run folder (``config.json`` + the latest checkpoint's EMA or raw weights), or a released
        checkpoint in the authors' layout from a local folder or the local Hugging Face cache (``variant``:
        its subfolder, e.g. ``miro-only-clip``). Nothing is downloaded.

        ``autoencoder_options`` override the decoder's options, e.g. ``{"checkpoint": "/models/sdxl-vae"}``
        when the SDXL VAE is a local folder rather than in the Hugging Face cache. ``cache_dir`` and
        ``revision`` pick the Hugging Face cache and snapshot. ``torch_dtype``: bfloat16 or float16 run the
        network under that autocast with float32 weights (miro-t2i instead casts its weights to it and still
        autocasts in bf16 on CUDA), float32 or None change nothing.
        """
        if torch_dtype is not None and torch_dtype != torch.float32:
            names = {torch.bfloat16: "bf16", torch.float16: "fp16"}
            if torch_dtype not in names:
                raise ConfigError(f"torch_dtype must be float32, bfloat16 or float16, not {torch_dtype}")
            autocast = names[torch_dtype]
        if registry is None:
            from miro_core.plugins import get_registry

            registry = get_registry()
        path = Path(run).expanduser()
        folder = path / variant if variant else path
        if folder.is_dir() and not (folder / "config.json").exists() and not (folder / "model.safetensors").exists():
            raise DataError(
                f"{folder} is not a miro run folder (no config.json; train one with `miro train`) nor a released "
                "MIRO checkpoint (config.json, model.safetensors, uncond_embedding.npy)"
            )
        if _is_run_folder(folder):
            pipe = cls._from_run_folder(folder, device, weights, registry, autocast)
        else:
            pipe = cls._from_authors_layout(run, variant, device, registry, autocast, cache_dir, revision)
        if autoencoder_options:
            codec = pipe.config.setdefault("autoencoder", {"name": "pixels", "options": {}})
            codec["options"] = {**codec.get("options", {}), **dict(autoencoder_options)}
            pipe.autoencoder = registry.autoencoders.create(codec["name"], codec["options"])
        return pipe

    @classmethod
    def _from_run_folder(cls, run: Path, device: str, weights: str, registry: Any, autocast: str) -> MiroPipeline:
        from miro_core.model import ModelSpec, build_model
        from miro_core.run_folder import latest_checkpoint, load_model_weights, load_negative_text, read_run_config

        config = read_run_config(run)
        checkpoint = latest_checkpoint(run)
        if checkpoint is None:
            raise ConfigError(f"{run} has no checkpoint yet (no latest.json); train it with `miro train`")
        require_run_components(run, config, registry)
        try:
            spec = ModelSpec(**config["model"])
        except TypeError as err:
            raise DataError(f"{run}/config.json is damaged (model: {err}); restore it from a copy, or train the run "
                            "again") from None
        model = build_model(spec, registry)
        name = "model_ema.safetensors" if weights == "ema" else "model.safetensors"
        load_model_weights(model, checkpoint / name)
        pipe = cls(model, config, registry, device, load_negative_text(run, config), autocast)
        pipe.run_dir = run
        pipe.step = int(checkpoint.name.removeprefix("step-"))
        return pipe

    @classmethod
    def _from_authors_layout(
        cls,
        source: str | Path,
        variant: str | None,
        device: str,
        registry: Any,
        autocast: str,
        cache_dir: str | Path | None = None,
        revision: str | None = None,
    ) -> MiroPipeline:
        from miro_core.authors_layout import build_model, load_checkpoint

        checkpoint, state = load_checkpoint(source, variant, cache_dir, revision)
        model = build_model(checkpoint, state, registry)
        pipe = cls(model, checkpoint.run_config(), registry, device, checkpoint.uncond_embedding, autocast)
        pipe.run_dir = checkpoint.folder
        return pipe

    def to(self, device: str | torch.device) -> MiroPipeline:
        """Move the network (and the text encoder and decoder, when loaded again) to ``device``."""
        self.device = str(torch.device(device))
        self.model.to(self.device)
        self._text_loaded = self._autoencoder_loaded = False
        return self

    # -- facts about the run ----------------------------------------------------------------------
    @property
    def reward_keys(self) -> list[str]:
        """The reward keys the run was trained on (empty for a baseline)."""
        return list(self.config.get("reward_keys", []))

    @property
    def coherence_keys(self) -> tuple[str, ...]:
        """The reward keys, under miro-t2i's name for them."""
        return tuple(self.reward_keys)

    @property
    def accepted_reward_keys(self) -> list[str]:
        """Keys ``reward_targets`` may name: the trained ones, and for a released checkpoint every key its
        pipeline accepts (targets for keys the network was not trained on are ignored, as there)."""
        return list(self.config.get("accepted_reward_keys") or self.reward_keys)

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
        from miro_core.network_contract import checked_text_encoding

        tokens, mask = checked_text_encoding(self.text_encoder, len(prompts), self.text_encoder.encode(list(prompts)),
                                             self.registry)
        return tokens.to(self.device).float(), mask.to(self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Model-space samples -> images ``(B, 3, H, W)`` in [-1, 1] (the autoencoder loads on first use)."""
        if not self._autoencoder_loaded:
            self.autoencoder.load(self.device)
            self._autoencoder_loaded = True
        from miro_core.network_contract import checked_decoded

        size = self.image_size
        # the pixel size is checked when the config's size is the one these latents come from
        try:
            known = tuple(self.autoencoder.latent_shape(size)) == (latents.shape[1], latents.shape[-1])
        except MiroError:
            known = False
        return checked_decoded(self.autoencoder, self.autoencoder.decode(latents), latents, size if known else None,
                               self.registry)

    def to_uint8(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> uint8 ``(B, H, W, 3)``; released checkpoints truncate, runs round."""
        images = images.detach().float()
        if self.config.get("image_rounding", "round") == "truncate":
            scaled = (images * 0.5 + 0.5).clamp(0, 1) * 255
        else:
            scaled = ((images.clamp(-1, 1) + 1) * 127.5).round()
        return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu()

    def resolve_targets(
        self,
        reward_targets: Mapping[str, float] | None,
        negative_reward_targets: Mapping[str, float] | None,
        strategy: Any,
        names: tuple[str, str] = ("reward_targets", "negative_reward_targets"),
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Defaults s+ = 1 and s- = 0 for every reward (MIRO-NOTES section 6), overridden per key.

        Levels of this project's runs lie in [0, 1] (their bins); a released checkpoint takes any finite level,
        as miro-t2i does (its rewards are normalised to about [0, 1], and extrapolating is the user's call).
        ``names`` are what errors call the two inputs (the CLI passes ``--reward``, ``--negative-reward``).
        The strategy's negative targets are checked (:mod:`miro_core.guidance_contract`).
        """
        keys = self.reward_keys
        given_pos = dict(reward_targets or {})
        given_neg = dict(negative_reward_targets or {})
        bounded = "imported_from" not in self.config
        check_reward_keys(given_pos, self.accepted_reward_keys, names[0], bounded)
        check_reward_keys(given_neg, self.accepted_reward_keys, names[1], bounded)
        positive = {k: float(given_pos.get(k, 1.0)) for k in keys}
        negative_defaults = {k: float(given_neg.get(k, 0.0)) for k in keys}
        negative = checked_negative_targets(
            strategy, keys, strategy.negative_targets(keys, positive, negative_defaults),
            bounded=bounded, registry=self.registry,
        )
        return positive, negative

    def _given_text(self, embeds: Any, mask: Any, what: str, per_prompt: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Validated ``(B * per_prompt, L, D)`` float32 states and bool mask from user tensors."""
        tokens = torch.as_tensor(embeds)
        if tokens.dim() == 2:
            tokens = tokens[None]
        text_dim = int(self.config["model"]["text_dim"])
        if tokens.dim() != 3 or tokens.shape[-1] != text_dim:
            raise ConfigError(f"{what} must be shaped (batch, tokens, {text_dim}), got {tuple(tokens.shape)}")
        if mask is None:
            mask_t = torch.ones(tokens.shape[:2], dtype=torch.bool)
        else:
            mask_t = torch.as_tensor(mask)
            if mask_t.dim() == 1:
                mask_t = mask_t[None]
            if tuple(mask_t.shape) != tuple(tokens.shape[:2]):
                raise ConfigError(
                    f"{what} attention mask is shaped {tuple(mask_t.shape)}, expected {tuple(tokens.shape[:2])}"
                )
        tokens = tokens.to(self.device, torch.float32)
        mask_t = mask_t.to(self.device).bool()
        if per_prompt > 1:
            tokens, mask_t = tokens.repeat_interleave(per_prompt, 0), mask_t.repeat_interleave(per_prompt, 0)
        return tokens, mask_t

    def _negative_text(
        self,
        n: int,
        positive: tuple[torch.Tensor, torch.Tensor],
        negative_prompt: str | Sequence[str] | None,
        negative_prompt_embeds: Any,
        negative_prompt_attention_mask: Any,
        per_prompt: int,
        guide: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if negative_prompt_embeds is not None:
            tokens, mask = self._given_text(
                negative_prompt_embeds, negative_prompt_attention_mask, "negative_prompt_embeds", per_prompt
            )
            if tokens.shape[0] == 1 and n > 1:
                tokens, mask = tokens.expand(n, -1, -1), mask.expand(n, -1)
            if tokens.shape[0] != n:
                raise ConfigError(f"negative_prompt_embeds has batch {tokens.shape[0]}, the prompts make {n}")
            return tokens, mask
        if negative_prompt is not None:
            texts = [negative_prompt] * n if isinstance(negative_prompt, str) else list(negative_prompt)
            if len(texts) * per_prompt == n and per_prompt > 1:
                texts = [t for t in texts for _ in range(per_prompt)]
            if len(texts) != n:
                raise ConfigError(f"{len(texts)} negative prompts for {n} images")
            return self.encode_prompts(texts)
        if guide.options.negative_text == "same":
            return positive
        if self.negative_text_embedding is not None:
            fixed = self.negative_text_embedding.to(self.device, torch.float32)
            mask = torch.ones(n, fixed.shape[0], dtype=torch.bool, device=self.device)
            return fixed[None].expand(n, -1, -1), mask
        return self.encode_prompts([""] * n)

    def _initial_noise(self, n: int, latents: Any, generator: torch.Generator | None) -> torch.Tensor:
        channels, size = self.config["model"]["in_channels"], self.config["model"]["image_size"]
        shape = (n, channels, size, size)
        if latents is not None:
            noise = torch.as_tensor(latents)
            if tuple(noise.shape) != shape:
                raise ConfigError(f"latents must be shaped {shape} (the initial noise), got {tuple(noise.shape)}")
            return noise.to(self.device, torch.float32)
        where = generator.device if generator is not None else torch.device("cpu")
        return torch.randn(shape, generator=generator, device=where, dtype=torch.float32).to(self.device)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str] | None = None,
        *,
        prompt_embeds: Any = None,
        prompt_attention_mask: Any = None,
        negative_prompt: str | Sequence[str] | None = None,
        negative_prompt_embeds: Any = None,
        negative_prompt_attention_mask: Any = None,
        num_images_per_prompt: int = 1,
        reward_targets: Mapping[str, float] | None = None,
        negative_reward_targets: Mapping[str, float] | None = None,
        guidance_scale: float | None = None,
        num_inference_steps: int = 50,
        sampler: str = "euler",
        strategy: str = "miro",
        strategy_options: Mapping[str, Any] | None = None,
        generator: torch.Generator | None = None,
        latents: Any = None,
        output_type: str = "pil",
    ) -> Any:
        """Sample ``num_images_per_prompt`` images per prompt.

        Returns PIL images (``pil``), a float tensor ``(B, 3, H, W)`` in [0, 1] (``pt``), a uint8 array
        ``(B, H, W, 3)`` (``np``) or the model-space samples ``(B, C, h, w)`` before decoding (``latent``).
        """
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if num_inference_steps < 1:
            raise ConfigError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if num_images_per_prompt < 1:
            raise ConfigError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt}")
        if (prompt is None) == (prompt_embeds is None):
            raise ConfigError("give either prompt or prompt_embeds (with prompt_attention_mask), not both")
        from miro_core.sampling_settings import resolve_guidance

        # guidance_scale and a ``scale`` strategy option may not disagree (miro_core.sampling_settings)
        scale, options = resolve_guidance(
            guidance_scale, strategy_options, self.config.get("guidance_scale", 7.0),
            guidance_option="guidance_scale", strategy_option="strategy_options",
        )
        guide = self.registry.guidance.create(strategy, {"scale": scale, **options})
        ode = self.registry.samplers.create(sampler)
        positive, negative = self.resolve_targets(reward_targets, negative_reward_targets, guide)
        if prompt_embeds is not None:
            text = self._given_text(prompt_embeds, prompt_attention_mask, "prompt_embeds", num_images_per_prompt)
        else:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
            if not prompts:
                raise ConfigError("give at least one prompt")
            text = self.encode_prompts([p for p in prompts for _ in range(num_images_per_prompt)])
        n = text[0].shape[0]
        neg = self._negative_text(
            n,
            text,
            negative_prompt,
            negative_prompt_embeds,
            negative_prompt_attention_mask,
            num_images_per_prompt,
            guide,
        )
        length = max(text[0].shape[1], neg[0].shape[1])
        tokens, mask = pad_text(*text, length)
        neg_tokens, neg_mask = pad_text(*neg, length)
        noise = self._initial_noise(n, latents, generator)
        device_type = torch.device(self.device).type
        dtype = resolve_autocast(self.autocast, device_type)
        context = torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with context:
            x0 = guided_sample(
                self.model,
                noise,
                Branch(tokens, mask, levels_tensor(self.reward_keys, positive, n, self.device)),
                Branch(neg_tokens, neg_mask, levels_tensor(self.reward_keys, negative, n, self.device)),
                guide,
                ode,
                num_inference_steps,
                self.registry,
            )
        x0 = x0.float()
        if output_type == "latent":
            return x0
        images = self.decode(x0)
        if output_type == "pt":
            return (images.float() * 0.5 + 0.5).clamp(0, 1)
        array = self.to_uint8(images)
        if output_type in ("np", "numpy"):
            return array.numpy()
        from PIL import Image as PILImage

        return [PILImage.fromarray(a.numpy()) for a in array]


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
    noise = torch.randn((per, *data.sample_shape), generator=torch.Generator().manual_seed(seed)).to(device)
    images: list[Image] = []
    for prompt in prompts:
        tokens, mask = text(prompt, per)
        for _, value in settings:
            pos_levels = levels_tensor(keys, {k: value for k in keys}, per, device)
            neg_levels = levels_tensor(keys, {k: 1.0 - value for k in keys}, per, device)
            x0 = guided_sample(
                model,
                noise,
                Branch(tokens, mask, pos_levels),
                Branch(neg_tokens, neg_mask, neg_levels),
                strategy,
                solver,
                steps,
            )
            images += to_pil(codec.decode(x0))
    labels = [f"{p} | " + " / ".join(name for name, _ in settings) for p in prompts]
    return make_grid(images, columns=per * len(settings), labels=labels)

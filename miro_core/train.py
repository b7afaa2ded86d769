"""``miro train``: flow-matching training conditioned on text and binned reward vectors.

The distributed engine is accelerate (multi-process, mixed precision, gradient accumulation, FSDP); this
module only decides what a step is. Training reads records written by ``miro encode`` (or encodes an
annotation folder into a records cache first) through a DataLoader with worker processes
(:mod:`miro_core.records`). Which samples step ``s`` reads, and its noise and times, are functions of
(seed, step, micro-batch, process), so a resumed run repeats exactly what an uninterrupted run would
have done, and K processes split what one process with K times the batch would read.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from miro_core.errors import ConfigError, DataError


class TrainConfig(BaseModel):
    """All options of a training run (YAML in configs/, overridden on the command line)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    data: str
    bins: str | None = None
    out: str = "runs/train"
    rewards: list[str] | None = None
    no_rewards: bool = False
    backbone: str = "hybrid-small"
    backbone_options: dict[str, Any] = {}
    text_encoder: str = "minilm"
    text_encoder_options: dict[str, Any] = {}
    image_size: int = Field(32, ge=1, le=16384)
    # model input: "pixels", or latents of an autoencoder plugin (see `miro encode`); with records as
    # `data` these, the image size and the text encoder are the records' own
    autoencoder: str = "pixels"
    autoencoder_options: dict[str, Any] = {}
    # data loading (records are read in DataLoader worker processes)
    data_workers: int = Field(2, ge=0, le=256)
    prefetch_batches: int = Field(4, ge=1, le=1024)
    #: Shards whose samples are shuffled together (see miro_core.records.order).
    shuffle_block_shards: int = Field(64, ge=1)
    # conditioning (MIRO-NOTES section 4)
    cond_dim: int = Field(128, ge=1, le=65536)
    cond_heads: int = Field(4, ge=1)
    mixer_layers: int = Field(2, ge=0)
    registers: int = Field(16, ge=0)
    fourier_channels: int = Field(256, ge=2, le=65536, multiple_of=2)
    missing_reward: Literal["zero", "learned"] = "zero"
    reward_dropout: float = Field(0.0, ge=0.0, le=1.0)
    text_dropout: float = Field(0.0, ge=0.0, le=1.0)
    # objective (section 5)
    time_sampling: Literal["logit-normal", "uniform"] = "logit-normal"
    time_shift: float = Field(1.0, gt=0.0)
    loss_weighting: Literal["learned", "none"] = "learned"
    precondition: bool = True
    # "released": the released MIRO model's reward embedders, mixer and preconditioning (with rin-release)
    design: Literal["framework", "released"] = "framework"
    # start from released or converted weights (miro_core/init_from.py); the architecture comes from there
    init_from: str | None = None
    init_from_variant: str | None = None
    sigma_data: float = Field(0.5, gt=0.0)
    # optimisation
    optimizer: Literal["adamw", "lamb"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_steps: int = Field(100, ge=0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: float = Field(2.0, ge=0.0)
    ema_decay: float = Field(0.9999, ge=0.0, le=1.0)
    batch_size: int = Field(64, ge=1, le=2**20)
    grad_accumulation: int = Field(1, ge=1, le=2**20)
    # "auto": bf16 where the device runs it natively (see miro_core.low_precision), else float32
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = "no"
    steps: int = Field(1000, ge=1, le=10**12)
    max_seconds: float | None = Field(None, gt=0.0)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    device: Literal["auto", "cpu"] = "auto"
    # speed on an accelerator (docs/training.md, "Fast training")
    tf32: bool = True
    channels_last: Literal["auto", "always", "never"] = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    compile_options: dict[str, Any] = {}
    #: Peak TFLOP/s of one device for the MFU figure; default: looked up from the CUDA device name.
    peak_tflops: float | None = Field(None, gt=0.0)
    # bookkeeping
    log_every: int = Field(10, ge=1)
    #: 0 saves only at the end of the run (the last step is always saved).
    save_every: int = Field(500, ge=0)
    keep_checkpoints: int = Field(2, ge=1)
    sample_every: int = Field(0, ge=0)
    sample_prompts: list[str] = []
    sample_steps: int = Field(30, ge=1)
    guidance_scale: float = Field(7.0, ge=0.0)


#: Options that may differ when resuming (they do not change what was already computed).
RESUMABLE_CHANGES = (
    "steps", "max_seconds", "log_every", "save_every", "sample_every", "keep_checkpoints", "data_workers",
    "prefetch_batches", "compile", "compile_options", "activation_checkpointing", "peak_tflops",
)


def shard_sizes_digest(sizes: list[int]) -> str:
    """A short fingerprint of the records' shard sizes, which (with the seed) fix the data order."""
    import hashlib

    return hashlib.sha256(",".join(str(int(n)) for n in sizes).encode()).hexdigest()[:16]


def step_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """A generator that depends only on (seed, step, micro-batch): exact resumption.

    Every process draws the noise and times of the *global* batch from it and keeps its own slice,
    so K processes with batch B compute what one process with batch K * B would.
    """
    mixed = (seed * 1_000_003 + step) * 1_009 + micro * 31
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on norms, biases and learned embeddings (registers, positions, null tokens)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if param.ndim < 2 or "norm" in name or leaf in {"registers", "pos", "position", "null"}:
            no_decay.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module, fused: bool = False) -> torch.optim.Optimizer:
    """AdamW (``fused``: one kernel for the whole update, on CUDA) or timm's LAMB."""
    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.optimizer == "lamb":
        from timm.optim import Lamb

        return Lamb(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=fused or None)


class LRSchedule:
    """Linear warmup, then cosine (or constant); the horizon can be fixed late (time budgets)."""

    def __init__(self, cfg: TrainConfig, horizon: int) -> None:
        # Plain fields only: LambdaLR.state_dict() stores this object's __dict__ in the checkpoint.
        self.warmup_steps = cfg.warmup_steps
        self.kind = cfg.lr_schedule
        self.min_lr_ratio = cfg.min_lr_ratio
        self.horizon = horizon

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        span = max(1, self.horizon - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def runs_on_cpu(cfg: TrainConfig) -> bool:
    """CPU when asked for or when no GPU is visible (accelerate's ``cpu=`` flag)."""
    return cfg.device == "cpu" or not torch.cuda.is_available()


def allow_new_precision(mixed_precision: str) -> None:
    """Let a second run in the same single process use another precision.

    accelerate keeps one process-wide state and refuses a second ``Accelerator`` whose mixed precision
    differs ("restart your runtime"), which breaks a float32 run followed by a bf16 run in one notebook or
    study script. In a single, non-launched process nothing else shares that state, so it is cleared (with
    accelerate's own reset, as its test utilities do); launched multi-process runs are left alone.
    """
    from accelerate.state import AcceleratorState, PartialState

    state = AcceleratorState._shared_state
    if not state or state.get("_mixed_precision") == mixed_precision:
        return
    if PartialState().num_processes == 1:
        AcceleratorState._reset_state()


def default_bins_paths(cfg: TrainConfig, records: Any = None) -> list[str]:
    """Where a run looks for bins without ``bins``: ``DATA/bins.json``, then ``bins.json`` of the annotation
    folder the records were encoded from (``source`` in ``records.json``), where ``miro bins fit ANN --out
    ANN/bins.json`` puts them."""
    from miro_core.data.atomic import join
    from miro_core.encode import absolute_url

    candidates = [join(cfg.data, "bins.json")]
    source = (getattr(records, "source", "") or "").rstrip("/")
    if source and not source.endswith((".tar", ".parquet")) and source != absolute_url(cfg.data.rstrip("/")):
        candidates.append(join(source, "bins.json"))
    return candidates


def resolve_reward_keys(cfg: TrainConfig, registry: Any, records: Any = None) -> tuple[list[str], Any]:
    """Which rewards to condition on, and the bins that turn scores into levels."""
    if cfg.no_rewards:
        return [], None
    from miro_core.bins import BinsFile
    from miro_core.data.atomic import exists

    candidates = [cfg.bins] if cfg.bins else default_bins_paths(cfg, records)
    bins_path = next((path for path in candidates if exists(path)), None)
    if bins_path is None:
        raise ConfigError(
            f"no bins file at {' or '.join(candidates)}; pass --bins BINS.json (from `miro bins fit`) or --no-rewards"
        )
    bins = BinsFile.load(bins_path, registry)
    keys = cfg.rewards or bins.reward_keys
    unknown = [k for k in keys if k not in bins.reward_keys]
    if unknown:
        raise ConfigError(f"--rewards {', '.join(unknown)} not in {bins_path} (it has {', '.join(bins.reward_keys)})")
    return list(keys), bins


def adopt_records_settings(cfg: TrainConfig, info: Any, registry: Any = None) -> TrainConfig:
    """``cfg`` with the records' autoencoder, image size and text encoder; options set explicitly
    (in the YAML file or on the command line) that contradict the records are refused. Options are
    compared as the component runs with them (defaults filled in, local paths absolute), so a config that
    spells out a default, or names a folder by another relative path, is not refused."""
    from miro_core.encode import effective_options

    recorded = {
        "autoencoder": info.autoencoder["name"],
        "image_size": info.image_size,
        "text_encoder": info.text_encoder["name"],
    }
    explicit = cfg.model_fields_set
    conflicts = [f"{k}={getattr(cfg, k)} (records: {v})" for k, v in recorded.items()
                 if k in explicit and getattr(cfg, k) != v]
    for key, table, stored in (("autoencoder_options", "autoencoders", info.autoencoder),
                               ("text_encoder_options", "text_encoders", info.text_encoder)):
        have = effective_options(registry, table, stored["name"], stored["options"])
        want = effective_options(registry, table, stored["name"], getattr(cfg, key))
        conflicts += [f"{key}.{k}={v} (records: {have.get(k)})" for k, v in getattr(cfg, key).items()
                      if k != "statistics" and want.get(k) != have.get(k)]
    if conflicts:
        raise DataError(
            f"the records at {info.url} were encoded with other settings: {'; '.join(conflicts)}. Drop these "
            "options (the records define them) or encode the annotations again with them"
        )
    return cfg.model_copy(update={
        **recorded,
        "autoencoder_options": info.autoencoder["options"],
        "text_encoder_options": info.text_encoder["options"],
    })


@dataclass
class GridData:
    """What milestone grids need from the data: a few captions with their tokens (row 0: the empty
    caption), the codec of the model input, and the input's shape."""

    captions: list[str]
    text_tokens: torch.Tensor
    text_mask: torch.Tensor
    reward_keys: list[str]
    autoencoder: dict[str, Any] | None
    sample_shape: tuple[int, int, int]


def example_captions(dataset: Any, count: int = 8, scan: int = 256) -> tuple[list[str], list[Any], list[Any]]:
    """Up to ``count`` distinct captions from the first records, with their tokens and masks."""
    captions: list[str] = []
    tokens: list[Any] = []
    masks: list[Any] = []
    for index in range(min(scan, len(dataset))):
        record = dataset[index]
        if record["caption"] and record["caption"] not in captions:
            captions.append(record["caption"])
            tokens.append(torch.from_numpy(record["tokens"]))
            masks.append(torch.from_numpy(record["mask"]))
        if len(captions) >= count:
            break
    return captions, tokens, masks


class Trainer:
    """One training run; ``run()`` returns the run folder."""

    def __init__(self, cfg: TrainConfig, registry: Any, progress: bool = True) -> None:
        from miro_core.low_precision import resolve_mixed_precision

        precision = resolve_mixed_precision(cfg.mixed_precision, "cpu" if runs_on_cpu(cfg) else "cuda")
        # config.json records the choice (model_copy keeps which fields were set explicitly)
        self.cfg = cfg.model_copy(update={"mixed_precision": precision})
        self.registry = registry
        self.show_progress = progress
        self.run_dir = Path(cfg.out)

    # -- setup ----------------------------------------------------------------------------------
    def _check_run_folder(self, resume: bool, records: Any) -> dict[str, Any] | None:
        from miro_core.run_folder import latest_checkpoint, read_run_config

        config_path = self.run_dir / "config.json"
        if not config_path.exists():
            return None
        if latest_checkpoint(self.run_dir) is None and not any((self.run_dir / "checkpoints").glob("step-*")):
            # a run that stopped before its first checkpoint (e.g. a failure at step 1) has nothing to lose or
            # continue: start it over with the options given now (config.json is rewritten at step 0)
            return None
        if not resume:
            raise ConfigError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        run_config = read_run_config(self.run_dir)
        previous = run_config["train"]
        current = self.cfg.model_dump(mode="json")
        defaults = TrainConfig(data=self.cfg.data).model_dump(mode="json")  # runs older than an option
        changed = [
            k for k in current if k not in RESUMABLE_CHANGES and previous.get(k, defaults[k]) != current[k]
        ]
        # where the run folder lives is not a training option: a copied or moved run folder resumes
        changed = [k for k in changed if k != "out"]
        if "data" in changed and self._same_records_elsewhere(run_config.get("data") or {}, records):
            changed.remove("data")  # the same records copied elsewhere (e.g. to node-local disk) read the same order
        if "bins" in changed and self._same_bins_elsewhere():
            changed.remove("bins")  # the run's bins named by another path (relative, absolute, moved)
        if run_config.get("processes") is not None:  # runs older than this record refuse any batch change
            changed = self._check_global_batch(run_config, changed, defaults)
        self._check_same_records(run_config.get("data") or {}, records)
        if changed:
            raise ConfigError(
                f"cannot resume {self.run_dir}: options changed since it started: {', '.join(sorted(changed))}"
            )
        return previous

    def _check_global_batch(
        self, run_config: dict[str, Any], changed: list[str], defaults: dict[str, Any]
    ) -> list[str]:
        """Allow another batch size, accumulation or process count on resume when the global batch stays:
        step ``s`` then reads the same records (``records/order.py``); refuse a different global batch."""
        previous, cfg = run_config["train"], self.cfg
        batch, accum = (previous.get(k, defaults[k]) for k in ("batch_size", "grad_accumulation"))
        processes = int(run_config["processes"])
        world = self.accelerator.num_processes
        before, now = batch * processes * accum, cfg.batch_size * world * cfg.grad_accumulation
        if before != now:
            raise ConfigError(
                f"cannot resume {self.run_dir}: the global batch (batch_size x processes x grad_accumulation) "
                f"was {batch} x {processes} x {accum} = {before} when the run started and is "
                f"{cfg.batch_size} x {world} x {cfg.grad_accumulation} = {now} now; a resumed step reads the "
                f"records of the same step only with the same global batch: keep {before}, e.g. with "
                "--batch-size or grad_accumulation"
            )
        return [k for k in changed if k not in ("batch_size", "grad_accumulation")]

    @staticmethod
    def _same_records_elsewhere(data: dict[str, Any], records: Any) -> bool:
        """Whether records at another location have the shard sizes the run started with (the data order
        depends only on them and the seed; their settings are checked against the run's separately)."""
        recorded = data.get("shard_sizes_sha256")
        return recorded is not None and recorded == shard_sizes_digest(records.shard_sizes)

    def _same_bins_elsewhere(self) -> bool:
        """Whether ``bins`` holds the bins the run was trained with (its copy, ``RUN/bins.json``)."""
        import json

        from miro_core.data.atomic import read_json

        try:
            kept = json.loads((self.run_dir / "bins.json").read_text())
            return bool(self.cfg.bins) and read_json(self.cfg.bins) == kept
        except (OSError, ValueError):
            return False

    def _check_same_records(self, data: dict[str, Any], records: Any) -> None:
        """The data order is a function of the records' shard sizes: refuse records that changed under a run."""
        if data.get("samples") is None or data.get("shards") is None:
            return
        then, now = (int(data["samples"]), int(data["shards"])), (records.samples, len(records.shards))
        if then != now:
            raise ConfigError(
                f"cannot resume {self.run_dir}: the records at {records.url} changed since the run started "
                f"({then[0]} samples in {then[1]} shards then, {now[0]} in {now[1]} now); a resumed run continues "
                "the data order only on the same records: restore them, or start a new run from this one's "
                f"weights with --init-from {self.run_dir}"
            )

    def _records(self) -> Any:
        """The records to train on: ``data`` itself, or the records cache of an annotation folder
        (encoded now by the main process if missing). Adopts the records' input and text settings."""
        from miro_core.encode import EncodeConfig, records_for_training
        from miro_core.records.layout import is_records, read_records

        cfg, accelerator = self.cfg, self.accelerator
        url = cfg.data
        if not is_records(url):
            encode = EncodeConfig(
                data=cfg.data,
                autoencoder=cfg.autoencoder,
                autoencoder_options=cfg.autoencoder_options,
                image_size=cfg.image_size,
                text_encoder=cfg.text_encoder,
                text_encoder_options=cfg.text_encoder_options,
                device=str(accelerator.device),
                workers=cfg.data_workers,
            )
            with accelerator.main_process_first():
                url = records_for_training(
                    encode, self.registry, progress=self.show_progress and accelerator.is_main_process
                )
        info = read_records(url)
        self.cfg = adopt_records_settings(cfg, info, self.registry)
        return info

    def _model_spec(self, info: Any, reward_keys: list[str]) -> Any:
        from miro_core.backbone import parse_backbone_name
        from miro_core.model import ModelSpec

        cfg = self.cfg
        backbone_name, parsed_options = parse_backbone_name(cfg.backbone, self.registry.backbones.as_dict())
        channels, size, _ = info.input_shape
        return ModelSpec(
            backbone=backbone_name,
            backbone_options={**parsed_options, **cfg.backbone_options},
            in_channels=channels,
            image_size=size,  # the latent size when training on latents
            text_dim=info.text_shape[1],
            reward_keys=reward_keys,
            cond_dim=cfg.cond_dim,
            cond_heads=cfg.cond_heads,
            mixer_layers=cfg.mixer_layers,
            registers=cfg.registers,
            fourier_channels=cfg.fourier_channels,
            missing_reward=cfg.missing_reward,
            reward_dropout=cfg.reward_dropout,
            precondition=cfg.precondition,
            sigma_data=cfg.sigma_data,
            loss_weighting=cfg.loss_weighting,
            design=cfg.design,
        )

    def run(self, resume: bool = False, stop_at_step: int | None = None) -> Path:
        """Train (or continue with ``resume``); ``stop_at_step`` saves and exits early, keeping the
        full schedule, for queues that limit job length."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        from miro_core.data.lock import OutputLock

        self.started_at = time.perf_counter()
        self.first_step_at: float | None = None  # when the first step of this call ended (time to first step)
        allow_new_precision(self.cfg.mixed_precision)
        accelerator = Accelerator(
            mixed_precision=self.cfg.mixed_precision,
            gradient_accumulation_steps=self.cfg.grad_accumulation,
            cpu=runs_on_cpu(self.cfg),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        self.accelerator = accelerator
        # one writer per run folder: a second `miro train --out RUN --resume` is refused, naming this process
        with OutputLock(str(self.run_dir), accelerator.process_index, accelerator.num_processes):
            return self._run_locked(accelerator, resume, stop_at_step)

    def _run_locked(self, accelerator: Any, resume: bool, stop_at_step: int | None) -> Path:
        from miro_core import acceleration
        from miro_core.model import build_model
        from miro_core.run_folder import write_json_atomic

        records = self._records()
        cfg = self.cfg
        if accelerator.is_main_process:
            self._check_run_folder(resume, records)
        accelerator.wait_for_everyone()
        reward_keys, bins = resolve_reward_keys(cfg, self.registry, records)
        missing = [k for k in reward_keys if k not in records.score_keys]
        if missing:
            raise DataError(
                f"the records at {records.url} have no score column(s) {', '.join(missing)}; they hold "
                f"{', '.join(records.score_keys) or 'none'} (choose --rewards from those, or annotate and encode again)"
            )
        spec = self._model_spec(records, reward_keys)
        init = None
        if cfg.init_from:
            from miro_core import init_from

            init = init_from.load_init_source(cfg.init_from, cfg.init_from_variant)
            spec = init_from.adapt_spec(spec, init)
            init_from.check_latent_statistics(init, self._codec(records))
        device = accelerator.device
        acceleration.enable_tf32(cfg.tf32)

        torch.manual_seed(cfg.seed)
        model = build_model(spec, self.registry)
        if init is not None and not resume:
            self.init_report = init_from.initialise(model, init).as_json()
        self.channels_last = acceleration.wants_channels_last(cfg.channels_last, model, device.type)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.activation_checkpointing:
            acceleration.checkpoint_blocks(model.network)
        optimizer = make_optimizer(cfg, model, fused=acceleration.fused_optimizer_supported(device.type))
        schedule = LRSchedule(cfg, cfg.steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        if cfg.compile:
            acceleration.compile_model(model, cfg.compile_options)
        model, optimizer = accelerator.prepare(model, optimizer)
        unwrapped = accelerator.unwrap_model(model)

        from diffusers.training_utils import EMAModel

        # After prepare: under FSDP the EMA shadows the local shards of the parameters.
        ema = EMAModel(unwrapped.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
        step = 0
        horizon_fixed = cfg.max_seconds is None
        if resume:
            step, horizon_fixed = self._restore(unwrapped, optimizer, scheduler, ema, schedule)
        self.data = self._grid_data(records, reward_keys)
        if accelerator.is_main_process and step == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / "config.json", self._run_config(spec, records, bins))
            if bins is not None:
                bins.save(str(self.run_dir / "bins.json"))
        self.flops_per_sample = self._flops_per_sample(spec, records) if accelerator.is_main_process else None
        loader = self._loader(records, reward_keys, bins, step)
        self._loop(model, optimizer, scheduler, ema, schedule, step, horizon_fixed, stop_at_step, loader, records)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return self.run_dir

    def _loader(self, records: Any, reward_keys: list[str], bins: Any, step: int) -> Any:
        """Micro-batches of this process from ``step`` on, read by ``data_workers`` worker processes."""
        from miro_core.records.order import ShuffledOrder, StepSampler
        from miro_core.records.reader import Collate, RecordDataset, make_loader

        cfg, accelerator = self.cfg, self.accelerator
        dataset = RecordDataset(records, open_shards=cfg.shuffle_block_shards + 1)
        order = ShuffledOrder(records.shard_sizes, cfg.seed, cfg.shuffle_block_shards)
        sampler = StepSampler(
            order, cfg.batch_size, accelerator.process_index, accelerator.num_processes, cfg.grad_accumulation,
            start_step=step,
        )
        return make_loader(
            dataset, sampler, Collate(reward_keys, bins), cfg.data_workers,
            pin_memory=accelerator.device.type == "cuda", prefetch_factor=cfg.prefetch_batches,
        )

    def _grid_data(self, records: Any, reward_keys: list[str]) -> GridData:
        from miro_core.records.reader import RecordDataset, empty_caption

        empty_tokens, empty_mask = empty_caption(records)
        captions, tokens, masks = example_captions(RecordDataset(records, open_shards=2))
        return GridData(
            captions=["", *captions],
            text_tokens=torch.stack([empty_tokens, *tokens]),
            text_mask=torch.stack([empty_mask, *masks]),
            reward_keys=list(reward_keys),
            autoencoder=self._codec(records),
            sample_shape=tuple(records.input_shape),  # type: ignore[arg-type]
        )

    @staticmethod
    def _codec(records: Any) -> dict[str, Any]:
        """How samples of this run decode to pixels (recorded in config.json for the pipeline)."""
        if records.input_kind == "pixels":
            return {"name": "pixels", "options": {}}
        return {
            "name": records.autoencoder["name"],
            "options": records.autoencoder["options"],
            "image_size": records.image_size,
            "latent_shape": list(records.input_shape),
            "statistics": records.autoencoder.get("statistics"),
            "records": records.url,
        }

    def _flops_per_sample(self, spec: Any, records: Any) -> int | None:
        from miro_core.backbone import BackboneSpec
        from miro_core.model_stats import training_flops_per_sample

        backbone = self.registry.backbones.create(spec.backbone, spec.backbone_options)
        cond_len = len(spec.reward_keys) + spec.registers + records.text_shape[0]
        backbone_spec = BackboneSpec(spec.in_channels, spec.image_size, spec.cond_dim)
        return training_flops_per_sample(backbone, backbone_spec, cond_len)

    def _run_config(self, spec: Any, records: Any, bins: Any) -> dict[str, Any]:
        from miro_core import __version__, provenance

        return {
            "format": "miro-run",
            "miro_version": __version__,
            "train": self.cfg.model_dump(mode="json"),
            "model": spec.as_json(),
            "reward_keys": spec.reward_keys,
            "text_encoder": {"name": self.cfg.text_encoder, "options": self.cfg.text_encoder_options},
            "autoencoder": self._codec(records),
            "num_bins": bins.num_bins if bins is not None else None,
            "guidance_scale": self.cfg.guidance_scale,
            "init_from": getattr(self, "init_report", None),
            "data": {"path": self.cfg.data, "records": records.url, "samples": records.samples,
                     "shards": len(records.shards), "shard_sizes_sha256": shard_sizes_digest(records.shard_sizes)},
            # with the config's batch_size and grad_accumulation: the global batch a resume must keep
            "processes": self.accelerator.num_processes,
            "example_prompts": self.data.captions[1:9],
            "components": provenance.run_components(
                self.registry, backbone=spec.backbone, text_encoder=self.cfg.text_encoder,
                autoencoder=self._codec(records).get("name", "pixels"), data=self.cfg.data, bins=bins,
            ),
        }

    def _restore(
        self, unwrapped: Any, optimizer: Any, scheduler: Any, ema: Any, schedule: LRSchedule
    ) -> tuple[int, bool]:
        import json

        from miro_core import sharding
        from miro_core.run_folder import latest_checkpoint, load_optimizer_state, load_weights

        path = latest_checkpoint(self.run_dir)
        if path is None:
            return 0, self.cfg.max_seconds is None
        try:
            state = json.loads((path / "trainer_state.json").read_text())
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            raise DataError(
                f"{path / 'trainer_state.json'} is damaged ({err}); point {self.run_dir / 'latest.json'} at an "
                "intact earlier checkpoint of the run, or start a new run"
            ) from None
        try:  # files that read but do not fit this run's network, optimizer or schedule (edited or mixed up)
            sharding.load_model_state(unwrapped, load_weights(path / "model.safetensors"))
            inner = getattr(optimizer, "optimizer", optimizer)
            sharding.load_optimizer_state(unwrapped, inner, load_optimizer_state(path / "optimizer.pt"))
            scheduler.load_state_dict(state["scheduler"])
            ema_weights = load_weights(path / "model_ema.safetensors")
            named = list(unwrapped.named_parameters())
            ema.shadow_params = [sharding.like(p, ema_weights[n]) for n, p in named]
            ema.optimization_step = int(state["ema_step"])
            schedule.horizon = int(state["horizon"])
            horizon_fixed = bool(state["horizon_fixed"])
        except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as err:
            if isinstance(err, torch.OutOfMemoryError):
                raise  # reported as such, naming the options that lower memory
            detail = " ".join(f"{type(err).__name__}: {err}".split())
            raise DataError(
                f"checkpoint {path} does not fit this run ({detail[:300]}); point {self.run_dir / 'latest.json'} at "
                "an intact earlier checkpoint of the run, or start a new run"
            ) from err
        if horizon_fixed and self.cfg.max_seconds is None:
            # `--steps` may change on resume (RESUMABLE_CHANGES): a finished run asked for more steps continues,
            # and its schedule follows the new length from here on.
            schedule.horizon = self.cfg.steps
        return int(state["step"]), horizon_fixed

    # -- loop -----------------------------------------------------------------------------------
    def _loop(self, model: Any, optimizer: Any, scheduler: Any, ema: Any, schedule: LRSchedule, step: int,
              horizon_fixed: bool, stop_at_step: int | None, loader: Any, records: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from miro_core.flow import interpolate, per_sample_mse, sample_time, velocity_target
        from miro_core.model_stats import device_peak_flops
        from miro_core.records.reader import empty_caption, model_input

        cfg, accelerator = self.cfg, self.accelerator
        device = accelerator.device
        unwrapped = accelerator.unwrap_model(model)
        params = list(unwrapped.parameters())
        from miro_core import sharding

        self.sharded = sharding.is_sharded(unwrapped)
        writer = self._writer() if accelerator.is_main_process else None
        rank, world = accelerator.process_index, accelerator.num_processes
        global_batch = cfg.batch_size * world * cfg.grad_accumulation
        peak = device_peak_flops(device, cfg.mixed_precision, cfg.peak_tflops)
        empty_tokens, empty_mask = (t.to(device) for t in empty_caption(records))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        start_time, start_step = time.perf_counter(), step
        self._start_step = start_step
        progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            disable=not (self.show_progress and accelerator.is_main_process),
        )
        batches = iter(loader)
        self.data_wait = 0.0
        rate_mark: tuple[int, float] | None = None  # throughput is measured from the end of the first step
        self.samples_per_second: float | None = None
        self.mfu: float | None = None
        with progress:
            task = progress.add_task("train", total=schedule.horizon, completed=step, info="")
            model.train()
            self.step_durations: list[float] = []
            while step < schedule.horizon and (stop_at_step is None or step < stop_at_step):
                step_start = time.perf_counter()
                loss_sum = 0.0
                grad_norm = torch.tensor(0.0)
                for micro in range(cfg.grad_accumulation):
                    with accelerator.accumulate(model):
                        gen = step_generator(cfg.seed, step, micro)
                        waited = time.perf_counter()
                        try:
                            batch = next(batches)
                        except DataError as err:  # a damaged record: keep the finished steps, then stop
                            saved = self._save_before_data_error(unwrapped, optimizer, scheduler, ema, schedule, step,
                                                                 horizon_fixed)
                            raise DataError(f"{str(err).rstrip()}{saved}") from err
                        self.data_wait += time.perf_counter() - waited
                        mine = slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
                        x0 = model_input(batch["input"].to(device, non_blocking=True))
                        x0 = x0.contiguous(memory_format=memory_format)
                        noise = torch.randn((world * cfg.batch_size, *x0.shape[1:]), generator=gen)[mine].to(device)
                        times = sample_time(world * cfg.batch_size, cfg.time_sampling, gen, shift=cfg.time_shift)
                        t = times[mine].to(device)
                        tokens = batch["tokens"].to(device, non_blocking=True).float()
                        mask = batch["mask"].to(device, non_blocking=True)
                        if cfg.text_dropout > 0:
                            dropped = (torch.rand(world * cfg.batch_size, generator=gen) < cfg.text_dropout)[mine]
                            dropped = dropped.to(device)
                            tokens = torch.where(dropped[:, None, None], empty_tokens.float(), tokens)
                            mask = torch.where(dropped[:, None], empty_mask, mask)
                        levels = batch["levels"].to(device, non_blocking=True) if "levels" in batch else None
                        x_t = interpolate(x0, noise, t)
                        with accelerator.autocast():
                            v, u = model(x_t, t, tokens, mask, levels, generator=gen, with_loss_weight=True)
                        mse = per_sample_mse(v, velocity_target(x0, noise))
                        if u is not None:
                            loss = (mse / torch.exp(u.float()) + u.float()).mean()
                        else:
                            loss = mse.mean()
                        accelerator.backward(loss)
                        if accelerator.sync_gradients and cfg.grad_clip > 0:
                            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                        loss_sum += float(mse.mean().detach())
                scheduler.step()
                ema.step(params)
                step += 1
                now = time.perf_counter()
                self.step_durations.append(now - step_start)
                if self.first_step_at is None:
                    self.first_step_at = now
                if not horizon_fixed and (step - start_step) % 25 == 0:
                    schedule.horizon = self._budgeted_horizon(step, start_time, schedule.horizon)
                    progress.update(task, total=schedule.horizon)
                mse_value = loss_sum / cfg.grad_accumulation
                if not math.isfinite(mse_value):
                    from miro_core.network_contract import non_finite_loss_message

                    raise DataError(non_finite_loss_message(step, mse_value, start_step == 0 and step == 1,
                                                            getattr(unwrapped, "backbone_label", "the backbone")))
                info = f"mse {mse_value:.4f}"
                if rate_mark is None:
                    rate_mark = (step, now)
                elif step > rate_mark[0]:
                    steps_per_second = (step - rate_mark[0]) / max(1e-9, now - rate_mark[1])
                    self.samples_per_second = steps_per_second * global_batch
                    info += f" | {steps_per_second:.2f} steps/s | {self.samples_per_second:.0f} samples/s"
                    if peak and self.flops_per_sample:
                        self.mfu = self.samples_per_second * self.flops_per_sample / (peak * world)
                        info += f" | MFU {100 * self.mfu:.1f}%"
                    else:  # no device peak (a CPU without peak_tflops) or a backbone that cannot be counted
                        info += " | MFU n/a"
                progress.update(task, completed=step, info=info)
                done = step >= schedule.horizon or step == stop_at_step
                if writer is not None and (step % cfg.log_every == 0 or step == 1 or done):
                    writer.add_scalar("train/mse", mse_value, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
                    writer.add_scalar("train/data_wait_share", self.data_wait / max(1e-9, now - start_time), step)
                    if self.samples_per_second is not None:
                        writer.add_scalar("train/steps_per_second", self.samples_per_second / global_batch, step)
                        writer.add_scalar("train/samples_per_second", self.samples_per_second, step)
                    if self.mfu is not None:
                        writer.add_scalar("train/mfu", self.mfu, step)
                if (cfg.save_every and step % cfg.save_every == 0) or done:
                    self._save(unwrapped, optimizer, scheduler, ema, schedule, step, horizon_fixed)
                if cfg.sample_every and (step % cfg.sample_every == 0 or done) and accelerator.is_main_process:
                    if not self.sharded:  # a sharded model samples only with every process taking part
                        self._sample_grid(unwrapped, ema, params, step)
        del batches  # stops the loader's workers
        if writer is not None:
            writer.close()
        self.steps_done = step
        self.seconds = time.perf_counter() - start_time

    def _budgeted_horizon(self, step: int, start_time: float, horizon: int) -> int:
        """Re-fit the schedule's length to the time budget from the speed of the last steps.

        Called every 25 steps, so a machine that slows down (or speeds up) still ends its cosine on
        the budget; the learning rate follows the current estimate.
        """
        now = time.perf_counter()
        elapsed = now - start_time
        last_step, last_time = getattr(self, "_rate_mark", (None, None))
        if last_step is None:
            per_step = elapsed / max(1, step - self._start_step)
        else:
            per_step = (now - last_time) / max(1, step - last_step)
        self._rate_mark = (step, now)
        remaining = max(0.0, float(self.cfg.max_seconds or 0) - elapsed)
        budget = step + int(remaining / max(per_step, 1e-6))
        budget = int(self.accelerator.gather(torch.tensor([budget], device=self.accelerator.device)).min())
        return max(step + 1, min(self.cfg.steps, budget))

    def _writer(self) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "logs"))

    def _save_before_data_error(self, unwrapped: Any, optimizer: Any, scheduler: Any, ema: Any,
                                schedule: LRSchedule, step: int, horizon_fixed: bool) -> str:
        """Saves the steps finished before a damaged record stopped the run; returns what to tell the user.

        The failed step changed no weights (the batch never arrived), so the checkpoint is exactly step
        ``step`` and ``--resume`` after re-encoding the shard continues as if nothing happened. Only with
        one process: saving is collective, and the other processes are not stopping with this one.
        """
        if self.accelerator.num_processes > 1 or step == self._start_step:
            return ""
        if getattr(self, "_saved_step", None) != step:
            self._save(unwrapped, optimizer, scheduler, ema, schedule, step, horizon_fixed)
        return f"; the {step} finished steps are saved: fix the records, then rerun with --resume"

    def _save(self, unwrapped: Any, optimizer: Any, scheduler: Any, ema: Any, schedule: LRSchedule, step: int,
              horizon_fixed: bool) -> None:
        """Every process takes part (gathering shards under FSDP); the main process writes."""
        from miro_core import sharding
        from miro_core.run_folder import save_checkpoint

        self._saved_step = step
        self.accelerator.wait_for_everyone()
        sharded = sharding.is_sharded(unwrapped)
        if not (sharded or self.accelerator.is_main_process):
            return
        state = sharding.model_state(unwrapped)
        shadow = sharding.gather_all(ema.shadow_params)
        optimizer_state = sharding.optimizer_state(unwrapped, getattr(optimizer, "optimizer", optimizer))
        if not self.accelerator.is_main_process:
            return
        names = [n for n, _ in unwrapped.named_parameters()]
        ema_state = dict(state)
        ema_state.update(dict(zip(names, shadow)))
        trainer_state = {
            "scheduler": scheduler.state_dict(),
            "ema_step": ema.optimization_step,
            "horizon": schedule.horizon,
            "horizon_fixed": horizon_fixed,
        }
        save_checkpoint(
            self.run_dir, step, state, ema_state, optimizer_state, trainer_state, self.cfg.keep_checkpoints
        )

    def _sample_grid(self, unwrapped: Any, ema: Any, params: list[Any], step: int) -> None:
        from miro_core.pipeline import sample_grid_for_model

        ema.store(params)
        ema.copy_to(params)
        try:
            prompts = self.cfg.sample_prompts or self.data.captions[1:9]
            grid = sample_grid_for_model(
                unwrapped, self.registry, self.cfg, self.data, prompts, steps=self.cfg.sample_steps, seed=self.cfg.seed
            )
            (self.run_dir / "samples").mkdir(parents=True, exist_ok=True)
            grid.save(self.run_dir / "samples" / f"step-{step:08d}.png")
        finally:
            ema.restore(params)
            unwrapped.train()

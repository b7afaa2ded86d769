"""``miro train``: flow-matching training conditioned on text and binned reward vectors.

The distributed engine is accelerate (multi-process, mixed precision, gradient accumulation); this
module only decides what a step is. Every step draws its batch, noise and times from a generator
seeded by (seed, step, micro-batch, process), so a resumed run repeats exactly what an uninterrupted
run would have done.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict

from miro_core.errors import ConfigError, DataError


class TrainConfig(BaseModel):
    """All options of a training run (YAML in configs/, overridden on the command line)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    data: str
    bins: str | None = None
    out: str = "runs/train"
    rewards: list[str] | None = None
    no_rewards: bool = False
    backbone: str = "hybrid-small"
    backbone_options: dict[str, Any] = {}
    text_encoder: str = "minilm"
    text_encoder_options: dict[str, Any] = {}
    image_size: int = 32
    # latent space (`miro encode` caches the latents; "pixels" trains on pixels)
    autoencoder: str = "pixels"
    autoencoder_options: dict[str, Any] = {}
    latent_cache: str | None = None
    # conditioning (MIRO-NOTES section 4)
    cond_dim: int = 128
    cond_heads: int = 4
    mixer_layers: int = 2
    registers: int = 16
    fourier_channels: int = 256
    missing_reward: Literal["zero", "learned"] = "zero"
    reward_dropout: float = 0.0
    text_dropout: float = 0.0
    # objective (section 5)
    time_sampling: Literal["logit-normal", "uniform"] = "logit-normal"
    time_shift: float = 1.0
    loss_weighting: Literal["learned", "none"] = "learned"
    precondition: bool = True
    sigma_data: float = 0.5
    # optimisation
    optimizer: Literal["adamw", "lamb"] = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 2.0
    ema_decay: float = 0.9999
    batch_size: int = 64
    grad_accumulation: int = 1
    # "auto": bf16 where the device runs it natively (see miro_core.low_precision), else float32
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = "no"
    steps: int = 1000
    max_seconds: float | None = None
    seed: int = 0
    device: Literal["auto", "cpu"] = "auto"
    # bookkeeping
    log_every: int = 10
    save_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int = 0
    sample_prompts: list[str] = []
    sample_steps: int = 30
    guidance_scale: float = 7.0


#: Options that may differ when resuming (they do not change what was already computed).
RESUMABLE_CHANGES = ("steps", "max_seconds", "log_every", "save_every", "sample_every", "keep_checkpoints")


def step_generator(seed: int, step: int, micro: int) -> torch.Generator:
    """A generator that depends only on (seed, step, micro-batch): exact resumption.

    Every process draws the noise and times of the *global* batch from it and keeps its own slice,
    so K processes with batch B compute what one process with batch K * B would.
    """
    mixed = (seed * 1_000_003 + step) * 1_009 + micro * 31
    return torch.Generator().manual_seed(mixed % (2**63 - 1))


def batch_indices(
    n: int, batch: int, step: int, micro: int, rank: int, world: int, accum: int, seed: int
) -> torch.Tensor:
    """Indices of one micro-batch: epoch-wise permutations, split across processes without overlap."""
    position = (step * accum + micro) * batch * world + rank * batch
    out: list[torch.Tensor] = []
    taken = 0
    while taken < batch:
        epoch, offset = divmod(position, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        take = min(batch - taken, n - offset)
        out.append(perm[offset : offset + take])
        position += take
        taken += take
    return torch.cat(out)


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


def make_optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    if cfg.optimizer == "lamb":
        from timm.optim import Lamb

        return Lamb(groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


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


def resolve_reward_keys(cfg: TrainConfig, registry: Any) -> tuple[list[str], Any]:
    """Which rewards to condition on, and the bins that turn scores into levels."""
    if cfg.no_rewards:
        return [], None
    from miro_core.bins import BinsFile

    bins_path = cfg.bins or str(Path(cfg.data) / "bins.json")
    if not Path(bins_path).exists():
        raise ConfigError(f"no bins file at {bins_path}; pass --bins BINS.json (from `miro bins fit`) or --no-rewards")
    bins = BinsFile.load(bins_path, registry)
    keys = cfg.rewards or bins.reward_keys
    unknown = [k for k in keys if k not in bins.reward_keys]
    if unknown:
        raise ConfigError(f"--rewards {', '.join(unknown)} not in {bins_path} (it has {', '.join(bins.reward_keys)})")
    return list(keys), bins


class Trainer:
    """One training run; ``run()`` returns the run folder."""

    def __init__(self, cfg: TrainConfig, registry: Any, progress: bool = True) -> None:
        from miro_core.low_precision import resolve_mixed_precision

        precision = resolve_mixed_precision(cfg.mixed_precision, "cpu" if runs_on_cpu(cfg) else "cuda")
        self.cfg = cfg.model_copy(update={"mixed_precision": precision})  # config.json records the choice
        self.registry = registry
        self.show_progress = progress
        self.run_dir = Path(cfg.out)

    # -- setup ----------------------------------------------------------------------------------
    def _check_run_folder(self, resume: bool) -> dict[str, Any] | None:
        from miro_core.run_folder import read_run_config

        config_path = self.run_dir / "config.json"
        if not config_path.exists():
            return None
        if not resume:
            raise ConfigError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        previous = read_run_config(self.run_dir)["train"]
        current = self.cfg.model_dump(mode="json")
        defaults = TrainConfig(data=self.cfg.data).model_dump(mode="json")  # runs older than an option
        changed = [
            k for k in current if k not in RESUMABLE_CHANGES and previous.get(k, defaults[k]) != current[k]
        ]
        if changed:
            raise ConfigError(
                f"cannot resume {self.run_dir}: options changed since it started: {', '.join(sorted(changed))}"
            )
        return previous

    def run(self, resume: bool = False, stop_at_step: int | None = None) -> Path:
        """Train (or continue with ``resume``); ``stop_at_step`` saves and exits early, keeping the
        full schedule, for queues that limit job length."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        from miro_core.model import ModelSpec, build_model
        from miro_core.run_folder import write_json_atomic
        from miro_core.training_data import load_training_data

        cfg = self.cfg
        allow_new_precision(cfg.mixed_precision)
        accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=cfg.grad_accumulation,
            cpu=runs_on_cpu(cfg),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)],
        )
        self.accelerator = accelerator
        if accelerator.is_main_process:
            self._check_run_folder(resume)
        accelerator.wait_for_everyone()
        reward_keys, bins = resolve_reward_keys(cfg, self.registry)
        encoder = self.registry.text_encoders.create(cfg.text_encoder, cfg.text_encoder_options)
        with accelerator.main_process_first():
            data = load_training_data(
                cfg.data,
                reward_keys,
                bins,
                encoder,
                cfg.text_encoder_options,
                cfg.image_size,
                progress=self.show_progress and accelerator.is_main_process,
                autoencoder=cfg.autoencoder,
                latent_cache=cfg.latent_cache,
                autoencoder_options=cfg.autoencoder_options,
            )
        self.data = data
        from miro_core.backbone import parse_backbone_name

        backbone_name, parsed_options = parse_backbone_name(cfg.backbone, self.registry.backbones.as_dict())
        spec = ModelSpec(
            backbone=backbone_name,
            backbone_options={**parsed_options, **cfg.backbone_options},
            in_channels=data.images.shape[1],
            image_size=int(data.images.shape[-1]),  # the latent size when training on cached latents
            text_dim=int(data.text_tokens.shape[-1]),
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
        )
        torch.manual_seed(cfg.seed)
        model = build_model(spec, self.registry)
        optimizer = make_optimizer(cfg, model)
        schedule = LRSchedule(cfg, cfg.steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        from diffusers.training_utils import EMAModel

        ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
        step = 0
        horizon_fixed = cfg.max_seconds is None
        if resume:
            step, horizon_fixed = self._restore(model, optimizer, scheduler, ema, schedule)
        if accelerator.is_main_process and step == 0:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.run_dir / "config.json", self._run_config(spec, data, bins))
            if bins is not None:
                bins.save(str(self.run_dir / "bins.json"))
        model, optimizer = accelerator.prepare(model, optimizer)
        self._loop(model, optimizer, scheduler, ema, schedule, step, horizon_fixed, stop_at_step)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return self.run_dir

    def _run_config(self, spec: Any, data: Any, bins: Any) -> dict[str, Any]:
        from miro_core import __version__

        return {
            "format": "miro-run",
            "miro_version": __version__,
            "train": self.cfg.model_dump(mode="json"),
            "model": spec.as_json(),
            "reward_keys": spec.reward_keys,
            "text_encoder": {"name": self.cfg.text_encoder, "options": self.cfg.text_encoder_options},
            "autoencoder": data.autoencoder or {"name": "pixels", "options": {}},
            "num_bins": bins.num_bins if bins is not None else None,
            "guidance_scale": self.cfg.guidance_scale,
            "data": {"path": self.cfg.data, "samples": len(data), "unique_captions": len(data.captions) - 1},
            "example_prompts": data.captions[1:9],
        }

    def _restore(self, model: Any, optimizer: Any, scheduler: Any, ema: Any, schedule: LRSchedule) -> tuple[int, bool]:
        import json

        from miro_core.run_folder import latest_checkpoint, load_optimizer_state, load_weights

        path = latest_checkpoint(self.run_dir)
        if path is None:
            return 0, self.cfg.max_seconds is None
        state = json.loads((path / "trainer_state.json").read_text())
        model.load_state_dict(load_weights(path / "model.safetensors"))
        optimizer.load_state_dict(load_optimizer_state(path / "optimizer.pt"))
        scheduler.load_state_dict(state["scheduler"])
        ema_weights = load_weights(path / "model_ema.safetensors")
        names = [n for n, _ in model.named_parameters()]
        ema.shadow_params = [ema_weights[n].clone() for n in names]
        ema.optimization_step = int(state["ema_step"])
        schedule.horizon = int(state["horizon"])
        return int(state["step"]), bool(state["horizon_fixed"])

    # -- loop -----------------------------------------------------------------------------------
    def _loop(self, model: Any, optimizer: Any, scheduler: Any, ema: Any, schedule: LRSchedule, step: int,
              horizon_fixed: bool, stop_at_step: int | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from miro_core.flow import interpolate, per_sample_mse, sample_time, velocity_target

        cfg, accelerator, data = self.cfg, self.accelerator, self.data
        device = accelerator.device
        unwrapped = accelerator.unwrap_model(model)
        params = list(unwrapped.parameters())
        writer = self._writer() if accelerator.is_main_process else None
        rank, world = accelerator.process_index, accelerator.num_processes
        start_time, start_step = time.perf_counter(), step
        self._start_step = start_step
        progress = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), disable=not (self.show_progress and accelerator.is_main_process),
        )
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
                        idx = batch_indices(
                            len(data), cfg.batch_size, step, micro, rank, world, cfg.grad_accumulation, cfg.seed
                        )
                        mine = slice(rank * cfg.batch_size, (rank + 1) * cfg.batch_size)
                        x0 = data.x0(idx).to(device)
                        noise = torch.randn((world * cfg.batch_size, *x0.shape[1:]), generator=gen)[mine].to(device)
                        times = sample_time(world * cfg.batch_size, cfg.time_sampling, gen, shift=cfg.time_shift)
                        t = times[mine].to(device)
                        caption = data.caption_index[idx]
                        if cfg.text_dropout > 0:
                            dropped = (torch.rand(world * cfg.batch_size, generator=gen) < cfg.text_dropout)[mine]
                            caption = torch.where(dropped, torch.zeros_like(caption), caption)
                        tokens = data.text_tokens[caption].to(device).float()
                        mask = data.text_mask[caption].to(device)
                        levels = data.levels[idx].to(device) if data.levels is not None else None
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
                self.step_durations.append(time.perf_counter() - step_start)
                if not horizon_fixed and (step - start_step) % 25 == 0:
                    schedule.horizon = self._budgeted_horizon(step, start_time, schedule.horizon)
                    progress.update(task, total=schedule.horizon)
                mse_value = loss_sum / cfg.grad_accumulation
                if not math.isfinite(mse_value):
                    raise DataError(f"training diverged at step {step} (loss {mse_value}); lower --lr")
                rate = (step - start_step) / max(1e-9, time.perf_counter() - start_time)
                progress.update(task, completed=step, info=f"mse {mse_value:.4f} | {rate:.2f} steps/s")
                if writer is not None and (step % cfg.log_every == 0 or step == 1):
                    writer.add_scalar("train/mse", mse_value, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
                    writer.add_scalar("train/steps_per_second", rate, step)
                done = step >= schedule.horizon or step == stop_at_step
                if (cfg.save_every and step % cfg.save_every == 0) or done:
                    self._save(unwrapped, optimizer, scheduler, ema, schedule, step, horizon_fixed)
                if cfg.sample_every and (step % cfg.sample_every == 0 or done) and accelerator.is_main_process:
                    self._sample_grid(unwrapped, ema, params, step)
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

    def _save(self, unwrapped: Any, optimizer: Any, scheduler: Any, ema: Any, schedule: LRSchedule, step: int,
              horizon_fixed: bool) -> None:
        from miro_core.run_folder import save_checkpoint

        self.accelerator.wait_for_everyone()
        if not self.accelerator.is_main_process:
            return
        state = unwrapped.state_dict()
        names = [n for n, _ in unwrapped.named_parameters()]
        ema_state = dict(state)
        ema_state.update({n: p for n, p in zip(names, ema.shadow_params)})
        trainer_state = {
            "scheduler": scheduler.state_dict(),
            "ema_step": ema.optimization_step,
            "horizon": schedule.horizon,
            "horizon_fixed": horizon_fixed,
        }
        save_checkpoint(
            self.run_dir, step, state, ema_state, optimizer.state_dict(), trainer_state, self.cfg.keep_checkpoints
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

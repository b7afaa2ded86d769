"""``miro sample``: images from a run folder with multi-reward guidance, plus a labelled grid."""

from __future__ import annotations

from pathlib import Path

import typer

from miro_cli.common import (
    echo,
    local_path,
    parse_float_map,
    parse_yaml_values,
    prepare_output_folder,
    user_errors,
)
from miro_core.errors import ConfigError


def attach(app: typer.Typer) -> None:
    app.command("sample")(sample)


def _looks_like_repo_id(text: str) -> bool:
    """``OWNER/NAME`` as the Hugging Face hub writes it (a path that does not exist is not one)."""
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and all(text.split("/"))


#: Images one call renders (prompts x --n), as many as --n allows for one prompt.
MAX_IMAGES = 10_000


def read_prompts(prompt: list[str], prompts_file: Path | None) -> list[str]:
    prompts = [p for p in prompt if p.strip()]
    if prompts_file is not None:
        if not prompts_file.exists():
            raise ConfigError(f"--prompts-file {prompts_file} does not exist")
        if not prompts_file.is_file():
            raise ConfigError(f"--prompts-file {prompts_file} is not a file")
        try:
            text = prompts_file.read_text(encoding="utf-8-sig")  # a leading byte-order mark is not a prompt
        except UnicodeDecodeError:
            raise ConfigError(f"--prompts-file {prompts_file} is not UTF-8 text (one prompt per line)") from None
        from_file = [line.strip() for line in text.splitlines() if line.strip()]
        if not from_file:
            raise ConfigError(f"--prompts-file {prompts_file} holds no prompt (it is empty or only blank lines); "
                              "write one prompt per line")
        prompts += from_file
    if not prompts:
        raise ConfigError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


@user_errors
def sample(
    run: str = typer.Argument(
        ...,
        help="Run folder (`miro train`, `miro convert`), or a released MIRO checkpoint: a folder in the authors' "
        "layout or a Hugging Face repo id found in the local cache (nothing is downloaded).",
    ),
    out: Path = typer.Option(..., "--out", help="Folder for the PNG files, grid.png and config.json."),
    prompt: list[str] = typer.Option([], "--prompt", help="Prompt; repeatable."),
    prompts_file: Path = typer.Option(None, "--prompts-file", help="One prompt per line."),
    n: int = typer.Option(4, "--n", min=1, max=MAX_IMAGES, help="Images per prompt."),
    steps: int = typer.Option(50, "--steps", min=1, max=10_000, help="ODE steps (MIRO: 50)."),
    sampler: str = typer.Option("euler", "--sampler", help="euler or heun (or a plugin sampler)."),
    guidance: float = typer.Option(None, "--guidance", min=0, help="Guidance weight w (default: the run's)."),
    reward: list[str] = typer.Option([], "--reward", help="KEY=VALUE positive target in [0, 1] (default 1)."),
    negative_reward: list[str] = typer.Option([], "--negative-reward", help="KEY=VALUE negative target (default 0)."),
    strategy: str = typer.Option("miro", "--strategy", help="none, cfg, miro, isolate, tradeoff, or a plugin."),
    strategy_option: list[str] = typer.Option(
        [], "--strategy-option", help="KEY=VALUE for the strategy (repeatable); scale= must agree with --guidance."
    ),
    negative_prompt: str = typer.Option(None, "--negative-prompt", help="Text of the negative branch."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or mps."),
    weights: str = typer.Option("ema", "--weights", help="ema or raw."),
    variant: str = typer.Option(None, "--variant", help="Variant subfolder of a released checkpoint (miro-no-...)."),
) -> None:
    """Sample images; every KEY must be a reward the run was trained on.

    config.json records the strategy, guidance weight and reward targets actually used, and the provenance
    (name, version, distribution) of every component.
    """
    source, out = str(local_path(run) or run), Path(local_path(str(out)) or out)
    prompts = read_prompts(prompt, prompts_file)
    if len(prompts) * n > MAX_IMAGES:  # one batch and one grid: refused before the model loads, not an OOM later
        raise ConfigError(
            f"{len(prompts)} prompts x --n {n} = {len(prompts) * n} images, more than the {MAX_IMAGES} one "
            "`miro sample` renders (in one batch, with one grid); split the prompts, or use `miro eval RUN "
            "--prompts FILE --out DIR`, which samples in batches and keeps every image in DIR/images"
        )
    targets = parse_float_map(reward, "--reward")
    negatives = parse_float_map(negative_reward, "--negative-reward")
    options = parse_yaml_values(strategy_option, "--strategy-option")
    if not Path(source).expanduser().is_dir() and not _looks_like_repo_id(source):
        raise ConfigError(
            f"RUN {source} is not a folder; give the run folder written by `miro train`, a released MIRO checkpoint "
            "folder, or a Hugging Face repo id (OWNER/NAME) in the local cache"
        )

    import torch

    from miro_cli.common import registry
    from miro_core import provenance
    from miro_core.data.atomic import write_json
    from miro_core.grid import make_grid
    from miro_core.pipeline import MiroPipeline
    from miro_core.sampling_settings import resolve_settings

    reg = registry()
    reg.samplers.get(sampler)  # an unknown sampler fails before the model loads
    reg.guidance.get(strategy)
    pipe = MiroPipeline.from_pretrained(source, variant=variant, device=device, weights=weights, registry=reg)
    settings = resolve_settings(
        pipe,
        strategy=strategy,
        strategy_options=options,
        guidance=guidance,
        reward_targets=targets,
        negative_reward_targets=negatives,
        steps=steps,
    )
    prepare_output_folder(out)
    generator = torch.Generator().manual_seed(seed)
    images = pipe(
        prompts,
        num_images_per_prompt=n,
        reward_targets=targets,
        negative_reward_targets=negatives,
        guidance_scale=settings.guidance_scale,
        num_inference_steps=steps,
        sampler=sampler,
        strategy=strategy,
        strategy_options=settings.strategy_options,
        negative_prompt=negative_prompt,
        generator=generator,
    )
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(out / f"{i // n:03d}-{i % n:02d}.png")
    grid = make_grid(images, columns=n, labels=prompts)
    grid.save(out / "grid.png")
    (out / "prompts.txt").write_text("\n".join(prompts) + "\n")
    resolved = {
        "format": "miro-samples",
        "run": source,
        "variant": variant,
        "step": pipe.step,
        "weights": weights,
        "prompts": prompts,
        "n": n,
        "steps": steps,
        "sampler": sampler,
        **settings.as_json(),
        "reward_keys": pipe.reward_keys,
        "negative_prompt": negative_prompt,
        "seed": seed,
        "components": provenance.pipeline_components(pipe, strategy=strategy, sampler=sampler),
    }
    write_json(str(out / "config.json"), resolved)
    echo(
        f"wrote {len(images)} images and grid.png to {out} (strategy {strategy}, guidance w = "
        f"{settings.guidance_scale:g})"
    )

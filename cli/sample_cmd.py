"""``miro sample``: images from a run folder with multi-reward guidance, plus a labelled grid."""

from __future__ import annotations

from pathlib import Path

import typer

from miro_cli.common import echo, parse_float_map, parse_yaml_values, user_errors
from miro_core.errors import ConfigError


def attach(app: typer.Typer) -> None:
    app.command("sample")(sample)


def read_prompts(prompt: list[str], prompts_file: Path | None) -> list[str]:
    prompts = [p for p in prompt if p.strip()]
    if prompts_file is not None:
        if not prompts_file.exists():
            raise ConfigError(f"--prompts-file {prompts_file} does not exist")
        prompts += [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ConfigError("give --prompt TEXT (repeatable) or --prompts-file FILE")
    return prompts


@user_errors
def sample(
    run: Path = typer.Argument(..., help="Run folder written by `miro train`."),
    out: Path = typer.Option(..., "--out", help="Folder for the PNG files and grid.png."),
    prompt: list[str] = typer.Option([], "--prompt", help="Prompt; repeatable."),
    prompts_file: Path = typer.Option(None, "--prompts-file", help="One prompt per line."),
    n: int = typer.Option(4, "--n", min=1, help="Images per prompt."),
    steps: int = typer.Option(50, "--steps", min=1, help="ODE steps (MIRO: 50)."),
    sampler: str = typer.Option("euler", "--sampler", help="euler or heun (or a plugin sampler)."),
    guidance: float = typer.Option(None, "--guidance", help="Guidance weight w (default: the run's)."),
    reward: list[str] = typer.Option([], "--reward", help="KEY=VALUE positive target in [0, 1] (default 1)."),
    negative_reward: list[str] = typer.Option([], "--negative-reward", help="KEY=VALUE negative target (default 0)."),
    strategy: str = typer.Option("miro", "--strategy", help="none, cfg, miro, isolate, tradeoff, or a plugin."),
    strategy_option: list[str] = typer.Option([], "--strategy-option", help="KEY=VALUE for the strategy."),
    negative_prompt: str = typer.Option(None, "--negative-prompt", help="Text of the negative branch."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("cpu", "--device"),
    weights: str = typer.Option("ema", "--weights", help="ema or raw."),
) -> None:
    """Sample images; every KEY must be a reward the run was trained on."""
    import torch

    from miro_cli.common import registry
    from miro_core.data.atomic import write_json
    from miro_core.grid import make_grid
    from miro_core.pipeline import MiroPipeline

    prompts = read_prompts(prompt, prompts_file)
    targets = parse_float_map(reward, "--reward")
    negatives = parse_float_map(negative_reward, "--negative-reward")
    options = parse_yaml_values(strategy_option, "--strategy-option")
    pipe = MiroPipeline.from_pretrained(run, device=device, weights=weights, registry=registry())
    generator = torch.Generator().manual_seed(seed)
    images = pipe(
        prompts,
        num_images_per_prompt=n,
        reward_targets=targets,
        negative_reward_targets=negatives,
        guidance_scale=guidance,
        num_inference_steps=steps,
        sampler=sampler,
        strategy=strategy,
        strategy_options=options,
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
        "run": str(run),
        "step": pipe.step,
        "weights": weights,
        "prompts": prompts,
        "n": n,
        "steps": steps,
        "sampler": sampler,
        "guidance": guidance if guidance is not None else pipe.config.get("guidance_scale"),
        "strategy": strategy,
        "strategy_options": options,
        "reward_targets": {k: targets.get(k, 1.0) for k in pipe.reward_keys},
        "negative_reward_targets": negatives,
        "negative_prompt": negative_prompt,
        "seed": seed,
    }
    write_json(str(out / "config.json"), resolved)
    echo(f"wrote {len(images)} images and grid.png to {out}")

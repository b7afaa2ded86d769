"""Training, checkpoints, exact resumption, 2-process accelerate, and sampling from a run folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from miro_cli.main import app
from miro_core.errors import ConfigError
from miro_core.pipeline import MiroPipeline
from miro_core.records.order import ShuffledOrder, StepSampler
from miro_core.train import Trainer

from .conftest import tiny_train_config, two_cpu_processes


def weights(run: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    latest = json.loads((run / "latest.json").read_text())["path"]
    return load_file(str(run / latest / name))


@pytest.fixture(scope="module")
def tiny_run(tiny_annotations: Path, tiny_bins: Path, registry, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, out, steps=6), registry, progress=False).run()
    return out


def test_run_folder_layout(tiny_run: Path):
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["reward_keys"] == ["shapes-alignment", "shapes-aesthetic", "shapes-sharpness"]
    assert config["model"]["backbone"] == "hybrid" and config["model"]["backbone_options"]["size"] == "tiny"
    checkpoint = tiny_run / json.loads((tiny_run / "latest.json").read_text())["path"]
    assert {p.name for p in checkpoint.iterdir()} == {
        "model.safetensors",
        "model_ema.safetensors",
        "optimizer.pt",
        "trainer_state.json",
    }
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == 6
    assert len(list((tiny_run / "checkpoints").glob("step-*"))) == 2, "older checkpoints are pruned"
    assert list((tiny_run / "logs").glob("events.out.tfevents.*")), "tensorboard logs"
    assert (tiny_run / "bins.json").exists()
    raw, ema = weights(tiny_run), weights(tiny_run, "model_ema.safetensors")
    assert raw.keys() == ema.keys() and any(not torch.equal(raw[k], ema[k]) for k in raw)
    torch.load(checkpoint / "optimizer.pt", weights_only=True)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_annotations, tiny_bins, registry, tmp_path):
    straight = tmp_path / "straight"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, straight), registry, progress=False).run()
    chunked = tmp_path / "chunked"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, chunked), registry, progress=False).run(stop_at_step=2)
    assert json.loads((chunked / "latest.json").read_text())["step"] == 2
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, chunked), registry, progress=False).run(resume=True)
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = weights(straight, name), weights(chunked, name)
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resume"


def test_resume_with_more_steps_continues_a_finished_run(tiny_annotations, tiny_bins, registry, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, run, steps=2, save_every=2), registry, progress=False).run()
    assert json.loads((run / "latest.json").read_text())["step"] == 2
    longer = tiny_train_config(tiny_annotations, tiny_bins, run, steps=4, save_every=2)
    Trainer(longer, registry, progress=False).run(resume=True)
    assert json.loads((run / "latest.json").read_text())["step"] == 4


def test_existing_run_needs_resume_and_matching_options(tiny_run: Path, tiny_annotations, tiny_bins, registry):
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(tiny_train_config(tiny_annotations, tiny_bins, tiny_run, steps=6), registry, progress=False).run()
    changed = tiny_train_config(tiny_annotations, tiny_bins, tiny_run, steps=6, lr=0.5)
    with pytest.raises(ConfigError, match="lr"):
        Trainer(changed, registry, progress=False).run(resume=True)


def test_a_run_that_stopped_before_its_first_checkpoint_starts_over(tiny_annotations, tiny_bins, registry,
                                                                     tmp_path):
    """A run that failed before saving anything (e.g. at step 1) must not block its folder: rerunning with
    other options, with or without --resume, starts it over, and trains exactly as a fresh folder would."""
    run = tmp_path / "run"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, run, steps=2, save_every=2), registry,
            progress=False).run()
    (run / "latest.json").unlink()
    import shutil

    shutil.rmtree(run / "checkpoints")  # as if it had stopped before its first save
    for resume in (False, True):
        other = tiny_train_config(tiny_annotations, tiny_bins, run, steps=2, save_every=2, lr=0.5)
        Trainer(other, registry, progress=False).run(resume=resume)
        assert json.loads((run / "config.json").read_text())["train"]["lr"] == 0.5
        assert json.loads((run / "latest.json").read_text())["step"] == 2
        if not resume:
            (run / "latest.json").unlink()
            shutil.rmtree(run / "checkpoints")
    fresh = tmp_path / "fresh"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, fresh, steps=2, save_every=2, lr=0.5), registry,
            progress=False).run()
    a, b = weights(run), weights(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a), "a restarted folder trains as a fresh one"
    with pytest.raises(ConfigError, match="already holds a run"):  # a run with a checkpoint is never overwritten
        Trainer(tiny_train_config(tiny_annotations, tiny_bins, run, steps=2, save_every=2), registry,
                progress=False).run()


def test_resume_keeps_the_global_batch_not_the_batch_size(tiny_annotations, tiny_bins, registry, tmp_path):
    """Another batch size or accumulation is fine on resume when the global batch (what decides which records
    step s reads) stays; another global batch would silently reread or skip records, so it is refused."""
    run = tmp_path / "run"
    Trainer(tiny_train_config(tiny_annotations, tiny_bins, run), registry, progress=False).run(stop_at_step=2)
    assert json.loads((run / "config.json").read_text())["processes"] == 1
    halved = tiny_train_config(tiny_annotations, tiny_bins, run, batch_size=4)
    with pytest.raises(ConfigError, match=r"global batch .* 8 x 1 x 1 = 8 when the run started .* 4 x 1 x 1 = 4"):
        Trainer(halved, registry, progress=False).run(resume=True)
    same = tiny_train_config(tiny_annotations, tiny_bins, run, batch_size=4, grad_accumulation=2)
    Trainer(same, registry, progress=False).run(resume=True)
    assert json.loads((run / "latest.json").read_text())["step"] == 4


def test_resume_refuses_records_that_changed_under_the_run(tiny_run: Path, tiny_annotations, tiny_bins, registry,
                                                            tmp_path):
    import shutil

    records = tmp_path / "records"
    shutil.copytree(json.loads((tiny_run / "config.json").read_text())["data"]["records"], records)
    run = tmp_path / "run"
    Trainer(tiny_train_config(records, tiny_bins, run), registry, progress=False).run(stop_at_step=2)
    index = json.loads((records / "records.json").read_text())
    dropped = index["shardlist"].pop()  # as if the records had been encoded from fewer (or more) shards
    index["samples"] -= dropped["nsamples"]
    (records / "records.json").write_text(json.dumps(index))
    with pytest.raises(ConfigError, match=r"records at .* changed since the run started \(240 samples in 3 shards"):
        Trainer(tiny_train_config(records, tiny_bins, run), registry, progress=False).run(resume=True)


def test_a_run_moved_with_its_records_resumes_bit_identically(tiny_run: Path, tiny_bins, registry, tmp_path):
    """A run folder and its records copied elsewhere (another disk, node-local storage) resume where they
    stopped: their location is not a training option, and the records are recognised by their shard sizes."""
    import shutil

    records = tmp_path / "records"
    shutil.copytree(json.loads((tiny_run / "config.json").read_text())["data"]["records"], records)
    straight = tmp_path / "straight"
    Trainer(tiny_train_config(records, tiny_bins, straight), registry, progress=False).run()
    Trainer(tiny_train_config(records, tiny_bins, tmp_path / "run"), registry, progress=False).run(stop_at_step=2)
    moved, moved_records = tmp_path / "elsewhere" / "run", tmp_path / "elsewhere" / "records"
    shutil.copytree(tmp_path / "run", moved, ignore=shutil.ignore_patterns(".locks"))
    shutil.copytree(records, moved_records)
    Trainer(tiny_train_config(moved_records, tiny_bins, moved), registry, progress=False).run(resume=True)
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = weights(straight, name), weights(moved, name)
        assert all(torch.equal(a[key], b[key]) for key in a), f"{name} differs after resuming the moved run"
    index = json.loads((moved_records / "records.json").read_text())
    index["shardlist"][0]["nsamples"] -= 1  # other records of the same size would read another order
    index["shardlist"][1]["nsamples"] += 1
    (moved_records / "records.json").write_text(json.dumps(index))
    longer = tiny_train_config(moved_records, tiny_bins, moved, steps=6)
    with pytest.raises(ConfigError, match="options changed since it started: data"):
        Trainer(longer, registry, progress=False).run(resume=True)


def micro_batch(order: ShuffledOrder, batch: int, step: int, rank: int, world: int) -> list[int]:
    return next(iter(StepSampler(order, batch, rank=rank, world=world, start_step=step)))


def test_batches_split_processes_without_overlap():
    order = ShuffledOrder([20, 17, 13], seed=0, block_shards=2)
    world = [micro_batch(order, 4, step=3, rank=r, world=2) for r in (0, 1)]
    single = micro_batch(order, 8, step=3, rank=0, world=1)
    assert world[0] + world[1] == single
    assert not set(world[0]) & set(world[1])


@pytest.mark.slow
def test_two_process_accelerate_training_matches_one_process(tiny_annotations, tiny_bins, registry, tmp_path):
    """2 CPU processes with batch 4 each must compute what 1 process with batch 8 does."""
    config = tmp_path / "tiny.yaml"
    cfg = tiny_train_config(tiny_annotations, tiny_bins, tmp_path / "two", steps=3, batch_size=4, save_every=3)
    import yaml

    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    command = [
        *two_cpu_processes(),
        "train",
        "--config",
        str(config),
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    one = tiny_train_config(tiny_annotations, tiny_bins, tmp_path / "one", steps=3, batch_size=8, save_every=3)
    Trainer(one, registry, progress=False).run()
    a, b = weights(tmp_path / "two"), weights(tmp_path / "one")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=2e-5), f"{key} differs between 2 processes and 1"


def test_pipeline_from_pretrained_and_errors(tiny_run: Path, registry):
    pipe = MiroPipeline.from_pretrained(tiny_run, registry=registry)
    assert pipe.reward_keys == ["shapes-alignment", "shapes-aesthetic", "shapes-sharpness"]
    images = pipe(
        "a red circle",
        num_images_per_prompt=2,
        reward_targets={"shapes-aesthetic": 1.0},
        negative_reward_targets={"shapes-aesthetic": 0.0},
        guidance_scale=2.0,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
    )
    assert len(images) == 2 and images[0].size == (32, 32) and images[0].mode == "RGB"
    with pytest.raises(ConfigError, match="unknown reward key"):
        pipe("a red circle", reward_targets={"hpsv2": 1.0}, num_inference_steps=2)
    with pytest.raises(ConfigError, match="outside"):
        pipe("a red circle", reward_targets={"shapes-aesthetic": 3.0}, num_inference_steps=2)


def test_targets_change_the_samples(tiny_run: Path, registry):
    pipe = MiroPipeline.from_pretrained(tiny_run, registry=registry)
    outputs = [
        pipe(
            "a blue square",
            reward_targets={k: v for k in pipe.reward_keys},
            guidance_scale=3.0,
            num_inference_steps=4,
            generator=torch.Generator().manual_seed(1),
            output_type="pt",
        )
        for v in (0.0, 1.0)
    ]
    assert not torch.allclose(outputs[0], outputs[1])


def test_cli_sample_and_unknown_key(tiny_run: Path, tmp_path: Path):
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "sample",
            str(tiny_run),
            "--prompt",
            "a red circle",
            "--prompt",
            "two green squares",
            "--n",
            "2",
            "--steps",
            "3",
            "--sampler",
            "heun",
            "--reward",
            "shapes-sharpness=0.8",
            "--negative-reward",
            "shapes-sharpness=0.1",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "s").glob("0*.png"))) == 4 and (tmp_path / "s" / "grid.png").exists()
    resolved = json.loads((tmp_path / "s" / "config.json").read_text())
    assert resolved["sampler"] == "heun" and resolved["reward_targets"]["shapes-sharpness"] == 0.8
    bad = runner.invoke(app, ["sample", str(tiny_run), "--prompt", "x", "--reward", "nope=1", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "unknown reward key(s) in --reward: nope" in bad.output
    missing = runner.invoke(app, ["sample", str(tmp_path / "nothing"), "--prompt", "x", "--out", str(tmp_path)])
    assert missing.exit_code == 1 and "run folder" in missing.output


def test_baseline_without_rewards(tiny_shapes: Path, registry, tmp_path: Path):
    out = tmp_path / "baseline"
    Trainer(tiny_train_config(tiny_shapes, None, out, steps=2), registry, progress=False).run()
    pipe = MiroPipeline.from_pretrained(out, registry=registry)
    assert pipe.reward_keys == []
    assert len(pipe("a circle", strategy="cfg", num_inference_steps=2)) == 1
    with pytest.raises(ConfigError, match="trained without rewards"):
        pipe("a circle", reward_targets={"shapes-aesthetic": 1.0})


def test_cli_train_subset_of_rewards(tiny_annotations: Path, tiny_bins: Path, tmp_path: Path):
    import yaml

    cfg = tiny_train_config(tiny_annotations, tiny_bins, tmp_path / "x", steps=2)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(config), "--rewards", "shapes-aesthetic", "--out", str(tmp_path / "spec"), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    assert "samples/s, MFU n/a)" in result.output  # a CPU has no known peak: MFU is n/a, not left out
    assert json.loads((tmp_path / "spec" / "config.json").read_text())["reward_keys"] == ["shapes-aesthetic"]
    bad = CliRunner().invoke(app, ["train", "--config", str(config), "--rewards", "zzz", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 1 and "zzz" in bad.output


def test_milestone_sample_grids(tiny_annotations: Path, tiny_bins: Path, registry, tmp_path: Path):
    from PIL import Image

    prompts = ["a red circle", "a caption the data never had"]
    cfg = tiny_train_config(
        tiny_annotations, tiny_bins, tmp_path / "r", steps=4, sample_every=2, sample_prompts=prompts
    )
    Trainer(cfg, registry, progress=False).run()
    grids = sorted((tmp_path / "r" / "samples").glob("step-*.png"))
    assert [g.name for g in grids] == ["step-00000002.png", "step-00000004.png"]
    # 2 prompts x (2 high + 2 low) tiles of 32 px shown at 4x, plus one label line per row
    assert Image.open(grids[-1]).size == (4 * 32 * 4, 2 * (32 * 4 + 12))


@pytest.mark.slow
def test_speed_options_train_the_same_model(tiny_annotations, tiny_bins, registry, tmp_path):
    """Activation checkpointing and torch.compile change how a step runs, not what it computes."""
    runs = {}
    for name, options in {
        "plain": {},
        "checkpointing": {"activation_checkpointing": True},
        "compiled": {"compile": True, "compile_options": {"backend": "aot_eager"}},
    }.items():
        cfg = tiny_train_config(tiny_annotations, tiny_bins, tmp_path / name, steps=3, save_every=3, **options)
        Trainer(cfg, registry, progress=False).run()
        runs[name] = weights(tmp_path / name)
    for name in ("checkpointing", "compiled"):
        for key, value in runs["plain"].items():
            assert torch.allclose(runs[name][key], value, atol=1e-5), f"{name}: {key} differs"


def test_checkpoint_blocks_wraps_outermost_blocks_and_keeps_names(registry):
    from miro_core.acceleration import checkpoint_blocks
    from miro_core.backbone import BackboneSpec

    network = registry.backbones.create("hybrid", {"size": "tiny"}).build(BackboneSpec(3, 32, 32))
    names = list(network.state_dict())
    lists = [m for m in network.children() if isinstance(m, torch.nn.ModuleList)]
    assert checkpoint_blocks(network) == sum(len(m) for m in lists) > 0
    assert list(network.state_dict()) == names


def test_throughput_and_mfu_are_logged(tiny_annotations, tiny_bins, registry, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_train_config(tiny_annotations, tiny_bins, tmp_path / "r", steps=4, peak_tflops=1.0, log_every=3)
    trainer = Trainer(cfg, registry, progress=False)
    trainer.run()
    assert trainer.flops_per_sample > 0 and trainer.samples_per_second > 0
    assert trainer.mfu == pytest.approx(trainer.samples_per_second * trainer.flops_per_sample / 1e12)
    events = EventAccumulator(str(tmp_path / "r" / "logs"), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/samples_per_second", "train/mfu", "train/data_wait_share", "train/steps_per_second"} <= tags
    # every log_every steps and at the last step (a short run still gets its throughput logged)
    assert [e.step for e in events.Scalars("train/samples_per_second")] == [3, 4]


def test_a_second_writer_of_a_run_folder_is_refused(tiny_run: Path, tiny_annotations, tiny_bins, registry):
    """Two `miro train --out RUN --resume` at once interleaved checkpoints; one writer per run folder."""
    from miro_core.data.lock import OutputLock
    from miro_core.errors import OutputLockedError

    latest = (tiny_run / "latest.json").read_text()
    with OutputLock(str(tiny_run)):  # another process training into it (a second flock on the file conflicts)
        with pytest.raises(OutputLockedError, match="being written by another process"):
            config = tiny_train_config(tiny_annotations, tiny_bins, tiny_run, steps=8)
            Trainer(config, registry, progress=False).run(resume=True)
    assert (tiny_run / "latest.json").read_text() == latest


def test_a_run_whose_text_encoder_plugin_is_missing_names_its_distribution(tiny_run: Path, monkeypatch):
    from miro_core.errors import UnknownComponentError
    from miro_core.plugins import build_registry

    monkeypatch.setenv("MIRO_BLOCK_PLUGINS", "miro-text-minilm")
    with pytest.raises(UnknownComponentError, match="text encoder 'minilm' of the distribution miro-text-minilm"):
        MiroPipeline.from_pretrained(tiny_run, registry=build_registry())

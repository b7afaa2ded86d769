"""``miro encode`` writes training records per input shard; ``miro train --data RECORDS`` reads only them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from miro_cli.main import app
from miro_core.errors import DataError
from miro_core.records.layout import read_records
from miro_core.records.reader import RecordDataset

from .conftest import tiny_train_config

pytest.importorskip("miro_autoencoder_sdxl_vae.plugin")
from miro_autoencoder_sdxl_vae.autoencoder import SDXLVAE  # noqa: E402

TEXT = ["--text-encoder", "minilm", "--text-encoder-option", "max_length=12"]


def _encode(annotations: Path, vae: Path, out: Path, *extra: str) -> object:
    args = ["encode", str(annotations), "--autoencoder", "sdxl-vae", "--autoencoder-option", f"checkpoint={vae}"]
    args += ["--image-size", "32", "--batch-size", "64", "--out", str(out), "--quiet", *TEXT, *extra]
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def latent_records(tiny_annotations, vae_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("records") / "sdxl-vae-32"
    result = _encode(tiny_annotations, vae_folder, out)
    assert result.exit_code == 0, result.output
    assert "encoded 3 shard(s), skipped 0" in result.output and "images/s" in result.output
    return out


def test_records_hold_latents_tokens_masks_and_raw_scores(latent_records, tiny_annotations, vae_folder):
    from miro_core.bins import read_annotations

    index = json.loads((latent_records / "records.json").read_text())
    assert index["format"] == "miro-records" and index["complete"] and index["wids_version"] == 1
    assert index["input"] == {"kind": "latents", "shape": [4, 16, 16], "dtype": "float16"}
    options = index["autoencoder"]["options"]
    assert index["autoencoder"]["name"] == "sdxl-vae" and Path(options["checkpoint"]) == vae_folder.resolve()
    stats = json.loads(Path(options["statistics"]).read_text())  # fitted before encoding, recorded in the index
    assert len(stats["mean"]) == 4 and index["autoencoder"]["statistics"]["mean"] == stats["mean"]
    assert index["text_encoder"]["name"] == "minilm" and index["text_encoder"]["max_length"] == 12
    assert index["text_encoder"]["provenance"]["distribution"] == "miro-text-minilm"
    assert index["score_keys"] == ["shapes-alignment", "shapes-aesthetic", "shapes-sharpness"]
    assert [s["url"] for s in index["shardlist"]] == [f"shards/shard-00000{i}.tar" for i in range(3)]
    assert len(index["channel_mean"]) == 4 and all(0.5 < s < 2.0 for s in index["channel_std"])
    assert not list((latent_records / "shards").glob("*.tmp-*"))
    annotations = read_annotations(str(tiny_annotations))
    assert index["samples"] == len(annotations["keys"]) == 240

    info = read_records(str(latent_records))
    dataset = RecordDataset(info)
    record = dataset[100]
    assert record["input"].dtype == np.float16 and record["input"].shape == (4, 16, 16)
    assert record["tokens"].dtype == np.float16 and record["tokens"].shape == (12, 384)
    assert record["mask"].dtype == np.bool_ and record["mask"].sum() >= 2
    # raw scores, exactly as annotated, so bins can be refitted without re-encoding
    row = annotations["keys"].index(json.loads(_member(latent_records, 100, "json"))["key"])
    for name, value in record["scores"].items():
        assert value == pytest.approx(float(annotations["scores"][name][row]))
    assert record["caption"] == annotations["captions"][row]

    summary = json.loads((latent_records / "summary.json").read_text())
    assert summary["samples"] == 240 and summary["images_per_second"] > 0
    assert 0.0 <= summary["device_wait_share"] <= 1.0


def _member(records: Path, index: int, extension: str) -> bytes:
    """One member of a record, read with the standard tarfile module (records are plain webdataset tars)."""
    import tarfile

    shard, inner = divmod(index, 80)
    with tarfile.open(records / "shards" / f"shard-{shard:06d}.tar") as tar:
        return tar.extractfile(f"{inner:07d}.{extension}").read()  # type: ignore[union-attr]


def test_pixel_records_are_the_decoded_images(tiny_annotations, tmp_path):
    from PIL import Image

    from miro_core.data.shards import iter_shard

    out = tmp_path / "pixels"
    result = CliRunner().invoke(
        app, ["encode", str(tiny_annotations), "--autoencoder", "pixels", "--image-size", "32", "--out", str(out),
              "--workers", "0", "--quiet", *TEXT],
    )
    assert result.exit_code == 0, result.output
    info = read_records(str(out))
    assert info.input_kind == "pixels" and info.input_shape == (3, 32, 32)
    record = RecordDataset(info)[3]
    meta = json.loads(_member(out, 3, "json"))
    raw = next(s for s in iter_shard(meta["shard"]) if s.key == meta["key"])
    import io

    expected = np.asarray(Image.open(io.BytesIO(raw.image_bytes)).convert("RGB")).transpose(2, 0, 1)
    assert record["input"].dtype == np.uint8 and np.array_equal(record["input"], expected)


def test_second_run_encodes_only_missing_shards(latent_records, tiny_annotations, vae_folder, monkeypatch):
    shards = latent_records / "shards"
    before = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.tar")}
    (shards / "shard-000001.tar").unlink()
    (shards / "shard-000001.json").unlink()
    (shards / "shard-000002.tar.tmp-deadbeef").write_bytes(b"left by a killed run")
    result = _encode(tiny_annotations, vae_folder, latent_records)
    assert result.exit_code == 0, result.output
    assert "encoded 1 shard(s), skipped 2" in result.output
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.tar")}
    assert set(after) == set(before) and after["shard-000000.tar"] == before["shard-000000.tar"]
    assert not list(shards.glob("*.tmp-*")), "temporaries of a killed run are removed"
    assert read_records(str(latent_records)).samples == 240
    # nothing left to do: the VAE does not encode anything
    monkeypatch.setattr(SDXLVAE, "encode", lambda *a, **k: pytest.fail("encode called on finished records"))
    again = _encode(tiny_annotations, vae_folder, latent_records)
    assert again.exit_code == 0 and "encoded 0 shard(s), skipped 3" in again.output


@pytest.mark.slow
def test_kill_9_then_rerun_gives_the_records_of_an_uninterrupted_run(tiny_annotations, tmp_path):
    """A run killed while writing resumes with the unfinished shards; the result equals a straight run."""
    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "miro_cli.main", "encode", str(tiny_annotations), "--autoencoder", "pixels",
                "--image-size", "32", "--batch-size", "8", "--workers", "1", "--out", str(out), "--quiet", *TEXT]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    process = subprocess.Popen(command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((killed / "shards").glob("*.json")):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list((killed / "shards").glob("*.json")))
    assert finished < 3, "killed before the end"
    subprocess.run(command(killed), env=env, check=True, capture_output=True, timeout=300)
    straight = tmp_path / "straight"
    subprocess.run(command(straight), env=env, check=True, capture_output=True, timeout=300)
    for name in (f"shard-00000{i}.tar" for i in range(3)):
        assert (killed / "shards" / name).read_bytes() == (straight / "shards" / name).read_bytes(), name
    assert read_records(str(killed)).samples == 240


def test_a_second_encode_into_the_same_folder_is_refused(tiny_annotations, tmp_path):
    """A second `miro encode` into a folder being written removed the first one's temporaries."""
    from miro_core.data.lock import OutputLock

    out = tmp_path / "pixels"
    with OutputLock(str(out)):  # another process encoding into it (a second flock on the file conflicts)
        result = CliRunner().invoke(
            app, ["encode", str(tiny_annotations), "--autoencoder", "pixels", "--image-size", "32", "--out", str(out),
                  "--workers", "0", "--quiet", *TEXT],
        )
    assert result.exit_code == 1 and "is being written by another process" in result.output, result.output
    assert not (out / "records.json").exists()


def test_encode_errors_are_one_line(tiny_annotations, latent_records, vae_folder, tmp_path):
    runner = CliRunner()
    unknown = runner.invoke(app, ["encode", str(tiny_annotations), "--autoencoder", "nope", "--out", str(tmp_path)])
    assert unknown.exit_code == 1 and "unknown autoencoder 'nope'" in unknown.output
    bad = runner.invoke(app, ["encode", str(tiny_annotations), "--autoencoder-option", "checkpoint"])
    assert bad.exit_code == 1 and "KEY=VALUE" in bad.output
    other_size = _encode(tiny_annotations, vae_folder, latent_records, "--image-size", "16")
    assert other_size.exit_code == 1 and "choose another --out" in other_size.output


def test_training_refuses_options_the_records_contradict(latent_records, tiny_annotations, tiny_bins, registry,
                                                         tmp_path):
    from miro_core.train import Trainer

    for overrides, message in [
        ({"image_size": 64}, "image_size=64 \\(records: 32\\)"),
        ({"autoencoder_options": {"checkpoint": str(tmp_path)}}, "autoencoder_options.checkpoint"),
        ({"text_encoder_options": {"max_length": 16}}, "text_encoder_options.max_length"),
    ]:
        cfg = tiny_train_config(latent_records, tiny_bins, tmp_path / "run", **overrides)
        with pytest.raises(DataError, match=message):
            Trainer(cfg, registry, progress=False).run()
    cfg = tiny_train_config(latent_records, tiny_bins, tmp_path / "run", rewards=["nope"])
    with pytest.raises(Exception, match="nope"):
        Trainer(cfg, registry, progress=False).run()


@pytest.fixture(scope="module")
def latent_run(latent_records, tiny_bins, tmp_path_factory):
    """`miro train --data RECORDS`; neither the VAE nor the text encoder may run meanwhile."""
    import yaml
    from miro_text_minilm.encoder import MiniLMTextEncoder

    def refuse(*args, **kwargs):
        raise AssertionError("an encoder ran during training")

    folder = tmp_path_factory.mktemp("latent-run")
    cfg = tiny_train_config(latent_records, tiny_bins, folder / "run", steps=2).model_dump(mode="json")
    for key in ("image_size", "text_encoder", "text_encoder_options", "autoencoder", "autoencoder_options"):
        cfg.pop(key)  # taken from the records
    config = folder / "latent.yaml"
    config.write_text(yaml.safe_dump(cfg))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SDXLVAE, "encode", refuse)
        patch.setattr(SDXLVAE, "encode_raw", refuse)
        patch.setattr(MiniLMTextEncoder, "encode", refuse)
        result = CliRunner().invoke(app, ["train", "--config", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "samples/s" in result.output
    return folder / "run"


def test_train_on_records_records_the_autoencoder(latent_run, latent_records, vae_folder):
    run = json.loads((latent_run / "config.json").read_text())
    assert run["model"]["in_channels"] == 4 and run["model"]["image_size"] == 16
    codec = run["autoencoder"]
    assert codec["name"] == "sdxl-vae" and codec["image_size"] == 32 and codec["latent_shape"] == [4, 16, 16]
    assert Path(codec["options"]["checkpoint"]) == vae_folder.resolve()
    assert json.loads(Path(codec["options"]["statistics"]).read_text())["mean"] == codec["statistics"]["mean"]
    assert run["data"]["records"] == str(latent_records) and run["data"]["samples"] == 240
    assert run["train"]["text_encoder_options"] == {"max_length": 12}
    assert len(run["example_prompts"]) == 8
    assert (latent_run / "latest.json").exists()


def test_pipeline_decodes_latent_runs_to_pixels(latent_run):
    from miro_core.pipeline import MiroPipeline

    pipe = MiroPipeline.from_pretrained(latent_run)
    assert pipe.image_size == 32 and pipe.config["model"]["image_size"] == 16
    images = pipe("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert images.shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_two_processes_split_the_shards_and_write_the_same_records(tiny_annotations, tmp_path):
    from .conftest import two_cpu_processes

    def args(out: Path) -> list[str]:
        return ["encode", str(tiny_annotations), "--autoencoder", "pixels", "--image-size", "32", "--workers", "1",
                "--out", str(out), "--quiet", *TEXT]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*two_cpu_processes(), *args(tmp_path / "two")], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 0] encoded 2 shard(s)" in result.stdout and "[rank 1] encoded 1 shard(s)" in result.stdout
    assert {p.name for p in (tmp_path / "two").glob("summary*.json")} == {"summary-rank0.json", "summary-rank1.json"}
    single = CliRunner().invoke(app, args(tmp_path / "one"))
    assert single.exit_code == 0, single.output
    assert read_records(str(tmp_path / "two")).samples == 240
    for name in (f"shard-00000{i}.tar" for i in range(3)):
        assert (tmp_path / "two" / "shards" / name).read_bytes() == (tmp_path / "one" / "shards" / name).read_bytes()


def test_bins_refit_from_the_records_equal_the_bins_of_the_annotations(latent_records, tiny_annotations, tmp_path):
    """The records keep every record's raw scores (and a small table of them per shard), so `miro bins fit
    RECORDS` refits bins with neither the annotations nor another encode."""
    import shutil

    runner = CliRunner()
    for source, name in ((latent_records, "records.json"), (tiny_annotations, "annotations.json")):
        result = runner.invoke(app, ["bins", "fit", str(source), "--out", str(tmp_path / name), "--bins", "16"])
        assert result.exit_code == 0, result.output
    from_records = json.loads((tmp_path / "records.json").read_text())
    from_annotations = json.loads((tmp_path / "annotations.json").read_text())
    assert from_records["rewards"] == from_annotations["rewards"]  # every sample was encoded: the same scores
    assert from_records["source"] == str(latent_records)
    copy = tmp_path / "copy"
    shutil.copytree(latent_records, copy)
    (copy / "shards" / "shard-000001.scores.parquet").unlink()
    result = runner.invoke(app, ["bins", "fit", str(copy), "--out", str(tmp_path / "x.json")])
    assert result.exit_code == 1 and f"miro bins fit {tiny_annotations}" in result.output


def test_records_settings_are_compared_as_the_encoders_run_with_them(tiny_annotations, tiny_bins, registry, tmp_path,
                                                                      monkeypatch):
    """Relative paths given to `miro encode` are recorded absolute; training from another directory finds the
    bins of the annotation folder the records came from, and accepts a config that names the same weights by
    another path or spells out a default, but refuses another value; a rerun into the same records folder that
    leaves out an option the first run set is refused (it would mix records of two settings)."""
    import shutil

    from miro_core.train import Trainer

    from .test_text_encoders import _t5_folder

    shutil.copytree(tiny_annotations, tmp_path / "ann")
    shutil.copy(tiny_bins, tmp_path / "ann" / "bins.json")
    _t5_folder(tmp_path / "t5")
    monkeypatch.chdir(tmp_path)
    args = ["encode", "ann", "--autoencoder", "pixels", "--image-size", "16", "--out", "rec", "--quiet",
            "--text-encoder", "t5", "--text-encoder-option", "checkpoint=t5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "rec" / "records.json").read_text())
    assert index["source"] == str((tmp_path / "ann").resolve())
    assert index["text_encoder"]["options"]["checkpoint"] == str((tmp_path / "t5").resolve())
    again = CliRunner().invoke(app, [*args, "--text-encoder-option", "max_length=32"])  # the default: the same
    assert again.exit_code == 0, again.output
    other = CliRunner().invoke(app, [*args, "--text-encoder-option", "max_length=8"])
    assert other.exit_code == 1 and "max_length=32 (asked: 8)" in other.output
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    same = {"checkpoint": "../t5", "max_length": 32}
    cfg = tiny_train_config(tmp_path / "rec", None, tmp_path / "run", no_rewards=False, steps=2, text_encoder="t5",
                            text_encoder_options=same, image_size=16)
    Trainer(cfg, registry, progress=False).run()
    run_bins = json.loads((tmp_path / "run" / "bins.json").read_text())
    assert run_bins["rewards"] == json.loads((tmp_path / "ann" / "bins.json").read_text())["rewards"]
    for options in ({"checkpoint": "../ann"}, {"max_length": 8}):
        cfg = tiny_train_config(tmp_path / "rec", None, tmp_path / "run2", no_rewards=False, text_encoder="t5",
                                text_encoder_options=options)
        with pytest.raises(DataError, match=f"text_encoder_options.{next(iter(options))}"):
            Trainer(cfg, registry, progress=False).run()
    (tmp_path / "ann" / "bins.json").unlink()
    cfg = tiny_train_config(tmp_path / "rec", None, tmp_path / "run3", no_rewards=False, text_encoder_options={})
    with pytest.raises(Exception, match="no bins file at .*rec/bins.json or .*ann/bins.json"):
        Trainer(cfg, registry, progress=False).run()


@pytest.mark.parametrize("command", ["encode", "train"])
def test_a_missing_input_is_named_and_no_folder_is_left_behind(command: str, tmp_path: Path):
    missing = tmp_path / "typo"
    args = [command, str(missing)] if command == "encode" else [command, "--data", str(missing)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out"), "--autoencoder", "pixels"])
    assert result.exit_code == 1 and f"dataset {missing} does not exist" in result.output, result.output
    assert not missing.exists(), "the input's records cache is not created before the input is found"
    assert command == "train" or not (tmp_path / "out").exists()
    memory = CliRunner().invoke(app, [*args[:-1], "memory://nothing", "--out", str(tmp_path / "out")])
    assert memory.exit_code == 1 and "an in-memory filesystem lives only inside one process" in memory.output

"""The CLI through Typer's runner: plugins, data, bins, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from miro_cli.main import app

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("plugins", "data", "annotate", "bins", "train", "sample", "demo"):
        assert command in result.output


def test_plugins_json_schema():
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0
    entries = json.loads(result.stdout)
    for entry in entries:
        assert {"distribution", "version", "hooks", "provides", "error"} <= set(entry)
    names = {n for e in entries for names in e["provides"].values() for n in names}
    assert {"shapes-alignment", "shapes-aesthetic", "shapes-sharpness", "quantile", "miro", "euler"} <= names


def test_plugins_table():
    result = runner.invoke(app, ["plugins"])
    assert result.exit_code == 0 and "shapes-sharpness" in result.output


def test_data_shapes_writes_shards_and_index(tmp_path: Path):
    result = runner.invoke(
        app, ["data", "shapes", "--n", "30", "--samples-per-shard", "12", "--out", str(tmp_path / "d")]
    )
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "d" / "index.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [12, 12, 6]
    assert len(list((tmp_path / "d").glob("*.tar"))) == 3
    again = runner.invoke(
        app, ["data", "shapes", "--n", "30", "--samples-per-shard", "12", "--out", str(tmp_path / "e")]
    )
    assert again.exit_code == 0
    assert (tmp_path / "d" / "shard-000000.tar").read_bytes() == (tmp_path / "e" / "shard-000000.tar").read_bytes()


def test_bins_fit_and_show(tiny_annotations: Path, tmp_path: Path):
    out = tmp_path / "bins.json"
    result = runner.invoke(app, ["bins", "fit", str(tiny_annotations), "--out", str(out), "--bins", "8"])
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["num_bins"] == 8 and set(payload["rewards"]) == {
        "shapes-alignment",
        "shapes-aesthetic",
        "shapes-sharpness",
    }
    assert len(payload["rewards"]["shapes-sharpness"]["edges"]) == 8
    assert sum(payload["rewards"]["shapes-sharpness"]["stats"]["level_counts"]) == 240
    shown = runner.invoke(app, ["bins", "show", str(out)])
    assert shown.exit_code == 0 and "shapes-sharpness" in shown.output
    uniform = runner.invoke(
        app, ["bins", "fit", str(tiny_annotations), "--out", str(tmp_path / "u.json"), "--strategy", "uniform"]
    )
    assert uniform.exit_code == 0


def test_clear_errors(tmp_path: Path, tiny_shapes: Path):
    cases = [
        (
            ["annotate", str(tmp_path / "missing"), "--rewards", "shapes-sharpness", "--out", str(tmp_path / "o")],
            "does not exist",
        ),
        (
            ["annotate", str(tiny_shapes), "--rewards", "no-such-reward", "--out", str(tmp_path / "o")],
            "unknown reward 'no-such-reward'",
        ),
        (
            [
                "annotate",
                str(tiny_shapes),
                "--rewards",
                "shapes-sharpness",
                "--out",
                str(tmp_path / "o"),
                "--reward-option",
                "shapes-sharpness.bogus=1",
            ],
            "bogus",
        ),
        (["bins", "fit", str(tmp_path), "--out", str(tmp_path / "b.json")], "no annotation tables"),
        (["bins", "show", str(tmp_path / "nope.json")], "does not exist"),
        (["train", "--data", str(tiny_shapes), "--out", str(tmp_path / "r")], "no bins file"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)


def test_config_file_and_override(tmp_path: Path, tiny_shapes: Path):
    config = tmp_path / "annotate.yaml"
    config.write_text(f"data: {tiny_shapes}\nrewards: [shapes-sharpness]\nbatch_size: 7\nunknown_key: 1\n")
    result = runner.invoke(app, ["annotate", str(tiny_shapes), "--config", str(config), "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "unknown_key" in result.output
    config.write_text("rewards: [shapes-sharpness]\nbatch_size: 7\n")
    result = runner.invoke(
        app, ["annotate", str(tiny_shapes), "--config", str(config), "--out", str(tmp_path / "a"), "--batch-size", "9"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a" / "config.json").read_text())["batch_size"] == 9


# -- every fault is one `error:` line naming the option, file or URL ---------------------------------------------
def single_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("miro ") and "plugin API" in result.output


def test_options_are_validated_and_errors_name_the_cli_option(tmp_path: Path, tiny_shapes: Path):
    cases = [
        (["annotate", str(tiny_shapes), "--out", str(tmp_path / "a")], "--rewards is required"),
        (["annotate", str(tiny_shapes), "--rewards", "shapes-sharpness", "--out", str(tmp_path / "a"), "--dtype",
          "foo"], "--dtype foo: choose one of float32, float16, bfloat16"),
        (["annotate", str(tiny_shapes), "--rewards", "shapes-sharpness", "--out", str(tmp_path / "a"), "--device",
          "gpu"], "--device gpu: not a device; use cpu, cuda, cuda:N or mps"),
        (["sample", str(tmp_path), "--out", str(tmp_path / "s"), "--prompt", "x", "--weights", "foo"],
         "--weights foo: choose ema"),
        (["train", "--data", str(tiny_shapes), "--lr", "-1"], "--lr: Input should be greater than 0"),
        (["train", "--out", str(tmp_path / "r")], "--data is required"),
        (["data", "shapes", "--n", "5", "--out", "memory://shapes"], "--out memory://shapes: an in-memory filesystem"),
        (["sample", str(tmp_path), "--out", str(tmp_path / "s"), "--prompt", "x", "--strategy-option", "t=.nan"],
         "--strategy-option t=.nan: must be a finite number"),
    ]
    for args, message in cases:
        assert message in single_error(runner.invoke(app, args)), args
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {tiny_shapes}\nbatch_size: -4\nsave_every: -1\n")
    line = single_error(runner.invoke(app, ["train", "--config", str(config)]))
    assert f"`batch_size` in {config}: Input should be greater than or equal to 1" in line
    assert f"`save_every` in {config}" in line
    if not __import__("torch").cuda.is_available():
        sample = ["sample", str(tmp_path), "--out", str(tmp_path / "s"), "--prompt", "x", "--device", "cuda"]
        assert "no CUDA device is available" in single_error(runner.invoke(app, sample))


def test_numbers_out_of_range_are_usage_errors_naming_the_option(tmp_path: Path):
    for args, option in [(["sample", str(tmp_path), "--out", str(tmp_path), "--n", "0"], "--n"),
                         (["sample", str(tmp_path), "--out", str(tmp_path), "--guidance", "-1"], "--guidance"),
                         (["train", "--batch-size", "0"], "--batch-size"),
                         (["eval", str(tmp_path), "--out", str(tmp_path), "--steps", "0"], "--steps")]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and option in result.output and "Traceback" not in result.output, args


FAULTS = [
    (lambda: OSError(30, "Read-only file system", "/ro/d/shard-000000.tar"), "the filesystem is read-only"),
    (lambda: PermissionError(13, "Permission denied", "/ro/d/x.tar"), "permission denied: /ro/d/x.tar (--out /ro/d)"),
    (lambda: OSError(28, "No space left on device", "/ro/d/x.tar"), "no space left while writing /ro/d/x.tar"),
    (lambda: RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0"),
     "no space left while writing --out /ro/d"),
    (lambda: RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"), "no space left"),
    (lambda: ConnectionRefusedError(111, "Connection refused"), "cannot reach"),
    (lambda: ValueError("Protocol not known: foo"), "unknown URL scheme foo://"),
    (lambda: ZeroDivisionError("boom"),
     "unexpected ZeroDivisionError: boom. This is probably a bug: rerun with --debug"),
]


def test_environment_faults_are_one_line_and_debug_shows_the_traceback(monkeypatch):
    import miro_core.shapes.dataset as dataset

    for make, message in FAULTS:
        def fail(*args, _make=make, **kwargs):
            raise _make()

        monkeypatch.setattr(dataset, "write_shapes_dataset", fail)
        line = single_error(runner.invoke(app, ["data", "shapes", "--n", "5", "--out", "/ro/d"]))
        assert message in line, (message, line)
    debug = runner.invoke(app, ["--debug", "data", "shapes", "--n", "5", "--out", "/ro/d"])
    assert debug.exit_code == 1 and "Traceback" in debug.output and "ZeroDivisionError: boom" in debug.output
    monkeypatch.setenv("MIRO_DEBUG", "1")
    assert "Traceback" in runner.invoke(app, ["data", "shapes", "--n", "5", "--out", "/ro/d"]).output
    monkeypatch.delenv("MIRO_DEBUG")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "write_shapes_dataset", interrupted)
    assert "interrupted" in single_error(runner.invoke(app, ["data", "shapes", "--out", "/ro/d"]), code=130)


def test_a_missing_fsspec_backend_names_the_package(monkeypatch):
    import fsspec
    from fsspec.registry import known_implementations

    import miro_core.shapes.dataset as dataset

    def needs_backend(*args, **kwargs):
        fsspec.filesystem("miro-test-proto")

    monkeypatch.setitem(known_implementations, "miro-test-proto",
                        {"class": "miro_no_such_backend.FS", "err": "Install miro_no_such_backend to access it"})
    monkeypatch.setattr(dataset, "write_shapes_dataset", needs_backend)
    line = single_error(runner.invoke(app, ["data", "shapes", "--n", "5", "--out", "miro-test-proto://bucket/d"]))
    assert "--out miro-test-proto://bucket/d" in line and "pip install miro_no_such_backend" in line


def test_a_real_unwritable_output_folder(tmp_path: Path):
    result = runner.invoke(app, ["data", "shapes", "--n", "5", "--out", "/proc/miro-cannot-write-here"])
    line = single_error(result)
    assert "/proc/miro-cannot-write-here" in line


def test_a_real_full_disk(tmp_path: Path):
    """A 64 KiB tmpfs fills up while shards are written (needs permission to mount; skipped otherwise)."""
    import subprocess

    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        line = single_error(runner.invoke(app, ["data", "shapes", "--n", "400", "--out", str(small / "d")]))
        assert "no space left" in line and str(small / "d") in line
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)


def test_a_real_read_only_folder(tmp_path: Path, tiny_annotations: Path, tiny_shapes: Path):
    """A read-only mount: every writing command says so in one line (needs permission to mount)."""
    import subprocess

    frozen = tmp_path / "frozen"
    frozen.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(frozen)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        for args in (["data", "shapes", "--n", "5", "--out", str(frozen / "d")],
                     ["bins", "fit", str(tiny_annotations), "--out", str(frozen / "bins.json")],
                     ["annotate", str(tiny_shapes), "--rewards", "shapes-sharpness", "--out", str(frozen / "a")]):
            line = single_error(runner.invoke(app, args))
            assert "read-only" in line and str(frozen) in line, (args, line)
    finally:
        subprocess.run(["umount", str(frozen)], capture_output=True)

"""The CLI through Typer's runner: plugins, data, bins, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

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

"""Documentation stays complete: every hook documented and exercised, every command documented."""

from __future__ import annotations

import inspect
from pathlib import Path

from miro_core import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = [name for name, f in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_")]


def test_hooks_have_docstrings_and_docs():
    text = (ROOT / "docs" / "hooks.md").read_text()
    assert HOOKS, "no hookspecs found"
    for name in HOOKS:
        assert getattr(hookspecs, name).__doc__, f"hook {name} has no docstring"
        assert f"## {name}" in text, f"hook {name} is not documented in docs/hooks.md"


def test_every_hook_is_exercised_by_a_test():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != "test_docs.py")
    # a hook is exercised when a test uses the registry table it fills
    tables = {
        "register_rewards": "rewards.create(",
        "register_binners": "binners.create(",
        "register_backbones": "backbone",
        "register_text_encoders": "text_encoders.create(",
        "register_autoencoders": "autoencoders",
        "register_guidance_strategies": "guidance.create(",
        "register_samplers": "samplers.create(",
    }
    assert set(tables) == set(HOOKS)
    for hook, usage in tables.items():
        assert usage in tests, f"no test exercises {hook} ({usage})"


def test_every_command_is_documented():
    from typer.main import get_command

    from miro_cli.main import app

    text = (ROOT / "docs" / "cli.md").read_text()
    group = get_command(app)
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        for full in [f"miro {name} {sub}" for sub in subcommands] if subcommands else [f"miro {name}"]:
            assert f"## {full}" in text, f"`{full}` is not documented in docs/cli.md"


def test_readme_has_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def hook_examples() -> dict[str, str]:
    """The worked example (the first python block) of every hook's section in docs/hooks.md."""
    import re

    text = (ROOT / "docs" / "hooks.md").read_text()
    examples = {}
    for name in HOOKS:
        section = text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]
        match = re.search(r"```python\n(.*?)```", section, re.S)
        assert match, f"docs/hooks.md gives no worked example for {name}"
        examples[name] = match.group(1)
    return examples


def test_every_hook_has_a_worked_example_that_registers_and_conforms():
    import types

    from miro_core import conformance
    from miro_core.plugins import build_registry
    from miro_core.registry import HOOK_TABLES

    checks = {"rewards": conformance.check_reward, "binners": conformance.check_binner,
              "backbones": conformance.check_backbone, "text_encoders": conformance.check_text_encoder,
              "autoencoders": conformance.check_autoencoder, "guidance": conformance.check_guidance,
              "samplers": conformance.check_sampler}
    for hook, code in hook_examples().items():
        module = types.ModuleType(f"docs_example_{hook}")
        exec(compile(code, f"docs/hooks.md ({hook})", "exec"), module.__dict__)
        registry = build_registry(load_entry_points=False, extra_plugins=[(module.__name__, module)])
        info = next(p for p in registry.plugins if p.name == module.__name__)
        assert info.error is None and not info.warnings and info.hooks == [hook], (hook, info)
        table, _, _ = HOOK_TABLES[hook]
        (name,) = next(iter(info.provides.values()))
        options = {"num_bins": 8} if table == "binners" else None
        checks[table](getattr(registry, table).get(name), options, light_import=False)


def test_cli_reference_documents_exit_codes_and_debugging():
    text = (ROOT / "docs" / "cli.md").read_text()
    for needle in ("## Exit codes", "| 0 |", "| 1 |", "| 2 |", "| 130 |", "--debug", "MIRO_DEBUG", "--plugins-dir",
                   "--version", "MIRO_STRICT_PLUGINS"):
        assert needle in text, needle

"""The conformance kit: the project's own components pass it, and it catches each kind of broken plugin."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from miro_core.binning import Binner
from miro_core.conformance import (
    ConformanceError,
    check_autoencoder,
    check_backbone,
    check_binner,
    check_guidance,
    check_plugin,
    check_reward,
    check_sampler,
    check_text_encoder,
)
from miro_core.guidance import GuidanceStrategy
from miro_core.rewards import RewardModel, RewardOptions

GUIDANCE_OPTIONS = {"isolate": {"target": "reward-a"}, "tradeoff": {"reward_a": "reward-a", "reward_b": "reward-b"}}
#: Backbones whose tiny size needs another conditioning width than the kit's default.
BACKBONE_COND_DIM = {"rin-release": 64}
SHAPES = ["shapes-alignment", "shapes-aesthetic", "shapes-sharpness"]


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- the project's own components ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["quantile", "uniform"])
def test_builtin_binners_conform(registry, name):
    report = check_binner(registry.binners.get(name))
    assert "non-finite scores give NaN" in report.passed and "state survives a JSON round trip" in report.passed


def test_builtin_guidance_strategies_conform(registry):
    for name in registry.guidance.names():
        if registry.provenance("guidance", name)["distribution"] == "miro":
            check_guidance(registry.guidance.get(name), GUIDANCE_OPTIONS.get(name))


def test_builtin_samplers_conform(registry):
    for name in ("euler", "heun"):
        report = check_sampler(registry.samplers.get(name))
        assert "exact on a constant velocity" in report.passed


def test_shapes_rewards_conform_with_every_check(registry):
    for name in SHAPES:
        report = check_reward(registry.rewards.get(name))
        for check in ("one float per sample", "batch equals one at a time", "inputs are not modified",
                      "unusual inputs give finite-or-NaN scores", "no heavy import at registration"):
            assert check in report.passed, (name, check, str(report))


def test_paper_rewards_pass_the_checks_that_need_no_weights(registry):
    """Without weights on this machine, the weight-free checks run and the rest are skipped (tests/rewards
    runs the full kit on tiny random weights)."""
    paper = ["aesthetic", "hpsv2", "imagereward", "pickscore", "vqascore", "jina-clip", "sciscore"]
    for name in paper:
        report = check_reward(registry.rewards.get(name), {"checkpoint": "/nonexistent/miro-conformance"},
                              light_import=False)
        assert "unknown options are rejected" in report.passed, str(report)
        assert "batch equals one at a time" in report.skipped, str(report)


def test_every_installed_backbone_conforms_at_its_tiny_size(registry):
    for name in registry.backbones.names():
        report = check_backbone(registry.backbones.get(name), cond_dim=BACKBONE_COND_DIM.get(name, 32),
                                light_import=False)
        assert "padding tokens are ignored" in report.passed, str(report)


def test_text_encoders_and_autoencoders_conform(registry, vae_folder):
    check_text_encoder(registry.text_encoders.get("minilm"), {"max_length": 12})
    check_autoencoder(registry.autoencoders.get("pixels"))
    report = check_autoencoder(registry.autoencoders.get("sdxl-vae"), {"checkpoint": str(vae_folder)},
                               image_size=8, light_import=False)
    assert "batch equals one at a time" in report.passed, str(report)
    for name in ("t5", "clip-text"):  # no weights here: the weight-free checks
        check_text_encoder(registry.text_encoders.get(name), {"checkpoint": "/nonexistent/miro-conformance"},
                           light_import=False)


# -- broken plugins are caught by name --------------------------------------------------------------------------------
def reward(score, name: str = "broken", inputs=frozenset({"image"}), options=RewardOptions) -> type[RewardModel]:
    return type("Broken", (RewardModel,), {"name": name, "inputs": inputs, "score": score, "Options": options})


def failed_checks(cls, check=check_reward, **kwargs) -> dict[str, str]:
    report = check(cls, raise_on_failure=False, light_import=False, **kwargs)
    with pytest.raises(ConformanceError):
        report.raise_for_failures()
    return report.failed


def test_a_reward_returning_too_few_scores():
    failed = failed_checks(reward(lambda self, images, captions: [0.5] * (len(images) - 1)))
    assert "returned 3 scores for 4 samples" in failed["one float per sample"]


def test_a_reward_returning_a_bare_float():
    failed = failed_checks(reward(lambda self, images, captions: 0.5))
    assert "returned float 0.5; return a list" in failed["one float per sample"]


def test_a_reward_returning_infinity_or_text():
    failed = failed_checks(reward(lambda self, images, captions: [float("inf")] * len(images)))
    assert "return NaN for a sample you cannot score" in failed["one float per sample"]
    failed = failed_checks(reward(lambda self, images, captions: ["0.5"] * len(images)))
    assert "is str '0.5', not a float" in failed["one float per sample"]


def test_the_kit_judges_result_containers_as_the_engine_does():
    """A dict of the right length passed the length check (the engine refuses it), an int beyond the float range
    crashed the kit, and a 1-D tensor (which the engine accepts) failed it."""
    failed = failed_checks(reward(lambda self, images, captions: {i: 0.5 for i in range(len(images))}))
    assert "returned dict" in failed["one float per sample"]
    failed = failed_checks(reward(lambda self, images, captions: [10**400] * len(images)))
    assert "is an int beyond the float range" in failed["one float per sample"]
    failed = failed_checks(reward(lambda self, images, captions: np.full((len(images), 1), 0.5)))
    assert "not 1-D" in failed["one float per sample"]

    def tensor(self, images, captions):
        import torch

        return torch.full((len(images),), 0.5)

    report = check_reward(reward(tensor), raise_on_failure=False, light_import=False)
    assert "one float per sample" not in report.failed


def test_a_reward_that_modifies_the_shared_images():
    def score(self, images, captions):
        for image in images:
            image.putpixel((0, 0), (0, 0, 0))
        return [0.5] * len(images)

    failed = failed_checks(reward(score))
    assert "modified the images" in failed["inputs are not modified"]


def test_a_reward_that_depends_on_the_rest_of_the_batch():
    def score(self, images, captions):
        sizes = np.array([im.width for im in images], dtype=float)
        return list(sizes / sizes.sum())  # normalised over the batch

    failed = failed_checks(reward(score))
    assert "batch equals one at a time" in failed and "batch order does not matter" not in failed


def test_a_nondeterministic_reward():
    rng = np.random.default_rng()
    failed = failed_checks(reward(lambda self, images, captions: list(rng.random(len(images)))))
    assert "deterministic" in failed


def test_a_reward_that_reads_captions_without_declaring_them():
    failed = failed_checks(reward(lambda self, images, captions: [float(len(c)) for c in captions]))
    assert "captions change the scores" in failed["captions ignored unless read"]


def test_a_reward_that_crashes_on_unusual_images():
    def score(self, images, captions):
        return [float(im.getpixel((0, 0))[1]) for im in images]  # assumes a colour tuple per pixel

    assert "unusual inputs give finite-or-NaN scores" in failed_checks(reward(score))


def test_options_that_accept_unknown_keys_or_nan():
    from pydantic import ConfigDict

    class Loose(RewardOptions):
        model_config = ConfigDict(extra="allow", allow_inf_nan=True)
        gain: float = 1.0

    failed = failed_checks(reward(lambda self, images, captions: [0.5] * len(images), options=Loose))
    assert "extra='forbid'" in failed["unknown options are rejected"]
    assert "gain=nan was accepted" in failed["non-finite options are rejected"]


def test_a_plugin_module_that_imports_torch_at_registration(tmp_path, monkeypatch):
    (tmp_path / "miro_conformance_heavy.py").write_text(textwrap.dedent("""
        import torch  # noqa: F401 - the fault under test
        from miro_core.rewards import RewardModel


        class Heavy(RewardModel):
            name = "heavy"
            inputs = frozenset({"image"})

            def score(self, images, captions):
                return [0.5] * len(images)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    from miro_conformance_heavy import Heavy

    report = check_reward(Heavy, raise_on_failure=False)
    assert "imports torch" in report.failed["no heavy import at registration"]


def test_a_broken_binner_guidance_and_backbone():
    class FewEdges(Binner):
        name = "few"

        def fit_edges(self, values):
            return np.linspace(0, 1, 3)

    assert "fit gives num_bins non-decreasing edges" in failed_checks(FewEdges, check_binner)

    class Partial(GuidanceStrategy):
        name = "partial"

        def negative_targets(self, reward_keys, positive, negative):
            return {reward_keys[0]: 2.0} if reward_keys else {}

        def scale_at(self, step, num_steps):
            return 1.0  # ignores scale: guidance can never be turned off

    failed = failed_checks(Partial, check_guidance)
    assert "negative targets cover exactly the run's rewards, in [0, 1]" in failed
    assert "scale=0 must turn guidance off" in failed["finite weights; scale 0 turns guidance off"]

    from miro_core.backbone import Backbone

    class Unmasked(Backbone):
        name = "unmasked"
        sizes = {"tiny": {}}

        def build(self, spec):
            import torch

            class Net(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.proj = torch.nn.Linear(spec.cond_dim, spec.in_channels)

                def forward(self, x, t, cond):  # averages padding tokens too
                    return x + self.proj(cond.tokens.mean(1))[:, :, None, None]

            return Net()

    assert "padding tokens are ignored" in failed_checks(Unmasked, check_backbone)


def test_check_plugin_runs_every_component_of_a_module(registry):
    import miro_reward_shapes_sharpness.plugin as module

    reports = check_plugin(module)
    assert [r.component.split("'")[1] for r in reports] == ["shapes-sharpness"] and not reports[0].failed


def test_the_docs_show_the_kit():
    text = (Path(__file__).resolve().parent.parent / "docs" / "writing-plugins.md").read_text()
    for name in ("check_reward", "check_binner", "check_guidance", "check_backbone", "check_sampler"):
        assert name in text

"""The conformance kit: contract checks for plugin authors, in the spirit of scikit-learn's ``check_estimator``.

Each ``check_*`` function takes a component class (and the options it needs), runs every check of its
contract, and raises :class:`ConformanceError` (an ``AssertionError``, so pytest shows it as a test failure)
listing each failed check with what was wrong. It returns a :class:`Report` of what passed and what was
skipped (a reward whose weights are not on this machine skips the checks that need them; pass
``require_weights=True`` to make that a failure)::

    from miro_core.conformance import check_reward

    def test_my_reward_conforms():
        check_reward(MyReward, options={"checkpoint": "tests/tiny-weights"})

What is checked, per contract (names as they appear in reports):

- every component: a valid ``name`` and ``version``; ``Options`` rejects unknown keys and non-finite
  numbers; options survive a JSON round trip (they are recorded in every config.json); importing the
  component's module imports no heavy library (torch, transformers, ...), so ``miro plugins`` stays fast.
- rewards: one finite-or-NaN float per sample (a list, never a bare float); a batch scores like one sample
  at a time and like the same batch reversed; the same call gives the same scores; the images and captions
  handed in are not modified; unusual inputs (grey, RGBA, 16-bit, float, palette, 1x1 images, empty and long
  captions) give finite-or-NaN scores; a reward that does not read captions ignores them; ``prepare`` /
  ``score_prepared`` agree with ``score`` and pickle; scores survive ``unload`` and ``load``.
- binners: ``num_bins`` non-decreasing edges; levels on the grid ``i / (B - 1)``, monotone in the score,
  NaN for non-finite scores; fitting is deterministic and leaves its input untouched; the state survives a
  JSON round trip into a fresh binner; constant and tiny samples fit.
- guidance strategies: negative targets for exactly the run's reward keys, each in [0, 1], inputs untouched;
  a finite weight at every step, zero everywhere when ``scale`` is 0; ``combine`` keeps shapes and is the
  positive branch at weight 0.
- samplers: exact on a constant velocity field, accurate on ``dx/dt = x``, times from 1 towards 0, the
  declared number of evaluations per step, noise untouched, deterministic, each evaluation's state handed on.
- backbones: output shaped like ``x`` and finite; a batch equals one sample at a time; padded text tokens
  (mask False) do not change the output; inputs untouched; weights survive a safetensors round trip into a
  freshly built network; gradients reach the parameters; unknown size overrides are rejected.
- text encoders and autoencoders: shapes, dtypes, determinism, batch equals one at a time, inputs untouched.
"""

from miro_core.conformance.binners import check_binner
from miro_core.conformance.networks import check_autoencoder, check_backbone, check_text_encoder
from miro_core.conformance.plugin import CHECKS, check_plugin
from miro_core.conformance.rewards import check_reward, conformance_images, unusual_images
from miro_core.conformance.runner import HEAVY_MODULES, REWARD_KEYS, ConformanceError, Report, SkipCheck
from miro_core.conformance.sampling import check_guidance, check_sampler

__all__ = [
    "CHECKS",
    "HEAVY_MODULES",
    "REWARD_KEYS",
    "ConformanceError",
    "Report",
    "SkipCheck",
    "check_autoencoder",
    "check_backbone",
    "check_binner",
    "check_guidance",
    "check_plugin",
    "check_reward",
    "check_sampler",
    "check_text_encoder",
    "conformance_images",
    "unusual_images",
]

"""SciScore (Science-T2I, Li et al., 2025): a CLIP ViT-H/14 fine-tuned to prefer scientifically correct images.

It is trained and scored like PickScore: ``exp(logit_scale) * cosine`` of ``Jialuo21/SciScore`` with the
processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``. MIRO bins the score divided by 100.
"""

from __future__ import annotations

from miro_reward_common.clip_scorer import HFCLIPOptions, HFCLIPPreferenceReward


class SciScoreOptions(HFCLIPOptions):
    #: Folder of the Hugging Face CLIPModel (config.json + weights) or the cached repo id.
    checkpoint: str | None = "Jialuo21/SciScore"


class SciScore(HFCLIPPreferenceReward):
    """Scientific-realism preference score of an image for its caption; MIRO key ``sciscore_score``."""

    name = "sciscore"
    version = "1"
    description = "SciScore (CLIP ViT-H/14): exp(logit_scale)*cosine / 100"
    Options = SciScoreOptions
    #: Peak process memory loading and scoring in float32 at real size, measured by
    #: benchmarks/reward_memory.py (random weights in the release layout) plus a 10% margin; docs/rewards.md.
    peak_memory_mib = 5100.0

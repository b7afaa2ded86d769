"""PickScore (Kirstain et al., 2023): a CLIP ViT-H/14 fine-tuned on Pick-a-Pic human preferences.

Score: ``exp(logit_scale) * cosine(image embedding, text embedding)`` of ``yuvalkirstain/PickScore_v1``
with the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (shortest side 224 bicubic, centre crop,
OpenAI CLIP mean/std, captions truncated to 77 tokens). MIRO bins the score divided by 100.
"""

from __future__ import annotations

from miro_reward_common.clip_scorer import HFCLIPOptions, HFCLIPPreferenceReward


class PickScoreOptions(HFCLIPOptions):
    #: Folder of the Hugging Face CLIPModel (config.json + weights) or the cached repo id.
    checkpoint: str | None = "yuvalkirstain/PickScore_v1"


class PickScore(HFCLIPPreferenceReward):
    """Human preference (Pick-a-Pic) score of an image for its caption; MIRO key ``pick_a_score_score``."""

    name = "pickscore"
    version = "1"
    description = "PickScore_v1 (CLIP ViT-H/14): exp(logit_scale)*cosine / 100"
    Options = PickScoreOptions
    #: Peak process memory loading and scoring in float32 at real size, measured by
    #: benchmarks/reward_memory.py (random weights in the release layout) plus a 10% margin; docs/rewards.md.
    peak_memory_mib = 5100.0

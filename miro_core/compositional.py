"""A GenEval-like compositional benchmark for the shapes world.

GenEval asks a detector whether a generated image shows what its prompt says (the objects, their count,
colours and relative position) and reports, per task, the fraction of images where *every* part of the
prompt holds; the overall score is the mean of the task accuracies. Here the tasks are the six caption
kinds of the shapes world (:data:`miro_core.shapes.captions.KINDS`), the prompts come from
:func:`~miro_core.shapes.captions.benchmark_prompts` (a fixed, seeded list per kind), and the judge is the
shapes-world verifier: an image passes when ``verify(image, prompt).passed`` (all claims hold).

    prompts, categories = benchmark_items(per_category=8, seed=0)
    passed = judge(images, prompts)                    # one bool per image (None: prompt outside the grammar)
    result = category_accuracy(passed, categories)     # {"categories": {...}, "overall": mean of categories}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from miro_core.shapes.captions import KINDS, CaptionParseError, benchmark_prompts, caption_kind

if TYPE_CHECKING:
    from miro_core.shapes.verify import Verification

#: The name of the benchmark on the command line (``miro eval --benchmark compositional``).
BENCHMARK_NAME = "compositional"
#: Category of a prompt that is outside the shapes-world grammar (scored by rewards, not by the verifier).
OTHER = "other"


def benchmark_items(per_category: int = 8, seed: int = 0) -> tuple[list[str], list[str]]:
    """The benchmark's prompts and their categories, category by category in :data:`KINDS` order."""
    by_kind = benchmark_prompts(per_category=per_category, seed=seed)
    prompts = [p for kind in KINDS for p in by_kind[kind]]
    categories = [kind for kind in KINDS for _ in by_kind[kind]]
    return prompts, categories


def prompt_category(prompt: str) -> str:
    """The prompt's caption kind, or :data:`OTHER` for text outside the shapes-world grammar."""
    try:
        return caption_kind(prompt)
    except CaptionParseError:
        return OTHER


def verify_all(images: Sequence[Any], prompts: Sequence[str]) -> list[Verification | None]:
    """Each image verified against its prompt; ``None`` where the prompt is outside the shapes-world grammar.

    The verifications keep their detections, so callers that also count recognisable shapes
    (``miro eval``) detect each image once.
    """
    from miro_core.shapes.verify import verify

    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    out: list[Verification | None] = []
    for image, prompt in zip(images, prompts):
        try:
            out.append(verify(image, prompt))
        except CaptionParseError:
            out.append(None)
    return out


def outcomes(verifications: Sequence[Verification | None]) -> list[bool | None]:
    """GenEval's binary success per image: all of the prompt's claims hold (``None``: not judged)."""
    return [None if v is None else bool(v.passed) for v in verifications]


def judge(images: Sequence[Any], prompts: Sequence[str]) -> list[bool | None]:
    """GenEval's binary success per image: all of the prompt's claims hold in the image.

    ``None`` where the prompt is outside the shapes-world grammar (the verifier cannot judge it).
    """
    return outcomes(verify_all(images, prompts))


def _ordered(categories: Sequence[str]) -> list[str]:
    present = set(categories)
    known = [k for k in KINDS if k in present]
    return known + sorted(present - set(KINDS))


def category_accuracy(passed: Sequence[bool | None], categories: Sequence[str]) -> dict[str, Any]:
    """Per-category accuracy (fraction of judged images that passed) and the overall mean of categories.

    Returns ``{"categories": {KIND: {"accuracy", "passed", "images", "stderr"}}, "overall": float,
    "images": int}``. Images whose prompt could not be judged (``None``) are left out; categories with no
    judged image are left out, and ``overall`` is NaN when none is left. ``stderr`` is the binomial
    standard error of the category's accuracy.
    """
    if len(passed) != len(categories):
        raise ValueError(f"{len(passed)} verdicts but {len(categories)} categories")
    table: dict[str, dict[str, float]] = {}
    for category in _ordered(categories):
        verdicts = [bool(p) for p, c in zip(passed, categories) if c == category and p is not None]
        if not verdicts:
            continue
        accuracy = sum(verdicts) / len(verdicts)
        table[category] = {
            "accuracy": accuracy,
            "passed": sum(verdicts),
            "images": len(verdicts),
            "stderr": math.sqrt(accuracy * (1.0 - accuracy) / len(verdicts)),
        }
    overall = sum(v["accuracy"] for v in table.values()) / len(table) if table else float("nan")
    return {"categories": table, "overall": overall, "images": sum(int(v["images"]) for v in table.values())}

"""Checking a caption against an image: parse the claims, detect the shapes, judge each claim.

The result keeps every claim with its verdict, the caption's kind and the detections, because the same
function serves two users: the alignment reward (which wants the fraction of claims that hold) and the
GenEval-like compositional benchmark (which wants per-category, all-claims-hold accuracy and a way to see
why an image failed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from miro_core.shapes.captions import Claim, parse_plan
from miro_core.shapes.detect import Detection, detect_shapes
from miro_core.shapes.geometry import relation_holds


@dataclass(frozen=True)
class ClaimResult:
    """One claim, whether it holds in the image, and how many detections matched its subject."""

    claim: Claim
    holds: bool
    matches: int

    def as_json(self) -> dict[str, Any]:
        return {"claim": self.claim.text(), "holds": self.holds, "matches": self.matches, **self.claim.as_json()}


@dataclass(frozen=True)
class Verification:
    """The verdict on one (image, caption) pair."""

    caption: str
    kind: str
    claims: tuple[ClaimResult, ...]
    detections: tuple[Detection, ...]

    @property
    def score(self) -> float:
        """Fraction of the caption's claims that hold, in [0, 1]."""
        return sum(r.holds for r in self.claims) / len(self.claims)

    @property
    def passed(self) -> bool:
        """Whether every claim holds (GenEval's per-image success)."""
        return all(r.holds for r in self.claims)

    def as_json(self) -> dict[str, Any]:
        return {
            "caption": self.caption,
            "kind": self.kind,
            "score": self.score,
            "passed": self.passed,
            "claims": [r.as_json() for r in self.claims],
            "detections": [d.as_json() for d in self.detections],
        }


def check_claim(claim: Claim, detections: Sequence[Detection]) -> ClaimResult:
    """Judge one claim against a list of detections."""
    subjects = [d for d in detections if claim.subject.matches(d.shape, d.colour)]
    if claim.kind == "exists":
        return ClaimResult(claim, len(subjects) >= claim.count, len(subjects))
    if claim.kind == "count":
        return ClaimResult(claim, len(subjects) == claim.count, len(subjects))
    if claim.kind == "relation":
        assert claim.other is not None and claim.relation is not None
        others = [d for d in detections if claim.other.matches(d.shape, d.colour)]
        holds = any(a is not b and relation_holds(a.box, b.box, claim.relation) for a in subjects for b in others)
        return ClaimResult(claim, holds, len(subjects))
    raise ValueError(f"unknown claim kind {claim.kind!r}")


def verify(
    image: Image.Image | np.ndarray, caption: str, detections: Sequence[Detection] | None = None
) -> Verification:
    """Verify ``caption`` against ``image``; raises CaptionParseError if the caption is outside the grammar.

    Pass ``detections`` to reuse a detection across several captions of the same image.
    """
    plan = parse_plan(caption)
    found = tuple(detect_shapes(image) if detections is None else detections)
    results = tuple(check_claim(claim, found) for claim in plan.claims())
    return Verification(caption=caption, kind=plan.kind, claims=results, detections=found)

"""The caption language of the shapes world: writing captions, parsing them back into claims, and kinds.

Grammar (case-insensitive; an optional lead-in such as "a photo of" and a final "." are ignored)::

    caption  := phrase | phrase "and" phrase | phrase RELATION phrase
    phrase   := DETERMINER [COLOUR] SHAPE          # "a red circle", "three green triangles"
    DETERMINER := "a" | "an" | "one" | "two" ... "ten" | digits
    RELATION := "left of" | "right of" | "above" | "below"  (+ synonyms such as "to the left of")

A caption is turned into *claims* the image must satisfy: object existence (at least one matching
object), exact counts (for a number of two or more) and relative positions (a matching pair in that
relation). The same claims drive the alignment reward and the compositional benchmark, so both judge a
caption the same way. Caption *kinds* follow GenEval's six categories and are derived from the text alone,
so a caption's kind is the same whether it came from the generator, a user or the benchmark.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from typing import Any

from miro_core.shapes.geometry import RELATIONS
from miro_core.shapes.palette import COLOUR_NAMES, SHAPES

#: The six caption kinds (GenEval's categories), in a fixed order.
KINDS: tuple[str, ...] = (
    "single_object",  # "a circle"
    "colours",  # "a red circle"
    "counting",  # "three green triangles" / "three triangles"
    "two_objects",  # "a circle and a square"
    "colour_attribution",  # "a red circle and a blue square"
    "position",  # "a red circle left of a yellow square"
)

NUMBER_WORDS: dict[str, int] = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_WORD_FOR_NUMBER = {v: k for k, v in NUMBER_WORDS.items()}

#: Relation phrasings accepted by the parser (token tuples) -> canonical relation.
RELATION_SYNONYMS: dict[tuple[str, ...], str] = {
    ("left", "of"): "left of",
    ("to", "the", "left", "of"): "left of",
    ("on", "the", "left", "of"): "left of",
    ("right", "of"): "right of",
    ("to", "the", "right", "of"): "right of",
    ("on", "the", "right", "of"): "right of",
    ("above",): "above",
    ("over",): "above",
    ("below",): "below",
    ("under",): "below",
    ("beneath",): "below",
}
_LEAD_INS = ("a photo of", "a picture of", "an image of", "a drawing of", "a rendering of")


class CaptionParseError(ValueError):
    """The text is not a caption of the shapes-world grammar (unknown word, missing part, extra words)."""


@dataclass(frozen=True)
class ObjectRef:
    """A description of one kind of object; ``colour`` is None when the caption does not name one."""

    shape: str
    colour: str | None = None

    def matches(self, shape: str, colour: str) -> bool:
        return shape == self.shape and (self.colour is None or colour == self.colour)

    def words(self, plural: bool = False) -> str:
        noun = self.shape + ("s" if plural else "")
        return f"{self.colour} {noun}" if self.colour else noun


@dataclass(frozen=True)
class Claim:
    """One checkable statement a caption makes.

    - ``exists``: at least ``count`` objects match ``subject``.
    - ``count``: exactly ``count`` objects match ``subject``.
    - ``relation``: some object matching ``subject`` stands in ``relation`` to another matching ``other``.
    """

    kind: str
    subject: ObjectRef
    count: int = 1
    relation: str | None = None
    other: ObjectRef | None = None

    def text(self) -> str:
        if self.kind == "relation":
            assert self.other is not None
            return f"a {self.subject.words()} {self.relation} a {self.other.words()}"
        if self.kind == "count":
            return f"exactly {self.count} {self.subject.words(plural=self.count != 1)}"
        if self.count == 1:
            return f"a {self.subject.words()}"
        return f"at least {self.count} {self.subject.words(plural=True)}"

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NounPhrase:
    """A number and an object description, as in "three green triangles"."""

    count: int
    ref: ObjectRef

    def text(self) -> str:
        if self.count == 1:
            return f"a {self.ref.words()}"
        number = _WORD_FOR_NUMBER.get(self.count, str(self.count))
        return f"{number} {self.ref.words(plural=True)}"


@dataclass(frozen=True)
class CaptionPlan:
    """The structure of a caption: one or two noun phrases, optionally joined by a relation."""

    phrases: tuple[NounPhrase, ...]
    relation: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= len(self.phrases) <= 2:
            raise ValueError("a caption has one or two noun phrases")
        if self.relation is not None and (len(self.phrases) != 2 or self.relation not in RELATIONS):
            raise ValueError(f"a relation needs two phrases and one of {RELATIONS}")

    def text(self) -> str:
        if len(self.phrases) == 1:
            return self.phrases[0].text()
        joiner = self.relation or "and"
        return f"{self.phrases[0].text()} {joiner} {self.phrases[1].text()}"

    @property
    def kind(self) -> str:
        if self.relation is not None:
            return "position"
        if len(self.phrases) == 2:
            named = all(p.ref.colour is not None for p in self.phrases)
            return "colour_attribution" if named else "two_objects"
        phrase = self.phrases[0]
        if phrase.count >= 2:
            return "counting"
        return "colours" if phrase.ref.colour is not None else "single_object"

    def claims(self) -> list[Claim]:
        if len(self.phrases) == 2 and self.relation is None:
            a, b = self.phrases
            if a.count == 1 and b.count == 1 and a.ref == b.ref:
                # "a red square and a red square": two distinct matching objects are needed.
                return [Claim("exists", a.ref, count=2)]
        claims = [
            Claim("count", p.ref, count=p.count) if p.count >= 2 else Claim("exists", p.ref) for p in self.phrases
        ]
        if self.relation is not None:
            claims.append(Claim("relation", self.phrases[0].ref, relation=self.relation, other=self.phrases[1].ref))
        return claims


def _tokens(text: str) -> list[str]:
    cleaned = text.strip().lower().rstrip(".!").strip()
    for lead in _LEAD_INS:
        if cleaned.startswith(lead + " "):
            cleaned = cleaned[len(lead) :].strip()
            break
    if not cleaned:
        raise CaptionParseError("empty caption")
    tokens = re.split(r"[\s,]+", cleaned)
    return [t for t in tokens if t]


def _parse_phrase(tokens: list[str], pos: int, text: str) -> tuple[NounPhrase, int]:
    if pos >= len(tokens):
        raise CaptionParseError(f"caption {text!r} ends where an object was expected")
    det = tokens[pos]
    if det in ("a", "an"):
        count = 1
    elif det in NUMBER_WORDS:
        count = NUMBER_WORDS[det]
    elif det.isdigit() and int(det) >= 1:
        count = int(det)
    else:
        raise CaptionParseError(f"expected 'a' or a number, got {det!r} in {text!r}")
    pos += 1
    colour = None
    if pos < len(tokens) and tokens[pos] in COLOUR_NAMES:
        colour = tokens[pos]
        pos += 1
    if pos >= len(tokens):
        raise CaptionParseError(f"caption {text!r} ends where a shape was expected")
    noun = tokens[pos]
    shape = noun[:-1] if noun.endswith("s") and noun[:-1] in SHAPES else noun
    if shape not in SHAPES:
        raise CaptionParseError(
            f"expected a shape, got {noun!r} in {text!r}; shapes: {', '.join(SHAPES)}; "
            f"colours: {', '.join(COLOUR_NAMES)}"
        )
    return NounPhrase(count, ObjectRef(shape, colour)), pos + 1


def parse_plan(text: str) -> CaptionPlan:
    """Parse a caption into its :class:`CaptionPlan`; raises :class:`CaptionParseError` on anything else."""
    if not isinstance(text, str):
        raise CaptionParseError(f"caption must be a string, got {type(text).__name__}")
    tokens = _tokens(text)
    first, pos = _parse_phrase(tokens, 0, text)
    if pos == len(tokens):
        return CaptionPlan((first,))
    relation = None
    if tokens[pos] == "and":
        pos += 1
    else:
        for words, canonical in RELATION_SYNONYMS.items():
            if tuple(tokens[pos : pos + len(words)]) == words:
                relation = canonical
                pos += len(words)
                break
        else:
            raise CaptionParseError(f"expected 'and' or a relation, got {tokens[pos]!r} in {text!r}")
    second, pos = _parse_phrase(tokens, pos, text)
    if pos != len(tokens):
        raise CaptionParseError(f"unexpected words {' '.join(tokens[pos:])!r} at the end of {text!r}")
    return CaptionPlan((first, second), relation)


def parse_caption(text: str) -> list[Claim]:
    """The claims a caption makes; raises :class:`CaptionParseError` for text outside the grammar."""
    return parse_plan(text).claims()


def caption_kind(text: str) -> str:
    """The caption's kind (one of :data:`KINDS`); raises :class:`CaptionParseError` if unparseable."""
    return parse_plan(text).kind


def _all_prompts(category: str) -> list[str]:
    """Every distinct benchmark prompt of a category (GenEval-style phrasing, colours only where tested)."""
    shape_pairs = [(a, b) for a in SHAPES for b in SHAPES if a != b]
    if category == "single_object":
        plans = [CaptionPlan((NounPhrase(1, ObjectRef(s)),)) for s in SHAPES]
    elif category == "colours":
        plans = [CaptionPlan((NounPhrase(1, ObjectRef(s, c)),)) for c in COLOUR_NAMES for s in SHAPES]
    elif category == "counting":
        plans = [CaptionPlan((NounPhrase(n, ObjectRef(s)),)) for n in (2, 3, 4) for s in SHAPES]
    elif category == "two_objects":
        plans = [CaptionPlan((NounPhrase(1, ObjectRef(a)), NounPhrase(1, ObjectRef(b)))) for a, b in shape_pairs]
    elif category == "colour_attribution":
        plans = [
            CaptionPlan((NounPhrase(1, ObjectRef(a, ca)), NounPhrase(1, ObjectRef(b, cb))))
            for a, b in shape_pairs
            for ca in COLOUR_NAMES
            for cb in COLOUR_NAMES
            if ca != cb
        ]
    elif category == "position":
        plans = [
            CaptionPlan((NounPhrase(1, ObjectRef(a)), NounPhrase(1, ObjectRef(b))), relation=r)
            for a, b in shape_pairs
            for r in RELATIONS
        ]
    else:
        raise ValueError(f"unknown category {category!r}; known: {', '.join(KINDS)}")
    return [p.text() for p in plans]


def benchmark_prompts(per_category: int = 16, seed: int = 0) -> dict[str, list[str]]:
    """A fixed list of ``per_category`` evaluation prompts for each of the six :data:`KINDS`.

    Prompts are drawn without replacement from every distinct prompt of the category in a seeded order;
    categories with fewer distinct prompts than asked (single object has three) cycle through them, so
    each category has exactly ``per_category`` prompts and the categories weigh equally.
    """
    if per_category < 1:
        raise ValueError("per_category must be at least 1")
    out: dict[str, list[str]] = {}
    for index, category in enumerate(KINDS):
        prompts = _all_prompts(category)
        random.Random(f"benchmark:{seed}:{index}").shuffle(prompts)
        out[category] = [prompts[i % len(prompts)] for i in range(per_category)]
    return out

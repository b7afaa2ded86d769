"""The boundary between the engine and a reward plugin: what ``score()`` must return, and inputs it cannot spoil.

The contract (see :class:`miro_core.rewards.RewardModel`): ``score(images, captions)`` and
``score_prepared(prepared)`` return a *sequence* (list, tuple, 1-D numpy array or tensor) with one value
per sample. The engine enforces it in two tiers:

- **Shape** (:func:`check_result`): anything else -- a bare float, ``None``, a string, a dict, a 2-D
  array, one value too many or too few -- is a bug in the plugin. It raises
  :class:`~miro_core.errors.RewardContractError` naming the reward and its distribution, and the run stops
  at once rather than turning every row into a confusing error (rows already saved are kept).
- **Values** (:func:`as_score`): each value must be a finite real number. NaN is the documented "cannot
  score this sample"; ``+inf``/``-inf``, ``None``, strings, booleans and other objects are row-level
  errors. All of them are stored as NaN, which bins and training read as a missing reward.

Inputs: every reward gets its own read-only views of the decoded images (:func:`read_only_views`).
A view shares the pixels (no copy, so no cost), and Pillow copies the pixels before any in-place change
to a read-only image (``paste``, ``putpixel``, ``putalpha``, ``ImageDraw``, ``thumbnail`` replace the
view's own data). The in-place methods Pillow does not guard that way (``frombytes``, ``putpalette``,
``apply_transparency``) are guarded on each view, so one reward cannot change what the next one sees;
:func:`was_modified` tells the engine a reward tried, so it can name it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from miro_core.errors import RewardContractError

CONTRACT = (
    "{method}() must return one float per sample (a list, tuple, 1-D array or tensor of length N; NaN where "
    "the reward cannot score a sample)"
)


def describe_reward(reward: Any, provenance: dict[str, Any] | None = None) -> str:
    """``reward 'x' (distribution 1.2, plugin 'p')`` or ``reward 'x' (module.Class)`` when not registered."""
    name = getattr(reward, "name", "") or type(reward).__name__
    if provenance and provenance.get("distribution") not in (None, "?"):
        return (
            f"reward {name!r} ({provenance['distribution']} {provenance.get('distribution_version', '?')}, "
            f"plugin {provenance.get('plugin')!r})"
        )
    cls = type(reward)
    return f"reward {name!r} ({cls.__module__}.{cls.__qualname__})"


def _short(value: Any) -> str:
    from miro_core.data.decode import strip_addresses

    text = strip_addresses(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


ANNOTATION_STOPPED = (
    "The run stopped; rows already saved are kept, and a rerun after the plugin is fixed continues"
)


def check_result(
    result: Any, expected: int, who: str, method: str = "score", consequence: str = ANNOTATION_STOPPED
) -> list[Any]:
    """The values of a reward's result as a list of length ``expected``, or RewardContractError."""
    problem = None
    values: list[Any] | None = None
    if result is None:
        problem = "returned None"
    elif isinstance(result, (str, bytes, dict, set, frozenset)):
        problem = f"returned a {type(result).__name__} ({_short(result)})"
    elif isinstance(result, (int, float)) or _is_scalar_array(result):
        problem = f"returned a single value ({_short(_item(result))}), not a sequence"
    elif hasattr(result, "ndim") and hasattr(result, "tolist"):  # numpy arrays and torch tensors
        if result.ndim != 1:
            problem = f"returned an array of shape {tuple(result.shape)}, not 1-D"
        else:
            values = list(result.tolist())
    elif isinstance(result, Sequence):
        values = list(result)
    else:
        problem = f"returned a {type(result).__name__}, not a sequence (return a list)"
    if values is not None and len(values) != expected:
        problem = f"returned {len(values)} scores for {expected} samples"
    if problem is not None:
        raise RewardContractError(
            f"{who} broke the reward contract: {method}() {problem}; {CONTRACT.format(method=method)}. "
            f"{consequence}"
        )
    return values  # type: ignore[return-value]


def finite_scores(result: Any, expected: int, who: str, consequence: str) -> list[float]:
    """A batch result checked as annotation checks it, every value not a finite float as NaN (eval, serve)."""
    return [as_score(value)[0] for value in check_result(result, expected, who, consequence=consequence)]


def _is_scalar_array(value: Any) -> bool:
    return hasattr(value, "ndim") and getattr(value, "ndim", None) == 0


def _item(value: Any) -> Any:
    return value.item() if hasattr(value, "item") and _is_scalar_array(value) else value


def as_score(value: Any) -> tuple[float, str | None]:
    """(the float to store, None) for a finite score; (NaN, reason) for anything else."""
    import numbers

    if hasattr(value, "tolist") and not isinstance(value, (bool, numbers.Number)):  # numpy / torch values
        listed = value.tolist()
        if isinstance(listed, list):
            if len(listed) != 1 or isinstance(listed[0], list):
                return math.nan, f"score is an array of {len(listed)} values, not a float"
            listed = listed[0]
        value = listed
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return math.nan, f"score is a bool ({value}), not a float"
    if value is None:
        return math.nan, "score is None, not a float"
    if isinstance(value, numbers.Real):
        try:
            number = float(value)
        except OverflowError:  # an int (or Fraction) beyond the float range
            return math.nan, "score is beyond the float range, not a finite float"
        if math.isnan(number):
            return math.nan, "score is NaN"
        if math.isinf(number):
            return math.nan, f"score is {'+' if number > 0 else '-'}inf, not a finite float"
        return number, None
    return math.nan, f"score is a {type(value).__name__} ({_short(value)}), not a float"


def read_only_view(image: Any) -> Any:
    """A view of ``image`` that shares its pixels but cannot change them (see the module docstring)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        try:
            image.load()
            view = image._new(image.im)  # noqa: SLF001 - Pillow's own "new Image object on this core"
        except Exception:  # noqa: BLE001 - an image Pillow cannot share: give a private copy instead
            return image.copy()
        view.readonly = 1
        for method in UNGUARDED_METHODS:
            _guard(view, method)
        return view
    if hasattr(image, "flags") and hasattr(image, "view"):  # a numpy array
        array = image.view()
        array.flags.writeable = False
        return array
    return image


#: In-place ``PIL.Image.Image`` methods that write into the shared pixel store (or palette) of a read-only
#: image without copying it first (Pillow 12): a view copies its pixels before calling them.
UNGUARDED_METHODS = ("frombytes", "putpalette", "apply_transparency")


def _guard(view: Any, method: str) -> None:
    """Make ``view.method`` copy the shared pixels first (which also marks the view as modified)."""
    original = getattr(view, method, None)
    if original is None:
        return

    def guarded(*args: Any, **kwargs: Any) -> Any:
        view._ensure_mutable()  # noqa: SLF001 - Pillow's own copy-on-write for read-only images
        return original(*args, **kwargs)

    setattr(view, method, guarded)  # an instance attribute: pickling an Image never includes it


def read_only_views(images: Sequence[Any]) -> list[Any]:
    """A fresh list of read-only views, one per image (a reward may even reorder or replace list items)."""
    return [read_only_view(image) for image in images]


def was_modified(views: Sequence[Any]) -> bool:
    """Whether a reward changed any of its views (Pillow made the view writable by copying its pixels)."""
    from PIL import Image

    return any(isinstance(v, Image.Image) and not v.readonly for v in views)

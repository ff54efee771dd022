"""include / exclude patterns of patch_model: PEFT's matching, extended to the modules inside a match."""

from __future__ import annotations

import re

import pytest
from torch import nn

from bittensor_core.errors import PackedBoolTypeError, PackedBoolValueError
from integrations.module_filter import ModuleFilter


def _model() -> nn.Module:
    """Names: encoder, encoder.layer, encoder.layer.{0,1}, encoder.layer.{0,1}.{attn,mlp}, ....attn.dropout, head."""
    block = lambda: nn.ModuleDict({"attn": nn.ModuleDict({"dropout": nn.Dropout()}), "mlp": nn.Linear(2, 2)})  # noqa: E731
    return nn.ModuleDict(
        {"encoder": nn.ModuleDict({"layer": nn.ModuleList([block(), block()])}), "head": nn.Linear(2, 2)}
    )


def test_a_regex_matches_whole_names_and_covers_what_is_inside() -> None:
    scope = ModuleFilter(_model(), include=r"encoder\.layer\.0")
    assert scope.packs("encoder.layer.0") and scope.packs("encoder.layer.0.attn.dropout")
    assert (
        not scope.packs("encoder.layer.1.attn.dropout")
        and not scope.packs("head")
        and not scope.packs("encoder")
    )
    pattern = r"layer\.0"  # re.fullmatch, as PEFT: no partial match
    with pytest.raises(PackedBoolValueError, match=re.escape(f"include={pattern!r} matches no module name")):
        ModuleFilter(_model(), include=pattern)


def test_a_list_matches_names_by_suffix_after_a_dot() -> None:
    scope = ModuleFilter(_model(), exclude=["attn", "layer.1"])
    assert not scope.packs("encoder.layer.0.attn") and not scope.packs("encoder.layer.0.attn.dropout")
    assert not scope.packs("encoder.layer.1.mlp")
    assert scope.packs("encoder.layer.0.mlp") and scope.packs("head") and scope.packs("")
    with pytest.raises(PackedBoolValueError, match=r"\['ttn'\] names no module"):
        ModuleFilter(_model(), exclude=["ttn"])  # a suffix starts after a dot


def test_include_and_exclude_combine() -> None:
    scope = ModuleFilter(_model(), include=["layer"], exclude=r".*\.attn")
    assert scope.packs("encoder.layer.1.mlp") and not scope.packs("encoder.layer.1.attn.dropout")
    assert not scope.packs("head")


def test_no_filter_packs_everything_and_bad_types_raise() -> None:
    assert ModuleFilter(_model()).packs("encoder.layer.0.attn.dropout")
    with pytest.raises(PackedBoolTypeError, match=r"exclude=\[1\]"):
        ModuleFilter(_model(), exclude=[1])

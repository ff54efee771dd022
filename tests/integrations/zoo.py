"""The model zoo: every architecture of the installed transformers that has a dropout probability in its
config, built tiny, trained stock and patched, and compared.

- `discover()` reads transformers' own auto mappings (one trainable head per model type, never a hand
  list) and keeps the model types whose default config sets a dropout probability.
- `tiny_config()` shrinks every size field of the default config (sub-configs too) and sets every
  dropout / layerdrop / drop-path probability to `P`.
- `check()` trains a model and a patched deep copy of it `STEPS` AdamW steps from the same seeds and
  records, from the first forward: what each side leaves alive for backward (every storage an op makes,
  by weak reference), which masks were packed where (hooks), and what `report` says.

Run ``python -m tests.integrations.zoo --markdown`` to rewrite the table in docs/huggingface.md.
"""

from __future__ import annotations

import copy
import re
import weakref
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from bittensor_core import PackedBool

from .zoo_exclusions import EXCLUDED

B, S, IMAGE = 2, 16, 32  # batch, sequence, image side
VOCAB, P, STEPS = 128, 0.1, 3
# Head mappings of transformers.models.auto.modeling_auto, in order of preference: the first that has a
# model type gives its class. Seq2seq first: it runs encoder, decoder and cross-attention.
HEADS = (
    ("seq2seq", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("masked-lm", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    ("causal-lm", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("classification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("image-classification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
)
DROPOUT = re.compile(r"dropout|layerdrop|drop_path|drop_rate|attn_pdrop|resid_pdrop|embd_pdrop")
# Size fields of transformers configs, by name -> the tiny value each gets.
_SIZES = (
    (
        32,
        "hidden_size d_model n_embd embed_dim embedding_size word_embed_proj_dim dim d_embed projection_dim",
    ),
    (
        64,
        "intermediate_size ffn_dim encoder_ffn_dim decoder_ffn_dim d_ff n_inner hidden_dim d_inner"
        " moe_intermediate_size shared_expert_intermediate_size decoder_hidden_size",
    ),
    (
        2,
        "num_hidden_layers num_layers n_layer n_layers encoder_layers decoder_layers num_decoder_layers"
        " num_encoder_layers num_key_value_heads num_kv_heads multi_query_group_num num_experts_per_tok top_k",
    ),
    (
        4,
        "num_attention_heads n_head n_heads encoder_attention_heads decoder_attention_heads num_heads"
        " num_experts num_local_experts n_routed_experts patch_size",
    ),
    (8, "head_dim d_head d_kv attention_head_size kv_channels qk_nope_head_dim qk_rope_head_dim v_head_dim"),
    (4, "rotary_dim mamba_n_heads window_size"),
    (1, "depths"),
    (VOCAB, "vocab_size decoder_vocab_size vocab_size_per_layer_input"),
    (IMAGE, "image_size"),
)
SIZE_OF = {name: size for size, names in _SIZES for name in names.split()}
LAYERS = SIZE_OF["num_hidden_layers"]
_LAYER_COUNTS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
_HEAD_COUNTS = ("num_attention_heads", "n_head", "n_heads")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads", "multi_query_group_num")
# Reformer: axial position embeddings whose factors multiply to the sequence and add up to the width.
_FIXED = {
    "axial_pos_shape": [4, S // 4],
    "axial_pos_embds_dim": [16, 16],
    "lsh_attn_chunk_length": 4,
    "local_attn_chunk_length": 4,
}
# Derived from other fields when left out (stale once the sizes shrink).
_DERIVED = ("out_features", "out_indices", "stage_names")
MAX_POSITIONS = 512


@dataclass(frozen=True)
class Entry:
    """A model type and the head class it is trained with."""

    model_type: str
    head: str  # a key of HEADS
    class_name: str

    def model_class(self) -> type[nn.Module]:
        import transformers

        return getattr(transformers, self.class_name)


def discover() -> dict[str, Entry]:
    """Every model type with a trainable head in transformers' auto mappings, the first head of `HEADS`
    it has, keeping those whose default config sets a dropout probability."""
    from transformers.models.auto import modeling_auto

    out: dict[str, Entry] = {}
    for head, mapping in HEADS:
        for model_type, names in getattr(modeling_auto, mapping).items():
            if model_type not in out:  # a tuple of names: the first is the default class
                out[model_type] = Entry(model_type, head, names if isinstance(names, str) else names[0])
    return {t: e for t, e in sorted(out.items()) if dropout_fields(t)}


def default_config(model_type: str) -> dict[str, Any]:
    from transformers import CONFIG_MAPPING

    return CONFIG_MAPPING[model_type]().to_dict()


def dropout_fields(model_type: str) -> list[str]:
    """Dotted names of the dropout probabilities the default config of `model_type` has (None: unset)."""
    try:
        config = default_config(model_type)
    except Exception:  # a config that cannot even be built by default is reported by the test
        return ["?"]
    return [name for name, value in _leaves(config) if _is_dropout(name.rpartition(".")[2], value)]


def _is_dropout(key: str, value: Any) -> bool:
    return bool(DROPOUT.search(str(key))) and (
        value is None or (isinstance(value, float) and not isinstance(value, bool))
    )


def _leaves(config: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in config.items():
        if isinstance(value, dict):
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def _shrink(config: dict) -> dict:
    """`config` (a to_dict) with every size field tiny and every dropout probability `P`. Per-layer lists
    (as long as the layer count) keep two layers: the first of each kind `layer_types` names."""
    layers = next((v for k, v in config.items() if k in _LAYER_COUNTS and isinstance(v, int)), None)
    kinds = (
        config.get("layer_types") if isinstance(config.get("layer_types"), list) else list(range(layers or 0))
    )
    keep = sorted({kinds.index(kind) for kind in kinds})[:LAYERS]
    keep += [i for i in range(LAYERS) if i not in keep][: LAYERS - len(keep)]
    token_ids = iter(range(3, 16))
    out = {}
    for key, value in config.items():
        if isinstance(value, list) and layers and len(value) == layers > LAYERS:
            value = [value[i] for i in keep]
        if isinstance(value, dict) and layers and value and all(str(k).isdigit() for k in value):  # by layer
            value = {type(k)(keep.index(int(k))): v for k, v in value.items() if int(k) in keep}
        if key in _DERIVED:
            continue
        if isinstance(value, dict) and key not in ("rope_scaling", "rope_parameters", "id2label", "label2id"):
            value = _shrink(value)
        elif _is_dropout(key, value):
            value = P
        elif isinstance(value, bool):
            pass
        elif key in SIZE_OF and isinstance(value, int):
            value = SIZE_OF[key]
        elif key in SIZE_OF and isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            value = [SIZE_OF[key]] * len(value)
        elif key == "max_position_embeddings" and isinstance(value, int) and value > MAX_POSITIONS:
            value = MAX_POSITIONS
        elif key in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
            value = (
                {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}.get(key, 0)
                if value is not None
                else None
            )
        elif (key.endswith("_token_id") or key.endswith("_token_index")) and isinstance(value, int):
            value = next(token_ids)
        elif key in _FIXED:
            value = _FIXED[key]
        out[key] = value
    heads = [k for k in _HEAD_COUNTS if isinstance(config.get(k), int)]
    for kv in _KV_HEADS:  # multi-head attention stays multi-head (MLA needs it): kv heads = heads
        if isinstance(config.get(kv), int) and heads and config[kv] == config[heads[0]]:
            out[kv] = out[heads[0]]
    return out


def tiny_config(entry: Entry):
    """The default config of `entry`'s model type, shrunk (see `_shrink`), 2 labels."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[entry.model_type]
    config = cls.from_dict(_shrink(default_config(entry.model_type)))
    config.num_labels = 2
    if entry.head == "seq2seq" and getattr(config, "decoder_start_token_id", None) is None:
        config.decoder_start_token_id = getattr(config, "pad_token_id", None) or 0  # labels -> decoder inputs
    return config


def build(entry: Entry, impl: str | None = None, seed: int = 0) -> nn.Module:
    """A tiny `entry` model in train mode, `seed`'s weights, on attention implementation `impl`."""
    config = tiny_config(entry)
    torch.manual_seed(seed)
    kwargs = {} if impl is None else {"attn_implementation": impl}
    model = entry.model_class()._from_config(config, **kwargs).train()
    if type(model)._can_set_experts_implementation():  # what the packed router reproduces
        model.set_experts_implementation("grouped_mm")
    return model


def inputs(entry: Entry, model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """One training batch of `B` rows: token ids of length `S` (row 0 right-padded by a quarter) or
    `IMAGE`-sided images, and labels for the head."""
    gen = torch.Generator().manual_seed(seed)
    config = model.config
    if entry.head == "image-classification":
        channels = getattr(config, "num_channels", 3)
        return {
            "pixel_values": torch.randn(B, channels, IMAGE, IMAGE, generator=gen),
            "labels": torch.randint(0, 2, (B,), generator=gen),
        }
    vocab = getattr(config.get_text_config(), "vocab_size", VOCAB) or VOCAB
    ids = torch.randint(16, vocab, (B, S), generator=gen)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[0, S - S // 4 :] = 0
    if entry.head == "classification":
        labels = torch.randint(0, 2, (B,), generator=gen)
    else:
        labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


# ---- what one forward leaves alive, and what ran ---------------------------------------------------
@dataclass
class Kept:
    """A storage made by the forward pass and alive after it."""

    dtype: torch.dtype
    numel: int
    nbytes: int
    binary: bool  # bool, or two values one of which is 0 (a dropout noise, a float or 0/1 integer mask)
    ptr: int


class _Made(TorchDispatchMode):
    """Weak references to every storage an op makes while active (a PackedBool: its packed bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[tuple[weakref.ref, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, PackedBool):
                t = t.packed
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                self.made.append((weakref.ref(storage), t.dtype))
        return out

    def alive(self) -> list[tuple[weakref.ref, Kept]]:
        """The storages made and still alive, each once; after backward, those that have died since
        are what the graph kept (what survives backward is a cache or a result, not kept for it)."""
        out, seen = [], set()
        for ref, dtype in self.made:
            storage = ref()
            if storage is None or storage.nbytes() == 0 or storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            flat = torch.empty(0, dtype=dtype).set_(storage, 0, (storage.nbytes() // dtype.itemsize,))
            out.append((ref, Kept(dtype, flat.numel(), storage.nbytes(), _binary(flat), storage.data_ptr())))
        return out


def _binary(t: torch.Tensor) -> bool:
    if t.dtype == torch.bool:
        return True
    if t.is_complex():
        return False
    values = t.unique()
    return (
        len(values) == 2 and bool((values == 0).any()) and (t.is_floating_point() or int(values.max()) == 1)
    )


@dataclass
class Ran:
    """What the first patched forward did: PackedDropout modules run, attention modules run packed,
    functional dropout calls packed."""

    dropout: set[int] = field(default_factory=set)
    attention: set[int] = field(default_factory=set)
    functional_dropout: int = 0
    packed: set[int] = field(default_factory=set)  # storages kernels.pack made (bytes of 0/1 are no mask)


@contextmanager
def _observe(ran: Ran):
    """Hooks recording into `ran`: each module's forward on a stack; a PackedDropout that runs counts,
    and so does each functional dropout call the route packs; a mask packed (kernels.pack) inside an
    attention module (the outermost module whose class name says Attention) by neither of those counts
    for that module, and so does one whose submodules run inside a checkpoint (recomputed in backward,
    its dropout mask redrawn)."""
    from bittensor_core import kernels
    from integrations import functional_dropout
    from layers import PackedDropout
    from layers.checkpointing import inside_checkpoint

    stack: list[nn.Module] = []

    def attention() -> nn.Module | None:
        return next((m for m in stack if "Attention" in type(m).__name__), None)

    def enter(module: nn.Module, args: Any) -> None:
        stack.append(module)
        if isinstance(module, PackedDropout):
            ran.dropout.add(id(module))
        elif inside_checkpoint() and (outer := attention()) is not None and outer is not module:
            ran.attention.add(id(outer))

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        stack.pop()

    pack, dropout_with = kernels.pack, functional_dropout.dropout_with

    functional: list[bool] = []  # inside a functional dropout call the route packs

    def counted_pack(*args: Any, **kwargs: Any) -> torch.Tensor:
        dropout = functional or any(isinstance(m, PackedDropout) for m in stack)
        if not dropout and (outer := attention()) is not None:
            ran.attention.add(id(outer))
        out = pack(*args, **kwargs)
        ran.packed.add(out.untyped_storage().data_ptr())
        return out

    def counted_dropout(*args: Any, **kwargs: Any) -> torch.Tensor:
        ran.functional_dropout += 1
        functional.append(True)
        try:
            return dropout_with(*args, **kwargs)
        finally:
            functional.pop()

    with ExitStack() as undo:
        undo.enter_context(nn.modules.module.register_module_forward_pre_hook(enter))
        undo.enter_context(nn.modules.module.register_module_forward_hook(leave, always_call=True))
        kernels.pack, functional_dropout.dropout_with = counted_pack, counted_dropout
        undo.callback(setattr, kernels, "pack", pack)
        undo.callback(setattr, functional_dropout, "dropout_with", dropout_with)
        yield


# ---- the checks ------------------------------------------------------------------------------------
@dataclass
class Result:
    """The zoo's findings for one (model type, implementation)."""

    model_type: str
    impl: str
    head: str
    mismatch: str | None = None  # first loss / gradient / parameter differing, or None: bit-identical
    unpacked_masks: list[tuple[str, int]] = field(default_factory=list)  # (dtype, numel) kept, >= B*S
    float_bytes: tuple[int, int] = (0, 0)  # kept by stock, by patched
    kept_bytes: tuple[int, int] = (0, 0)
    report: dict[str, int] = field(default_factory=dict)
    observed: dict[str, int] = field(default_factory=dict)
    restored: str | None = None  # what unpatch_model did not restore, or None

    @property
    def ratio(self) -> float:
        return self.kept_bytes[1] / self.kept_bytes[0]

    def packed(self) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in self.report.items() if n) or "nothing"


def implementations(entry: Entry) -> list[str]:
    """The model's default attention implementation, and "eager" if that differs."""
    default = build(entry).config._attn_implementation
    return [default] if default == "eager" else [default, "eager"]


def _structure(model: nn.Module) -> tuple:
    return (
        list(model.state_dict()),
        [(n, type(m)) for n, m in model.named_modules()],
        model.config._attn_implementation,
    )


def _first_difference(a: nn.Module, b: nn.Module, what: str) -> str | None:
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        if what == "grad" and (x.grad is None) != (y.grad is None):
            return f"{name}.grad present on one side only"
        if what == "grad" and x.grad is not None and not torch.equal(x.grad, y.grad):
            return f"{name}.grad"
        if what == "param" and not torch.equal(x, y):
            return name
    return None


def check(entry: Entry, impl: str) -> Result:
    """Train `entry` on `impl` stock and patched (a deep copy) for `STEPS` AdamW steps from the same
    seeds; census and observe the first forward of each; then unpatch. On one thread: tiny ops on
    several threads spend ten times the CPU time (and both sides run alike either way)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _check(entry, impl)
    finally:
        torch.set_num_threads(threads)


def _check(entry: Entry, impl: str) -> Result:
    from integrations.huggingface import patch_model, report, unpatch_model

    stock = build(entry, impl)
    patched = copy.deepcopy(stock)
    before = _structure(patched)
    patch_model(patched)
    result = Result(entry.model_type, impl, entry.head)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (stock, patched)]
    kept: list[list[Kept]] = []
    ran = Ran()
    for step in range(STEPS):
        batch = inputs(entry, stock, seed=step)
        losses = []
        for model, opt in zip((stock, patched), optimizers, strict=True):
            opt.zero_grad(set_to_none=True)
            torch.manual_seed(100 + step)
            with ExitStack() as first:
                if step == 0:
                    made = first.enter_context(_Made())
                    if model is patched:
                        first.enter_context(_observe(ran))
                loss = model(**batch).loss
            if step == 0:
                alive = made.alive()
                if model is patched:
                    result.report = dict(report(patched).replaced)
            loss.backward()
            losses.append(loss.detach())
            if step == 0:
                del loss
                kept.append([k for ref, k in alive if ref() is None])
            opt.step()
        if result.mismatch is None and not torch.equal(*losses):
            result.mismatch = f"loss at step {step}: {losses[0].item()} vs {losses[1].item()}"
        for what in ("grad", "param"):
            if result.mismatch is None and (name := _first_difference(stock, patched, what)):
                result.mismatch = f"{what} {name} at step {step}"
    result.observed = {
        "dropout": len(ran.dropout),
        "functional_dropout": ran.functional_dropout,
        "attention": len(ran.attention),
    }
    result.unpacked_masks = [
        (str(k.dtype).removeprefix("torch."), k.numel)
        for k in kept[1]
        if k.binary and k.numel >= B * S and k.ptr not in ran.packed
    ]
    result.float_bytes = tuple(sum(k.nbytes for k in side if k.dtype.is_floating_point) for side in kept)
    result.kept_bytes = tuple(sum(k.nbytes for k in side) for side in kept)
    unpatch_model(patched)
    after = _structure(patched)
    if after != before:
        result.restored = next(
            what
            for what, x, y in zip(
                ("state_dict keys", "modules", "attn_implementation"), before, after, strict=True
            )
            if x != y
        )
    return result


def counts_agree(result: Result) -> bool:
    """The report counts what the first forward did (router aside: no census of it here)."""
    return all(result.report.get(kind, 0) == n for kind, n in result.observed.items())


# ---- the table in docs/huggingface.md --------------------------------------------------------------
DOC = "docs/huggingface.md"
BEGIN, END = "<!-- zoo-table:begin -->", "<!-- zoo-table:end -->"


def row(result: Result | str, model_type: str, impl: str) -> list[str]:
    """One table row: a `Result`, or the error a check raised."""
    if isinstance(result, str):
        return [model_type, impl, "-", f"error: {result}", "-", "-", "-", "-"]
    identical = "yes" if result.mismatch is None else f"no ({result.mismatch})"
    masks = ", ".join(f"{dtype} {n}" for dtype, n in result.unpacked_masks) or "none"
    report_true = "yes" if counts_agree(result) else f"no (ran: {result.observed})"
    floats = result.float_bytes[1] / result.float_bytes[0]
    return [
        model_type,
        impl,
        result.packed(),
        identical,
        masks,
        report_true,
        f"{floats:.2f}",
        f"{result.ratio:.2f}",
    ]


def table(rows: list[list[str]]) -> str:
    import transformers

    head = [
        "model type",
        "attention",
        "packed (report)",
        "bit-identical",
        "unpacked binary kept",
        "report true",
        "floats kept patched / stock",
        "all kept patched / stock",
    ]
    lines = [
        f"Generated by `python -m tests.integrations.zoo --markdown` with transformers "
        f"{transformers.__version__}, torch {torch.__version__} (CPU).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def main(argv: list[str] | None = None) -> None:
    """Run the zoo over every covered model type and rewrite the table in docs/huggingface.md (with
    --markdown); print each row as it is done."""
    import argparse
    import json
    import sys
    import warnings
    from pathlib import Path

    import transformers

    parser = argparse.ArgumentParser(prog="python -m tests.integrations.zoo")
    parser.add_argument("--markdown", action="store_true", help=f"rewrite the table in {DOC}")
    parser.add_argument(
        "--rows", type=Path, help="also save the rows as JSON here; read them from it if it exists"
    )
    parser.add_argument("model_types", nargs="*", help="only these (default: every covered model type)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    saved = json.loads(args.rows.read_text()) if args.rows and args.rows.exists() else {}
    entries = {
        t: e
        for t, e in discover().items()
        if t not in EXCLUDED and (not args.model_types or t in args.model_types)
    }
    rows = []
    for model_type, entry in entries.items():
        if model_type not in saved:
            saved[model_type] = []
            try:
                impls = implementations(entry)
            except Exception as exc:  # noqa: BLE001 - reported in the row
                impls, error = ["-"], f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
            for impl in impls:
                try:
                    saved[model_type].append(
                        row(check(entry, impl), model_type, impl)
                        if impl != "-"
                        else row(error, model_type, impl)
                    )
                except Exception as exc:  # noqa: BLE001 - reported in the row
                    saved[model_type].append(
                        row(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}", model_type, impl)
                    )
            if args.rows:
                args.rows.write_text(json.dumps(saved, indent=0))
        for cells in saved[model_type]:
            print(" | ".join(cells), file=sys.stderr, flush=True)
            rows.append(cells)
    if args.markdown:
        doc = Path(__file__).resolve().parents[2] / DOC
        text = doc.read_text()
        start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
        doc.write_text(text[:start] + "\n" + table(rows) + "\n" + text[stop:])


if __name__ == "__main__":
    main()

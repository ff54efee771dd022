"""Small randomly initialised transformers models and batches, one entry per architecture.

Every config has dropout 0.1 on hidden states and attention probabilities, hidden size 32,
2 layers, 4 heads, so each test runs in well under a second on CPU.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

VOCAB = 128


@dataclass(frozen=True)
class Arch:
    """An architecture under test: how to build it and what one training batch looks like."""

    name: str
    build: Callable[[], torch.nn.Module]
    batch: Callable[[int, int, torch.Generator], dict[str, torch.Tensor]]

    def model(self, seed: int = 0, attn_implementation: str | None = None) -> torch.nn.Module:
        """A fresh model in train mode; same seed, same weights."""
        torch.manual_seed(seed)
        model = self.build().train()
        if attn_implementation is not None:
            model.set_attn_implementation(attn_implementation)
        return model

    def inputs(self, batch: int = 2, seq: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
        return self.batch(batch, seq, torch.Generator().manual_seed(seed))


def _text(labels: str) -> Callable[[int, int, torch.Generator], dict[str, torch.Tensor]]:
    """Token ids with right padding on the first row, and labels for `labels` ("class" or "tokens")."""

    def make(batch: int, seq: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        ids = torch.randint(3, VOCAB, (batch, seq), generator=gen)
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[0, seq - seq // 4 :] = 0
        target = (
            torch.randint(0, 2, (batch,), generator=gen)
            if labels == "class"
            else ids.masked_fill(mask == 0, -100)
        )
        return {"input_ids": ids, "attention_mask": mask, "labels": target}

    return make


def _images(batch: int, seq: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One-channel 16x16 images: 16 patches of 4x4 plus the CLS token (`seq` is ignored)."""
    return {
        "pixel_values": torch.randn(batch, 1, 16, 16, generator=gen),
        "labels": torch.randint(0, 3, (batch,), generator=gen),
    }


def _bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(vocab_size=VOCAB, **_SMALL))


def _roberta():
    from transformers import RobertaConfig, RobertaForMaskedLM

    return RobertaForMaskedLM(RobertaConfig(vocab_size=VOCAB, pad_token_id=1, **_SMALL))


def _distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        vocab_size=VOCAB,
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
        dropout=0.1,
        attention_dropout=0.1,
        max_position_embeddings=256,
    )
    return DistilBertForSequenceClassification(config)


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(config)


def _vit():
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=1,
        num_labels=3,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        **{k: v for k, v in _SMALL.items() if "dropout" not in k},
    )
    return ViTForImageClassification(config)


# The tiny decoder-only (Llama-family) shape shared by the Mixtral, Qwen2-MoE and Llama models.
_DECODER = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    attention_dropout=0.1,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)


def _mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(
        **_DECODER,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    return MixtralForCausalLM(config)


def _qwen2_moe():
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = Qwen2MoeConfig(
        **_DECODER,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        num_experts=4,
        num_experts_per_tok=2,
    )
    return Qwen2MoeForCausalLM(config)


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **_DECODER,
    )
    return LlamaForCausalLM(config)


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        dropout_rate=0.1,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    return T5ForConditionalGeneration(config)


def _bart():
    from transformers import BartConfig, BartForConditionalGeneration

    config = BartConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
        dropout=0.1,
        attention_dropout=0.1,
        activation_dropout=0.1,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    return BartForConditionalGeneration(config)


_SMALL = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=256,
)

ARCHS = {
    arch.name: arch
    for arch in (
        Arch("bert", _bert, _text("class")),
        Arch("roberta", _roberta, _text("tokens")),
        Arch("distilbert", _distilbert, _text("class")),
        Arch("gpt2", _gpt2, _text("tokens")),
        Arch("vit", _vit, _images),
        Arch("mixtral", _mixtral, _text("tokens")),
        Arch("qwen2_moe", _qwen2_moe, _text("tokens")),
    )
}


# Not in ARCHS: T5 declares its attention wrappers (T5LayerSelfAttention), not the module that calls
# the attention function (T5Attention inside), which the filter tests need.
T5 = Arch("t5", _t5, _text("tokens"))
# Not in ARCHS: a GQA decoder with SiLU (wrapped for recompute), for the stock-path checks; the
# per-architecture suites already cover decoders through Mixtral and Qwen2-MoE.
LLAMA = Arch("llama", _llama, _text("tokens"))
# Not in ARCHS: BART calls dropout as F.dropout (no nn.Dropout to count) and runs 6 attention modules
# (self, causal and cross), not the 2 the per-architecture counts of ARCHS assume.
BART = Arch("bart", _bart, _text("tokens"))


def loss_and_grads(model: torch.nn.Module, inputs: dict[str, torch.Tensor], seed: int = 1):
    """One forward/backward from RNG seed `seed`: (loss, {param name: grad})."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(**inputs).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def assert_identical(a: tuple, b: tuple) -> None:
    """Two `loss_and_grads` results are equal bit for bit."""
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    assert torch.equal(loss_a, loss_b), (loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


def stock_experts(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with transformers' ``grouped_mm`` experts selected if it has experts modules (the
    computation the packed router reproduces bit for bit); other models are returned as they are
    (their config names "eager" experts, and switching them raises)."""
    if type(model)._can_set_experts_implementation():  # transformers' test: @use_experts_implementation
        model.set_experts_implementation("grouped_mm")
    return model


def skip_if_stock_cannot_compile(stock: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> None:
    """Skip (with the reason) when the unpatched model itself does not compile with fullgraph=True:
    the patch cannot trace better than the model's own code (BART's layerdrop draw branches on a
    tensor in transformers before 5.2x). Returns normally when stock compiles."""
    import pytest
    import transformers

    torch._dynamo.reset()
    try:
        loss_and_grads(torch.compile(stock, fullgraph=True, backend="aot_eager"), inputs)
    except torch._dynamo.exc.Unsupported as exc:
        pytest.skip(
            f"stock {type(stock).__name__} does not compile with fullgraph=True on transformers "
            f"{transformers.__version__} either: {str(exc).splitlines()[0]}"
        )


def trainer_losses(model: torch.nn.Module, output_dir: str, steps: int = 3, **arguments) -> list[float]:
    """The logged losses of `steps` ``transformers.Trainer`` steps (batch 4, lr 1e-3, seed 0, CPU) on
    `model`, a BERT of `ARCHS`, with `arguments` added to its ``TrainingArguments``."""
    from transformers import Trainer, TrainingArguments

    rows = [
        {k: v[0] for k, v in ARCHS["bert"].inputs(batch=1, seq=16, seed=i).items()} for i in range(4 * steps)
    ]
    args = TrainingArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        **arguments,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows)
    trainer.train()
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def train_steps(model: torch.nn.Module, arch: Arch, steps: int = 3) -> list[tuple]:
    """`steps` AdamW steps from fixed seeds; (loss, grads) of each step."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    out = []
    for step in range(steps):
        out.append(loss_and_grads(model, arch.inputs(seed=step), seed=100 + step))
        opt.step()
    return out


class _Storages(TorchDispatchMode):
    """Weak references to every storage an op creates while active, with its size."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[tuple[weakref.ref, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                self.made.append((weakref.ref(storage), storage.nbytes()))
        return out


def kept_storage_sizes(model: torch.nn.Module, inputs: dict) -> list[int]:
    """Sizes of the storages made by the forward pass still alive after it (kept for backward)."""
    with _Storages() as storages:
        loss = model(**inputs).loss
    alive = {id(ref()): n for ref, n in storages.made if ref() is not None}
    loss.backward()
    return sorted(alive.values())

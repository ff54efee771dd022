"""Model types of the installed transformers that the zoo (zoo.py) cannot check here, each with why.

Recorded by running the zoo on the transformers release `test_zoo.RECORDED` names. The zoo's test and
``python -m tests.integrations.zoo`` skip them, so the table in docs/huggingface.md leaves them out.
"""

from __future__ import annotations

_NEEDS = "needs {} (not a dependency of packedbool; not installable from PyPI with a CPU torch)"
_INPUTS = "its head takes no simple batch: {}"
_TINY = "its shrunk default config does not build or run: {}"
_HYBRID = "the first two layers have no attention (recurrent / linear layers first) and stock raises in a 2-layer model"

EXCLUDED: dict[str, str] = {
    "dinat": _NEEDS.format("the natten library"),
    "layoutlmv2": _NEEDS.format("detectron2"),
    "gemma3n": _NEEDS.format("timm (its audio and vision towers)"),
    "diffllama": "its one dropout, attention_dropout, must be 0: DiffLlama raises for attention_dropout > 0",
    "encoder-decoder": "a composite of two configs the caller chooses: there is no default encoder or decoder",
    "git": _INPUTS.format("the causal-LM head needs pixel_values (its loss slices past the image tokens)"),
    "imagegpt": _INPUTS.format("the image-classification head takes color-cluster input_ids, not pixels"),
    "perceiver": _INPUTS.format("the masked-LM head needs inputs as long as its 2048 latent positions"),
    "siglip2": _INPUTS.format("pixel_values are pre-cut patches with spatial shapes"),
    "shieldgemma2": _INPUTS.format("the image-classification head needs input_ids with image tokens"),
    "voxtral_realtime": _INPUTS.format("input_features (audio)"),
    "xmod": _INPUTS.format("a language id (set_default_language) for its adapters"),
    "layoutlmv3": _INPUTS.format("bounding boxes and images"),
    "lilt": _INPUTS.format("bounding boxes"),
    "pp_lcnet": "its image-classification head returns no loss",
    "musicgen": _INPUTS.format("codebook-interleaved decoder ids and a text encoder config"),
    "musicgen_melody": _INPUTS.format("codebook-interleaved decoder ids and a text encoder config"),
    "nemo_speechlm": _TINY.format(
        "the audio head's width is a separate field validated against the encoder's"
    ),
    "efficientnet": _TINY.format("its widths are derived by scaling rules from a fixed 2560-wide head"),
    "hiera": _TINY.format("mask-unit and query strides fix the image size (224)"),
    "mobilevitv2": _TINY.format("five downsampling stages need images larger than 32x32"),
    "jamba": _HYBRID,
    "zamba": _HYBRID,
    "zamba2": _HYBRID,
    "recurrent_gemma": _HYBRID,
    "axk1": _TINY.format("RuntimeError: shape '[-1, 8, 0]' is invalid for input of size 128"),
    "bailing_hybrid": _TINY.format("RuntimeError: shape '[-1, 8, 0]' is invalid for input of size 128"),
    "bamba": _TINY.format(
        "StrictDataclassClassValidationError: Class validation error for validator 'validate_archit"
    ),
    "beam": _TINY.format("RuntimeError: shape '[-1, 8, 0]' is invalid for input of size 128"),
    "blt": _TINY.format("AttributeError: 'BltConfig' object has no attribute 'num_hidden_layers'"),
    "cohere_compass_text": _TINY.format("KeyError: 'full_attention'"),
    "dbrx": _TINY.format("AttributeError: 'DbrxAttentionConfig' object has no attribute 'rope_theta'"),
    "deepseek_v2": _TINY.format("TypeError: topk(): argument 'k' must be int, not NoneType"),
    "dory": _TINY.format(
        "StrictDataclassClassValidationError: Class validation error for validator 'validate_archit"
    ),
    "dots1": _TINY.format("TypeError: empty() takes 1 positional argument but 3 were given"),
    "dots3_note": _TINY.format(
        "StrictDataclassClassValidationError: Class validation error for validator 'validate_archit"
    ),
    "dots3_note_text": _TINY.format(
        "StrictDataclassClassValidationError: Class validation error for validator 'validate_archit"
    ),
    "emu3": _TINY.format("AttributeError: 'Emu3Config' object has no attribute 'pad_token_id'"),
    "esm": _TINY.format(
        "TypeError: empty(): argument 'size' (position 1) must be tuple of ints, but found element "
    ),
    "falcon_h1": _TINY.format(
        "StrictDataclassClassValidationError: Class validation error for validator 'validate_archit"
    ),
    "gemma3n_text": _TINY.format(
        "ValueError: The set of layer types producing a cache is different than the set of layer ty"
    ),
    "gemma4_assistant": _TINY.format(
        "StrictDataclassClassValidationError: Class validation error for validator 'validate_archit"
    ),
    "gemma4_unified_assistant": _TINY.format(
        "ValueError: The set of layer types producing a cache is different than the set of layer ty"
    ),
    "granitemoehybrid": _TINY.format(
        "StrictDataclassClassValidationError: Class validation error for validator 'validate_archit"
    ),
    "hrm_text": _TINY.format("IndexError: list index out of range"),
    "hunyuan_v1_dense": _TINY.format(
        "TypeError: unsupported operand type(s) for ** or pow(): 'NoneType' and 'float'"
    ),
    "hunyuan_v1_moe": _TINY.format(
        "TypeError: unsupported operand type(s) for ** or pow(): 'NoneType' and 'float'"
    ),
    "kimi_linear": _TINY.format("RuntimeError: selected index k out of range"),
    "llama4": _TINY.format("AttributeError: 'Llama4Config' object has no attribute 'pad_token_id'"),
    "longcat_flash": _TINY.format(
        "RuntimeError: split_with_sizes expects split_sizes to sum exactly to 192 (input tensor's s"
    ),
    "ministral": _TINY.format(
        "TypeError: unsupported operand type(s) for ** or pow(): 'NoneType' and 'float'"
    ),
    "mistral4": _TINY.format(
        "RuntimeError: The size of tensor a (4) must match the size of tensor b (2) at non-singleto"
    ),
    "nemotron": _TINY.format("TypeError: unsupported operand type(s) for //: 'int' and 'NoneType'"),
    "neomme": _TINY.format(
        "ValueError: rope_parameters['full_attention']['partial_rotary_factor']=0.25 rotates 2 of h"
    ),
    "qwen3_5": _TINY.format("AttributeError: 'Qwen3_5Config' object has no attribute 'vocab_size'"),
    "qwen3_5_moe": _TINY.format("AttributeError: 'Qwen3_5MoeConfig' object has no attribute 'vocab_size'"),
    "qwen4_exp": _TINY.format("AttributeError: 'Qwen4ExpConfig' object has no attribute 'vocab_size'"),
    "qwen4_exp_text": _TINY.format(
        "TypeError: unsupported operand type(s) for //: 'NoneType' and 'NoneType'"
    ),
    "vibevoice_asr": _TINY.format(
        "ValueError: VibeVoiceAcousticTokenizerEncoderModel does not support an attention implement"
    ),
    "zaya": _TINY.format(
        "StrictDataclassClassValidationError: Class validation error for validator 'validate_archit"
    ),
}

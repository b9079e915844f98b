"""Base models for timing where the real ones are not installed (a GPU machine that cannot reach the package
registry): a transformers model folder with the **real model's architecture and shapes** (SmolLM2-135M,
Gemma-3-270M: layers, widths, heads, vocabulary) and random weights, plus a small BPE tokenizer with a ChatML
template.  Time and memory of a training step or of generation to a length cap depend on the shapes, not on the
weights' values; scores do not mean anything on these and no benchmark reports one.

``base_model(name, work)`` returns the real GGUF file when its package is installed, else builds the stand-in
once under ``work`` and says which it is.
"""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
CONFIGS = {  # the published configurations' shapes (config.json of each Hub model)
    "smollm2": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                              num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                              tie_word_embeddings=True, rms_norm_eps=1e-5)),
    "gemma3": ("gemma3_text", dict(hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
                                   num_key_value_heads=1, head_dim=256, vocab_size=262144, max_position_embeddings=32768,
                                   sliding_window=512, query_pre_attn_scalar=256, tie_word_embeddings=True)),
    # for smoke checks of the benchmark scripts only
    "tiny-llama": ("llama", dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=2000, max_position_embeddings=512)),
    "tiny-gemma3": ("gemma3_text", dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
                                        num_key_value_heads=1, head_dim=24, vocab_size=2000, max_position_embeddings=512,
                                        sliding_window=64, query_pre_attn_scalar=24)),
}


def standin_tokenizer(corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=SPECIALS, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHATML
    return fast


def standin_model(name: str, folder: Path, corpus: list[str]) -> Path:
    """A model folder with ``name``'s architecture and shapes and random weights (written once)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    from hf_common.atomic import atomic_folder

    if (folder / "config.json").is_file():
        return folder
    transformers_logging.disable_progress_bar()
    model_type, shape = CONFIGS[name]
    tokenizer = standin_tokenizer(corpus)
    config = AutoConfig.for_model(model_type, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id, **shape)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with atomic_folder(folder, force=False, what="stand-in model folder") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder


def base_model(name: str, work: Path, corpus: list[str]) -> tuple[Path, str]:
    """``(model path, label)``: the registry-installed GGUF when present, else the stand-in."""
    from hf_common.errors import FileAccessError
    from hf_runtime.local_models import locate

    if not name.startswith("tiny-"):
        try:
            return locate(name), f"{name} (real weights, GGUF)"
        except FileAccessError:
            logger.info("%s is not installed: timing its stand-in", name)
    return standin_model(name, work / f"standin-{name}", corpus), f"{name}-shaped stand-in (random weights)"

"""A complete, tiny fusion setting made on the fly: a Llama model folder with its own tokenizer,
a target adapter for it, source adapters of two other families, a replay file and a plan."""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
WORDS = ["alpha", "beta", "gamma", "delta", "kubrick", "hanks", "paris", "rome", "red", "blue", "car", "truck", "1960"]
TYPES = ["person", "city", "color", "vehicle", "year"]
CORPUS = [
    "Please list the entity words in the text. Option: person, city, color, vehicle, year Text: Answer:",
    " ".join(WORDS) + " " + " ".join(TYPES) + " ; : , user assistant system",
]


def tiny_tokenizer(template: str | None = CHATML):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = template
    return fast


def replay_records(n: int, seed: int = 0) -> list[dict]:
    """Synthetic extraction examples in Alpaca form: 'Text: w1 w2 w3' -> 'type: word; ...'."""
    import random

    rng = random.Random(seed)
    kinds = dict(zip(WORDS, ["person", "person", "city", "color", "person", "person", "city", "city", "color", "color",
                             "vehicle", "vehicle", "year"]))
    records = []
    for _ in range(n):
        words = rng.sample(WORDS, 3)
        instruction = ("Please list the entity words in the text. Option: person, city, color, vehicle, year "
                       f"Text: {' '.join(words)} Answer:")
        records.append({"instruction": instruction, "input": "", "output": " " + "; ".join(f"{kinds[w]}: {w}" for w in words)})
    return records


def make_fusion_setting(root: Path, n_layers: int = 4, n_examples: int = 24) -> dict[str, Path]:
    import torch
    import transformers as tf
    from factories import make_peft_adapter
    from peft import LoraConfig, get_peft_model

    from hf_analyze.execute import execute
    from hf_analyze.planner import AnalyzeSettings, analyze
    from hf_analyze.report import build_report

    root.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    config = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=n_layers, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=256,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    model = tf.LlamaForCausalLM(config)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                                  "up_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    peft_model.peft_config["default"].base_model_name_or_path = str(root / "base")
    peft_model.save_pretrained(root / "target")
    with torch.no_grad():  # a second expert of the same base model, for homogeneous merges
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    peft_model.save_pretrained(root / "sibling")
    qwen = make_peft_adapter(root / "qwen2", "qwen2", n_layers=3, hidden=48, rank=8, alpha=16, seed=2)
    gemma = make_peft_adapter(root / "gemma3", "gemma3", n_layers=2, hidden=40, rank=2, alpha=4, seed=3)
    (root / "replay.json").write_text(json.dumps(replay_records(n_examples)))
    analysis = analyze(root / "target", [qwen, gemma], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), root / "plan.h5")
    analysis = analyze(root / "target", [qwen], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), root / "plan-qwen.h5")
    return {"base": root / "base", "target": root / "target", "sibling": root / "sibling", "qwen": qwen, "gemma": gemma,
            "replay": root / "replay.json", "plan": root / "plan.h5", "plan_qwen": root / "plan-qwen.h5"}

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


def fill_lora(peft_model, generator, scale: float = 0.1) -> None:
    """Random, non-zero LoRA factors (PEFT starts B at zero, which would make every adapter a no-op)."""
    import torch

    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


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
    fill_lora(peft_model, generator)
    peft_model.peft_config["default"].base_model_name_or_path = str(root / "base")
    peft_model.save_pretrained(root / "target")
    fill_lora(peft_model, generator)  # a second expert of the same base model, for homogeneous merges
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


def make_tiny_gguf(path: Path, n_layers: int = 2, hidden: int = 32, seed: int = 0, metadata: dict | None = None) -> Path:
    """A real GGUF file (llama architecture, fp32 tensors, the tiny BPE tokenizer and its chat template),
    written with the ``gguf`` package that transformers itself uses to read such files; ``metadata``: more string
    fields (``general.license``, ``general.base_model.0.repo_url``...)."""
    import gguf
    import numpy as np

    tok = tiny_tokenizer()
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    merges = [" ".join(m) if isinstance(m, list) else m for m in json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]]
    special = set(tok.convert_tokens_to_ids(SPECIALS))
    heads, kv_heads, ffn = 4, 2, 2 * hidden
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(n_layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])  # 3: control token
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_chat_template(tok.chat_template)
    for key, value in (metadata or {}).items():
        writer.add_string(key, value)
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (len(tokens), hidden)}
    for i in range(n_layers):
        kv = kv_heads * hidden // heads
        shapes.update({f"blk.{i}.attn_q.weight": (hidden, hidden), f"blk.{i}.attn_k.weight": (kv, hidden),
                       f"blk.{i}.attn_v.weight": (kv, hidden), f"blk.{i}.attn_output.weight": (hidden, hidden),
                       f"blk.{i}.ffn_gate.weight": (ffn, hidden), f"blk.{i}.ffn_up.weight": (ffn, hidden),
                       f"blk.{i}.ffn_down.weight": (hidden, ffn)})
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.05).astype(np.float32))
    for name in ["output_norm.weight", *(f"blk.{i}.{n}_norm.weight" for i in range(n_layers) for n in ("attn", "ffn"))]:
        writer.add_tensor(name, np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_source_model(root: Path, family: str = "qwen2", hidden: int = 48, n_layers: int = 3, seed: int = 5) -> dict[str, Path]:
    """A source base model of another family, with weights and a tokenizer of its own (another vocabulary, no chat
    template), and a LoRA expert for it; for methods that run the source expert itself."""
    import torch
    import transformers as tf
    from peft import LoraConfig, get_peft_model

    root.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(template=None)
    tokenizer.add_tokens(["<src-extra-1>", "<src-extra-2>"])  # not the target's vocabulary
    torch.manual_seed(seed)
    sizes = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=256,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if family == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**sizes))
    elif family == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**sizes))
    elif family == "gemma3":
        model = tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**sizes, head_dim=16))
    else:
        raise ValueError(family)
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                                     "gate_proj", "up_proj", "down_proj"]))
    fill_lora(peft_model, torch.Generator().manual_seed(seed + 1))
    peft_model.peft_config["default"].base_model_name_or_path = str(root / "base")
    peft_model.save_pretrained(root / "expert")
    return {"base": root / "base", "expert": root / "expert"}


def make_distill_setting(fusion: dict, root: Path, n_prompts: int) -> dict:
    """``fusion``'s target with a Qwen2 source expert of its own base model (another hidden size, depth and
    tokenizer), their plan, and ``n_prompts`` unlabelled prompts of the replay file: what ``--method distill``
    needs."""
    from hf_analyze.execute import execute
    from hf_analyze.planner import AnalyzeSettings, analyze
    from hf_analyze.report import build_report

    source = make_source_model(root / "qwen2", "qwen2")
    analysis = analyze(fusion["target"], [source["expert"]], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), root / "plan.h5")
    unlabeled = root / "unlabeled.json"
    rows = json.loads(fusion["replay"].read_text())[:n_prompts]
    unlabeled.write_text(json.dumps([{"instruction": r["instruction"], "input": r["input"]} for r in rows]))
    return {**fusion, "source_base": source["base"], "source_expert": source["expert"], "plan": root / "plan.h5",
            "unlabeled": unlabeled}

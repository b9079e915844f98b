"""The one training loop: its seeded micro-batch stream and its settings checks (the loop itself runs in every
method's tests and in the resume tests)."""

import pytest

from hf_runtime.trainer import TrainSettings, micro_batches, schedule_length


def test_micro_batches_are_a_seeded_stream_across_epochs():
    settings = TrainSettings(batch_size=2, grad_accum=3, seed=4, epochs=2)
    examples = list(range(10))
    micro_per_epoch, steps = schedule_length(10, settings)
    assert (micro_per_epoch, steps) == (5, 4)
    seen = [x for step in range(steps) for batch in micro_batches(step, examples, settings, micro_per_epoch) for x in batch]
    assert sorted(seen[:10]) == examples and sorted(seen[10:20]) == examples  # each epoch sees everything once
    assert seen[:10] != seen[10:20]
    assert micro_batches(1, examples, settings, micro_per_epoch) == micro_batches(1, examples, settings, micro_per_epoch)


def test_settings_validation_names_flags():
    from hf_common.errors import ConfigError

    with pytest.raises(ConfigError, match="--grad-accum"):
        TrainSettings(grad_accum=0)
    with pytest.raises(ConfigError, match="--warmup-rounding"):
        TrainSettings(warmup_rounding="sideways")


def test_micro_batch_weights_count_micro_batches_or_answer_tokens():
    from hf_runtime.data import Example
    from hf_runtime.trainer import micro_weights

    def example(n_answer):  # the first label is never scored (labels are shifted)
        return Example(input_ids=[1] * (3 + n_answer), labels=[-100] * 3 + [5] * n_answer, source="x")

    batches = [[example(1), example(3)], [example(4)]]
    assert micro_weights(batches, "micro-batch") == [0.5, 0.5]
    assert micro_weights(batches, "token") == [0.5, 0.5]  # 4 answer tokens each
    assert micro_weights([[example(1)], [example(3)]], "token") == [0.25, 0.75]


def test_token_average_is_the_mean_over_every_answer_token_of_the_step(fusion):
    import torch

    from hf_runtime.data import ReplayConfig, collate, load_replay
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model
    from hf_runtime.trainer import lm_loss, micro_weights

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    examples = load_replay([fusion["replay"]], tokenizer, ReplayConfig()).examples[:5]
    batches = [examples[:2], examples[2:]]
    with torch.no_grad():
        weighted = sum(float(lm_loss(model, b, tokenizer.pad_token_id, torch.device("cpu"))) * w
                       for b, w in zip(batches, micro_weights(batches, "token")))
        inputs = collate(examples, tokenizer.pad_token_id)
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        every = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                  inputs["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert weighted == pytest.approx(float(every), rel=1e-5)


def test_length_grouped_batches_hold_the_same_examples_with_less_padding_and_the_same_loss_sum(fusion):
    import torch

    from hf_runtime.data import ReplayConfig, load_replay
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model
    from hf_runtime.trainer import lm_loss

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    examples = load_replay([fusion["replay"]], tokenizer, ReplayConfig()).examples
    plain, grouped = (TrainSettings(batch_size=3, grad_accum=2, seed=1, epochs=1, group_by_length=g) for g in (False, True))
    micro_per_epoch, steps = schedule_length(len(examples), plain)

    def stream(settings):
        return [b for step in range(steps) for b in micro_batches(step, examples, settings, micro_per_epoch)]

    a, b = stream(plain), stream(grouped)
    assert sorted(id(e) for batch in a for e in batch) == sorted(id(e) for batch in b for e in batch)  # same examples

    def padding(batches):
        return sum(max(len(e.input_ids) for e in batch) * len(batch) - sum(len(e.input_ids) for e in batch)
                   for batch in batches)

    assert padding(b) < padding(a)
    assert stream(grouped) == b  # seeded

    def loss_sum(batches):  # every answer token's loss, summed: the batching must not change it
        with torch.no_grad():
            return sum(float(lm_loss(model, batch, tokenizer.pad_token_id, torch.device("cpu")))
                       * sum(sum(1 for x in e.labels[1:] if x != -100) for e in batch) for batch in batches)

    assert loss_sum(b) == pytest.approx(loss_sum(a), rel=1e-5)


def test_lm_loss_runs_the_head_on_answer_positions_only_and_equals_the_models_own_loss(fusion):
    import torch

    from hf_runtime.data import ReplayConfig, collate, load_replay
    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model
    from hf_runtime.trainer import lm_loss

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    batch = load_replay([fusion["replay"]], tokenizer, ReplayConfig()).examples[:3]  # right-padded, answers apart
    seen = []
    model.lm_head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    own = model(**collate(batch, tokenizer.pad_token_id)).loss
    ours = lm_loss(model, batch, tokenizer.pad_token_id, torch.device("cpu"))
    answers = sum(1 for p in range(max(len(e.labels) for e in batch) - 1)
                  if any(p + 1 < len(e.labels) and e.labels[p + 1] != -100 for e in batch))
    assert seen == [max(len(e.input_ids) for e in batch), answers] and answers < seen[0]
    torch.testing.assert_close(ours, own, rtol=1e-5, atol=1e-6)

    class NoKeepOption(torch.nn.Module):  # an architecture whose forward lacks logits_to_keep: all logits, then sliced
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    torch.testing.assert_close(lm_loss(NoKeepOption(model), batch, tokenizer.pad_token_id, torch.device("cpu")), own,
                               rtol=1e-5, atol=1e-6)

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

import json
import logging
import warnings

import pytest
import torch
from safetensors.torch import load_file

from hf_fuse.job import FuseJob
from hf_fuse.methods.hypernet import HyperNetSettings
from hf_fuse.run import run
from hf_runtime.data import ReplayConfig, collate, load_replay
from hf_runtime.model import load_model_and_tokenizer, resolve_base_model
from hf_runtime.trainer import TrainSettings

SMALL = dict(grad_accum=2, checkpoint_every=2)


def _job(fusion, out, plans=None, ablate=(), **train):
    return FuseJob(plans=plans or [fusion["plan"]], base_model=fusion["base"], replay=[fusion["replay"]], output=out,
                   settings={"hypernet": HyperNetSettings(embed_dim="auto", n_heads=2, n_proj=64, ablate=ablate)},
                   train=TrainSettings(**{**SMALL, **train}))


def _tensors(folder):
    return load_file(folder / "adapter_model.safetensors")


def _replay_loss(fusion, adapter) -> float:
    from peft import PeftModel

    model, tokenizer = load_model_and_tokenizer(resolve_base_model(fusion["base"]), torch.device("cpu"), torch.float32)
    peft_model = PeftModel.from_pretrained(model, adapter).eval()
    replay = load_replay([fusion["replay"]], tokenizer, ReplayConfig())
    with torch.no_grad():
        losses = [peft_model(**collate([ex], tokenizer.pad_token_id)).loss for ex in replay.examples]
    return float(torch.stack(losses).mean())


def test_step_zero_export_equals_the_target(fusion, tmp_path):
    report = run(_job(fusion, tmp_path / "out", max_steps=0))
    fused, target = _tensors(tmp_path / "out"), _tensors(fusion["target"])
    assert fused.keys() == target.keys()
    assert all(torch.equal(fused[k], target[k]) and fused[k].dtype == target[k].dtype for k in target)
    assert json.loads((tmp_path / "out/adapter_config.json").read_text()) == json.loads(
        (fusion["target"] / "adapter_config.json").read_text())
    assert all(g["delta_b_over_b"] == 0 for g in report["tasks"][0]["groups"].values())


def test_training_lowers_replay_loss_and_export_loads_cleanly(fusion, tmp_path, caplog):
    report = run(_job(fusion, tmp_path / "out", max_steps=12, lr=3e-3))
    history = report["tasks"][0]["history"]
    assert len(history) == 12 and history[-1]["lm"] < history[0]["lm"]
    assert all(h["rdm"] > 0 for h in history)
    target_loss = _replay_loss(fusion, fusion["target"])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        fused_loss = _replay_loss(fusion, tmp_path / "out")
    assert fused_loss < target_loss
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "missing" in m.lower() or "unexpected" in m.lower()]
    fused, target = _tensors(tmp_path / "out"), _tensors(fusion["target"])
    changed = [k for k in target if not torch.equal(fused[k], target[k])]
    assert changed and all(".lora_B." in k for k in changed)  # A is never changed
    # layer 0 lies outside every source's layer map: untouched
    assert not [k for k in changed if ".layers.0." in k]
    groups = report["tasks"][0]["groups"]
    assert set(groups["q_proj.r4"]["attention_per_source"]) == {"0", "1"}
    assert all(g["eq11_actual_max"] <= g["eq11_bound_max"] * (1 + 1e-5) for g in groups.values())
    assert (tmp_path / "out/fusion_report.json").exists()


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_resume_equals_an_uninterrupted_run(fusion, tmp_path, optimizer):
    run(_job(fusion, tmp_path / "straight", max_steps=5, lr=3e-3, optimizer=optimizer))

    def interrupt(kind, payload):
        if kind == "step" and payload[1]["step"] == 3:
            raise KeyboardInterrupt

    job = _job(fusion, tmp_path / "resumed", max_steps=5, lr=3e-3, optimizer=optimizer)
    with pytest.raises(KeyboardInterrupt):
        run(job, interrupt)
    assert not (tmp_path / "resumed").exists()
    assert torch.load(tmp_path / "resumed.ckpt/task0.pt", weights_only=True)["state"]["step"] == 3
    report = run(FuseJob(**{**job.__dict__, "resume": True}))
    assert [h["step"] for h in report["tasks"][0]["history"]] == [1, 2, 3, 4, 5]
    straight, resumed = _tensors(tmp_path / "straight"), _tensors(tmp_path / "resumed")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-7)


def test_adafactor_trains_the_hypernets_with_a_small_state(fusion, tmp_path):
    report = run(_job(fusion, tmp_path / "out", max_steps=4, lr=3e-3, optimizer="adafactor", checkpoint_every=2))
    assert report["settings"]["train"]["optimizer"] == "adafactor"
    fused, target = _tensors(tmp_path / "out"), load_file(fusion["target"] / "adapter_model.safetensors")
    assert any(not torch.equal(fused[k], target[k]) for k in target)
    saved = torch.load(tmp_path / "out.ckpt/task0.pt", weights_only=True)
    weights = sum(v.numel() for v in saved["objective"]["hypernets"].values())
    state = sum(v.numel() for s in saved["optimizer"]["state"].values() for v in s.values() if torch.is_tensor(v))
    assert state < 0.5 * weights  # AdamW keeps two full moments (2x the weights); Adafactor factors the second


def test_ablations(fusion, tmp_path):
    report = run(_job(fusion, tmp_path / "rdm", max_steps=2, ablate=("rdm",)))
    assert all(h["rdm"] == 0 for h in report["tasks"][0]["history"])
    report = run(_job(fusion, tmp_path / "denoise", max_steps=2, ablate=("denoise",)))
    assert all(h["rdm"] == 0 for h in report["tasks"][0]["history"])


def test_sequential_tasks_carry_hypernets(fusion, tmp_path):
    report = run(_job(fusion, tmp_path / "seq", plans=[fusion["plan_qwen"], fusion["plan"]], max_steps=2))
    first, second = report["tasks"]
    assert first["carried_over"] == [] and set(second["carried_over"]) == set(first["groups"])
    assert (tmp_path / "seq/adapter_model.safetensors").exists()


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(fusion, tmp_path, monkeypatch):
    from hf_fuse.methods.hypernet import method as train_module
    from hf_runtime.trainer import TrainingDiverged

    real = train_module.lm_loss
    calls = {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] > 4 else loss  # steps 1-2 fine (2 micro-batches each)

    monkeypatch.setattr(train_module, "lm_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="non-finite loss at step 3"):
        run(_job(fusion, tmp_path / "out", max_steps=5, checkpoint_every=1))
    assert not (tmp_path / "out").exists()
    saved = torch.load(tmp_path / "out.ckpt/task0.pt", weights_only=True)
    assert saved["state"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["objective"]["hypernets"].values())


class _RunsCode:
    """A pickle payload that would create a file when unpickled with weights_only=False."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("content, message", [
    ("hostile", "not a checkpoint this tool can load safely"), ("truncated", "not a checkpoint this tool can load safely"),
    ("random", "not a checkpoint this tool can load safely"), ("wrong_shape", "the checkpoint does not fit this run"),
    ("not_ours", "not a checkpoint of this tool"),
])
def test_resume_refuses_unsafe_or_broken_checkpoints_without_running_them(fusion, tmp_path, content, message):
    run(_job(fusion, tmp_path / "out", max_steps=4, checkpoint_every=2))  # leaves out.ckpt/task0.pt at step 2
    checkpoint = tmp_path / "out.ckpt/task0.pt"
    marker = tmp_path / "pwned"
    if content == "hostile":
        torch.save({"fingerprint": _RunsCode(marker)}, checkpoint)
    elif content == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    elif content == "wrong_shape":
        saved = torch.load(checkpoint, weights_only=True)
        key = next(iter(saved["objective"]["hypernets"]))
        saved["objective"]["hypernets"][key] = torch.zeros(3, 5)
        torch.save(saved, checkpoint)
    elif content == "not_ours":
        torch.save({"weights": torch.zeros(2)}, checkpoint)
    else:
        checkpoint.write_bytes(bytes(range(256)) * 8)
    from hf_common.errors import InputError

    with pytest.raises(InputError, match=message) as caught:
        job = _job(fusion, tmp_path / "again", max_steps=4, checkpoint_every=2)
        run(FuseJob(**{**job.__dict__, "resume": True, "checkpoint_dir": tmp_path / "out.ckpt"}))
    assert "\n" not in str(caught.value) and not marker.exists()


def test_preflight_warns_about_a_base_model_of_another_family_with_fitting_shapes(fusion, tmp_path):
    import shutil

    from hf_fuse.run import preflight

    other = shutil.copytree(fusion["base"], tmp_path / "qwen-shaped")
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (other / "config.json").write_text(json.dumps(config))
    warnings: list[str] = []
    plans, _ = preflight(FuseJob(**{**_job(fusion, tmp_path / "out").__dict__, "base_model": other}), warnings)
    for plan in plans:
        plan.close()
    assert len(warnings) == 1 and "is a qwen2 model" in warnings[0] and "made for a llama model" in warnings[0]
    same: list[str] = []
    for plan in preflight(_job(fusion, tmp_path / "out2"), same)[0]:
        plan.close()
    assert same == []


def test_a_plan_whose_target_was_swapped_for_another_rank_is_refused(fusion, tmp_path):
    import io
    import shutil

    import h5py
    import numpy as np

    from hf_common import plan as plan_format
    from hf_common.errors import PlanFormatError
    from hf_common.safetensors_io import SafetensorsFile, write_safetensors

    swapped = shutil.copy(fusion["plan"], tmp_path / "swapped.h5")
    with h5py.File(swapped, "r+") as handle:  # the target adapter replaced by one of rank 2, checksums recomputed
        blob = SafetensorsFile("blob", data=handle[plan_format.TARGET_BLOB][()])
        tensors = {k: (blob.float32(k)[:2] if ".lora_A." in k else blob.float32(k)[:, :2]) for k in blob.keys()}
        buffer = io.BytesIO()
        write_safetensors(buffer, tensors)
        del handle[plan_format.TARGET_BLOB]
        data = np.frombuffer(buffer.getvalue(), np.uint8)
        handle.create_dataset(plan_format.TARGET_BLOB, data=data).attrs["sha256"] = plan_format.dataset_digest(data)
        hashes = {}
        handle.visititems(lambda path, node: hashes.__setitem__(path, node.attrs["sha256"])
                          if isinstance(node, h5py.Dataset) else None)
        attrs = {k: handle.attrs[k] for k in ("format", "format_version", "created_by", "created_at")}
        attrs = {k: (int(v) if k == "format_version" else str(v)) for k, v in attrs.items()}
        handle.attrs["checksum"] = plan_format.combined_checksum(hashes, attrs)
    with pytest.raises(PlanFormatError, match="was built for rank 4"):
        run(_job(fusion, tmp_path / "out", plans=[swapped], max_steps=1))
    assert not (tmp_path / "out").exists()

"""The contract every registered fusion method (and each distill student) keeps, run through the CLI on tiny models:
the exported adapter has the target's keys and dtypes and loads in ``PeftModel.from_pretrained`` with no key
warning; ``fusion_report.json`` validates; another method's option is refused with exit 2 and one line naming it;
a trainable method interrupted by Ctrl-C exits 130 with a checkpoint, and ``--resume`` ends bit-identical to an
uninterrupted run."""

import hashlib
import json
import warnings
from pathlib import Path

import jsonschema
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import make_distill_setting

from hf_fuse import methods
from hf_fuse.cli import main

ROOT = Path(__file__).resolve().parents[3]
LOOP = ["--max-steps", "3", "--grad-accum", "1", "--batch-size", "2", "--lr", "1e-3", "--checkpoint-every", "1",
        "--max-examples-per-file", "8"]
HYPERNET = ["--embed-dim", "auto", "--n-heads", "2", "--n-proj", "16"]
CASES = {  # a case per method and per distill student: what it needs besides the plan, base model and replay
    "hypernet": lambda s: [*LOOP, *HYPERNET],
    "distill-lora": lambda s: ["--method", "distill", *_distill(s), *LOOP],
    "distill-hypernet": lambda s: ["--method", "distill", "--student", "hypernet", *_distill(s), *LOOP, *HYPERNET],
    "project": lambda s: ["--method", "project", "--source-model", f"0={s['source_base']}"],
    "project-hypernet": lambda s: ["--method", "project-hypernet", "--source-model", f"0={s['source_base']}", *LOOP,
                                   *HYPERNET],
}


def _distill(s):
    return ["--source-model", f"0={s['source_base']}", "--unlabeled", str(s["unlabeled"]), "--gen-max-new-tokens", "6",
            "--gen-cache", str(s["gen_cache"])]


@pytest.fixture(scope="module")
def setting(fusion, tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    return {**make_distill_setting(fusion, root, n_prompts=5), "gen_cache": root / "gen"}


def test_every_registered_method_has_a_contract_case():
    cases = {name.split("-")[0] if name.startswith("distill") else name for name in CASES}
    assert set(methods.METHODS) <= cases, f"add a CASES entry for {set(methods.METHODS) - cases}"


def _fuse(setting, case, out, *extra):
    argv = [str(setting["plan"]), "--base-model", str(setting["base"]), "--replay", str(setting["replay"]), "-o", str(out),
            *CASES[case](setting), *map(str, extra)]
    return CliRunner().invoke(main, argv)


def _method(case):
    return methods.get_method(case.split("-")[0] if case.startswith("distill") else case)


@pytest.mark.parametrize("case", list(CASES))
def test_export_keys_dtypes_clean_load_and_a_valid_report(setting, tmp_path, case):
    from peft import PeftModel

    from hf_runtime.model import load_model_and_tokenizer, resolve_base_model

    result = _fuse(setting, case, tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    jsonschema.validate(report, json.loads((ROOT / "schemas/fusion-report.schema.json").read_text()))
    assert report["method"] == _method(case).name
    fused = load_file(tmp_path / "out/adapter_model.safetensors")
    target = load_file(setting["target"] / "adapter_model.safetensors")
    assert fused.keys() == target.keys() and all(fused[k].dtype == target[k].dtype for k in target)
    assert any(fused[k].shape != target[k].shape or not torch.equal(fused[k], target[k]) for k in target)
    model, _ = load_model_and_tokenizer(resolve_base_model(setting["base"]), torch.device("cpu"), torch.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PeftModel.from_pretrained(model, tmp_path / "out")
    assert not [w for w in caught if "key" in str(w.message).lower()]


def _foreign_option(case: str, setting) -> list[str]:
    """An option that only other methods (or the other distill student) read."""
    from hf_fuse.cli import main as command
    from hf_fuse.methods.distill import DistillSettings

    method = _method(case)
    mine = method.sections_used({DistillSettings.section: DistillSettings(
        source_models={0: "x"}, unlabeled=((None, "x"),), student=case.removeprefix("distill-"))} if case.startswith(
        "distill") else {})
    own = {spec.flag for cls in method.settings_classes if cls.section in mine for _, spec in _flags(cls)}
    foreign = [spec.flag for m in methods.METHODS.values() for cls in m.settings_classes for _, spec in _flags(cls)
               if spec.flag not in own]
    option = next(p for p in command.params if foreign[0] in p.opts)
    value = [] if option.is_flag else [str(option.default) if option.default not in (None, ()) else "1"]
    return [foreign[0], *value]


def _flags(cls):
    from hf_common.settings import flags

    return flags(cls)


@pytest.mark.parametrize("case", list(CASES))
def test_another_methods_option_is_refused_in_one_line(setting, tmp_path, case):
    option = _foreign_option(case, setting)
    result = _fuse(setting, case, tmp_path / "out", *option)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and option[0] in lines[0] and "belongs to --method" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", [c for c in CASES if _method(c).trains])
def test_interrupted_and_resumed_equals_uninterrupted(setting, tmp_path, case, monkeypatch):
    from hf_fuse import report

    assert _fuse(setting, case, tmp_path / "straight").exit_code == 0
    real = report.Progress.event

    def interrupt(self, kind, payload):
        real(self, kind, payload)
        if kind == "step" and payload[1]["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(report.Progress, "event", interrupt)
    stopped = _fuse(setting, case, tmp_path / "resumed")
    assert stopped.exit_code == 130 and "interrupted" in stopped.stderr, stopped.output
    assert not (tmp_path / "resumed").exists()
    assert torch.load(tmp_path / "resumed.ckpt/task0.pt", weights_only=True)["state"]["step"] == 2
    monkeypatch.setattr(report.Progress, "event", real)
    resumed = _fuse(setting, case, tmp_path / "resumed", "--resume")
    assert resumed.exit_code == 0, resumed.output

    def digest(name):
        return hashlib.sha256((tmp_path / name / "adapter_model.safetensors").read_bytes()).hexdigest()

    assert digest("resumed") == digest("straight")
    history = json.loads((tmp_path / "resumed/fusion_report.json").read_text())["tasks"][0]["history"]
    assert [h["step"] for h in history] == [1, 2, 3]  # the resumed run's record keeps the steps done before Ctrl-C

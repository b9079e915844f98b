"""The bfloat16 path (the GPU default) end to end on CPU, which supports bfloat16: patching, HyperNets,
export with the target adapter's dtypes, loading in PEFT and evaluation.  The same run on CUDA is
``test_gpu.py`` (skipped without a GPU)."""

import json
import shutil

import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from hf_eval.cli import main as hf_eval
from hf_fuse.cli import main as hf_fuse


def _fuse(fusion, plan, out, *extra):
    return CliRunner().invoke(hf_fuse, [str(plan), "--base-model", str(fusion["base"]), "--replay", str(fusion["replay"]),
                                        "-o", str(out), "--max-steps", "2", "--grad-accum", "1", "--embed-dim", "auto",
                                        "--n-heads", "2", "--n-proj", "16", "--dtype", "bfloat16", "-q", *extra],
                              catch_exceptions=False)


def test_bfloat16_fuse_export_and_evaluate_on_cpu(fusion, tmp_path):
    result = _fuse(fusion, fusion["plan"], tmp_path / "out")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    assert report["dtype"] == "bfloat16"
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in report["tasks"][0]["history"])
    fused = load_file(tmp_path / "out/adapter_model.safetensors")
    target = load_file(fusion["target"] / "adapter_model.safetensors")
    assert {k: v.dtype for k, v in fused.items()} == {k: v.dtype for k, v in target.items()}  # dtypes follow the target
    assert any(not torch.equal(fused[k], target[k]) for k in target)
    evaluated = CliRunner().invoke(hf_eval, ["evaluate", "--base-model", str(fusion["base"]), "--adapter",
                                             f"fused={tmp_path / 'out'}", "--data", str(fusion["replay"]), "--dtype", "bfloat16",
                                             "--max-examples", "3", "--max-new-tokens", "4", "-o", str(tmp_path / "eval"), "-q"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "eval/results.json").read_text())["adapters"]["fused"]["tasks"]["replay"]["n_examples"] == 3


def test_a_bfloat16_target_adapter_is_exported_in_bfloat16(fusion, tmp_path):
    from hf_analyze.execute import execute
    from hf_analyze.planner import AnalyzeSettings, analyze
    from hf_analyze.report import build_report

    target = shutil.copytree(fusion["target"], tmp_path / "target16")
    tensors = load_file(target / "adapter_model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, target / "adapter_model.safetensors")
    analysis = analyze(target, [fusion["qwen"]], AnalyzeSettings(block_size="auto"))
    execute(analysis, build_report(analysis), tmp_path / "plan16.h5")
    result = _fuse(fusion, tmp_path / "plan16.h5", tmp_path / "out16")
    assert result.exit_code == 0, result.output
    fused = load_file(tmp_path / "out16/adapter_model.safetensors")
    assert {v.dtype for v in fused.values()} == {torch.bfloat16}

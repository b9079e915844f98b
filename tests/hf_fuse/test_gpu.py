"""The CUDA path: a real fuse, export, load and evaluation on a GPU in bfloat16.  Skipped without CUDA
(CI has none); run on a GPU machine with ``pytest -m gpu``."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from hf_eval.cli import main as hf_eval
from hf_fuse.cli import main as hf_fuse

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_fuse_export_load_and_evaluate_on_cuda_in_bfloat16(fusion, tmp_path):
    result = CliRunner().invoke(hf_fuse, [str(fusion["plan"]), "--base-model", str(fusion["base"]), "--replay",
                                          str(fusion["replay"]), "-o", str(tmp_path / "out"), "--max-steps", "3",
                                          "--grad-accum", "2", "--embed-dim", "auto", "--n-heads", "2", "--device", "cuda",
                                          "--dtype", "bfloat16", "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    assert report["device"].startswith("cuda") and report["dtype"] == "bfloat16" and report["peak_gpu_memory_mib"] > 0
    fused = load_file(tmp_path / "out/adapter_model.safetensors")
    target = load_file(fusion["target"] / "adapter_model.safetensors")
    assert {k: v.dtype for k, v in fused.items()} == {k: v.dtype for k, v in target.items()}
    assert any(not torch.equal(fused[k], target[k]) for k in target)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(fusion["base"], dtype=torch.bfloat16).cuda()
    loaded = PeftModel.from_pretrained(model, tmp_path / "out")  # loads with no missing or unexpected keys
    assert next(loaded.parameters()).is_cuda
    evaluated = CliRunner().invoke(hf_eval, ["evaluate", "--base-model", str(fusion["base"]), "--adapter",
                                             f"fused={tmp_path / 'out'}", "--data", str(fusion["replay"]), "--device", "cuda",
                                             "--dtype", "bfloat16", "--max-examples", "4", "-o", str(tmp_path / "eval"), "-q"])
    assert evaluated.exit_code == 0, evaluated.output

"""Adding a method is adding one file: a toy method registered here, in a test file, is at once a ``--method`` choice with
its own option in ``--help``, in config files and in the recorded config; its settings are refused for other methods;
its report, HTML and card sections appear; and the contract (target keys and dtypes, a schema-valid report) holds."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from hf_common.errors import ConfigError
from hf_common.settings import setting
from hf_fuse import methods
from hf_fuse.cli import main
from hf_fuse.methods import FusionMethod, MethodResult, register
from hf_fuse.methods.base import lora_task

ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class ToySettings:
    section: ClassVar[str] = "toy"
    scale: float = setting(1.5, flag="--toy-scale", help="factor on every lora_B of the target.")

    def __post_init__(self):
        if not self.scale > 0:
            raise ConfigError(f"--toy-scale must be positive (got {self.scale})")


class ToyMethod(FusionMethod):
    name = "toy"
    help = "the target's B's times --toy-scale (a test of the registry)"
    settings_classes = (ToySettings,)
    trains = False

    def fuse(self, ctx):
        from hf_runtime.model import tensors_from_plan

        plan = ctx.plans[0]
        scale = self.settings["toy"].scale
        tensors = {k: v * scale if "lora_B" in k else v for k, v in tensors_from_plan(plan).items()}
        return MethodResult(tensors, plan.target_config, [lora_task(plan, [])], {"toy": {"scaled": len(tensors) // 2}})

    def summary_lines(self, report):
        return [f"toy: {report['toy']['scaled']} B's scaled"]

    def html_section(self, page, report):
        page.heading("Toy section")
        page.paragraph(f"{report['toy']['scaled']} B's scaled")

    def card_details(self, report):
        return {"toy scaling": report["settings"]["toy"]["scale"]}


@pytest.fixture
def toy():
    register(ToyMethod)
    yield ToyMethod
    methods.METHODS.pop("toy")


def _argv(fusion, out, *extra):
    return [str(fusion["plan"]), "--base-model", str(fusion["base"]), "--replay", str(fusion["replay"]), "-o", str(out),
            *map(str, extra)]


def test_a_method_registered_from_one_file_runs_through_cli_config_and_reports(toy, fusion, tmp_path):
    help_text = CliRunner().invoke(main, ["--help"]).output
    assert "toy" in help_text and "--toy-scale" in help_text and "a test of the registry" in help_text
    result = CliRunner().invoke(main, _argv(fusion, tmp_path / "out", "--method", "toy", "--toy-scale", "2"))
    assert result.exit_code == 0, result.output
    assert "toy: " in result.stderr  # its summary line
    fused = load_file(tmp_path / "out/adapter_model.safetensors")
    target = load_file(fusion["target"] / "adapter_model.safetensors")
    assert fused.keys() == target.keys() and all(fused[k].dtype == target[k].dtype for k in target)
    key = next(k for k in target if "lora_B" in k)
    assert (fused[key] == target[key] * 2).all()
    report = json.loads((tmp_path / "out/fusion_report.json").read_text())
    jsonschema.validate(report, json.loads((ROOT / "schemas/fusion-report.schema.json").read_text()))
    assert report["settings"]["toy"] == {"scale": 2.0} and "hypernet" not in report["settings"]
    assert "Toy section" in (tmp_path / "out/report.html").read_text()
    assert "toy scaling" in (tmp_path / "out/README.md").read_text()
    recorded = yaml.safe_load((tmp_path / "out/fusion_config.yaml").read_text())
    assert recorded["toy-scale"] == 2.0 and recorded["method"] == "toy" and "lambda-reg" not in recorded
    # the recorded config re-makes the run from another folder's file; a config file key works like the flag
    config = tmp_path / "toy.yaml"
    config.write_text(yaml.safe_dump({**recorded, "toy-scale": 3}))
    again = CliRunner().invoke(main, ["--config", str(config), "-o", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert (load_file(tmp_path / "again/adapter_model.safetensors")[key] == target[key] * 3).all()


def test_its_option_is_refused_for_other_methods_and_its_checks_name_the_flag(toy, fusion, tmp_path):
    other = CliRunner().invoke(main, _argv(fusion, tmp_path / "out", "--toy-scale", "2", "--max-steps", "1"))
    assert other.exit_code == 2 and "--toy-scale belongs to --method toy" in other.stderr, other.output
    bad = CliRunner().invoke(main, _argv(fusion, tmp_path / "out", "--method", "toy", "--toy-scale", "-1"))
    assert bad.exit_code == 2 and "--toy-scale must be positive" in bad.stderr, bad.output
    assert not (tmp_path / "out").exists()


def test_without_the_file_the_method_is_unknown(fusion, tmp_path):
    result = CliRunner().invoke(main, _argv(fusion, tmp_path / "out", "--method", "toy"))
    assert result.exit_code == 2 and "'toy' is not one of" in result.stderr

"""The fused adapter's model card: the licence of every input that reached the weights (the target's base model and
adapter, each source's adapter and base model), ``license: other`` with the Hub's ``license_name`` / ``license_link``
when they differ, a "Terms of the inputs" section with the console's warning, and no folder of this machine."""

import json
import shutil

import pytest
from click.testing import CliRunner
from huggingface_hub import ModelCard
from tiny_models import make_distill_setting

from hf_analyze.cli import main as hf_analyze
from hf_common.model_card import read_front_matter
from hf_fuse.cli import main as hf_fuse

FAST = ["--max-steps", "1", "--grad-accum", "1", "--batch-size", "2", "--max-examples-per-file", "4"]
GENERATION = ["--gen-batch-size", "4", "--gen-max-new-tokens", "2"]


@pytest.fixture(scope="module")
def setting(fusion, tmp_path_factory):
    return make_distill_setting(fusion, tmp_path_factory.mktemp("card"), n_prompts=4)


def _licensed(folder, root, name, licence):
    """A copy of ``folder`` whose card writes down ``licence`` (None: a card without one)."""
    copy = shutil.copytree(folder, root / name)
    front = f"license: {licence}\n" if licence else ""
    (copy / "README.md").write_text(f"---\n{front}library_name: peft\n---\n\n# {name}\n")
    return copy


def _fuse(setting, tmp_path, target_licence, source_licence, method="distill"):
    target = _licensed(setting["target"], tmp_path, "target", target_licence)
    base = _licensed(setting["base"], tmp_path, "base", target_licence)
    expert = _licensed(setting["source_expert"], tmp_path, "expert", source_licence)
    source_base = _licensed(setting["source_base"], tmp_path, "source-base", source_licence)
    plan = tmp_path / "plan.h5"
    analyzed = CliRunner().invoke(hf_analyze, ["--target", str(target), "--source", str(expert), "-o", str(plan),
                                               "--block-size", "auto", "-q"])
    assert analyzed.exit_code == 0, analyzed.output
    argv = [str(plan), "--base-model", str(base), "--replay", str(setting["replay"]), "-o", str(tmp_path / "out"),
            "--source-model", f"0={source_base}", *FAST]
    if method == "distill":
        argv += ["--method", "distill", "--unlabeled", str(setting["unlabeled"]), *GENERATION]
    else:
        argv += ["--method", method]
    result = CliRunner().invoke(hf_fuse, argv)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    text = (out / "README.md").read_text()
    assert str(tmp_path) not in text, "the card names a folder of this machine"
    card = ModelCard.load(out / "README.md")  # huggingface_hub parses it
    return out, card, text, result


def test_a_gemma_source_distilled_into_an_apache_target_is_licence_other_naming_both(setting, tmp_path):
    out, card, text, result = _fuse(setting, tmp_path, "apache-2.0", "gemma")
    data = card.data.to_dict()
    assert data["license"] == "other"
    assert "gemma" in data["license_name"] and "apache-2.0" in data["license_name"]
    assert data["license_link"] == "LICENSE.md" and (out / "LICENSE.md").is_file()
    assert "## Terms of the inputs" in text and "the adapter was trained on the expert's outputs" in text
    for name in ("target adapter", "target base model", "source 0 adapter", "source 0 base model"):
        assert f"| {name} |" in text
    warning = "is under the 'gemma' licence and the adapter was trained on the expert's outputs (--method distill)"
    assert warning in text and warning in " ".join(result.stderr.split())
    report = json.loads((out / "fusion_report.json").read_text())
    assert any(warning in w for w in report["warnings"])
    assert {e["input"]: e["licence"] for e in report["terms"]} == {
        "target adapter": "apache-2.0", "target base model": "apache-2.0", "source 0 adapter": "gemma",
        "source 0 base model": "gemma"}
    digest = next(e["sha256"] for e in report["terms"] if e["input"] == "source 0 adapter")[0]
    assert len(digest) == 64 and digest in text  # a reader matches the adapter by its checksum


def test_agreeing_licences_keep_the_plain_value(setting, tmp_path):
    out, card, text, result = _fuse(setting, tmp_path, "apache-2.0", "apache-2.0", method="project")
    assert card.data.to_dict()["license"] == "apache-2.0" and "license_name" not in card.data.to_dict()
    assert not (out / "LICENSE.md").exists() and "## Terms of the inputs" in text
    assert "its update was projected into the adapter's weights" in text and "licence and" not in result.stderr


def test_an_input_without_a_licence_is_listed_as_unknown_never_dropped(setting, tmp_path):
    out, card, text, _ = _fuse(setting, tmp_path, "apache-2.0", None, method="project")
    front = read_front_matter(out)
    assert front["license"] == "other" and front["license_name"] == "apache-2.0-and-unknown"
    assert text.count("unknown (not written down)") == 2  # the source's adapter and base model

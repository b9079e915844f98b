"""The sha256 of the adapters of seven trainings on tiny models (every hf-fuse method and distill student, and
hf-eval's replay-tune and train-expert), each at its defaults but for a short budget: a refactoring that claims to
change nothing a user sees prints the same list before and after.

    python tests/support/adapter_digests.py [WORK]        # about two minutes on 2 cores

Not a test: the digests depend on torch's kernels and versions, so they are compared on one machine, before and
after a change, not against numbers kept in the repository."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner
from tiny_models import make_distill_setting, make_fusion_setting

LOOP = ["--max-steps", "3", "--grad-accum", "1", "--batch-size", "2", "--lr", "1e-3", "--max-examples-per-file", "8"]
HYPERNET = ["--embed-dim", "auto", "--n-heads", "2", "--n-proj", "16"]


def trainings(s: dict) -> dict[str, tuple[str, list[str]]]:
    """name -> (tool, arguments but the output folder)."""
    fuse = [str(s["plan"]), "--base-model", str(s["base"]), "--replay", str(s["replay"])]
    distill = ["--method", "distill", "--source-model", f"0={s['source_base']}", "--unlabeled", str(s["unlabeled"]),
               "--gen-max-new-tokens", "6", "--gen-cache", str(s["gen_cache"])]
    source = ["--source-model", f"0={s['source_base']}"]
    return {
        "hypernet": ("hf-fuse", [*fuse, *LOOP, *HYPERNET]),
        "distill-lora": ("hf-fuse", [*fuse, *distill, *LOOP]),
        "distill-hypernet": ("hf-fuse", [*fuse, *distill, "--student", "hypernet", *LOOP, *HYPERNET]),
        "project": ("hf-fuse", [*fuse, "--method", "project", *source]),
        "project-hypernet": ("hf-fuse", [*fuse, "--method", "project-hypernet", *source, *LOOP, *HYPERNET]),
        "replay-tune": ("hf-eval", ["replay-tune", "--base-model", str(s["base"]), "--adapter", str(s["target"]),
                                    "--replay", str(s["replay"]), "--max-steps", "3", "--batch-size", "2", "--lr", "1e-3"]),
        "train-expert": ("hf-eval", ["train-expert", "--base-model", str(s["base"]), "--data", str(s["replay"]),
                                     "--max-steps", "3", "--batch-size", "4", "--lr", "1e-3"]),
    }


def main(work: Path) -> int:
    from hf_eval.cli import main as hf_eval
    from hf_fuse.cli import main as hf_fuse

    tools = {"hf-fuse": hf_fuse, "hf-eval": hf_eval}
    setting = {**make_distill_setting(make_fusion_setting(work / "fusion"), work / "distill", n_prompts=5),
               "gen_cache": work / "gen"}
    failed = 0
    (work / "out").mkdir(parents=True, exist_ok=True)
    for name, (tool, argv) in trainings(setting).items():
        out = work / "out" / name
        result = CliRunner().invoke(tools[tool], [*argv, "-o", str(out)])
        if result.exit_code != 0:
            sys.stderr.write(f"{name}: exit {result.exit_code}\n{result.output}\n")
            failed += 1
            continue
        digest = hashlib.sha256((out / "adapter_model.safetensors").read_bytes()).hexdigest()
        sys.stdout.write(f"{digest}  {name}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)))

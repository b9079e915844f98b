"""The reference of every config-file key (docs/config-files.md), generated from the commands themselves.

    python tests/support/config_reference.py > docs/config-files.md
"""

import sys

from hf_analyze.cli import main as analyze
from hf_common.config_file import not_recorded_keys, reference_table
from hf_eval.cli import main as hf_eval
from hf_fuse.cli import main as fuse


def document() -> str:
    lines = ["# Config files (`--config FILE.yaml`)", "",
             "`hf-fuse`, `hf-analyze` and every `hf-eval` command take every option from a YAML mapping; options given",
             "on the command line win.",
             "Keys are the long option names without the leading dashes (`-` and `_` alike; `source` for `--source`,",
             "`json` for `--json`), the arguments by name (`plans`). A repeatable option takes a list. An unknown key,",
             "a value of the wrong type, a list where one value is expected, or YAML that is not plain data",
             "(`yaml.safe_load`: tags that would build Python objects are refused) gets exit 2 and one line naming",
             "the key and the file.", "",
             "Every run records what it computed with, in the same form: `hf-fuse` writes `fusion_config.yaml` into",
             "the fused adapter folder, `hf-analyze` stores it in the plan (`/meta/config`). Feeding that file back",
             "(`hf-fuse --config fusion_config.yaml -o other/`) runs the same job. Not recorded, because they say how",
             "to run or where to report rather than what to compute:", ""]
    for title, cmd in (("hf-fuse", fuse), ("hf-analyze", analyze)):
        lines.append(f"- {title}: " + ", ".join(f"`{k}`" for k in not_recorded_keys(cmd)))
    lines.append("")
    for title, cmd in (("hf-fuse", fuse), ("hf-analyze", analyze)):
        lines += [f"## {title}", "", *reference_table(cmd), ""]
    for name, cmd in sorted(hf_eval.commands.items()):
        lines += [f"## hf-eval {name}", "", *reference_table(cmd), ""]
    lines.append("This file is generated from the commands' own options (`tests/hf_common/test_config_file.py` checks it).")
    return "\n".join(lines) + "\n"

if __name__ == "__main__":
    sys.stdout.write(document())

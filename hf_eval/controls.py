"""Each evaluated fusion beside its null-source twin: what came from the source experts, with an interval.

An adapter is a *control* when its model card carries the ``null-source-control`` tag (``hf-eval null-source``
writes it, and ``hf-fuse`` writes it on every fusion made from a null source).  A fusion and a control made by the
same method (``fusion_report.json``'s ``method``) form a pair; their difference on the same held-out examples is
what the source experts gave, beyond what the replay data gives both (the paired bootstrap of ``hf_eval.compare``).
"""

from __future__ import annotations

import json
from pathlib import Path

from hf_common.model_card import read_front_matter

CONTROL_TAG = "null-source-control"


def identity(folder: Path | None) -> dict:
    """``{"method": name or None, "control": bool}`` of an adapter folder (nothing known of the base model alone)."""
    if folder is None:
        return {"method": None, "control": False}
    tags = read_front_matter(folder).get("tags") or []
    try:
        method = json.loads((Path(folder) / "fusion_report.json").read_text()).get("method")
    except (OSError, ValueError, AttributeError):
        method = None
    return {"method": method if isinstance(method, str) else None, "control": CONTROL_TAG in tags}


def pairs(identities: dict[str, dict]) -> list[tuple[str, str]]:
    """(fusion, its null-source twin) for every fusion and control of one method, in the order given."""
    return [(name, twin) for name, who in identities.items() if who["method"] and not who["control"]
            for twin, other in identities.items() if other["control"] and other["method"] == who["method"]]


def differences(identities: dict[str, dict], predictions: dict[tuple[str, str], list[dict]]) -> list[dict]:
    """Per pair: F1 of the fusion minus its twin's per task and macro (over the tasks both answered), with 95 %
    paired-bootstrap intervals over the examples."""
    from .compare import paired_difference

    out = []
    for name, twin in pairs(identities):
        tasks = sorted(t for (n, t), rows in predictions.items() if n == name and rows and (twin, t) in predictions)
        if not tasks:
            continue
        counts = {side: {t: [[(r["n_pred"], r["n_gold"], r["n_correct"]) for r in predictions[side, t]]] for t in tasks}
                  for side in (name, twin)}
        result = paired_difference(counts[name], counts[twin])
        out.append({"adapter": name, "control": twin, "method": identities[name]["method"],
                    "n_examples": {t: len(predictions[name, t]) for t in tasks}, "difference": result})
    return out


def format_interval(entry: dict | None) -> str:
    """``+12.3 [+4.5, +20.1]`` in F1 points, or ``-`` for a task a pair did not share."""
    if entry is None:
        return "-"
    return f"{100 * entry['diff']:+.1f} [{100 * entry['low']:+.1f}, {100 * entry['high']:+.1f}]"

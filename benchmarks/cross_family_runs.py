"""How the cross-family benchmark trains one run of each method: the runners, built from hf-fuse's method registry.

A runner trains (or, for ``project``, computes) one run: ``(source labels, rate or weight, seed, null sources) -> (run
name, adapter folder)``.  Which runners there are comes from the registry (``hf_fuse.methods.METHODS``), each method
once per choice of its student where it has one (``distill-lora``, ``distill-hypernet``), plus ``replay-tune``, the
baseline every method is compared with.  What a method's command line needs besides the plan and the replay comes
from the settings sections it reads: the HyperNet's sizes, the source models, distill's prompts; a method that trains
nothing (``project``) tunes a weight instead of a rate.  Run and step names are those of every earlier table, so a
work folder's cached steps stay valid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hf_eval.study import HYPERNET_ARGS

Trainer = Callable[..., tuple[str, Path]]


@dataclass(frozen=True)
class Runner:
    train: Trainer
    tunes_weight: bool  # a training-free method's knob is a weight, not a learning rate
    has_twin: bool  # whether it has a null-source twin (every fusion method; not replay-tune)
    tag: str  # what its run names end with


def method_variants() -> dict[str, tuple[str, str | None]]:
    """Benchmark method name -> (registered method, distill student or None), from the registry."""
    from hf_fuse.methods import METHODS
    from hf_fuse.methods.distill.method import STUDENTS, DistillSettings

    out: dict[str, tuple[str, str | None]] = {}
    for name, cls in METHODS.items():
        if DistillSettings in cls.settings_classes:
            out.update({f"{name}-{student}": (name, student) for student in STUDENTS})
        else:
            out[name] = (name, None)
    return out


class Runners:
    """Every runner of one benchmark invocation (``bench`` is its ``CrossFamily``: study, data, plans, tags)."""

    def __init__(self, bench) -> None:
        self.b = bench

    def all(self) -> dict[str, Runner]:
        from hf_fuse.methods import METHODS

        b = self.b
        out = {"replay-tune": Runner(self.replay_tune, tunes_weight=False, has_twin=False, tag=b.tag)}
        for name, (method, student) in method_variants().items():
            cls = METHODS[method]
            if not cls.trains:
                out[name] = Runner(self.training_free(method), tunes_weight=True, has_twin=True, tag="")
            elif student is not None:
                out[name] = Runner(self.fusion(name, self.distill_args(student), b.distill_tag), tunes_weight=False,
                                   has_twin=True, tag=b.distill_tag)
            else:
                out[name] = Runner(self.fusion(name, self.method_args(method)), tunes_weight=False, has_twin=True,
                                   tag=b.fusion_tag)
        return out

    # -- what a method's command line needs, by the settings sections it reads -----------------------------------
    def method_args(self, method: str) -> list:
        """``--method`` (the default needs none), the source models where the method loads them, the HyperNet's sizes
        where it trains one (the order of every earlier table's commands)."""
        from hf_fuse.methods import METHODS

        cls = METHODS[method]
        sections = {c.section for c in cls.settings_classes}
        args = [] if method == "hypernet" else ["--method", method]
        if any("source_models" in c.__dataclass_fields__ for c in cls.settings_classes):
            args += self.b.source_models
        return [*args, *(HYPERNET_ARGS if "hypernet" in sections else [])]

    def distill_args(self, student: str) -> list:
        b = self.b
        return ["--method", "distill", "--student", student, *b.source_models, *b.prompts, "--gen-cache",
                b.work / "gen-cache", "--gen-max-new-tokens", b.mode.new_tokens, "--gen-batch-size", 16,
                *(HYPERNET_ARGS if student == "hypernet" else [])]

    # -- the runners ------------------------------------------------------------------------------------------------
    def replay_tune(self, n: int, lr: float, seed: int = 0, null: bool = False) -> tuple[str, Path]:
        b = self.b
        name = f"replay-tune-L{n}-lr{lr:g}-s{seed}{b.tag}"
        return name, b.study.replay_tune(name, b.target, b.replay_for(n), lr=lr, seed=seed)

    def fusion(self, label: str, extra: list, suffix: str | None = None) -> Trainer:
        """Runs of one trainable method: (source labels, rate, seed, null sources) -> (run name, adapter)."""
        b = self.b
        suffix = b.fusion_tag if suffix is None else suffix

        def train(n: int, lr: float, seed: int = 0, null: bool = False) -> tuple[str, Path]:
            name = f"{label}{'-null' if null else ''}-L{n}-lr{lr:g}-s{seed}{suffix}"
            return name, b.study.fuse(name, b.null_plan(seed) if null else b.real_plan, b.replay_for(n), lr=lr, seed=seed,
                                      extra=[*extra, *b.variant_args])
        return train

    def training_free(self, method: str) -> Trainer:
        """A method that trains nothing: its weight scored on validation, the same adapter under each seed's name (no
        spread by construction); the null twin's noise differs by seed."""
        b = self.b
        extra = [*self.method_args(method), f"--{method}-weight"]

        def compute(n: int, weight: float, seed: int = 0, null: bool = False) -> tuple[str, Path]:
            name = f"{method}{'-null' if null else ''}-L{n}-w{weight:g}-s{seed}"
            step = name if null else f"{method}-L{n}-w{weight:g}"
            return name, b.study.fuse(step, b.null_plan(seed) if null else b.real_plan, b.replay_for(n), lr=1e-4,
                                      seed=seed, extra=[*extra, weight])
        return compute


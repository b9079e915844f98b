"""``distill``: the source expert answers, the target learns from its answers (the FuseLLM / Trans-LoRA family).

Each source adapter (kept verbatim in the plan) runs on its own base model (``--source-model
INDEX=PATH``) and answers unlabelled prompts (``--unlabeled [INDEX=]FILE``; any ``output`` in the file
is ignored) greedily, in batches, with a length cap.  The answers are cached in the output's work
folder line by line, so an interrupted run does not generate again.  Empty answers, and answers cut
at the cap, are counted and dropped.  The pairs are text, so the two tokenizers may differ: the
target formats each (prompt, answer) with its own template.  The pairs join the labelled replay and
train the target, either as a plain LoRA fine-tune of the target adapter (``--student lora``) or
through the HyperNet (``--student hypernet``); both use the project's training loops.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import click
import torch

from hf_common.cli_support import int_or_auto
from hf_common.errors import ConfigError, require_int
from hf_common.plan import Plan
from hf_common.settings import setting
from hf_runtime.data import Conversation, Example, check_replay_files, format_example, load_records, prompt_ids
from hf_runtime.distributed import main_first
from hf_runtime.generation import generate_batches
from hf_runtime.lora import LoraObjective
from hf_runtime.model import tensors_from_blob
from hf_runtime.trainer import train

from ..base import FuseContext, FusionMethod, MethodResult, lora_task, register
from ..hypernet.method import HyperNetMethod, HyperNetSettings
from ..hypernet.report import HyperNetReport
from ..sources import SOURCE_MODEL_OPTION, SourceExpert, check_sources, parse_indexed
from .answer_cache import AUTO_FALLBACK, PILOT, PILOT_CAP, AnswerCache, CachedAnswer, auto_cap
from .excess import excess_filter
from .excess_tokens import keep_tokens, token_excess_of
from .synthesize import MIN_SEEDS, synthesize
from .token_loss import DistilledExample, TokenDistillObjective, teacher_signal

logger = logging.getLogger(__name__)
STUDENTS = ("lora", "hypernet")
WRITERS = ("target", "source", "source-base")
REPLAY_PER_SOURCE = 2  # --replay-repeat auto: the replay's repeats per source adapter


@dataclass(frozen=True)
class DistillSettings:
    section: ClassVar[str] = "distill"
    source_models: dict[int, str] = setting(default_factory=dict, **SOURCE_MODEL_OPTION)
    unlabeled: tuple[tuple[int | None, str], ...] = setting(
        (), multiple=True, metavar="[INDEX=]FILE", parse=lambda v: tuple(parse_indexed(v, "--unlabeled", index_required=False)),
        help="prompts for the source experts (Alpaca/chat; any output is ignored); INDEX= sends a file to one source only.")
    synthesize: int = setting(0, type=int, metavar="N",
                              help="data-free: the target's base model writes N new prompts in the style of "
                                   "--seed-prompts (at least 3), a filter keeps those that look like them, and the "
                                   "source experts answer those (with or without --unlabeled).")
    synthesize_temperature: float = setting(0.7, type=float, metavar="T",
                                            help="with --synthesize: the writer's sampling temperature (lower: closer "
                                                 "to the seeds' wording; 0.7 beat 1.0 on validation, where a 135M "
                                                 "writer at 1.0 drifted off the task).")
    synthesize_writer: str = setting("target", type=click.Choice(list(WRITERS)),
                                     help="with --synthesize: which model writes the prompts: the target's base model, "
                                          "the source expert itself (its base model with its adapter), or the "
                                          "source's base model alone (the adapter switched off).")
    synthesize_keep_similar: float = setting(1.0, type=float, metavar="F",
                                             help="with --synthesize: a content filter after the form filter: keep the "
                                                  "fraction F of the kept prompts most like the seeds in the writer's "
                                                  "hidden states (cosine to the seeds' centroid); 1: no content filter.")
    seed_prompts: tuple[tuple[int | None, str], ...] = setting(
        (), multiple=True, metavar="[INDEX=]FILE",
        parse=lambda v: tuple(parse_indexed(v, "--seed-prompts", index_required=False)),
        help="with --synthesize: a few example prompts of the source task (Alpaca/chat; answers ignored); INDEX= for "
             "one source only.")
    student: str = setting("lora", type=click.Choice(list(STUDENTS)),
                           help="what learns from the answers: the target LoRA itself, or the HyperNet.")
    # auto by default (128 until 2026-12-01): at a fixed 48, 60 of the FindVehicle expert's 216 answers were cut and
    # dropped, its longest and best (benchmarks/bench_answers.py); auto kept all of them, as 128 does on that task, and
    # unlike any fixed cap it follows a task whose answers run longer.
    max_new_tokens: int | str = setting("auto", flag="--gen-max-new-tokens", type=str, metavar="N|auto",
                                        cli_default="auto", parse=int_or_auto,
                                        help="cap on an answer's tokens (answers cut at the cap are dropped); auto: "
                                             f"answer the first {PILOT} prompts with a cap of {PILOT_CAP}, then cap the "
                                             f"rest at 1.5x the longest finished answer ({AUTO_FALLBACK} if none "
                                             "finished).")
    min_answer_logprob: float | None = setting(None, type=float, metavar="X",
                                               help="drop answers whose mean token log-probability under the expert is "
                                                    "below X (its own confidence; e.g. -0.5); default: keep all.")
    answer_excess_keep: float = setting(1.0, type=float, metavar="F",
                                        help="keep the fraction F of the expert's answers where its adapter shows most: "
                                             "the highest mean log-probability under the expert minus under its base "
                                             "model without the adapter (TiTok's idea); 1: keep every answer.")
    answer_excess_tokens: float = setting(1.0, type=float, metavar="F",
                                          help="within each answer, the loss counts only the fraction F of its tokens "
                                               "where the expert's adapter shows most (each token's log-probability "
                                               "under the expert minus its base model; TiTok's idea); 1: every token.")
    token_loss_weight: float = setting(0.0, type=float, metavar="W",
                                       help="token-level distillation (LoRA student): add W x the distance between the "
                                            "student's and the expert's sorted next-token probabilities on the expert's "
                                            "answers (ULD), positions aligned by text across the two tokenizers; "
                                            "0: the answers' text only.")
    token_loss_top_k: int = setting(32, type=int, metavar="K",
                                    help="with --token-loss-weight: the expert's K largest probabilities per answer "
                                         "token, recorded as it answers (in the answer cache) and compared.")
    # auto since 2026-12-02, 2 per source adapter of the plan: each expert adds its answers to an epoch, and the replay
    # grows with them, so its share of the mix stays the one validation chose. One expert: 2 (macro F1 74.2 against
    # 1's 64.3, and against 3 epochs at 1's 69.3 at the same 162 steps; data-free 53.3 against 49.4, seed 0); two
    # experts: 4 (55.6 against 2's 54.5 and 1's 51.0, seed 0): benchmarks/results/README.md
    replay_repeat: int | str = setting("auto", type=str, metavar="K|auto", cli_default="auto", parse=int_or_auto,
                                       help="each replay example K times per epoch against the generated ones once: more "
                                            "of the target's own task in the mix (rehearsal's replay ratio); an epoch "
                                            f"takes longer by the added replay. auto: {REPLAY_PER_SOURCE} per source "
                                            "adapter of the plan.")
    answer_repeat: int = setting(1, type=int, metavar="K",
                                 help="each generated example K times per epoch: more of the source tasks in the mix, "
                                      "for when the experts' answers are few against the replay (data-free).")
    batch_size: int = setting(8, flag="--gen-batch-size", help="prompts per generation batch.")
    work_dir: str | None = setting(None, flag="--gen-cache", type=click.Path(), parse=lambda v: str(v) if v else None,
                                   help="folder of cached answers (default: OUT_DIR.work); runs may share one.")

    def __post_init__(self) -> None:
        if self.synthesize_writer not in WRITERS:
            raise ConfigError(f"--synthesize-writer must be one of {', '.join(WRITERS)}, got {self.synthesize_writer!r}")
        if self.student not in STUDENTS:
            raise ConfigError(f"--student must be one of {', '.join(STUDENTS)}, got {self.student!r}")
        require_int("--gen-max-new-tokens", self.max_new_tokens, 1, auto=True)
        if self.min_answer_logprob is not None and not (math.isfinite(self.min_answer_logprob)
                                                        and self.min_answer_logprob <= 0):
            raise ConfigError(f"--min-answer-logprob must be a number <= 0 (a log-probability; got {self.min_answer_logprob!r})")
        if not (math.isfinite(self.token_loss_weight) and self.token_loss_weight >= 0):
            raise ConfigError(f"--token-loss-weight must be a number >= 0 (got {self.token_loss_weight!r})")
        require_int("--token-loss-top-k", self.token_loss_top_k, 1, 1024)
        for flag, value in (("--answer-excess-keep", self.answer_excess_keep),
                            ("--answer-excess-tokens", self.answer_excess_tokens),
                            ("--synthesize-keep-similar", self.synthesize_keep_similar)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= 1):
                raise ConfigError(f"{flag} must be a fraction above 0 and at most 1 (got {value!r})")
        if self.synthesize_keep_similar < 1 and not self.synthesize:
            raise ConfigError("--synthesize-keep-similar filters written prompts: it needs --synthesize N")
        if self.token_loss_weight and self.student != "lora":
            raise ConfigError("--token-loss-weight trains the LoRA student only (--student lora)")
        require_int("--replay-repeat", self.replay_repeat, 1, 100, auto=True)
        require_int("--answer-repeat", self.answer_repeat, 1, 100)
        require_int("--gen-batch-size", self.batch_size, 1)
        require_int("--synthesize", self.synthesize, 0, 100_000)
        if not (math.isfinite(self.synthesize_temperature) and 0 < self.synthesize_temperature <= 2):
            raise ConfigError(f"--synthesize-temperature must be a number above 0 and at most 2 "
                              f"(got {self.synthesize_temperature!r})")
        if bool(self.synthesize) != bool(self.seed_prompts):
            raise ConfigError("--synthesize N and --seed-prompts FILE go together")
        if not self.unlabeled and not self.synthesize:
            raise ConfigError("--method distill needs --unlabeled FILE (prompts for the source experts to answer) or "
                              "--synthesize N --seed-prompts FILE")
        if not self.source_models:
            raise ConfigError("--method distill needs --source-model INDEX=PATH for every source of the plan")


@register
class DistillMethod(HyperNetReport, FusionMethod):
    name = "distill"
    trains_hypernet_with = "--student hypernet"
    loss_terms = {"rdm": "λ·RDM", "token": "W·token-level distance"}
    source_relation = ("the adapter was trained on the expert's outputs", "the adapter was trained on the expert's outputs")
    settings_classes = (DistillSettings, HyperNetSettings)
    # chosen on validation for the LoRA student (benchmarks/results/README.md, "The distill table"): 3e-3 among
    # 1e-4 .. 1e-2 (macro F1 64.3 against 1e-4's 27.1), 2 epochs over replay + answers (1: 51.7, 2: 64.3, 3: 69.3; at
    # the default --replay-repeat 2, 2 epochs take as many steps as 3 epochs at 1 and scored 74.2); TrainSettings'
    # 5e-5 / 3 epochs are the paper's HyperNet settings
    train_defaults = {"lr": 3e-3, "epochs": 2.0}
    help = ("the source experts answer --unlabeled prompts; their answers train the target (the LoRA student by "
            "default at " + ", ".join(f"--{key} {value:g}" for key, value in train_defaults.items()) + ")")

    @classmethod
    def training_defaults(cls, settings: dict) -> dict[str, float]:
        distill = settings.get(DistillSettings.section)
        return dict(cls.train_defaults) if distill is None or distill.student == "lora" else {}

    @classmethod
    def sections_used(cls, settings: dict) -> set[str]:
        distill = settings.get(DistillSettings.section)
        return {"distill", "hypernet"} if distill is not None and distill.student == "hypernet" else {"distill"}

    def trains_hypernet(self) -> bool:
        return HyperNetSettings.section in self.sections_used(self.settings)

    @property
    def distill(self) -> DistillSettings:
        return self.settings[DistillSettings.section]

    def preflight(self, job, plans: list[Plan], warnings: list[str] | None = None) -> None:
        s = self.settings.get(DistillSettings.section)
        if s is None:
            raise ConfigError("--method distill needs --source-model and --unlabeled")
        check_replay_files([Path(path) for _, path in (*s.unlabeled, *s.seed_prompts)], prompts_only=True)
        plan, _ = check_sources(self.name, plans, s.source_models,
                                   [i for i, _ in (*s.unlabeled, *s.seed_prompts) if i is not None], warnings)
        for index in range(plan.n_sources if s.synthesize else 0):
            seeds = self._seeds(index)
            if len(seeds) < MIN_SEEDS:
                raise ConfigError(f"--synthesize needs at least {MIN_SEEDS} --seed-prompts for each source; source "
                                  f"{index} has {len(seeds)}")

    def _seeds(self, index: int) -> list[Conversation]:
        return [c for i, path in self.distill.seed_prompts if i in (None, index) for c in load_records(path, prompts_only=True)]

    def summary_lines(self, report: dict) -> list[str]:
        lines = []
        for source, stats in report["distill"]["sources"].items():
            if "synthesis" in stats:
                x = stats["synthesis"]
                lines.append(f"source {source}: {x['kept']} of {x['candidates']} synthesized prompts kept ({x['unfinished']} "
                             f"unfinished, {x['length']} too short or long, {x['lines']} other lines, {x['copies']} copies, "
                             f"{x['unlikely']} less likely than the seeds, {x.get('dissimilar', 0)} least like them in content; "
                             f"{x['n_seed_prompts']} seeds)")
            lines.append(f"source {source} ({stats['source_model']}): {stats['kept']} of {stats['prompts']} answers kept, "
                         f"{stats['empty']} empty, {stats['truncated']} cut at the length cap ({stats['max_new_tokens']} "
                         f"tokens), {stats['filtered']} below --min-answer-logprob, {stats['cached']} from the cache")
        return lines

    def html_section(self, page, report: dict) -> None:
        page.heading("Distillation: the source experts' answers")
        page.table(["source", "model", "prompts", "kept", "empty", "cut at the cap", "cap (tokens)", "below the confidence "
                    "filter", "from the cache"],
                   [[i, s["source_model"], s["prompts"], s["kept"], s["empty"], s["truncated"], s["max_new_tokens"],
                     s["filtered"], s["cached"]] for i, s in report["distill"]["sources"].items()])

    def card_details(self, report: dict) -> dict:
        d = report["distill"]
        return {"student": d["student"], "generated examples": d["n_generated_examples"],
                "answers kept": [f"source {i}: {s['kept']} of {s['prompts']}" for i, s in d["sources"].items()]}

    def fuse(self, ctx: FuseContext) -> MethodResult:
        s, job, plan = self.distill, ctx.job, ctx.plans[0]
        work = Path(s.work_dir) if s.work_dir else job.output.with_name(job.output.name + ".work")
        work.mkdir(parents=True, exist_ok=True)
        distilled: list[Example] = []
        stats = {}
        for index in range(plan.n_sources):
            conversations = [c for i, path in s.unlabeled if i in (None, index) for c in load_records(path, prompts_only=True)]
            synthesis, expert = None, SourceExpert(s.source_models[index], ctx, index)
            if s.synthesize:
                ctx.on_event("stage", f"source {index}: writing {s.synthesize} prompts in the style of its seeds")
                writer, tokenizer = (ctx.model, ctx.tokenizer) if s.synthesize_writer == "target" else expert.get()
                adapter_off = writer.disable_adapter() if s.synthesize_writer == "source-base" else nullcontext()
                with adapter_off:
                    made, synthesis = synthesize(
                        writer, tokenizer, self._seeds(index), s.synthesize, work, seed=job.train.seed,
                        cutoff_len=job.replay_config.cutoff_len, temperature=s.synthesize_temperature,
                        keep_similar=s.synthesize_keep_similar,
                        writer_id={"target": "", "source": expert.identity}.get(s.synthesize_writer,
                                                                              f"{expert.identity} base"),
                        on_progress=lambda done, total, i=index: ctx.on_event("synthesize", (i, done, total)))
                conversations += made
            answers, stats[str(index)] = self._answers(ctx, index, conversations, work, expert)
            excess, masked = {}, 0
            if s.answer_excess_tokens < 1:
                with main_first():
                    excess, stats[str(index)]["excess_tokens"] = token_excess_of(
                        expert, conversations, answers, Path(stats[str(index)]["cache"]), job.replay_config)
            expert.release()
            if synthesis is not None:
                stats[str(index)]["synthesis"] = {**synthesis, "writer": s.synthesize_writer}
            aligned = 0
            for i, (conv, answer) in enumerate(zip(conversations, answers)):
                if answer is None:
                    continue
                pair = Conversation(conv.system, [*conv.turns[:-1], (conv.turns[-1][0], answer.text)])
                example = format_example(ctx.tokenizer, pair, job.replay_config.cutoff_len, job.replay_config.drop_history,
                                         source=f"distill-source{index}")
                if example is None:
                    continue
                if s.token_loss_weight:
                    signal = teacher_signal(ctx.tokenizer, example.input_ids, example.labels, answer.text, answer.starts,
                                            [p[:s.token_loss_top_k] for p in answer.top])
                    example = DistilledExample(example.input_ids, example.labels, example.source, teacher=signal)
                    aligned += len(signal.positions) if signal else 0
                if i in excess:
                    example, dropped = keep_tokens(ctx.tokenizer, example, answer.text, excess[i], s.answer_excess_tokens)
                    masked += dropped
                distilled.append(example)
            if excess:
                stats[str(index)]["excess_tokens"].update(fraction=s.answer_excess_tokens, masked=masked)
            if s.token_loss_weight:
                stats[str(index)]["aligned_positions"] = aligned
        def times(k: int) -> str:
            return f" (each {k} times)" if k > 1 else ""
        replay_repeat = REPLAY_PER_SOURCE * plan.n_sources if s.replay_repeat == "auto" else s.replay_repeat
        ctx.on_event("stage", f"distill: {len(distilled)} generated examples{times(s.answer_repeat)} join "
                              f"{len(ctx.replay.examples)} replay examples{times(replay_repeat)}")
        examples = ctx.replay.examples * replay_repeat + distilled * s.answer_repeat
        if s.student == "hypernet":
            result = HyperNetMethod(self.settings).fuse(ctx, examples)
        else:
            result = self._lora_student(ctx, examples)
        result.extra["distill"] = {"student": s.student, "n_generated_examples": len(distilled), "sources": stats,
                                   "replay_repeat": replay_repeat, "answer_repeat": s.answer_repeat,
                                   "n_training_examples": len(examples),
                                   "work_dir": str(work)}
        return result

    def _answers(self, ctx: FuseContext, index: int, conversations: list[Conversation], work: Path,
                 loaded: SourceExpert) -> tuple[list[CachedAnswer | None], dict]:
        """The source expert's answer to every conversation (None where dropped), from the cache where it can."""
        s, job = self.distill, ctx.job
        key = hashlib.sha256(json.dumps({
            "adapter": loaded.adapter_hash, "model": str(s.source_models[index]),
            "prompts": [[c.system, c.turns[:-1], c.turns[-1][0]] for c in conversations],
            "max_new_tokens": s.max_new_tokens, "cutoff": job.replay_config.cutoff_len,
            "drop_history": job.replay_config.drop_history, "format": 2}, sort_keys=True).encode()).hexdigest()[:16]
        cache = AnswerCache(work / f"generations-source{index}-{key}.jsonl", len(conversations))
        cap = s.max_new_tokens
        top_k = s.token_loss_top_k if s.token_loss_weight else 0

        def missing(i: int) -> bool:  # not cached, or cached without the teacher's side that a kept answer needs
            got = done.get(i)
            return got is None or bool(top_k and got.finished and got.text.strip()
                                       and (got.top is None or len(got.top[0]) < top_k))

        with main_first(), cache.locked():  # data parallel: the main process generates, the others then read its cache
            done = cache.read()
            todo = [i for i in range(len(conversations)) if missing(i)]
            ctx.on_event("stage", f"source {index}: {len(done)} cached answers, {len(todo)} to generate ({cache.path.name})")
            if todo:
                expert, tokenizer = loaded.get()
                replay = job.replay_config
                prompts = {i: prompt_ids(tokenizer, conversations[i], replay.cutoff_len, replay.drop_history) for i in todo}

                def answer(keys: list[int], limit: int) -> None:
                    for batch in generate_batches(expert, tokenizer, {i: prompts[i] for i in keys}, limit, s.batch_size,
                                                  top_k):
                        got = [(g.key, CachedAnswer(g.text, g.finished, g.n_tokens, g.logprob, g.starts, g.top))
                               for g in batch]
                        cache.append(got)
                        done.update(got)
                        ctx.on_event("generate", (index, len(done), len(conversations)))

                if cap == "auto":
                    pilot = list(range(min(PILOT, len(conversations))))  # on a resume, their answers are cached
                    answer([i for i in pilot if missing(i)], PILOT_CAP)
                    cap = auto_cap([done[i] for i in pilot])
                    ctx.on_event("stage", f"source {index}: --gen-max-new-tokens auto -> {cap}")
                answer([i for i in todo if missing(i)], cap)
            elif cap == "auto":
                cap = auto_cap([done[i] for i in range(min(PILOT, len(conversations)))])
        answers: list[CachedAnswer | None] = []
        counts = {"prompts": len(conversations), "kept": 0, "empty": 0, "truncated": 0, "filtered": 0,
                  "cached": len(conversations) - len(todo), "bad_cache_lines": cache.bad_lines}
        for i in range(len(conversations)):
            got = done[i]
            if not got.text.strip():
                counts["empty"] += 1
                answers.append(None)
            elif not got.finished:
                counts["truncated"] += 1
                answers.append(None)
            elif s.min_answer_logprob is not None and got.logprob < s.min_answer_logprob:
                counts["filtered"] += 1
                answers.append(None)
            else:
                counts["kept"] += 1
                answers.append(got)
        if s.answer_excess_keep < 1:
            with main_first():
                answers, counts["excess"] = excess_filter(loaded, conversations, answers, cache.path, s.answer_excess_keep,
                                                          job.replay_config)
            counts["kept"] -= counts["excess"]["dropped"]
        if counts["empty"] or counts["truncated"] or counts["filtered"]:
            logger.warning("source %d: of %d answers, %d empty, %d cut at the cap and %d below --min-answer-logprob were "
                           "dropped", index, counts["prompts"], counts["empty"], counts["truncated"], counts["filtered"])
        return answers, {**counts, "max_new_tokens": cap, "cache": str(cache.path),
                         "source_model": str(s.source_models[index])}

    def _lora_student(self, ctx: FuseContext, examples: list[Example]) -> MethodResult:
        """The target adapter trained further on replay + generated examples, exported with the target's keys and dtypes."""
        from peft import get_peft_model_state_dict

        plan, job = ctx.plans[0], ctx.job
        target = tensors_from_blob(plan.target_safetensors())
        peft_model = ctx.attach_for_training(ctx.model, plan.target_config, target, trainable=True)
        torch.manual_seed(job.train.seed)
        options = dict(seed=job.train.seed, gradient_checkpointing=job.train.gradient_checkpointing,
                       pad_id=ctx.tokenizer.pad_token_id, device=ctx.device, loss_average=job.train.loss_average)
        objective = (TokenDistillObjective(peft_model, token_loss_weight=self.distill.token_loss_weight, **options)
                     if self.distill.token_loss_weight else LoraObjective(peft_model, **options))
        history = train(objective, examples, job.train, ctx.device, ctx.checkpointer, resume=job.resume,
                        on_step=lambda record, total: ctx.on_event("step", (0, record, total))).history
        trained = get_peft_model_state_dict(peft_model, save_embedding_layers=False)  # no probe of the base model
        if sorted(trained) != sorted(target):
            raise RuntimeError("the trained adapter's keys differ from the target adapter's")  # a bug, not bad input
        tensors = {k: trained[k].detach().to(target[k].dtype).cpu() for k in target}
        ctx.model = peft_model.unload()
        return MethodResult(tensors, plan.target_config, [lora_task(plan, history)])


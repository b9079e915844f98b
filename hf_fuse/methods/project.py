"""``project``: carry each source update into the target's coordinates through activation-aligned maps
(training-free; after "Transport and Merge", which aligns whole models through their activations).

1. Both bare base models read the same text (the replay records, prompt and answer, as plain text).
   Positions are paired across the two tokenizers by character offsets: a target token and a source
   token pair up when both end at the same character, so both models have read the same prefix.
2. For every aligned module pair (target module at layer l, source module at the plan's layer map of
   l) the paired positions give the modules' inputs x_t, x_s and outputs y_t, y_s.  Ridge least squares
   fits x_s ~ P_in x_t and y_t ~ P_out y_s (from running sums of outer products, so memory does not
   grow with the text).
3. The source update s_s·B_s·A_s becomes s_s·(P_out B_s)(A_s P_in): still rank r_s, now in the target's
   coordinates.  It is appended to the target's LoRA as extra rank (A = [A_t; A'], B = [B_t, B'], with
   ``rank_pattern`` / ``alpha_pattern`` entries that keep the target's scale): the target's own update
   and the projected one are both kept exactly.  A rank-r truncated SVD of their sum would keep the
   adapter's shapes but lose part of both, so it is not used.
"""

from __future__ import annotations

import copy
import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import ClassVar

import click
import numpy as np
import torch

from hf_common import peft_keys
from hf_common.adapter import lora_scale
from hf_common.errors import ConfigError, InputError, require_int
from hf_common.settings import setting
from hf_runtime.data import load_records
from hf_runtime.model import load_model_and_tokenizer, resolve_base_model, tensors_from_blob, tensors_from_plan

from .base import FuseContext, FusionMethod, MethodResult, lora_task, register
from .sources import SOURCE_MODEL_OPTION, check_sources

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProjectSettings:
    section: ClassVar[str] = "project"
    source_models: dict[int, str] = setting(default_factory=dict, **SOURCE_MODEL_OPTION)
    max_tokens: int = setting(4096, flag="--align-tokens",
                              help="aligned token positions (of the replay text) used to fit the maps.")
    ridge: float = setting(1e-2, help="ridge of the least-squares maps, relative to the activations' mean eigenvalue.")
    weight: float = setting(1.0, flag="--project-weight", help="scale of every projected source update.")
    map: str = setting("assignment", flag="--project-map", type=click.Choice(["assignment", "lstsq"]),
                       help="pair coordinates by neuron matching (assignment) or by ridge least squares (lstsq).")

    def __post_init__(self) -> None:
        if not self.source_models:
            raise ConfigError("--method project / project-hypernet needs --source-model INDEX=PATH for every source "
                              "of the plan")
        require_int("--align-tokens", self.max_tokens)
        if not (math.isfinite(self.ridge) and self.ridge > 0):
            raise ConfigError(f"--ridge must be a positive number (got {self.ridge!r})")
        if self.map not in ("assignment", "lstsq"):
            raise ConfigError(f"--project-map must be assignment or lstsq, got {self.map!r}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(f"--project-weight must be a positive number (got {self.weight!r})")


@dataclass
class Link:
    """One target unit and the source module it takes its update from."""

    target_module: str
    key_a: str
    key_b: str
    rows: np.ndarray  # rows of the target module's B (and output) that the unit covers
    scale: float
    source: int
    source_module: str
    stats: dict = field(default_factory=dict)


def links_of(plan) -> list[Link]:
    """Every (target unit, source module) pair of the plan's groups."""
    out = []
    for group in plan.groups:
        a = group.array
        offsets, context = a("context_offset"), a("context_source_unit")
        rows = np.split(a("target/unit_b_rows"), np.cumsum(a("target/unit_d_out"))[:-1])
        source_module, unit_source = a("source/unit_module"), a("source/unit_source")
        for u, (module, key_a, key_b, scale) in enumerate(zip(a("target/unit_module"), a("target/unit_key_a"),
                                                              a("target/unit_key_b"), a("target/unit_scale"))):
            for su in context[offsets[u]:offsets[u + 1]]:
                out.append(Link(str(module), str(key_a), str(key_b), rows[u], float(scale), int(unit_source[su]),
                                str(source_module[su])))
    return out


def aligned_positions(text: str, tokenizer_t, tokenizer_s, limit: int = 512) -> tuple[list[int], list[int], list, list]:
    """Token ids of ``text`` for both tokenizers (after each one's BOS, if it has one) and the pairs of positions
    whose tokens end at the same character of ``text``."""
    encoded = []
    for tokenizer in (tokenizer_t, tokenizer_s):
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False, truncation=True, max_length=limit)
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        encoded.append((bos + list(enc["input_ids"]), len(bos), enc["offset_mapping"]))
    (ids_t, shift_t, offsets_t), (ids_s, shift_s, offsets_s) = encoded
    ends_s = {end: j for j, (start, end) in enumerate(offsets_s) if end > start}
    pairs = [(i + shift_t, ends_s[end] + shift_s) for i, (start, end) in enumerate(offsets_t) if end > start and end in ends_s]
    return [p[0] for p in pairs], [p[1] for p in pairs], ids_t, ids_s


class _Capture:
    """Forward hooks that keep a module's input and output at chosen positions (batch of one)."""

    def __init__(self, model, modules: set[str]):
        self.seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.input_ptr: dict[str, int] = {}  # modules that read the same tensor (q/k/v, gate/up) share input maps
        self.held: list[torch.Tensor] | None = []  # inputs kept alive on the first pass, so no address is reused
        self.positions: list[int] = []
        self.handles = [model.get_submodule(name).register_forward_hook(self._hook(name)) for name in modules]

    def _hook(self, name):
        def hook(module, args, output):
            index = torch.tensor(self.positions, device=output.device)
            if self.held is not None:
                self.held.append(args[0])
                self.input_ptr[name] = args[0].data_ptr()
            self.seen[name] = (args[0][0].index_select(0, index).double(), output[0].index_select(0, index).double())
        return hook

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@register
class ProjectMethod(FusionMethod):
    name = "project"
    source_relation = ("its update was projected into the adapter's weights", "its activations aligned that projection")
    help = "each source update carried into the target's coordinates by activation-aligned maps (training-free)"
    settings_classes = (ProjectSettings,)
    shardable = False  # it reads whole activations of both base models
    trains = False

    @property
    def project(self) -> ProjectSettings:
        return self.settings[ProjectSettings.section]

    def preflight(self, job, plans, warnings: list[str] | None = None) -> None:
        if self.settings.get(ProjectSettings.section) is None:
            raise ConfigError(f"--method {self.name} needs --source-model INDEX=PATH for every source of the plan")
        check_sources(self.name, plans, self.project.source_models, warnings=warnings)

    def fuse(self, ctx: FuseContext) -> MethodResult:
        plan = ctx.plans[0]
        links, report = self.carry(ctx)
        tensors, config = append_projection(plan, tensors_from_plan(plan), links)
        return MethodResult(tensors, config, [lora_task(plan, [])], {"project": report})

    def carry(self, ctx: FuseContext) -> tuple[list[Link], dict]:
        """Every source update in the target's coordinates (the links' ``a`` and ``b``), and the report's section."""
        plan = ctx.plans[0]
        links = links_of(plan)
        texts = [conv.turns[-1][0] + conv.turns[-1][1] for path in ctx.job.replay for conv in load_records(path)]
        report: dict[str, dict] = {}
        for source in range(plan.n_sources):
            mine = [link for link in links if link.source == source]
            report[str(source)] = self._fit(ctx, source, mine, texts)
        ctx.on_event("stage", f"project: {sum('p_in' in link.stats for link in links)} module updates carried over")
        return links, {"sources": report, "rank": "target rank + source rank"}

    @torch.no_grad()
    def _fit(self, ctx: FuseContext, source: int, links: list[Link], texts: list[str]) -> dict:
        """Accumulate the paired activations of every link over ``texts`` and solve its two maps."""
        s = self.project
        model_s, tokenizer_s = load_model_and_tokenizer(resolve_base_model(s.source_models[source]), ctx.device, ctx.dtype)
        model_t = ctx.model
        for model in (model_t, model_s):
            model.eval()
        cap_t = _Capture(model_t, {link.target_module for link in links})
        cap_s = _Capture(model_s, {link.source_module for link in links})
        n_tokens = 0
        inputs: dict[tuple[int, int], dict] = {}  # one set of input sums per distinct (target input, source input)
        input_of: list[dict] = []
        try:
            for text in texts:
                pos_t, pos_s, ids_t, ids_s = aligned_positions(text, ctx.tokenizer, tokenizer_s)
                if not pos_t:
                    continue
                keep = min(len(pos_t), s.max_tokens - n_tokens)
                cap_t.positions, cap_s.positions = pos_t[:keep], pos_s[:keep]
                model_t(input_ids=torch.tensor([ids_t], device=ctx.device))
                model_s(input_ids=torch.tensor([ids_s], device=ctx.device))
                if not input_of:  # on the first text: which links read the same input tensors
                    for link in links:
                        key = (cap_t.input_ptr[link.target_module], cap_s.input_ptr[link.source_module])
                        input_of.append(inputs.setdefault(key, {"link": link}))
                    cap_t.held = cap_s.held = None
                for link, shared in zip(links, input_of):
                    x_t, y_t = cap_t.seen[link.target_module]
                    x_s, y_s = cap_s.seen[link.source_module]
                    y_t = y_t[:, torch.from_numpy(link.rows).to(y_t.device)]
                    if shared["link"] is link:
                        _moments(shared, "in", x_t, x_s, gram=s.map == "lstsq")  # x_s ~ P_in.T x_t
                    _moments(link.stats, "out", y_s, y_t, gram=s.map == "lstsq")  # y_t ~ P_out.T y_s
                n_tokens += keep
                ctx.on_event("align", (source, n_tokens, s.max_tokens))
                if n_tokens >= s.max_tokens:
                    break
        finally:
            cap_t.close()
            cap_s.close()
        if n_tokens == 0:
            raise InputError("no position of the replay text is shared by the two tokenizers; nothing to align on",
                             str(s.source_models[source]))
        config, blob = ctx.plans[0].source_adapter(source)
        source_tensors = tensors_from_blob(blob)
        keys = {(parsed.module, parsed.part): key for key in source_tensors for parsed in [peft_keys.parse_key(key)]}
        fits = []
        fit = _ridge if s.map == "lstsq" else _assignment
        for shared in inputs.values():
            shared["p_in"] = fit(shared, "in", s.ridge)
        for link, shared in zip(links, input_of):
            a_s = source_tensors[keys[link.source_module, peft_keys.LORA_A]]
            b_s = source_tensors[keys[link.source_module, peft_keys.LORA_B]]
            scale_s = lora_scale(config, link.source_module, a_s.shape[0])[1]
            p_in, p_out = shared["p_in"], fit(link.stats, "out", s.ridge)
            link.stats.clear()
            if b_s.shape[0] != p_out.shape[0]:
                raise InputError(f"source module {link.source_module} has {b_s.shape[0]} output rows but its outputs have "
                                 f"{p_out.shape[0]} (fused modules cannot be projected)", str(s.source_models[source]))
            factor = s.weight * scale_s / link.scale  # the target part keeps the target's scale
            link.stats.update(p_in=True, a=(a_s.double() @ p_in.T).float(), b=(p_out.T @ b_s.double() * factor).float())
            fits.append({"module": link.target_module, "source_module": link.source_module})
        del model_s
        return {"aligned_tokens": n_tokens, "modules": len(fits), "input_maps": len(inputs),
                "source_model": str(s.source_models[source])}



def append_projection(plan, target: dict[str, torch.Tensor], links: list[Link]) -> tuple[dict, dict]:
    """The target's factors (``target``: the plan's, or a trained version of them) with every projected update
    appended as extra rank, and the adapter config that says so."""
    extra = defaultdict(list)
    for link in links:
        if "a" in link.stats:
            extra[(link.target_module, link.key_a, link.key_b)].append(link)
    tensors = dict(target)
    config = copy.deepcopy(plan.target_config)
    rank_pattern, alpha_pattern = dict(config.get("rank_pattern") or {}), dict(config.get("alpha_pattern") or {})
    for (module, key_a, key_b), group in extra.items():
        a_t, b_t = target[key_a], target[key_b]
        blocks_a, blocks_b = [a_t.float()], [b_t.float()]
        for link in group:
            b_new = torch.zeros(b_t.shape[0], link.stats["b"].shape[1])
            b_new[torch.from_numpy(link.rows)] = link.stats["b"]
            blocks_a.append(link.stats["a"])
            blocks_b.append(b_new)
        tensors[key_a] = torch.cat(blocks_a, 0).to(a_t.dtype)
        tensors[key_b] = torch.cat(blocks_b, 1).to(b_t.dtype)
        rank = tensors[key_a].shape[0]
        scale = group[0].scale
        rank_pattern[module] = rank
        alpha_pattern[module] = scale * (math.sqrt(rank) if config.get("use_rslora") else rank)
    config["rank_pattern"], config["alpha_pattern"] = rank_pattern, alpha_pattern
    return tensors, config


@torch.no_grad()
def add_to_base(model, links: list[Link]) -> None:
    """Add every projected update to the target base model's own weights (``W[rows] += s·B'A'``), so that a
    method can train on top of the projection while the target adapter keeps its shapes."""
    for link in links:
        if "a" in link.stats:
            weight = model.get_submodule(link.target_module).weight
            rows = torch.from_numpy(link.rows).to(weight.device)
            update = link.scale * (link.stats["b"].double() @ link.stats["a"].double())
            weight.index_add_(0, rows, update.to(weight.device, weight.dtype))


def _moments(stats: dict, side: str, u: torch.Tensor, v: torch.Tensor, *, gram: bool) -> None:
    """Running sums for fitting ``v ~ P.T u``: cross products, first and second moments (and u's Gram matrix)."""
    sums = {"uv": u.T @ v, "u": u.sum(0), "v": v.sum(0), "uu": (u * u).sum(0), "vv": (v * v).sum(0),
            "n": torch.tensor(float(u.shape[0]), dtype=u.dtype)}
    if gram:
        sums["gram"] = u.T @ u
    for key, value in sums.items():
        name = f"{side}_{key}"
        stats[name] = stats[name] + value if name in stats else value


def _ridge(stats: dict, side: str, ridge: float) -> torch.Tensor:
    """``argmin_P ||U P - V||² + λ||P||²``, λ relative to the mean eigenvalue of ``U^T U``."""
    gram, cross = stats[f"{side}_gram"], stats[f"{side}_uv"]
    lam = ridge * float(torch.trace(gram)) / gram.shape[0]
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram + max(lam, 1e-12) * eye, cross).cpu()


def _assignment(stats: dict, side: str, ridge: float) -> torch.Tensor:
    """A one-to-one matching of u's and v's coordinates (neurons) that maximises their summed correlation
    (``scipy.optimize.linear_sum_assignment``; rectangular when the widths differ), each matched pair with its
    least-squares gain.  Unlike a least-squares map it keeps directions the text does not exercise."""
    from scipy.optimize import linear_sum_assignment

    n = stats[f"{side}_n"]
    mean_u, mean_v = stats[f"{side}_u"] / n, stats[f"{side}_v"] / n
    cov = stats[f"{side}_uv"] / n - torch.outer(mean_u, mean_v)
    var_u = (stats[f"{side}_uu"] / n - mean_u**2).clamp_min(1e-12)
    var_v = (stats[f"{side}_vv"] / n - mean_v**2).clamp_min(1e-12)
    corr = cov / torch.sqrt(torch.outer(var_u, var_v))
    rows, cols = linear_sum_assignment(corr.cpu().numpy(), maximize=True)
    gain = (cov / (var_u + ridge * float(var_u.mean())).unsqueeze(1)).cpu()
    out = torch.zeros(cov.shape, dtype=torch.float64)
    out[rows, cols] = gain[rows, cols]
    return out


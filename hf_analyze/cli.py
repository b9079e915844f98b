"""``hf-analyze``: judge whether LoRA adapters of different families can be fused, and write the plan.

Exit codes: 0 compatible (at least one active group), 1 analysed but nothing can be
fused, 2 bad input or usage, 4 unexpected error (please report; never a verdict), 130 interrupted.
"""

from __future__ import annotations

from pathlib import Path

import click

from hf_common.atomic import check_output_path
from hf_common.cli_support import Group, check_json_target, errors_to_exit_codes, int_or_auto, shared_options, write_json
from hf_common.config_file import config_option, dump, resolved_config
from hf_common.console import EXIT_NOTHING_TO_FUSE, EXIT_OK, Console, setup_logging
from hf_common.plan import Plan

from . import __version__


@click.group(cls=Group, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--target", type=click.Path(path_type=Path), metavar="DIR",
              help="PEFT LoRA adapter folder of the target model (the one that receives knowledge).")
@click.option("--source", "sources", multiple=True, type=click.Path(path_type=Path), metavar="DIR",
              help="PEFT LoRA adapter folder of a source expert; repeat for several sources.")
@click.option("-o", "--output", type=click.Path(path_type=Path), metavar="PLAN.h5",
              help="Where to write the fusion plan (HDF5). Not needed with --check.")
@click.option("--block-size", default="4096", show_default=True, metavar="N|auto",
              help="Rows per block token; 'auto' picks the largest size that tiles the target's dimensions.")
@click.option("--transfer-ratio", type=float, default=1.0, show_default=True,
              help="Keep only the last max(1, floor(ratio * n)) aligned layer pairs of each source, in (0, 1].")
@click.option("--layer-map", default="tail", show_default=True, metavar="tail|proportional|FILE.json",
              help="How target layers map to source layers: tail alignment, relative depth, or your own pairs.")
@click.option("--json", "json_path", metavar="PATH|-", help="Also write the machine-readable report ('-': stdout).")
@click.option("--report", "report_path", type=click.Path(path_type=Path), metavar="FILE.html",
              help="Also write a self-contained HTML report: layer maps, token spectra, untouched modules, warnings.")
@click.option("--check", is_flag=True, help="Judge and validate every tensor, but write no plan.")
@shared_options("force", "quiet", "debug", force="Overwrite an existing plan or JSON report.")
@click.version_option(__version__, prog_name="hf-analyze")
@config_option
@click.pass_context
def main(ctx: click.Context, target, sources, output, check, **options) -> None:
    """Analyse a target LoRA adapter and source adapters from any supported family.

    \b
    hf-analyze --target llama-expert --source qwen-expert -o plan.h5
    hf-analyze show plan.h5 --json -
    hf-analyze families
    """
    block_size, transfer_ratio, layer_map = options["block_size"], options["transfer_ratio"], options["layer_map"]
    json_path, report_path = options["json_path"], options["report_path"]
    force, quiet, debug = options["force"], options["quiet"], options["debug"]
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if ctx.invoked_subcommand:
        return
    if target is None or not sources:
        raise click.UsageError("--target and at least one --source are required")
    if output is None and not check:
        raise click.UsageError("give -o/--output PLAN.h5, or --check to write no plan")
    console = Console(quiet=quiet, debug=debug, report_to_stderr=json_path == "-")
    setup_logging(debug)
    from .planner import AnalyzeSettings, analyze
    from .report import build_report, render

    with errors_to_exit_codes(console):
        if output is not None and not check:
            check_output_path(output, force, "plan", file=True)
        check_json_target(json_path, force)
        if report_path is not None:
            check_output_path(report_path, force, "HTML report", file=True)
        settings = AnalyzeSettings(block_size=int_or_auto(block_size), transfer_ratio=transfer_ratio,
                                   layer_map=layer_map)
        analysis = analyze(target, list(sources), settings)
        report = build_report(analysis)
        created = output is not None and not check and not output.exists()
        try:
            arrays = _plan(analysis, report, output, check, force, ctx, console, quiet)
            render(report, console)
            write_json(json_path, report, force=force)
            if report_path is not None:
                if analysis.compatible and check:
                    _write_html(report_path, report, lambda group, key: arrays[group][key], "hf-analyze --check", force)
                elif analysis.compatible:
                    with Plan(output, verify=False) as written:
                        _write_html(report_path, report, _plan_arrays(written), f"plan {output}", force)
                else:
                    _write_html(report_path, report, None, "hf-analyze (nothing to fuse)", force)
                console.success(f"HTML report written to {report_path}")
        except BaseException:  # a later output failed: the plan this run created goes too, so nothing is half done
            if created and output.exists():
                output.unlink()
            raise
        if analysis.compatible and not check:
            console.success(f"plan written to {output}")
    ctx.exit(EXIT_OK if analysis.compatible else EXIT_NOTHING_TO_FUSE)


@main.command()
@click.argument("plan", type=click.Path(path_type=Path))
@click.option("--json", "json_path", metavar="PATH|-", help="Write the plan's report as JSON ('-': stdout).")
@click.option("--report", "report_path", type=click.Path(path_type=Path), metavar="FILE.html",
              help="Also write a self-contained HTML report of the plan.")
@click.option("--no-verify", is_flag=True, help="Skip recomputing the checksums of every dataset.")
@click.option("--force", is_flag=True, help="Overwrite an existing JSON or HTML report.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors.")
@click.pass_context
def show(ctx: click.Context, plan: Path, json_path, report_path, no_verify, force, quiet) -> None:
    """Print the report of an existing plan (same JSON object as the analysis)."""
    from .report import render

    console = Console(quiet=quiet, debug=ctx.obj.get("debug", False), report_to_stderr=json_path == "-")
    with errors_to_exit_codes(console):
        check_json_target(json_path, force)
        if report_path is not None:
            check_output_path(report_path, force, "HTML report", file=True)
        with Plan(plan, verify=not no_verify) as opened:
            report = opened.report
            console.info(f"{plan}: format version {opened.version}, checksum {opened.checksum[:16]}…")
            render(report, console)
            write_json(json_path, report, force=force)
            if report_path is not None:
                _write_html(report_path, report, _plan_arrays(opened), f"plan {plan} (sha256 {opened.checksum[:16]}…)",
                            force)
                console.success(f"HTML report written to {report_path}")
    ctx.exit(EXIT_OK if report["compatible"] else EXIT_NOTHING_TO_FUSE)


@main.command()
def families() -> None:
    """List the model families the registry knows and their module roles."""
    from hf_common.registry import families as known

    console = Console()
    console.table("Model families", ["family", "layers", "modules → roles", "description"], [
        [f.name, ", ".join(f.layer_containers),
         "; ".join(f"{s.suffix}→{'+'.join(s.roles)}" for s in f.modules.values()), f.description]
        for f in known().values()
    ])


def _plan_arrays(plan: Plan):
    groups = {g.name: g for g in plan.groups}
    return lambda group, key: groups[group].array(key)


def _plan(analysis, report, output, check, force, ctx, console, quiet):
    """Validate every group and write the plan (unless ``--check``); the arrays of each group for the HTML report."""
    if not analysis.compatible:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .execute import execute

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console.err, disable=quiet, transient=True) as progress:
        bar = progress.add_task("validating groups" if check else "writing the plan's groups", total=len(analysis.groups))
        return execute(analysis, report, None if check else output, force=force, config_text=dump(resolved_config(ctx)),
                       on_group=lambda name: progress.advance(bar))


def _write_html(path: Path, report: dict, array, origin: str, force: bool) -> None:
    from .html import spectra, write_plan_report

    names = [g["name"] for g in report["groups"]]
    write_plan_report(path, report, spectra(names, array) if array and names else None, origin, force=force)

"""``--config FILE.yaml``: every option of a command from a YAML file; flags on the command line still win.

Keys are the options' long names without the leading dashes, ``-`` or ``_`` alike (``max-steps`` /
``max_steps``; ``source`` for ``--source``, a list where the option repeats), and the command's arguments by
their name (``plans``).  An unknown key, or a value of the wrong type, is
refused with the key and the file named.  :func:`resolved_config` gives back what a run used, in the same
form, so a run writes it beside its output and feeding that file back re-runs the same job.
"""

from __future__ import annotations

from pathlib import Path

import click

from .errors import ConfigError, FileAccessError, one_line

NOT_KEYS = {"config", "help", "version"}  # options about the command itself, never in a config file
NOT_RECORDED = NOT_KEYS | {"force", "debug", "quiet", "resume", "json_path", "report_path", "log_file", "checkpoint_dir",
                           "tracker_dir", "shard_base_model"}  # how to run and where to report, not what to compute


def _key(param: click.Parameter) -> str:
    """A parameter's key in a config file: its long option name without dashes (``json`` for ``--json``), or, for an
    argument, its name."""
    longs = [opt[2:] for opt in getattr(param, "opts", []) if opt.startswith("--")]
    return (longs[0] if longs and isinstance(param, click.Option) else param.name).replace("_", "-")


def _params(command: click.Command) -> dict[str, click.Parameter]:
    """Every parameter by its key, ``-`` and ``_`` alike."""
    out = {}
    for param in command.params:
        if param.name and param.name not in NOT_KEYS:
            out[_key(param).replace("-", "_")] = param
    return out


def load_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback of ``--config``: check the file and make its values the command's defaults."""
    if value is None:
        return None
    try:
        _apply(ctx, Path(value))
    except (ConfigError, FileAccessError) as exc:  # during option parsing: one line and exit 2, like every bad input
        from .console import EXIT_BAD_INPUT, Console

        Console().abort(str(exc), EXIT_BAD_INPUT)
    return value


def _apply(ctx: click.Context, path: Path) -> None:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))  # safe_load: plain data only, never objects
    except FileNotFoundError:
        raise FileAccessError("config file not found", path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileAccessError(f"cannot read the config file ({one_line(exc)})", path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({one_line(exc)})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of option names to values")
    params = _params(ctx.command)
    defaults = {}
    for key, raw in data.items():
        lookup = str(key).replace("-", "_")
        if lookup not in params:
            known = ", ".join(sorted(n.replace("_", "-") for n in params))
            raise ConfigError(f"{path}: unknown key {key!r} (known: {known})")
        option = params[lookup]
        name = option.name
        try:
            if option.multiple or option.nargs == -1:
                values = raw if isinstance(raw, list) else [raw]
                defaults[name] = tuple(option.type.convert(_scalar(v, key, path), option, ctx) for v in values)
            elif raw is None:
                defaults[name] = None
            else:
                defaults[name] = option.type.convert(_scalar(raw, key, path), option, ctx)
        except click.BadParameter as exc:
            raise ConfigError(f"{path}: key {key!r}: {exc.message}") from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _scalar(value, key, path):
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{path}: key {key!r} must be a single value, not a {type(value).__name__}")
    return value


def resolved_config(ctx: click.Context) -> dict:
    """What the command ran with (every option but the ones that only say how to run), YAML-ready, keyed as a
    config file is."""
    params = {param.name: param for param in ctx.command.params}
    out = {}
    for name, value in ctx.params.items():
        if name in NOT_RECORDED or name not in params:
            continue
        path = isinstance(params[name].type, click.Path)
        if isinstance(value, tuple):
            value = [_plain(v, path) for v in value]
        else:
            value = _plain(value, path, output=name == "output")
        out[_key(params[name])] = value
    return out


def _plain(value, path: bool = False, output: bool = False):
    """A value as YAML holds it; a path as an absolute one, so the file re-runs the job from any folder (a bare name
    that is not on disk, such as a registry model's ``smollm2``, stays as given)."""
    if path and value is not None:
        given = Path(value)
        if output or given.exists() or len(given.parts) > 1:
            return str(given.absolute())
        return str(value)
    return str(value) if isinstance(value, Path) else value


def dump(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


config_option = click.option("--config", type=click.Path(dir_okay=False), callback=load_config_file, is_eager=True,
                             expose_value=False, metavar="FILE.yaml",
                             help="Take every option from a YAML file (keys: the long option names); flags given on "
                                  "the command line win.")


def reference_table(command: click.Command) -> list[str]:
    """Markdown rows documenting every key of ``command`` (``docs/config-files.md`` is made of these)."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for param in command.params:
        if not param.name or param.name in NOT_KEYS:
            continue
        kind = " / ".join(param.type.choices) if isinstance(param.type, click.Choice) else param.type.name
        if getattr(param, "is_flag", False):
            kind = "boolean"
        if getattr(param, "multiple", False) or param.nargs == -1:
            kind = f"list of {kind}"
        default = param.default
        shown = "" if default is None or default == () or callable(default) or type(default).__name__ == "Sentinel" else default
        if getattr(param, "required", False):
            shown = "(required)"
        meaning = "the command's positional arguments" if isinstance(param, click.Argument) else (param.help or "")
        meaning = meaning.replace("|", "\\|")
        rows.append(f"| `{_key(param)}` | {kind} | {shown} | {meaning} |")
    return rows


def not_recorded_keys(command: click.Command) -> list[str]:
    return sorted(_key(p) for p in command.params if p.name in NOT_RECORDED - NOT_KEYS)

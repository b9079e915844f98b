"""Settings dataclasses that declare their own command-line options (as mergekit's merge methods declare their
parameters): each field made with :func:`setting` carries its flag, help and type, and a command builds its
options, its config-file keys and the settings object from the class alone.

    @dataclass(frozen=True)
    class ProjectSettings:
        section: ClassVar[str] = "project"
        ridge: float = setting(1e-2, help="ridge of the least-squares maps")

A flag shared by several classes (``--source-model``) becomes one option; each class reads it.  Range checks stay
in the class's ``__post_init__`` and name the flag.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass
from typing import Any

import click

UNSET = object()  # no command-line default of its own: the field's default


@dataclass(frozen=True)
class Flag:
    flag: str  # "--lambda-reg"
    help: str
    type: Any = None  # a click type; default: from the field's default value
    multiple: bool = False
    metavar: str | None = None
    secondary: str | None = None  # "--carry-alpha" for an on/off pair
    is_flag: bool = False
    cli_default: Any = UNSET  # the option's default when not the field's (None: decided later, e.g. by a preset)
    parse: Callable[[Any], Any] | None = None  # from the option's value to the field's

    @property
    def name(self) -> str:
        """The click parameter name (and the ``**kwargs`` key of the command)."""
        return self.flag[2:].replace("-", "_")


def setting(default: Any = MISSING, *, flag: str | None = None, help: str, default_factory: Any = MISSING,
            **options: Any) -> Any:
    """A dataclass field that declares its command-line option (``flag`` defaults to ``--field-name``)."""
    meta = {"flag": flag, "help": help, **options}
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"cli": meta})


def flags(cls: type) -> list[tuple[str, Flag]]:
    """``(field name, Flag)`` of every declared field of the settings class ``cls``."""
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("cli")
        if meta is not None:
            out.append((f.name, Flag(**{**meta, "flag": meta["flag"] or "--" + f.name.replace("_", "-")})))
    return out


def _default(cls: type, field_name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == field_name)
    return f.default_factory() if f.default_factory is not MISSING else f.default


def click_options(classes: Iterable[type], owners: dict[str, list[str]] | None = None, *,
                  defaults: dict[str, Any] | None = None, helps: dict[str, str] | None = None,
                  only: Iterable[str] | None = None) -> list[click.Option]:
    """One ``click.Option`` per distinct flag of ``classes``; ``owners`` maps a flag to who uses it, for its help.
    A command that shares a class with another gives its own ``defaults`` and ``helps`` (by field name; a default
    of None: decided later, by a preset or a method) and takes ``only`` the fields it reads."""
    seen: dict[str, click.Option] = {}
    defaults, helps, chosen = defaults or {}, helps or {}, set(only) if only is not None else None
    for cls in classes:
        for field_name, spec in flags(cls):
            if spec.flag in seen or (chosen is not None and field_name not in chosen):
                continue
            if field_name in helps:
                spec = dataclasses.replace(spec, help=helps[field_name])
            default = _default(cls, field_name) if spec.cli_default is UNSET else spec.cli_default
            default = defaults.get(field_name, default)
            if isinstance(default, (dict, tuple, list)) and not spec.multiple:
                default = None
            decls = [f"{spec.flag}/{spec.secondary}" if spec.secondary else spec.flag, spec.name]
            who = f"{', '.join(owners[spec.flag])}: " if owners and spec.flag in owners else ""
            kwargs: dict[str, Any] = {"help": who + spec.help, "multiple": spec.multiple, "metavar": spec.metavar}
            if spec.is_flag or spec.secondary:
                kwargs["is_flag"] = True
            elif spec.type is not None:
                kwargs["type"] = spec.type
            elif default is not None and not spec.multiple:
                kwargs["type"] = type(default)
            show = default is not None and not spec.multiple and not spec.is_flag
            seen[spec.flag] = click.Option(decls, default=() if spec.multiple else default, show_default=show, **kwargs)
    return list(seen.values())


def build(cls: type, values: dict[str, Any], overrides: dict[str, Any] | None = None) -> Any:
    """An instance of ``cls`` from the command's option values (by click name); ``overrides`` by field name win (those
    of fields ``cls`` does not have are ignored, so one mapping, a preset's say, can serve several classes)."""
    kwargs = {}
    for field_name, spec in flags(cls):
        if spec.name not in values:
            continue
        value = values[spec.name]
        if spec.parse is not None:
            value = spec.parse(value)
        elif value is None:  # an option that decides later (a preset) and was not given: the field's default
            continue
        kwargs[field_name] = value
    fields = {f.name for f in dataclasses.fields(cls)}
    for field_name, value in (overrides or {}).items():
        if value is not None and field_name in fields:
            kwargs[field_name] = value
    return cls(**kwargs)


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user set option ``name``: on the command line, in the environment, or in a config file with a value
    other than the option's default (a recorded config file holds every option's value)."""
    source = ctx.get_parameter_source(name)
    if source in (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
        return True
    if source == click.core.ParameterSource.DEFAULT_MAP:
        param = next(p for p in ctx.command.params if p.name == name)
        return ctx.params.get(name) != param.get_default(ctx, call=True)
    return False

"""`an2dl config`: a task's resolved configuration, and the settings reference of every task.

`config_lines` prints a profile with overrides, group by group, marking the fields that differ from the
profile; `config_json` gives the same as data. `settings_markdown` writes `docs/configuration.md`: every field
of every group of each task with its type, its value in each profile, what values it takes and the first
sentence of its `Args:` line in the group's docstring, so the docstrings stay the one source of the meaning.
TensorFlow-free, like the configuration itself.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from typing import Any

from an2dl_kit import config as cfg
from an2dl_kit.errors import KitError
from an2dl_kit.registry import Registry

ARG_LINE = re.compile(r"^\s{4,8}([a-z_][a-z0-9_]*(?:, [a-z_][a-z0-9_]*)*)(?: \([^)]*\))?: (.*)$")
SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)(?<!et al)(?<!\.)\.(?!\.)(?=\s|$)")


def field_docs(group: type) -> dict[str, str]:
    """field -> its description in the `Args:` sections of the group class and its bases (first wins)."""
    docs: dict[str, str] = {}
    for cls in type.mro(group):
        for names, text in _args(cls.__doc__ or ""):
            for name in names:
                docs.setdefault(name, text)
    return docs


def _args(doc: str) -> list[tuple[list[str], str]]:
    """(names, joined description) of each entry of a Google-style `Args:` section."""
    entries: list[tuple[list[str], list[str]]] = []
    inside = False
    for line in doc.splitlines():
        if line.strip().startswith("Args"):
            inside = True
            continue
        match = ARG_LINE.match(line) if inside else None
        if match and (not entries or _indent(line) <= _indent_of_first(doc)):
            entries.append(([n.strip() for n in match.group(1).split(",")], [match.group(2).strip()]))
        elif inside and entries and line.strip():
            entries[-1][1].append(line.strip())
    return [(names, " ".join(parts)) for names, parts in entries]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _indent_of_first(doc: str) -> int:
    """The indent of the first entry after `Args:`: deeper lines continue an entry."""
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("Args"):
            for following in lines[index + 1:]:
                if following.strip():
                    return _indent(following)
    return 0


def first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence ("e.g.", "i.e." and "et al." do not)."""
    match = SENTENCE_END.search(text)
    return text[:match.end()] if match else text


def profiles(task: str) -> Registry:
    from an2dl_kit.tasks import PROFILES

    return PROFILES.load(task)


def groups(config: Any) -> list[tuple[str, Any]]:
    return [(group.name, getattr(config, group.name)) for group in dataclasses.fields(config)]


def changed_fields(config: Any, base: Any) -> set[str]:
    """The fields whose values differ between two configurations of one task."""
    mine, theirs = cfg.flat_fields(config), cfg.flat_fields(base)
    return {name for name, value in mine.items() if value != theirs[name]}


def show(value: Any) -> str:
    """A value as `--set` takes it: none, true/false, comma-joined tuples."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def config_lines(task: str, profile: str, overrides: list[str] | None = None) -> list[str]:
    """The resolved configuration, one group after another; `*` marks a field that differs from the profile."""
    from an2dl_kit.tasks import resolve_config

    config, base = resolve_config(task, profile, overrides), profiles(task)[profile]
    changed = changed_fields(config, base)
    given = " ".join(overrides or []) or "none"
    lines = [f"{task} configuration: profile {profile}, overrides {given} (* differs from the profile)"]
    width = max(len(name) for name in cfg.field_names(config))
    for group_name, section in groups(config):
        lines.append(group_name)
        for field in dataclasses.fields(section):
            value, mark = getattr(section, field.name), "*" if field.name in changed else " "
            was = f"   (profile: {show(getattr(getattr(base, group_name), field.name))})" if mark == "*" else ""
            lines.append(f"  {mark} {field.name:<{width}}  {show(value)}{was}")
    return lines


def config_json(task: str, profile: str, overrides: list[str] | None = None) -> dict:
    """`config_lines` as data: the nested configuration and the fields that differ from the profile."""
    from an2dl_kit.tasks import resolve_config

    config = resolve_config(task, profile, overrides)
    return {"task": task, "profile": profile, "overrides": cfg.parse_assignments(overrides or []),
            "config": cfg.as_dict(config), "changed": sorted(changed_fields(config, profiles(task)[profile]))}


def settings_markdown(tasks: tuple[str, ...]) -> str:
    """`docs/configuration.md`: for each task and group, a table of every field."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `an2dl config --markdown` (`make docs`) from the configuration dataclasses. -->",
        "",
        "Every field below can be set by name, `--set FIELD=VALUE` (`an2dl train`, `compare`, `bundle`, `push`,",
        "`run-local`, `config`) or `SET=\"FIELD=VALUE ...\"` (`make`); `GROUP.FIELD` works too. A value is parsed to",
        "the field's type and checked against what it takes before anything is trained, written or sent.",
        "`an2dl config TASK --profile P [--set ...]` prints one resolved configuration. The groups `data`, `model`,",
        "`training` and `augmentation` change what is trained: a backup made with other values is not resumed.",
        "",
    ]
    for task in tasks:
        lines += _task_markdown(task)
    return "\n".join(lines).rstrip("\n") + "\n"


def _task_markdown(task: str) -> list[str]:
    table = profiles(task)
    names = list(table)
    first = table[names[0]]
    lines = [f"## {task}", "", f"Profiles: {', '.join(f'`{name}`' for name in names)}.", ""]
    for group_name, section in groups(first):
        docs = field_docs(type(section))
        hints = typing.get_type_hints(type(section))
        lines += [f"### {task} {group_name}", "",
                  "| field | type | " + " | ".join(names) + " | takes | meaning |",
                  "|" + "---|" * (len(names) + 4)]
        for field in dataclasses.fields(section):
            if field.name not in docs:
                raise KitError(f"{type(section).__qualname__}: field {field.name!r} has no line in its Args docstring")
            values = [show(getattr(getattr(table[name], group_name), field.name)) for name in names]
            lines.append(f"| `{field.name}` | {cfg.type_name(hints[field.name])} | "
                         + " | ".join(f"`{value}`" for value in values)
                         + f" | {_cell(cfg.allowed_values(field))} | {_cell(first_sentence(docs[field.name]))} |")
        lines.append("")
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def cli(args) -> int:
    """`an2dl config TASK [--profile P] [--set F=V ...] [--json]`, or `--markdown` for the reference of every
    task (or of TASK alone)."""
    import json

    from an2dl_kit.task import TASKS

    if args.markdown:
        print(settings_markdown((args.task,) if args.task else TASKS.choices), end="")
        return 0
    if not args.task:
        raise KitError("config: name a task (cells or mars), or ask for --markdown")
    if args.json:
        print(json.dumps(config_json(args.task, args.profile, args.set), indent=2))
    else:
        print("\n".join(config_lines(args.task, args.profile, args.set)))
    return 0

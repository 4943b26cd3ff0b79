"""Every hint is true: each option that a message in clipdata/, a formats/*.md page or the
README tells the user to pass is accepted by the command it concerns; every command's --help
shows each help text as the source writes it (nothing eaten as markup, flags without a type).

Where a message may reach a command is found from the code: a message in a command's own
module (commands/<x>.py, its CLI function, the readers behind convert) concerns the commands
whose function reaches it, found through calls within the module and imports between modules;
a message in a shared module (crops, captions, embedding, fsutil...) must name an option that
at least one command reaching it accepts, unless it names the command itself (`clipdata X ...
--opt`), which must then accept it."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from clipdata import formats
from clipdata.formats.exports import EXPORTS
from clipdata.cli import app
from test_house import PACKAGE, _graph, _module

ROOT = PACKAGE.parent
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# other programs' options in our messages: `pip install --index-url`, `convmv --notest`...
FOREIGN = re.compile(r"\b(pip|convmv|iconv|open_clip|python|torchrun|huggingface-cli|hf)\b")
# options of the tools we hand off to, named in the documentation as theirs
THEIRS = {"--dataset-type", "--csv-img-key", "--csv-caption-key", "--csv-separator", "--train-data",
          "--train-num-samples", "--notest", "--index-url", "--extra-index-url"}
NAMED = re.compile(r"clipdata ((?:review )?[a-z]+)\b([^`\n]*)")  # `clipdata X …`, up to the code span's end


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield " ".join(prefix + (name,)), cmd


COMMANDS = dict(_commands(typer.main.get_command(app)))
ACCEPTS = {n: {o for p in c.params for o in p.opts + p.secondary_opts} | {"--help"} for n, c in COMMANDS.items()}
# each command's API function: where its reach begins
API = {"convert": ("commands.convert", "convert"), "inspect": ("commands.inspect", "inspect"),
       "label": ("commands.label", "label"), "review apply": ("commands.review", "review_apply"),
       "review serve": ("commands.serve", "review_serve"), "eval": ("commands.evaluate", "evaluate"),
       "search": ("commands.rank", "search"), "unique": ("commands.rank", "unique"),
       "duplicates": ("commands.rank", "duplicates"), "embed": ("commands.embed", "embed"),
       "prompts": ("commands.prompts", "prompts"), "audit": ("commands.audit", "audit"),
       "check": ("commands.check", "check"), "review backend": ("commands.backend", "review_backend"),
       "models": ("commands.models", "models")}
# Messages a command cannot reach although it imports their module (review apply, a convert of
# the review reader, never passes the options they check). Each entry is a reviewed exception, with its reason.
UNREACHABLE = {
    ("review apply", "--mode"): "review apply always writes crops-mode whole images",
    ("review apply", "--mask"): "no masks in reviewed whole-image labels; the option is never passed",
    ("review apply", "--mask-fill"): "likewise",
    ("review apply", "--image-format"): "whole images are copied, never encoded",
    ("review apply", "--quality"): "likewise",
    ("review apply", "--min-size"): "never passed: whole images are not cropped",
    ("review apply", "--rename"): "said only when --rename or an ontology was given, which review apply never passes",
    ("review apply", "--include-crowd"): "named by the COCO reader's hints only",
    ("review apply", "--skip-difficult"): "named by the VOC reader's hints only",
    # label and embed keep a journal too, but never see convert's words for it:
    ("embed", "--overwrite"): "embed catches the journal's refusal and gives its own remedy (another --out)",
    ("embed", "--resume"): "likewise",
    ("embed", "--link"): "the journal imports convert's Result type only; jobs' notes are convert's",
    ("label", "--link"): "likewise",
}


def test_every_command_has_its_api_function():
    assert set(API) == set(COMMANDS)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _reach() -> dict[str, set[str]]:
    """command -> the modules its API function can reach (imports, lazy ones too; the readers
    that convert loads by name)."""
    graph = _graph()

    def closure(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph.get(m, ())
        return seen

    reach = {c: closure(f"clipdata.{m}") for c, (m, _) in API.items()}
    loaded = [f"clipdata.formats.{f.module}" for f in formats.REGISTRY.values()]  # by name, in formats.load
    loaded += [f"clipdata.formats.exports.{m}" for m in EXPORTS.values()]  # by name, in load_export
    for c in ("convert", "review apply"):
        for m in loaded:
            reach[c] |= closure(m)
    return reach


def _readers(command: str) -> set[str]:
    """The reader modules a command reads through: convert all of them, review apply its own."""
    return {f"clipdata.formats.{f.module}" for f in formats.REGISTRY.values()
            if command == "convert" or command == "review apply" and f.name == "review"}


def _owners(tree: ast.Module, module: str) -> dict[str, set[str]]:
    """In a command module: top-level function -> the commands whose API function calls it
    (through calls within the module)."""
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    calls = {name: {c.func.id for c in ast.walk(f) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
                    and c.func.id in funcs} for name, f in funcs.items()}
    owners: dict[str, set[str]] = {name: set() for name in funcs}
    for cmd, (m, fn) in API.items():
        if f"clipdata.{m}" != module or fn not in funcs:
            continue
        todo = [fn]
        while todo:
            f = todo.pop()
            if cmd not in owners[f]:
                owners[f].add(cmd)
                todo += calls[f]
    return owners


def _mentions():
    """(module, line, option, commands it must hold for, mode) for every option named in a
    message; mode 'all': every such command accepts it; 'any': at least one."""
    reach = _reach()
    commands_of = {m: {c for c, r in reach.items() if m in r} for m in {x for r in reach.values() for x in r}}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module(path)
        if module.startswith("clipdata.cli"):
            continue  # the CLI's own texts are its --help: checked by test_help_reads_as_written
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        owners = _owners(tree, module) if module.startswith("clipdata.commands.") else {}
        own_module = module.startswith(("clipdata.commands.", "clipdata.pipeline.", "clipdata.formats.exports."))
        readers = {c for c in API if module in _readers(c)}  # a reader's messages: the commands reading with it
        spans = {}
        for f in tree.body:
            if isinstance(f, ast.FunctionDef):
                spans.update({n: f.name for n in range(f.lineno, f.end_lineno + 1)})
        inside_f = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):  # an f-string: its text, with {} for what it fills in
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs | inside_f:
                text = node.value
            else:
                continue
            named = {m.start(2) + i: m.group(1) for m in NAMED.finditer(text) if m.group(1) in COMMANDS
                     for i in range(len(m.group(2)))}
            foreign = FOREIGN.search(text)
            for m in OPTION.finditer(text):
                if foreign and foreign.start() < m.start():
                    continue
                if m.start() in named:
                    yield module, node.lineno, m.group(), {named[m.start()]}, "all"
                elif owners and owners.get(spans.get(node.lineno), set()):
                    yield module, node.lineno, m.group(), owners[spans[node.lineno]], "all"
                elif readers:
                    yield module, node.lineno, m.group(), readers, "all"
                else:
                    yield module, node.lineno, m.group(), commands_of.get(module, set()), "all" if own_module else "any"


def test_every_option_a_message_names_is_accepted_by_the_command_it_reaches():
    wrong = []
    for module, line, option, commands, mode in _mentions():
        refusing = sorted(c for c in commands if option not in ACCEPTS[c] and (c, option) not in UNREACHABLE)
        if mode == "all" and refusing or mode == "any" and (not commands or len(refusing) == len(commands)):
            wrong.append(f"{module}:{line}: {option} — not an option of {', '.join(refusing) or 'any command'}")
    assert not wrong, "\n".join(wrong)


def test_the_exceptions_are_still_needed():
    """An UNREACHABLE entry whose command now takes the option is stale."""
    assert not [k for k in UNREACHABLE if k[1] in ACCEPTS[k[0]]]


# -- the documentation ------------------------------------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "formats").glob("*.md"))]


SAYS_COMMAND = re.compile(r"`(?:clipdata )?(%s)\b" % "|".join(sorted(map(re.escape, COMMANDS), key=len, reverse=True)))


def _said(text: str) -> set[str]:
    """The commands a piece of documentation names: `clipdata X …`, or `X` in code."""
    return {m.group(1) for m in SAYS_COMMAND.finditer(text) if m.group(1) in COMMANDS} | {
        m.group(1) for m in NAMED.finditer(text) if m.group(1) in COMMANDS}


def _doc_mentions(path: Path):
    """(line, option, commands, mode): an option after `clipdata X` on its line or code span
    must be X's; any other option must be an option of a command that its paragraph names, or
    the page's title (a formats page) or section heading (the README), else of some command."""
    lines = path.read_text(encoding="utf-8").splitlines()
    title: set[str] = set()
    paragraph: set[str] = set()
    fenced = False
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
        if line.startswith("#") and not fenced and (n == 1 or path.name == "README.md"):
            # the commands the title names, and those that take an option it names (a page
            # about `--embeddings` is about the commands that read one)
            title = _said(line) | {c for c in COMMANDS if set(OPTION.findall(line)) & ACCEPTS[c] - {"--help"}}
        if n == 1 or not lines[n - 2].strip() or line.startswith("#"):
            end = next((i for i in range(n, len(lines)) if not lines[i].strip()), len(lines))
            paragraph = _said("\n".join(lines[n - 1:end]))
        scope = (title | paragraph) or set(COMMANDS)
        named = {}
        for m in NAMED.finditer(line):
            cmd = m.group(1) if m.group(1) in COMMANDS else (m.group(1).split()[0] if m.group(1).split()[0] in COMMANDS else None)
            if cmd is None:
                continue
            for i in range(len(m.group(2))):
                named[m.start(2) + i] = cmd
        foreign = FOREIGN.search(line)
        for m in OPTION.finditer(line):
            if m.group() in THEIRS or foreign and foreign.start() < m.start() and m.start() not in named:
                continue
            if m.start() in named:
                yield n, m.group(), {named[m.start()]}, "all"
            else:
                yield n, m.group(), scope, "any"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_option_the_documentation_names_exists_where_it_says(path):
    wrong = []
    for line, option, commands, mode in _doc_mentions(path):
        refusing = sorted(c for c in commands if option not in ACCEPTS[c])
        if mode == "all" and refusing or mode == "any" and len(refusing) == len(commands):
            wrong.append(f"{path.name}:{line}: {option} — not an option of {', '.join(refusing)}")
    assert not wrong, "\n".join(wrong)


# -- --help ---------------------------------------------------------------------------------

def _flat(text: str) -> str:
    return " ".join(text.replace("\b", " ").split())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_reads_as_written(name):
    """Each help text of the source appears whole in --help, brackets and all (`clipdata[ray]`);
    a flag is shown bare (`--square`), since `--square true` is refused."""
    cmd = COMMANDS[name]
    r = CliRunner().invoke(app, [*name.split(), "--help"], terminal_width=100)
    assert r.exit_code == 0, r.output
    shown = _flat(r.output)
    for paragraph in (cmd.help or "").split("\n\n"):
        assert _flat(paragraph) in shown, paragraph
    for p in cmd.params:
        if getattr(p, "help", None):
            assert _flat(p.help) in shown, (p.name, p.help)
        if getattr(p, "is_flag", False):
            for opt in p.opts + p.secondary_opts:
                assert not re.search(rf"{re.escape(opt)}\s*<", r.output), (opt, "a flag takes no value")
    if any("ray" in (getattr(p, "help", "") or "") for p in cmd.params):
        assert "pip install 'clipdata[ray]'" in shown


def test_a_flag_given_a_value_is_a_usage_error():
    r = CliRunner().invoke(app, ["convert", "folder", "src", "out", "--square", "true"])
    assert r.exit_code == 2


def test_the_formats_convert_offers_are_the_formats_it_takes():
    """--help and the unknown-format error list the same formats: the registry's."""
    help_text = _flat(CliRunner().invoke(app, ["convert", "--help"]).output)
    r = CliRunner().invoke(app, ["convert", "nosuchformat", "x", "out"])
    assert r.exit_code == 2
    for name in formats.REGISTRY:
        assert f" {name}" in help_text.split("FORMAT is one of:")[1].split(".")[0]
        assert f"{name} (" in r.output

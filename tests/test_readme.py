"""The documentation's commands run as written: every command in README.md and docs/*.md (fenced shell
blocks and the README's task table) names a script, module and config file that exist, only flags its
script defines, and only `--config.*` keys its config has; every relative link resolves.

Nothing is run: the flags come from the scripts' source (absl `DEFINE_*`, argparse `add_argument`, in the
script and the repository modules it imports), and the config overrides are parsed by ml_collections
itself against the config file the command names, as the script would parse them.
"""

import ast
import functools
import importlib.util
import os
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
DOCS = os.path.join(REPO, "docs")
README_MAX_LINES = 200
SHELL_LANGUAGES = ("", "bash", "sh", "shell", "console")
PYTHON = ("python", "python3")


def doc_pages() -> list[str]:
    return [README] + [os.path.join(DOCS, name) for name in sorted(os.listdir(DOCS)) if name.endswith(".md")]


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def shell_commands(text: str) -> list[str]:
    """The commands of a page: the lines of its shell blocks (continuations joined, comments dropped,
    `&&` chains split) and the inline `python ...` code of its table rows."""
    commands = []
    for language, body in fenced_blocks(text):
        if language not in SHELL_LANGUAGES:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    for row in re.findall(r"^\|.*\|$", text, flags=re.MULTILINE):
        commands += [code for code in re.findall(r"`([^`]+)`", row) if code.split()[0] in PYTHON]
    return commands


def command_words(command: str) -> list[str]:
    """The command's words after its environment assignments (`HF_HUB_OFFLINE=1 python ...`)."""
    words = shlex.split(command)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
        words = words[1:]
    return words


def page_commands() -> list[tuple[str, list[str]]]:
    """(page, words) for every command of the README and docs/."""
    return [
        (os.path.relpath(page, REPO), command_words(command))
        for page in doc_pages()
        for command in shell_commands(read(page))
    ]


def repository_module_file(name: str) -> str | None:
    """The file `python -m name` runs from the repository, or None for an installed module."""
    base = os.path.join(REPO, *name.split("."))
    for candidate in (base + ".py", os.path.join(base, "__main__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def imported_repository_files(path: str, tree: ast.AST) -> list[str]:
    """The repository modules a file imports (absolute or relative), as files."""
    package = os.path.relpath(os.path.dirname(path), REPO).replace(os.sep, ".")
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names]
    files = []
    for name in names:
        base = os.path.join(REPO, *name.split("."))
        for candidate in (base + ".py", os.path.join(base, "__init__.py")):
            if os.path.isfile(candidate):
                files.append(candidate)
    return files


def first_string(node: ast.Call) -> str | None:
    if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


class ScriptFlags:
    """The flags an entry point accepts, read from its source and the repository modules it imports."""

    def __init__(self, path: str):
        self.names: set[str] = set()
        self.booleans: set[str] = set()
        self.config_default: str | None = None
        self.has_config = False
        self.uses_absl = False
        seen: set[str] = set()
        pending = [path]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            tree = ast.parse(read(current))
            self._collect(current == path, tree)
            pending += imported_repository_files(current, tree)
        if self.uses_absl:
            absl_flags = absl_defined_flags()
            self.names |= set(absl_flags)
            self.booleans |= {name for name, flag in absl_flags.items() if flag.boolean}

    def _collect(self, is_script: bool, tree: ast.AST) -> None:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "absl" and is_script:
                self.uses_absl = True
            if not isinstance(node, ast.Call):
                continue
            function = (
                node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            )
            name = first_string(node)
            if function.startswith("DEFINE_") and name:
                self.names.add(name)
                if function in ("DEFINE_bool", "DEFINE_boolean"):
                    self.booleans.add(name)
            elif function == "define_config_flag":
                self.has_config = True
                default = node.args[0] if node.args else None
                if isinstance(default, ast.Constant):
                    self.config_default = default.value
            elif function == "add_argument":
                for argument in node.args:
                    if isinstance(argument, ast.Constant) and str(argument.value).startswith("--"):
                        self.names.add(argument.value[2:])
                        stores_true = any(
                            keyword.arg == "action" and getattr(keyword.value, "value", "") == "store_true"
                            for keyword in node.keywords
                        )
                        if stores_true:
                            self.booleans.add(argument.value[2:])


@functools.cache
def script_flags(path: str) -> ScriptFlags:
    return ScriptFlags(path)


@functools.cache
def absl_defined_flags() -> dict:
    """absl's own flags (`--log_dir`, `-v`, `--helpfull`, ...), which every absl script accepts."""
    from absl import app, logging  # noqa: F401  (importing them defines their flags)

    return {
        name: flag
        for module, module_flags in flags.FLAGS.flags_by_module_dict().items()
        if module.startswith("absl.")
        for flag in module_flags
        for name in (flag.name, flag.short_name)
        if name
    }


def parse_config_overrides(default: str | None, arguments: list[str]) -> None:
    """ml_collections' parse of `--config=FILE[:ARG]` and `--config.x=VALUE`, as the script does it:
    the file is loaded, each key must exist and each value must have the key's type."""
    values = flags.FlagValues()
    argv = ["script", *arguments]
    config_flags.DEFINE_config_file("config", default, flag_values=values, lock_config=True, sys_argv=argv)
    config_files = [
        argument.split("=", 1)[1].split(":", 1)[0]
        for argument in arguments
        if argument.startswith("--config=")
    ]
    for config_file in config_files:
        assert os.path.isfile(os.path.join(REPO, config_file)), f"no config file {config_file}"
    unparsed = values(argv, known_only=True)
    assert unparsed == ["script"], f"not parsed: {unparsed[1:]}"
    assert values.config is not None


def check_command(command: str) -> None:
    words = command_words(command)[1:]
    if words[0] == "-m":
        program, arguments = words[1], words[2:]
        script = repository_module_file(program)
        if script is None:
            assert importlib.util.find_spec(program.split(".")[0]) is not None, f"no module {program}"
            return
    else:
        program, arguments = words[0], words[1:]
        script = os.path.join(REPO, program)
        assert os.path.isfile(script), f"no file {program}"
    accepted = script_flags(script)
    config_arguments = []
    arguments = iter(arguments)
    for argument in arguments:
        if not argument.startswith("-"):
            continue  # a positional argument: a path, a variant, an image
        name, has_value = argument.lstrip("-").split("=", 1)[0], "=" in argument
        if name == "config" or name.startswith("config."):
            assert accepted.has_config, f"{program} has no --config"
            config_arguments.append(argument if has_value else f"{argument}={next(arguments, '')}")
        elif name.startswith("no") and name[2:] in accepted.booleans and not has_value:
            continue
        else:
            assert name in accepted.names, f"{program} has no flag --{name}"
            if not has_value and name not in accepted.booleans:
                assert next(arguments, None) is not None, f"--{name} of {program} needs a value"
    if config_arguments:
        parse_config_overrides(accepted.config_default, config_arguments)


COMMANDS = [(page, shlex.join(words)) for page, words in page_commands() if words and words[0] in PYTHON]


def test_the_readme_is_short_and_has_commands():
    assert len(read(README).splitlines()) <= README_MAX_LINES
    assert sum(page == "README.md" for page, _ in COMMANDS) >= 10


@pytest.mark.parametrize(
    ("page", "command"), COMMANDS, ids=[f"{page}: {command[:60]}" for page, command in COMMANDS]
)
def test_command_runs_as_written(page, command, monkeypatch):
    monkeypatch.chdir(REPO)  # config files are named relative to the repository, as the commands run there
    check_command(command)


def without_code_blocks(text: str) -> str:
    """The page without its fenced blocks, whose `#` comments are not headings and `](` not links."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for title in re.findall(r"^#+ (.+)$", without_code_blocks(text), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower().replace("`", "")).replace(" ", "-")
        anchors.add(slug)
    return anchors


def relative_links(text: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", without_code_blocks(text))
    return [target for target in links if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", [os.path.relpath(page, REPO) for page in doc_pages()] + ["BENCHMARKS.md"])
def test_relative_links_resolve(page):
    path = os.path.join(REPO, page)
    for target in relative_links(read(path)):
        file_part, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        assert os.path.exists(linked), f"{page} links to {target}: no such file"
        if anchor and linked.endswith(".md"):
            assert anchor in heading_anchors(read(linked)), f"{page} links to {target}: no such heading"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {os.path.normpath(target.partition("#")[0]) for target in relative_links(read(README))}
    pages = {os.path.join("docs", name) for name in os.listdir(DOCS) if name.endswith(".md")}
    assert pages <= linked, f"not linked from the README: {sorted(pages - linked)}"


def test_python_snippets_parse():
    for page in doc_pages():
        for language, body in fenced_blocks(read(page)):
            if language == "python":
                ast.parse(body)


def test_files_named_by_other_commands_exist():
    """`pip install -r FILE` and `bash FILE` name files of the repository."""
    for page, words in page_commands():
        named = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "-r"]
        named += words[1:2] if words[:1] == ["bash"] else []
        for path in named:
            assert os.path.isfile(os.path.join(REPO, path)), f"{page}: no file {path}"

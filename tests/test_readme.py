"""README.md is the user's manual: every command it shows must work as written."""

import importlib.util
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
COMMANDS = [line.split("  #")[0].strip() for block in BLOCKS for line in block.splitlines() if line.strip()]


def _argv(command: str, program: str) -> list[str] | None:
    words = shlex.split(command)
    while words and ("=" in words[0] and not words[0].startswith("-")):  # VAR=value prefixes
        words = words[1:]
    return words[1:] if words and words[0] == program else None


def test_the_readme_is_a_manual_not_a_notebook():
    assert len(README.splitlines()) <= 250


def test_every_origin_id_command_parses():
    from origin_id.server.cli import build_parser

    shown = [argv for c in COMMANDS if (argv := _argv(c, "origin-id")) is not None]
    assert len(shown) >= 9
    for argv in shown:
        build_parser().parse_args(argv)  # argparse exits on an unknown command or flag


def test_every_make_target_and_python_module_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    mentioned = {t for c in COMMANDS for t in re.findall(r"^make ([\w-]+)", c)}
    mentioned |= set(re.findall(r"`make ([\w-]+)`", README))
    assert mentioned and mentioned <= targets, mentioned - targets
    modules = {m for c in COMMANDS for m in re.findall(r"python -m ([\w.]+)", c)}
    for module in modules:
        assert importlib.util.find_spec(module) is not None, module


def test_every_linked_file_exists():
    for target in re.findall(r"\]\(([^)#:]+)\)", README) + re.findall(r"`((?:docs|bench/results)/[\w./-]+)`", README):
        assert (ROOT / target).exists(), target

"""The README and docs/ say what the repository does: the quick start is what CI runs, every
relative link and anchor resolves, the commands and the library example work, and
docs/architecture.md names every module of the package.

A first-time user copies the README's two quick-start commands; CI (``.ci/run``) runs its own
copy of them on a clean clone. The two are parsed here and compared, so neither can change
without the other.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARKDOWN = [README, *DOCS]

# pip options that change where a package comes from or how loudly, not what is installed.
PIP_OPTIONS_WITH_VALUE = {"--extra-index-url", "--index-url", "-i", "--find-links", "-f"}
PIP_QUIET = {"--quiet", "-q", "--no-input"}


# ----------------------------------------------------------------------------- parsing helpers
def _section(text: str, heading: str) -> str:
    """The body of a ``## heading`` section, up to the next heading of level 1 or 2."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^#{{1,2}} |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def _steps(command: str) -> list[list[str]]:
    """A shell command line split into its ``&&`` steps, each as argv."""
    return [shlex.split(step) for step in command.split("&&") if step.strip()]


def _ci_steps() -> list[list[str]]:
    """The commands .ci/run executes, one argv per line, comments and shell plumbing left out."""
    steps = []
    for line in CI_RUN.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "set ", "cd ", "if ", "fi", "SUDO", "$SUDO", "export ")):
            continue
        steps.append(shlex.split(line))
    return steps


def _pip_install(argv: list[str]) -> list[str] | None:
    """What a ``pip install`` step installs (its requirement arguments, e.g. ``["-e", ".[app]"]``),
    without the options that only say where from or how loudly; None for any other step."""
    if argv[:3] in (["python", "-m", "pip"], ["python3", "-m", "pip"]):
        rest = argv[3:]
    elif argv[:1] in (["pip"], ["pip3"]):
        rest = argv[1:]
    else:
        return None
    if rest[:1] != ["install"]:
        return None
    wanted, skip = [], False
    for arg in rest[1:]:
        if skip:
            skip = False
        elif arg in PIP_OPTIONS_WITH_VALUE:
            skip = True
        elif arg in PIP_QUIET or arg.startswith(("--extra-index-url=", "--index-url=")):
            continue
        else:
            wanted.append(arg)
    return wanted


def _extras(requirement: str) -> set[str]:
    match = re.fullmatch(r"\.\[([\w,\s-]+)\]", requirement)
    assert match, f"not an install of this checkout with extras: {requirement!r}"
    return {extra.strip() for extra in match.group(1).split(",")}


def _quick_start() -> list[str]:
    blocks = _code_blocks(_section(README.read_text(), "Quick start"), "bash")
    assert len(blocks) == 2, f"the quick start should be two commands (run the app, run the tests), got {blocks}"
    commands = []
    for block in blocks:
        lines = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert len(lines) == 1, f"each quick-start command is one line a user can paste: {block!r}"
        commands.append(lines[0])
    return commands


# --------------------------------------------------------------------- the quick start and CI
def test_the_quick_start_installs_what_ci_installs_and_runs_its_test_command() -> None:
    app_command, test_command = (_steps(c) for c in _quick_start())
    ci = _ci_steps()

    # 1. A virtual environment first (Debian's and Ubuntu's system Python refuse a bare pip
    # install), then that environment activated, as .ci/run does.
    ci_venv = next(step for step in ci if step[1:3] == ["-m", "venv"])
    assert app_command[0][:3] == ["python3", "-m", "venv"], app_command[0]
    venv = app_command[0][3]
    assert app_command[1] == [".", f"{venv}/bin/activate"], app_command[1]
    assert [".", f"{ci_venv[3]}/bin/activate"] in ci, "the venv step of .ci/run changed: update this test"
    assert test_command[0] == [".", f"{venv}/bin/activate"], "the test command runs in the quick start's venv"

    # 2. The same installs: torch's pin first (so a bare requirement cannot pull another build),
    # then this checkout, editable; the test command's extras are CI's exactly.
    ci_installs = [wanted for step in ci if (wanted := _pip_install(step)) and wanted != ["--upgrade", "pip"]]
    readme_installs = [wanted for step in app_command + test_command if (wanted := _pip_install(step))]
    assert ci_installs[0] == readme_installs[0] and readme_installs[0][0].startswith("torch=="), \
        (ci_installs, readme_installs)
    ci_editable = [w for w in ci_installs if w[0] == "-e"]
    readme_editable = [w for w in readme_installs if w[0] == "-e"]
    assert len(ci_editable) == 1 and ci_editable[0][0] == "-e", ci_installs
    assert readme_editable and all(len(w) == 2 for w in readme_editable), readme_installs
    assert _extras(readme_editable[-1][1]) == _extras(ci_editable[0][1]), (readme_editable, ci_editable)
    assert all(_extras(w[1]) <= _extras(ci_editable[0][1]) for w in readme_editable)  # nothing CI never installs
    assert len(readme_installs) == len(readme_editable) + 1, f"an install CI does not run: {readme_installs}"

    # 3. The app is started by the file Hugging Face Spaces runs, and the tests by CI's command, verbatim.
    assert app_command[-1] == ["python", "app.py"] and (ROOT / "app.py").is_file()
    ci_text = CI_RUN.read_text()
    verbatim = ci_text.split("# The README's test command, verbatim:\n", 1)
    assert len(verbatim) == 2, "the marked test command of .ci/run is gone: update this test"
    assert test_command[-1] == shlex.split(verbatim[1].strip().splitlines()[0]) == ci[-1]


def test_the_front_matter_names_the_app_a_space_runs() -> None:
    # Hugging Face Spaces read their settings from the README's YAML front matter.
    text = README.read_text()
    assert text.startswith("---\n"), "README.md lost the Space's front matter"
    front = text.split("---\n", 2)[1]
    app_file = re.search(r"^app_file: (\S+)$", front, flags=re.M)
    assert app_file and (ROOT / app_file.group(1)).is_file(), front


# ----------------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = "".join(ch for ch in text if ch in " -" or unicodedata.category(ch)[0] in "LN")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)  # no headings in code
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def _links(path: Path) -> list[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(path: Path) -> None:
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target}: {linked.name} has no heading with that anchor")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_check_sees_links_and_headings() -> None:
    # The check above must not pass by finding nothing.
    assert "docs/architecture.md" in _links(README) and "assets/screenshot.png" in _links(README)
    assert _slug("Does the diffusion earn its place? Re-rankers on the shipped recipe") == \
        "does-the-diffusion-earn-its-place-re-rankers-on-the-shipped-recipe"
    assert "quick-start" in _anchors(README)


# ----------------------------------------------------------- the README's commands and code
def _readme_cli_lines() -> list[list[str]]:
    block = _code_blocks(_section(README.read_text(), "Command line"), "bash")
    assert len(block) == 1
    lines = [shlex.split(line.split("  #", 1)[0]) for line in block[0].splitlines() if line.strip()]
    assert lines and all(argv[0] == "diffatr" for argv in lines), lines
    return lines


def test_the_readme_cli_lines_are_valid_commands() -> None:
    from diffatr.cli import build_parser

    parser = build_parser()
    for argv in _readme_cli_lines():
        try:
            parser.parse_args(argv[1:])
        except SystemExit as exit_:  # argparse's way of refusing a flag
            raise AssertionError(f"README.md: `{shlex.join(argv)}` is not a valid command") from exit_
        for arg in argv[1:]:  # files the examples read are shipped
            if arg.startswith("assets/"):
                assert (ROOT / arg).exists(), arg


def test_the_readme_library_example_runs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    blocks = _code_blocks(_section(README.read_text(), "Library"), "python")
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)  # it must not depend on the working directory
    exec(compile(blocks[0], "README.md (Library)", "exec"), {"__name__": "readme_example"})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3"], lines


# ------------------------------------------------------------------------------ architecture
def test_docs_architecture_names_every_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    modules = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "diffatr").rglob("*.py")
                     if p.name != "__init__.py" or p.parent.name == "diffatr")
    assert len(modules) > 50
    missing = [m for m in modules if f"`{m}`" not in text]
    assert not missing, f"docs/architecture.md does not say what these modules are for: {missing}"
    named = set(re.findall(r"`(diffatr/[\w/]+\.py)`", text))
    gone = sorted(n for n in named if not (ROOT / n).exists())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"


def test_the_screenshot_is_what_a_visitor_sees_without_scrolling() -> None:
    # scripts/screenshot.py saves the page's viewport at 1400 x 900 (a laptop-sized window).
    import struct

    png = (ROOT / "assets" / "screenshot.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (1400, 900)

"""Every code block of the README and of docs/*.md, executed: one test per block, named FILE:LINE.

An HTML comment on the line before a block says what to do with it (docs/development.md, Tests):

- ``<!-- docs-test: run -->``: a shell block's commands run for real (quick, CPU, offline);
- ``<!-- docs-test: compose (reason) -->``, the default for shell blocks: ``tts-search`` and ``tts-serve``
  commands are composed as ``--cfg job`` would (they need a GPU, a key, a network or minutes); commands that
  load no model (``tts-plan``, ``tts-collage``, ``tts-report``, ``tts-replay``, ``tts-judge``) run for real either way;
- ``<!-- docs-test: skip (reason) -->``: not run, for the reason given;
- ``<!-- docs-test: file NAME -->``: the block is a file (a verifier module, a config) written to NAME in the
  page's working folder before its other blocks run; Python files are run, YAML files parsed.

Python blocks run in a temporary working folder. ``text`` and ``console`` blocks are output samples. Shell
blocks run in a temporary working folder that holds the repository's ``examples/`` and ``verifiers/``, the
page's files, and a small finished run: ``RUN`` stands for its folder, ``IMAGE.png`` for one of its images,
``outputs/multirun/SWEEP`` for a sweep of two runs. Benchmark and training scripts are never run: their
flags are checked against the script. Setup commands (venv, pip, the test suite itself) are left to CI,
which runs the README's install and test command (.ci/run)."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_tts

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SAMPLES = {"text", "console"}
SHELLS = {"bash", "sh", "shell"}
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(run|compose|skip|file)\b\s*(.*?)\s*-->\s*$")
#: The console scripts, ``name -> module:function``, from pyproject.toml's [project.scripts].
SCRIPTS = dict(re.findall(r'^(tts-[\w-]+) = "([\w.:]+)"$',
                          (ROOT / "pyproject.toml").read_text().partition("[project.scripts]")[2], re.M))
#: Commands that set up an environment or run the suite: CI runs them (.ci/run), not this test.
SETUP = (("python3", "-m", "venv"), (".",), ("source",), ("pip",), ("python", "-m", "pytest"), ("bash", ".ci/run"))
NO_MODEL = {"tts-plan", "tts-collage", "tts-report", "tts-replay", "tts-judge"}
TIMEOUT_S = 600


@dataclasses.dataclass(frozen=True)
class Block:
    page: Path
    line: int          # of the opening fence, 1-based
    lang: str
    mode: str          # run | compose | skip | file | sample
    note: str          # the reason (skip, compose) or the file name (file)
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def parse(page: Path) -> list[Block]:
    """The fenced code blocks of a page, with the docs-test marker on the line before each (if any)."""
    lines, blocks, i = page.read_text().splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        marker = MARKER.match(lines[start - 1]) if start else None
        mode, note = (marker.group(1), marker.group(2).strip("() ")) if marker else (_default_mode(lang), "")
        blocks.append(Block(page, start + 1, lang, mode, note, "\n".join(body) + "\n"))
    return blocks


def _default_mode(lang: str) -> str:
    if lang in SAMPLES:
        return "sample"
    return "compose" if lang in SHELLS else "run"


BLOCKS = [b for page in PAGES for b in parse(page)]


def test_every_block_says_what_it_is():
    """A block without a language, or a language this test cannot run and no file marker, is an error; so is
    a skip or compose marker without its reason, or a command block indented instead of fenced."""
    problems = []
    for b in BLOCKS:
        if not b.lang:
            problems.append(f"{b.id}: a code block needs a language (bash, python, text, console, ...)")
        elif b.mode != "file" and b.lang not in SHELLS | SAMPLES | {"python"}:
            problems.append(f"{b.id}: a {b.lang} block needs <!-- docs-test: file NAME --> or to be text")
        if b.mode == "skip" and not b.note:
            problems.append(f"{b.id}: docs-test: skip needs its reason")
    for page in PAGES:
        fenced = False
        for n, line in enumerate(page.read_text().splitlines(), 1):
            fenced ^= bool(FENCE.match(line))
            if not fenced and re.match(r"^ {4,}(tts-|python )", line):
                problems.append(f"{page.relative_to(ROOT)}:{n}: an indented command; fence it as a bash block")
    assert not problems, "\n".join(problems)


def test_the_readme_test_command_is_the_one_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [b.text.strip() for b in parse(ROOT / "README.md") if "python -m pytest" in b.text]
    assert commands and all(c in ci for c in commands), ".ci/run must run the README's test command as written"


def test_the_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    anchors = {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    missing = []
    for target in re.findall(r"\]\(([^)\s]+)\)", readme):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if path and not (ROOT / path).exists() and path not in WRITTEN_ELSEWHERE:
            missing.append(target)
        elif not path and anchor not in anchors:
            missing.append(target)
    assert not missing, missing


#: Pages the README links to that another branch adds (remove an entry once its page is here).
WRITTEN_ELSEWHERE: set[str] = set()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A small finished run of the embedded model (6 candidates), and a sweep folder holding two copies."""
    base = tmp_path_factory.mktemp("docs-fixture")
    run = base / "outputs" / "shapes" / "shapes" / "criteria_met" / "2026-01-01_00-00-00_0000"
    run_tts(["search.rounds=2"], run)
    for job in ("0", "1"):
        shutil.copytree(run, base / "outputs" / "multirun" / "SWEEP" / job)
    return base


@pytest.fixture
def workdir(tmp_path, finished_run):
    shutil.copytree(finished_run / "outputs", tmp_path / "outputs")
    for name in ("examples", "verifiers"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def _write_files(page: Path, where: Path) -> None:
    for b in parse(page):
        if b.mode == "file":
            (where / b.note).parent.mkdir(parents=True, exist_ok=True)
            (where / b.note).write_text(b.text)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(block: Block, workdir: Path, monkeypatch):
    if block.mode in ("sample", "skip"):
        pytest.skip(f"{block.mode}: {block.note or block.lang + ' sample'}")
    _write_files(block.page, workdir)
    monkeypatch.chdir(workdir)
    if block.lang == "python":
        _python(block, workdir)
    elif block.mode == "file":
        _file(block, workdir)
    else:
        Shell(block, workdir).run()


def _env(workdir: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(workdir)]))
    env.pop("TTS_REQUIRE_SHARED", None)
    return {**env, **(extra or {})}


def _python(block: Block, workdir: Path) -> None:
    name = block.note if block.mode == "file" else "docs_block.py"
    (workdir / name).write_text(block.text)
    out = subprocess.run([sys.executable, name], cwd=workdir, env=_env(workdir), capture_output=True, text=True,
                         timeout=TIMEOUT_S)
    assert out.returncode == 0, f"{block.id}: python block failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"


def _file(block: Block, workdir: Path) -> None:
    if block.lang in ("yaml", "yml"):
        from omegaconf import OmegaConf

        OmegaConf.load(workdir / block.note)
    elif block.lang == "json":
        import json

        json.loads((workdir / block.note).read_text())
    else:
        pytest.fail(f"{block.id}: no check for a {block.lang} file")


class Shell:
    """A shell block, line by line: variables and exports kept, ``&&`` chains split, each command dispatched."""

    def __init__(self, block: Block, workdir: Path):
        self.block, self.workdir, self.vars, self.env = block, workdir, {}, {}
        run = next(workdir.glob("outputs/shapes/shapes/criteria_met/*"))
        self.subst = {"RUN": str(run.relative_to(workdir)),
                      "IMAGE.png": sorted(p.name for p in run.glob("*.png"))[0]}

    def run(self) -> None:
        text = self.block.text.replace("\\\n", " ")
        ran = 0
        for line in text.splitlines():
            for argv in self._commands(line):
                ran += self._dispatch(argv)
        assert ran, f"{self.block.id}: no command in the block was checked"

    def _commands(self, line: str) -> list[list[str]]:
        line = line.strip()
        if not line or line.startswith("#"):
            return []
        export = re.match(r"^export\s+([A-Za-z_]\w*)=(.*)$", line)
        if export:  # the value is a secret or a command's output: any value will do
            self.env[export.group(1)] = "x"
            return []
        words = shlex.split(line, comments=True)
        if all(re.match(r"^[A-Za-z_]\w*=", w) for w in words):  # P="..." (a shell variable)
            self.vars.update(w.split("=", 1) for w in words)
            return []
        for name, value in self.vars.items():
            line = re.sub(rf"\$(\{{{name}\}}|{name}\b)", lambda _: value, line)
        line = re.sub(r"(?<![\w./-])RUN(?=[/\s]|$)", self.subst["RUN"], line)
        line = re.sub(r"(?<![\w./-])IMAGE\.png", self.subst["IMAGE.png"], line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split, lexer.commenters = True, "#"
        commands, current = [], []
        for token in lexer:
            if token in ("&&", ";", "&"):
                commands.append(current)
                current = []
            elif token in ("|", "||"):
                pytest.fail(f"{self.block.id}: pipes are not supported by this test: {line}")
            else:
                current.append(token)
        return [c for c in commands + [current] if c]

    def _dispatch(self, argv: list[str]) -> int:
        env = {}
        while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
            key, _, value = argv.pop(0).partition("=")
            env[key] = value
        if argv and argv[0] == "time":
            argv = argv[1:]
        if any(tuple(argv[:len(s)]) == s for s in SETUP):
            return 0
        env = {**self.env, **env}
        program = argv[0]
        if program in ("torchrun", "accelerate"):
            return self._compose_search(argv[argv.index("-m") + 2:], env)
        if program in ("python", "python3"):
            return self._python_command(argv)
        if program not in SCRIPTS:
            pytest.fail(f"{self.block.id}: unknown command {program!r}; teach tests/test_docs.py about it")
        if program in NO_MODEL or (program == "tts-search" and self.block.mode == "run"):
            return self._run(argv, env)
        if program == "tts-search":
            return self._compose_search(argv[1:], env)
        if program == "tts-serve":
            return self._compose_serve(argv[1:], env)
        pytest.fail(f"{self.block.id}: no way to check {program}")

    def _run(self, argv: list[str], env: dict) -> int:
        """The command for real, as its console script (module:function from pyproject) would run it."""
        module, _, func = SCRIPTS[argv[0]].partition(":")
        before = set(self.workdir.rglob("manifest.jsonl"))
        out = subprocess.run([sys.executable, "-c", f"from {module} import {func}; {func}()", *argv[1:]],
                             cwd=self.workdir, env=_env(self.workdir, env), capture_output=True, text=True,
                             timeout=TIMEOUT_S)
        said = f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        assert out.returncode == 0 and "Traceback" not in out.stderr, f"{self.block.id}: {shlex.join(argv)}:\n{said}"
        for manifest in set(self.workdir.rglob("manifest.jsonl")) - before:
            failed = [r for r in map(json.loads, manifest.read_text().splitlines()) if r.get("status") == "failed"]
            assert not failed, f"{self.block.id}: {shlex.join(argv)}: {len(failed)} candidates failed: " \
                               f"{failed[0].get('error')}"
        return 1

    def _compose_search(self, args: list[str], env: dict) -> int:
        """``tts-search ARGS --cfg job`` in this process, once per combination of a sweep."""
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from tts.app import cli

        multirun = any(a in ("-m", "--multirun") for a in args)
        args = [a for a in args if a not in ("-m", "--multirun")]
        jobs = [args]
        if multirun:
            parsed = OverridesParser.create().parse_overrides([a for a in args if "=" in a])
            jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
        for job in jobs:
            with _patched_env(env):
                self._main(cli.main, ["tts-search", *job, "--cfg", "job"])
        return 1

    def _compose_serve(self, args: list[str], env: dict) -> int:
        """tts-serve's config and its settings checked as the server does before it binds (no model loads)."""
        from omegaconf import OmegaConf

        from tts.app import serve

        with _patched_env(env):
            cfg = serve.compose(args)
            settings = serve.ServerSettings(**OmegaConf.to_container(cfg.server, resolve=True))
            assert settings.loopback or os.environ.get(serve.TOKEN_ENV), f"{self.block.id}: tts-serve needs a token"
        return 1

    def _main(self, main, argv: list[str]) -> None:
        saved, sys.argv = sys.argv, argv
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                main()
        except SystemExit as e:
            if e.code:
                pytest.fail(f"{self.block.id}: {shlex.join(argv)} --cfg job: exit {e.code}: {err.getvalue()}")
        finally:
            sys.argv = saved

    def _python_command(self, argv: list[str]) -> int:
        """A script or module of the repository: it exists and takes every flag the docs give it (never run:
        benchmarks and training take minutes to hours)."""
        if argv[1] == "-m":
            source = ROOT / (argv[2].replace(".", "/") + ".py")
            flags = argv[3:]
        else:
            source = ROOT / argv[1]
            flags = argv[2:]
        assert source.is_file(), f"{self.block.id}: {source.relative_to(ROOT)} does not exist"
        text = source.read_text()
        unknown = [f for f in flags if f.startswith("--") and f'"{f.split("=")[0]}"' not in text]
        assert not unknown, f"{self.block.id}: {source.relative_to(ROOT)} takes no {unknown}"
        return 1


@contextlib.contextmanager
def _patched_env(env: dict):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_mkdocs_builds_strictly(tmp_path):
    """The documentation site builds with --strict: a broken link or anchor, or a page left out of the nav,
    fails (mkdocs.yml's validation settings)."""
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S,
                         env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists()

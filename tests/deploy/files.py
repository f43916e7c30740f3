"""Reading the deploy files: a small Dockerfile parser, the app's own view of its settings
and routes, and the repository's paths. Shared by the static checks and the fresh-install
test, so both agree on what the image is built from."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bridge.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

# Variables of the Python runtime and of pip, not of the bridge: images set these too. And
# the AWS credential chain's, which boto3 reads for the bridge (RECORDINGS_URL).
RUNTIME_VARIABLES = re.compile(r"PATH|PYTHON[A-Z_]*|PIP_[A-Z_]+|AWS_[A-Z_]+")


def secret_setting_names() -> set[str]:
    """The settings that hold secrets: those typed SecretStr."""
    return {
        (f.alias or name).upper()
        for name, f in Settings.model_fields.items()
        if SecretStr in _types_in(f.annotation)
    }


def _types_in(annotation: Any) -> set[Any]:
    args = getattr(annotation, "__args__", ())
    return {annotation}.union(*(_types_in(arg) for arg in args)) if args else {annotation}


@dataclass
class Instruction:
    keyword: str  # upper case
    flags: dict[str, str]  # --from=build -> {"from": "build"}
    args: list[str]  # the rest, shell-split or the exec form's JSON array (HEALTHCHECK: CMD first)
    raw: str  # everything after the keyword, continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in instruction.args:
                name, sep, value = pair.partition("=")
                assert sep, f"ENV {instruction.raw!r}: use the NAME=value form"
                values[name] = value
        return values


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARGs declared before the first FROM, with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _logical_lines(text: str) -> Iterator[str]:
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    assert not pending, "the Dockerfile ends in a line continuation"


def parse_dockerfile(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(path.read_text()):
        keyword, _, raw = line.strip().partition(" ")
        keyword = keyword.upper()
        raw = raw.strip()
        flags: dict[str, str] = {}
        rest = raw
        while match := re.match(r"--([\w-]+)(?:=(\S*))?\s+", rest):
            flags[match[1]] = match[2] or ""
            rest = rest[match.end() :]
        # HEALTHCHECK CMD and ENTRYPOINT/CMD take the exec form (a JSON array) or a shell line.
        lead = "CMD " if keyword == "HEALTHCHECK" and rest.startswith("CMD ") else ""
        body = rest.removeprefix(lead).strip()
        if body.startswith("["):
            words: list[str] = json.loads(body)
        else:
            words = shlex.split(body) if keyword != "RUN" else body.split()
        words = [lead.strip(), *words] if lead else words
        instruction = Instruction(keyword, flags, words, raw)
        if keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages:
            assert keyword == "ARG", f"{keyword} before the first FROM"
            name, _, default = words[0].partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(args, stages)


def dockerignore_patterns() -> list[str]:
    path = ROOT / ".dockerignore"
    if not path.exists():
        return []
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line.rstrip("/") for line in lines if line and not line.startswith("#")]


def is_dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether the build context leaves this path out (no `!` exceptions are used)."""
    parts = Path(relative).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or fnmatch.fnmatchcase(
                prefix.rsplit("/", 1)[-1], bare
            ):
                return True
    return False


def context_copies(dockerfile: Dockerfile) -> list[tuple[Stage, str]]:
    """(stage, source) for every COPY/ADD that takes files from the build context."""
    copies = []
    for stage in dockerfile.stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            if "from" not in instruction.flags:
                copies.extend((stage, source) for source in instruction.args[:-1])
    return copies

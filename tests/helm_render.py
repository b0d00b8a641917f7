"""Render deploy/helm/switchyard the way `helm template` would, for the part of Helm's template
language the chart uses (helm itself cannot be installed here: neither Debian nor PyPI carries it).

Supported: `{{ }}` with `-` trimming, `.Values.x.y` / `.Release.Name` / `.Chart.Name` paths,
pipelines with `|`, the functions include, toYaml, nindent, indent, quote, required, printf,
trunc, trimSuffix, sha256sum, not, and the actions if / else / end / define. Anything else
raises, so a template using more fails its test instead of rendering wrongly.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


class RenderError(Exception):
    pass


def _tokens(text: str) -> list[tuple[str, str]]:
    """Split into ("text", s) and ("action", s) pieces, applying the trim markers."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(text):
        chunk = text[pos:m.start()]
        if m.group(1):
            chunk = chunk.rstrip()
        out.append(("text", chunk))
        out.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            rest = text[pos:]
            pos += len(rest) - len(rest.lstrip())
    out.append(("text", text[pos:]))
    return out


def _parse(tokens: list[tuple[str, str]], i: int = 0, until: tuple[str, ...] = ()) -> tuple[list[Any], int, str]:
    """A tree of text, expressions, ifs and defines; returns (nodes, next index, the closing word)."""
    nodes: list[Any] = []
    while i < len(tokens):
        kind, value = tokens[i]
        i += 1
        if kind == "text":
            nodes.append(("text", value))
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in until:
            return nodes, i, word
        if word == "if":
            body, i, closer = _parse(tokens, i, ("else", "end"))
            other: list[Any] = []
            if closer == "else":
                other, i, _ = _parse(tokens, i, ("end",))
            nodes.append(("if", value[2:].strip(), body, other))
        elif word == "define":
            body, i, _ = _parse(tokens, i, ("end",))
            nodes.append(("define", shlex.split(value)[1], body))
        elif word in ("range", "with", "template", "block"):
            raise RenderError(f"unsupported action: {word}")
        else:
            nodes.append(("expr", value))
    if until:
        raise RenderError(f"missing {until}")
    return nodes, i, ""


class Chart:
    def __init__(self, path: Path, values: dict[str, Any] | None = None, release: str = "sy") -> None:
        self.path = path
        meta = yaml.safe_load((path / "Chart.yaml").read_text())
        base = yaml.safe_load((path / "values.yaml").read_text()) or {}
        self.context = {"Values": _merge(base, values or {}), "Release": {"Name": release, "Namespace": "default"},
                        "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta["appVersion"]}}
        self.defines: dict[str, list[Any]] = {}
        self.templates: dict[str, list[Any]] = {}
        for file in sorted((path / "templates").iterdir()):
            tree, _, _ = _parse(_tokens(file.read_text()))
            for node in tree:
                if node[0] == "define":
                    self.defines[node[1]] = node[2]
            if not file.name.startswith("_"):
                self.templates[file.name] = tree

    def render(self) -> dict[str, list[dict[str, Any]]]:
        """Each template's manifests (empty documents dropped), as parsed YAML."""
        out = {}
        for name, tree in self.templates.items():
            text = self._run(tree, self.context)
            out[name] = [doc for doc in yaml.safe_load_all(text) if doc]
        return out

    def _run(self, tree: list[Any], dot: Any) -> str:
        parts: list[str] = []
        for node in tree:
            if node[0] == "text":
                parts.append(node[1])
            elif node[0] == "expr":
                parts.append(_text(self._pipeline(node[1], dot)))
            elif node[0] == "if":
                parts.append(self._run(node[2] if _truthy(self._pipeline(node[1], dot)) else node[3], dot))
        return "".join(parts)

    def _pipeline(self, source: str, dot: Any) -> Any:
        value: Any = None
        for n, command in enumerate(_split_pipes(source)):
            words = shlex.split(command, posix=False)
            if n > 0:
                value = self._call(words[0], [self._arg(w, dot) for w in words[1:]] + [value], dot)
            elif words[0].startswith(".") or words[0].startswith('"'):
                value = self._arg(words[0], dot)
            else:
                value = self._call(words[0], [self._arg(w, dot) for w in words[1:]], dot)
        return value

    def _arg(self, word: str, dot: Any) -> Any:
        if word.startswith('"'):
            return word[1:-1]
        if word == ".":
            return dot
        if word.startswith("."):
            value = dot
            for part in word[1:].split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        raise RenderError(f"unsupported argument: {word}")

    def _call(self, name: str, args: list[Any], dot: Any) -> Any:
        if name == "include":
            return self._run(self.defines[args[0]], args[1])
        if name == "toYaml":
            return yaml.safe_dump(args[0], default_flow_style=False, sort_keys=True).rstrip("\n") if args[0] else "{}"
        if name == "nindent":
            return "\n" + _indent(_text(args[1]), args[0])
        if name == "indent":
            return _indent(_text(args[1]), args[0])
        if name == "quote":
            return '"' + _text(args[0]).replace("\\", "\\\\").replace('"', '\\"') + '"'
        if name == "required":
            if args[1] in (None, ""):
                raise RenderError(args[0])
            return args[1]
        if name == "printf":
            return args[0] % tuple(args[1:])
        if name == "trunc":
            return _text(args[1])[: args[0]]
        if name == "trimSuffix":
            return _text(args[1]).removesuffix(args[0])
        if name == "sha256sum":
            return hashlib.sha256(_text(args[0]).encode()).hexdigest()
        if name == "not":
            return not _truthy(args[0])
        raise RenderError(f"unsupported function: {name}")


def _split_pipes(source: str) -> list[str]:
    parts, depth, current, quoted = [], 0, "", False
    for ch in source:
        if ch == '"':
            quoted = not quoted
        if ch == "|" and not quoted and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    parts.append(current.strip())
    return parts


def _indent(text: str, width: int) -> str:
    pad = " " * width
    return "\n".join(pad + line if line else line for line in text.split("\n"))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _truthy(value: Any) -> bool:
    return bool(value)


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out

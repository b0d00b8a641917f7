"""Validate objects against OpenAI's own OpenAPI spec (`shared/reference/openai-openapi.yaml`).

Parsing the 87k-line YAML takes seconds, so the parsed (and normalised) spec is pickled under the
temp dir keyed by the file's mtime and size, and loaded at most once per process.

The spec says `openapi: 3.1.0`, i.e. JSON Schema 2020-12, but it still carries OpenAPI 3.0 idioms
that a 2020-12 validator would silently ignore, so they are rewritten before use:
  - `nullable: true` (111 places) becomes a type union with "null";
  - `$recursiveAnchor` / `$recursiveRef: "#"` (2019-09 keywords) become a plain `$ref` to the
    component schema they sit in.

Use `validate(obj, "Response")`, or the `openapi` fixture in tests (skips when the spec is missing).
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

# Beside the project checkout, as in CI ("a fresh clone of main with shared/ beside it").
_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared" / "reference" / "openai-openapi.yaml",
               Path("/work/shared/reference/openai-openapi.yaml")]
SPEC_PATH: Path = Path(
    os.environ.get("SWITCHYARD_OPENAI_SPEC")
    or next((p for p in _CANDIDATES if p.is_file()), _CANDIDATES[0])
)
_ROOT_URI = "urn:openai-openapi"
_NORMALISE_VERSION = 1  # bump when _normalise changes, so stale pickles are not reused
_MAX_LINES = 25

Validate = Callable[..., None]


def spec_available() -> bool:
    return SPEC_PATH.is_file()


def schema_names() -> list[str]:
    """Every name under `#/components/schemas`."""
    return sorted(_spec()["components"]["schemas"])


def schema(name: str) -> dict[str, Any]:
    """One component schema, as normalised for validation."""
    return _spec()["components"]["schemas"][name]


def validate(instance: Any, schema_name: str, *, allow_null_optional: bool = False) -> None:
    """Check `instance` against `#/components/schemas/<schema_name>`; AssertionError listing every failing path.

    `allow_null_optional=True` also accepts `null` for any property that is not `required`: the spec
    types many optional fields (Batch.output_file_id, Batch.failed_at, ...) as plain strings or
    integers although the real API and the SDK's models send and accept `null` for them.
    """
    problems = list(_problems(_validator(schema_name, allow_null_optional), instance))
    if problems:
        shown = problems[:_MAX_LINES]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise AssertionError(f"not a valid {schema_name} (OpenAI OpenAPI spec):\n  " + "\n  ".join(shown) + more)


def openapi_validator() -> Validate:
    """`validate`, with the spec loaded; skips the calling test when the spec file is missing."""
    if not spec_available():
        pytest.skip(f"OpenAI OpenAPI spec not found at {SPEC_PATH}")
    _spec()
    return validate


@pytest.fixture(scope="session")
def openapi() -> Validate:
    """`openapi(obj, "Response")` validates against OpenAI's spec (skips if the spec is missing)."""
    return openapi_validator()


# ---- loading -------------------------------------------------------------------------------


@cache
def _spec() -> dict[str, Any]:
    stat = SPEC_PATH.stat()
    key = hashlib.sha256(f"{SPEC_PATH.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{_NORMALISE_VERSION}".encode()).hexdigest()[:16]
    cached = Path(tempfile.gettempdir()) / f"switchyard-openai-openapi-{key}.pickle"
    try:
        with cached.open("rb") as f:
            return pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError):
        pass
    with SPEC_PATH.open("rb") as f:
        spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    _normalise(spec)
    # Written aside then renamed: parallel test processes never read a half-written pickle.
    fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=cached.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(spec, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, cached)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
    return spec


def _normalise(spec: dict[str, Any]) -> None:
    for name, node in spec.get("components", {}).get("schemas", {}).items():
        _fix_recursive(node, f"#/components/schemas/{name}")
    _fix_nullable(spec)


def _fix_recursive(node: Any, self_ref: str) -> None:
    if isinstance(node, dict):
        node.pop("$recursiveAnchor", None)
        if node.get("$recursiveRef") == "#":
            del node["$recursiveRef"]
            node["$ref"] = self_ref
        for value in node.values():
            _fix_recursive(value, self_ref)
    elif isinstance(node, list):
        for value in node:
            _fix_recursive(value, self_ref)


def _fix_nullable(node: Any) -> Any:
    """Rewrite OpenAPI 3.0 `nullable: true` bottom-up; returns the (possibly wrapped) node."""
    if isinstance(node, list):
        for i, value in enumerate(node):
            node[i] = _fix_nullable(value)
        return node
    if not isinstance(node, dict):
        return node
    for k, value in node.items():
        node[k] = _fix_nullable(value)
    if node.get("nullable") is not True:
        return node
    del node["nullable"]
    kind = node.get("type")
    if isinstance(kind, str) and "$ref" not in node and not any(k in node for k in ("allOf", "anyOf", "oneOf")):
        node["type"] = [kind, "null"]
        if "enum" in node and None not in node["enum"]:
            node["enum"] = [*node["enum"], None]
        return node
    return {"anyOf": [node, {"type": "null"}]}


def _null_optional(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy where every property not listed in `required` also accepts null."""
    spec = copy.deepcopy(spec)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict) and node.get("type", "object") == "object":
                required = set(node.get("required") or ())
                for name, sub in props.items():
                    walk(sub)
                    if name not in required and isinstance(sub, dict):
                        props[name] = {"anyOf": [sub, {"type": "null"}]}
                for k, value in node.items():
                    if k != "properties":
                        walk(value)
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec["components"])
    return spec


@cache
def _lenient_spec() -> dict[str, Any]:
    return _null_optional(_spec())


@cache
def _validator(schema_name: str, allow_null_optional: bool) -> Any:
    # Imported here so that merely importing this module (e.g. from conftest) stays cheap.
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    spec = _lenient_spec() if allow_null_optional else _spec()
    if schema_name not in spec["components"]["schemas"]:
        raise KeyError(f"no schema {schema_name!r} in {SPEC_PATH}")
    # The whole spec is one resource, so "#/components/..." refs anywhere resolve inside it.
    registry = Registry().with_resource(_ROOT_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
    return Draft202012Validator({"$ref": f"{_ROOT_URI}#/components/schemas/{schema_name}"}, registry=registry)


# ---- readable errors -------------------------------------------------------------------------


def _problems(validator: Any, instance: Any) -> Iterator[str]:
    seen: set[str] = set()
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        for leaf, message in _leaves(error):
            line = f"{_path(leaf)}: {message}"
            if line not in seen:
                seen.add(line)
                yield line


def _leaves(error: Any) -> Iterator[tuple[Any, str]]:
    """The errors worth showing: inside anyOf/oneOf, only those of the branch the object meant.

    A bare "is not valid under any of the given schemas" over ~60 stream event types says nothing;
    the branch whose `type`/`object` discriminator matched holds the real failure.
    """
    if error.validator not in ("anyOf", "oneOf") or not error.context:
        yield error, _message(error)
        return
    branches: dict[int, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.schema_path[0], []).append(sub)
    if len(branches) < len(error.validator_value):
        yield error, _message(error)  # some branch matched (oneOf matching several)
        return

    def misses_discriminator(errs: list[Any]) -> bool:
        return any(
            e.validator in ("enum", "const", "required") and (
                (len(e.relative_path) == 1 and e.relative_path[0] in ("type", "object"))
                or (e.validator == "required" and not e.relative_path and any(f"'{k}'" in e.message for k in ("type", "object"))))
            for e in errs)

    candidates = [i for i, errs in branches.items() if not misses_discriminator(errs)]
    if not candidates and isinstance(error.instance, dict):
        tag = {k: error.instance[k] for k in ("type", "object") if k in error.instance}
        yield error, f"no {error.validator} branch accepts {tag or 'an object without type/object'}"
        return
    if len(candidates) == len(branches):
        # The discriminator did not single a branch out: drop the `null` branch of a nullable
        # union and go on if one branch is left, else keep the summary line.
        candidates = [i for i in branches if error.validator_value[i] != {"type": "null"}]
        if len(candidates) != 1:
            yield error, _message(error)
            return
    for sub in branches[min(candidates, key=lambda i: len(branches[i]))]:
        yield from _leaves(sub)


def _path(error: Any) -> str:
    out = "$"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _message(error: Any) -> str:
    message = error.message
    return message if len(message) <= 300 else message[:300] + "..."

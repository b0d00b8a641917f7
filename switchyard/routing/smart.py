"""Smart routing: one public model name (`switchyard/auto` by default) that picks a tier per request.

Rules come from config and are tried in order; the first whose conditions all hold decides.
Conditions look only at the request itself: reasoning effort, tools, images, structured output,
prompt size, keywords, code or maths in the last user message. The choice is reported in the
response (`model`, `x-switchyard-route`) and in the request log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from switchyard.config import ConfigError
from switchyard.wire.chat import ChatRequest, TextPart

_CODE = re.compile(r"```|\bdef \w+\(|\bclass \w+[:(]|\bfunction \w+\(|#include\b|\bimport \w+|=>|;\s*$", re.M)
_MATHS = re.compile(r"\\(frac|sum|int|sqrt)|\b(prove|theorem|lemma|integral|derivative|equation)\b|\d\s*[-+*/^=]\s*\d", re.I)
_CONDITIONS = {
    "reasoning_effort", "has_tools", "has_images", "structured_output", "min_prompt_tokens",
    "max_prompt_tokens", "keywords", "has_code", "has_maths",
}


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    route: str  # a public model name (or alias)
    when: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    model: str
    rule: str
    reason: str


def _last_user_text(request: ChatRequest) -> str:
    for msg in reversed(request.messages):
        if msg.role == "user":
            if isinstance(msg.content, str):
                return msg.content
            if msg.content:
                return "\n".join(p.text for p in msg.content if isinstance(p, TextPart))
    return ""


def _holds(name: str, want: Any, request: ChatRequest, prompt_tokens: int, text: str) -> str | None:
    """A short explanation if the condition holds, else None."""
    if name == "reasoning_effort":
        efforts = [want] if isinstance(want, str) else list(want)
        return f"reasoning_effort={request.reasoning_effort}" if request.reasoning_effort in efforts else None
    if name == "has_tools":
        return "tools" if bool(request.tools) == bool(want) else None
    if name == "has_images":
        return "images" if request.has_images == bool(want) else None
    if name == "structured_output":
        return "json_schema" if (request.json_schema is not None) == bool(want) else None
    if name == "min_prompt_tokens":
        return f"~{prompt_tokens} prompt tokens >= {want}" if prompt_tokens >= int(want) else None
    if name == "max_prompt_tokens":
        return f"~{prompt_tokens} prompt tokens <= {want}" if prompt_tokens <= int(want) else None
    if name == "keywords":
        lowered = text.lower()
        hit = next((k for k in want if str(k).lower() in lowered), None)
        return f"keyword {hit!r}" if hit is not None else None
    if name == "has_code":
        return "code" if bool(_CODE.search(text)) == bool(want) else None
    if name == "has_maths":
        return "maths" if bool(_MATHS.search(text)) == bool(want) else None
    raise AssertionError(name)


class SmartRouter:
    def __init__(self, name: str, default: str, rules: Sequence[Rule]) -> None:
        self.name = name
        self.default = default
        self.rules = list(rules)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any] | None, known_models: set[str]) -> SmartRouter | None:
        if not raw:
            return None
        if not isinstance(raw, Mapping) or not raw.get("default"):
            raise ConfigError("smart_routing needs at least 'default' (the model when no rule matches)")
        rules = []
        for i, r in enumerate(raw.get("rules") or []):
            if not isinstance(r, Mapping) or "route" not in r:
                raise ConfigError(f"smart_routing.rules[{i}] needs 'route'")
            when = dict(r.get("when") or {})
            unknown = set(when) - _CONDITIONS
            if unknown:
                raise ConfigError(f"smart_routing.rules[{i}]: unknown conditions {sorted(unknown)}")
            rules.append(Rule(str(r.get("name") or f"rule{i}"), str(r["route"]), when))
        router = cls(str(raw.get("model") or "switchyard/auto"), str(raw["default"]), rules)
        for target in [router.default, *(r.route for r in rules)]:
            if target not in known_models:
                raise ConfigError(f"smart_routing routes to '{target}', which is not a configured model or alias")
        return router

    def choose(self, request: ChatRequest, prompt_tokens: int) -> Decision:
        text = _last_user_text(request)
        for rule in self.rules:
            reasons = []
            for name, want in rule.when.items():
                why = _holds(name, want, request, prompt_tokens, text)
                if why is None:
                    break
                reasons.append(why)
            else:
                return Decision(rule.route, rule.name, ", ".join(reasons) or "always")
        return Decision(self.default, "default", "no rule matched")

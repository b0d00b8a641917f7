"""The embedded local model as a provider: OpenAI chat requests in, OpenAI objects out."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from switchyard.config import ConfigError
from switchyard.providers.base import ChatCall, CompletionCall, EmbedCall, Embedded, Provider
from switchyard.providers.local.engine import (
    Finished, GenerationTimeout, LocalEngine, Piece, Sampling, default_model_path,
)
from switchyard.providers.local.embedder import shared_embedder
from switchyard.providers.local.grammar import TOOL_OPEN, json_grammar, tool_grammar
from switchyard.providers.local.prompt import PromptBuilder
from switchyard.providers.local.toolcalls import ToolCallStream, parse_tool_calls
from switchyard.wire.chat import ChatRequest, FunctionDef, JSONObjectFormat, NamedToolChoice
from switchyard.wire.errors import invalid_request, upstream_error

_TOKENIZE_INLINE = 64 * 1024  # characters: shorter prompts are tokenized on the loop (a thread hop costs more)
DEFAULT_MAX_TOKENS = 512  # for requests without a limit, unless the deployment sets default_max_tokens
EMBEDDING_DIMENSIONS = 384  # multilingual-e5-small
# One engine per model file and worker, shared by every deployment that names the file.
_engines: dict[tuple[str, int, int], LocalEngine] = {}


@dataclass(slots=True)
class _Plan:
    tokens: list[int]
    sampling: Sampling
    tool_mode: str | None  # None, "auto" or "required"


class LocalProvider(Provider):
    kind = "local"

    async def start(self) -> None:
        opts = self.deployment.options
        if "chat.completions" not in self.spec.endpoints:
            return  # an embedding deployment: its model loads on first use (embedder.py)
        path = Path(opts["model_path"]).expanduser() if opts.get("model_path") else default_model_path()
        if not path.is_file():
            raise ConfigError(f"deployment {self.deployment.id}: model file not found: {path}")
        # The window the catalog promises (a smaller n_ctx saves memory: 23 KB per token for SmolLM2).
        n_ctx = int(opts.get("n_ctx") or self.deployment.context_window or self.spec.context_window)
        instances = int(opts.get("instances", 1))
        key = (str(path), n_ctx, instances)
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = LocalEngine(path, instances=instances, n_ctx=n_ctx, threads=opts.get("threads"))
            await engine.start()
        self.engine = engine
        self.prompts = PromptBuilder(engine.chat_template, engine.bos_token, engine.eos_token)
        self.default_temperature = float(opts.get("temperature", 1.0))
        self.fingerprint = "fp_" + hashlib.sha256(path.name.encode()).hexdigest()[:10]

    async def embed(self, call: EmbedCall) -> Embedded:
        req = call.request
        if "embeddings" not in self.spec.endpoints:
            return await super().embed(call)
        if req.texts is None:
            raise invalid_request(f"Model {req.model} embeds text: token arrays are for OpenAI's models.", param="input")
        if req.dimensions is not None and req.dimensions != EMBEDDING_DIMENSIONS:
            raise invalid_request(f"Model {req.model} has {EMBEDDING_DIMENSIONS} dimensions and cannot shorten them.",
                                  param="dimensions")
        embedder = shared_embedder(self.deployment.options.get("threads"))
        counts = await embedder.token_counts(list(req.texts))
        window = self.spec.context_window
        for i, count in enumerate(counts):
            if count > window:
                raise invalid_request(f"input[{i}] is {count} tokens; model {req.model} takes at most {window}.",
                                      param="input", code="context_length_exceeded")
        return Embedded(await embedder.embed(list(req.texts)), sum(counts))

    async def close(self) -> None:
        for key, engine in list(_engines.items()):
            if engine is getattr(self, "engine", None):
                await engine.close()
                del _engines[key]

    @property
    def context_window(self) -> int:
        window = super().context_window
        engine = getattr(self, "engine", None)
        return min(window, engine.n_ctx) if engine else window

    @property
    def default_output_limit(self) -> int | None:
        # A small model can ramble for thousands of tokens (minutes on a CPU) when nothing stops it.
        return self.deployment.default_max_tokens or DEFAULT_MAX_TOKENS

    async def count_prompt_tokens(self, request: ChatRequest) -> int | None:
        tools, _ = _tools(request)
        prompt = self.prompts.render(request, tools)
        if len(prompt) < _TOKENIZE_INLINE:
            return len(self.engine.tokenize(prompt))
        # llama.cpp tokenizes without the GIL: a long prompt is counted in a thread, off the loop.
        return len(await asyncio.to_thread(self.engine.tokenize, prompt))

    def _plan(self, request: ChatRequest, output_limit: int | None) -> _Plan:
        tools, mode = _tools(request)
        if mode:
            # Several calls only when asked for explicitly: a small model otherwise repeats its call.
            parallel = request.parallel_tool_calls is True and not isinstance(request.tool_choice, NamedToolChoice)
            grammar: str | None = tool_grammar(tools or [], mode, parallel)
        elif isinstance(request.response_format, JSONObjectFormat):
            grammar = json_grammar(None)
        elif (fmt := request.json_schema) is not None:
            grammar = json_grammar(fmt.schema or {"type": "object"})
        else:
            grammar = None
        tokens = self.engine.tokenize(self.prompts.render(request, tools if mode else None))
        room = self.engine.n_ctx - len(tokens)
        if room <= 0:
            raise invalid_request(
                f"This model's maximum context length is {self.engine.n_ctx} tokens, "
                f"but the messages take {len(tokens)}.",
                param="messages", code="context_length_exceeded",
            )
        sampling = Sampling(
            max_tokens=min(output_limit or request.output_limit or self.default_output_limit or room, room),
            temperature=request.temperature if request.temperature is not None else self.default_temperature,
            top_p=request.top_p if request.top_p is not None else 1.0,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            stop=request.stop_sequences,
            seed=request.seed,
            grammar=grammar,
            top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        )
        return _Plan(tokens, sampling, mode)

    def _text_plans(self, call: CompletionCall) -> list[tuple[str, _Plan]]:
        """A legacy completion: each prompt continued as it is, no chat template around it."""
        req = call.request
        if req.suffix:
            raise invalid_request(f"Model {req.model} cannot fill in between a prompt and a suffix.", param="suffix")
        plans = []
        for prompt in req.prompts:
            try:
                text = prompt if isinstance(prompt, str) else self.engine.detokenize(prompt)
            except ValueError as exc:
                raise invalid_request(f"Invalid 'prompt': {exc}.", param="prompt") from None
            tokens = self.engine.tokenize(text) if isinstance(prompt, str) else list(prompt)
            room = self.engine.n_ctx - len(tokens)
            if room <= 0 or not tokens:
                raise invalid_request(f"This model's maximum context length is {self.engine.n_ctx} tokens, but the "
                                      f"prompt takes {len(tokens)}.", param="prompt", code="context_length_exceeded")
            chat = req.chat
            sampling = Sampling(
                max_tokens=min(call.output_limit, room),
                temperature=chat.temperature if chat.temperature is not None else self.default_temperature,
                top_p=chat.top_p if chat.top_p is not None else 1.0,
                presence_penalty=chat.presence_penalty or 0.0, frequency_penalty=chat.frequency_penalty or 0.0,
                stop=chat.stop_sequences, seed=chat.seed, grammar=None,
                top_logprobs=req.logprobs if req.logprobs else None,
            )
            plans.append((text, _Plan(tokens, sampling, None)))
        return plans

    async def complete(self, call: CompletionCall) -> dict[str, Any]:
        req = call.request
        deadline = self._deadline()
        usage, choices = _Usage(), []
        for text, plan in self._text_plans(call):
            for k, seed in enumerate(self._seeds(req.chat)[:req.n]):
                plan.sampling.seed = seed
                out, logprobs, finished = "", [], None
                async for event in self._generate(plan, call.request_id, deadline):
                    if isinstance(event, Piece):
                        out += event.text
                        logprobs += event.logprobs
                    else:
                        finished = event
                assert finished is not None
                usage.add_prompt(finished, first=k == 0)
                choices.append({"text": (text if req.echo else "") + out, "index": len(choices),
                                "logprobs": _text_logprobs(logprobs, len(text) if req.echo else 0) if req.logprobs else None,
                                "finish_reason": finished.finish_reason})
        return {"id": _completion_id("cmpl-"), "object": "text_completion", "created": int(time.time()),
                "model": call.upstream_model, "choices": choices, "usage": usage.to_dict(),
                "system_fingerprint": self.fingerprint}

    async def complete_stream(self, call: CompletionCall) -> AsyncIterator[list[bytes]]:
        req = call.request
        deadline = self._deadline()
        head = {"id": _completion_id("cmpl-"), "object": "text_completion", "created": int(time.time()),
                "model": call.upstream_model, "system_fingerprint": self.fingerprint}

        def chunk(index: int, text: str, finish: str | None, logprobs: list | None) -> bytes:
            lp = _text_logprobs(logprobs or [], 0) if req.logprobs and logprobs is not None else None
            return orjson.dumps({**head, "choices": [{"text": text, "index": index, "logprobs": lp,
                                                      "finish_reason": finish}]})

        usage, index = _Usage(), 0
        for text, plan in self._text_plans(call):
            for k, seed in enumerate(self._seeds(req.chat)[:req.n]):
                plan.sampling.seed = seed
                if req.echo:
                    yield [chunk(index, text, None, None)]
                async for event in self._generate(plan, call.request_id, deadline):
                    if isinstance(event, Finished):
                        usage.add_prompt(event, first=k == 0)
                        yield [chunk(index, "", event.finish_reason, None)]
                        break
                    yield [chunk(index, event.text, None, event.logprobs)]
                index += 1
        yield [orjson.dumps({**head, "choices": [], "usage": usage.to_dict()})]

    def _seeds(self, request: ChatRequest) -> list[int | None]:
        """One seed per choice: the caller's seed gives the same choices again; none gives fresh ones."""
        if request.seed is None:
            return [None] * (request.n or 1)
        return [(request.seed + i) & 0x7FFFFFFF for i in range(request.n or 1)]

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.deployment.timeouts.total

    async def _generate(self, plan: _Plan, label: str, deadline: float) -> AsyncIterator[Piece | Finished]:
        try:
            async for event in self.engine.generate(plan.tokens, plan.sampling, label, deadline):
                yield event
        except GenerationTimeout:
            raise upstream_error(504, f"Deployment {self.deployment.id} did not finish within its total timeout "
                                      f"({self.deployment.timeouts.total:g}s).", code="upstream_timeout") from None

    async def chat(self, call: ChatCall) -> dict[str, Any]:
        plan = self._plan(call.request, call.output_limit)
        deadline = self._deadline()
        choices = []
        usage = _Usage()
        for index, seed in enumerate(self._seeds(call.request)):
            plan.sampling.seed = seed
            text, logprobs = "", []
            finished: Finished | None = None
            async for event in self._generate(plan, call.request_id, deadline):
                if isinstance(event, Piece):
                    text += event.text
                    logprobs += event.logprobs
                else:
                    finished = event
            assert finished is not None
            usage.add(finished)
            message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
            finish_reason = finished.finish_reason
            calls = parse_tool_calls(text) if plan.tool_mode else None
            if calls:
                message["content"] = None
                message["tool_calls"] = calls
                finish_reason = "tool_calls" if finish_reason == "stop" else finish_reason
            choices.append({
                "index": index,
                "message": message,
                "logprobs": {"content": logprobs, "refusal": None} if plan.sampling.top_logprobs is not None else None,
                "finish_reason": finish_reason,
            })
        return {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.upstream_model,
            "choices": choices,
            "usage": usage.to_dict(),
            "service_tier": "default",
            "system_fingerprint": self.fingerprint,
        }

    async def chat_stream(self, call: ChatCall) -> AsyncIterator[list[bytes]]:
        plan = self._plan(call.request, call.output_limit)
        deadline = self._deadline()
        want_logprobs = plan.sampling.top_logprobs is not None
        head = {"id": _completion_id(), "object": "chat.completion.chunk", "created": int(time.time()),
                "model": call.upstream_model, "service_tier": "default", "system_fingerprint": self.fingerprint}

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: list | None = None) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            if want_logprobs and logprobs is not None:
                choice["logprobs"] = {"content": logprobs, "refusal": None}
            return orjson.dumps({**head, "choices": [choice], "usage": None})

        usage = _Usage()
        for index, seed in enumerate(self._seeds(call.request)):
            plan.sampling.seed = seed
            yield [chunk(index, {"role": "assistant", "content": "", "refusal": None})]
            tools: ToolCallStream | None = None
            decided = plan.tool_mode is None
            finished: Finished | None = None
            async for event in self._generate(plan, call.request_id, deadline):
                if isinstance(event, Finished):
                    finished = event
                    break
                if not decided:
                    # The grammar lets plain text start with anything but '<': the first character decides.
                    decided = True
                    if event.text.startswith(TOOL_OPEN[0]):
                        tools = ToolCallStream()
                if tools is not None:
                    deltas = tools.feed(event.text)
                    if deltas:
                        yield [chunk(index, {"tool_calls": deltas}, logprobs=event.logprobs)]
                else:
                    yield [chunk(index, {"content": event.text}, logprobs=event.logprobs)]
            assert finished is not None
            usage.add(finished)
            reason = finished.finish_reason
            if tools is not None and tools.calls and reason == "stop":
                reason = "tool_calls"
            yield [chunk(index, {}, reason)]
        yield [orjson.dumps({**head, "choices": [], "usage": usage.to_dict()})]


PROVIDER = LocalProvider


class _Usage:
    """Prompt counted once however many choices (as OpenAI bills `n`), completions summed."""

    def __init__(self) -> None:
        self.prompt = self.cached = self.completion = 0
        self._seen_prompt = False

    def add(self, f: Finished) -> None:
        if not self._seen_prompt:
            self.prompt, self.cached, self._seen_prompt = f.prompt_tokens, f.cached_tokens, True
        self.completion += f.completion_tokens

    def add_prompt(self, f: Finished, first: bool) -> None:
        """A legacy completion of several prompts: each prompt counts once (at its first choice)."""
        if first:
            self.prompt += f.prompt_tokens
            self.cached += f.cached_tokens
        self.completion += f.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            },
        }


def _completion_id(prefix: str = "chatcmpl-") -> str:
    return prefix + secrets.token_urlsafe(18)


def _text_logprobs(logprobs: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """Chat-style token logprobs in the legacy completions shape."""
    tokens, offsets, at = [], [], offset
    for item in logprobs:
        tokens.append(item["token"])
        offsets.append(at)
        at += len(item["token"])
    return {"tokens": tokens, "token_logprobs": [item["logprob"] for item in logprobs],
            "top_logprobs": [{t["token"]: t["logprob"] for t in item.get("top_logprobs") or ()} for item in logprobs],
            "text_offset": offsets}


def _tools(request: ChatRequest) -> tuple[list[FunctionDef] | None, str | None]:
    """The tools the model may call and how: (tools, None|"auto"|"required")."""
    tools = [t.function for t in request.tools or () if t.function is not None]
    choice = request.tool_choice
    if not tools or choice == "none":
        return None, None
    if isinstance(choice, NamedToolChoice):
        return [t for t in tools if t.name == choice.function.name], "required"
    return tools, "required" if choice == "required" else "auto"

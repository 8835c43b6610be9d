"""Chat models that write and judge explanations: a local transformers model or an HTTP endpoint.

One small interface, so explainers and scorers never know which is behind it:

- ``LocalChat``: any ``CausalLMAdapter`` (offline default SmolLM2-135M-Instruct, through
  ``conf/model/smollm2.yaml``); answers by greedy generation, and yes/no judgements read the
  next-token log-probabilities directly (one forward pass, prompts batched);
- ``HTTPChat``: any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp
  server, a lab's served 70B) whose URL and model name the user gives; a key, if the
  endpoint needs one, is read from the environment variable the user names. Timeouts,
  connection errors, 429/5xx answers and unparseable bodies are retried with backoff; after
  the last try an ``EndpointError`` says what happened, and callers keep what was computed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import ConfigError, UserError

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]
YES, NO = ("yes", "1", "true"), ("no", "0", "false")


class EndpointError(UserError):
    """An explainer/scorer endpoint that did not answer usably after its retries."""


@dataclass
class Completion:
    text: str
    top_logprobs: dict[str, float] | None = None  # first answer token: candidate -> log-probability


def yes_no_score(top: dict[str, float] | None) -> float | None:
    """log P(yes) - log P(no) over the candidates of the first answer token (None if neither shows)."""
    if not top:
        return None
    yes = [lp for t, lp in top.items() if t.strip().lower() in YES]
    no = [lp for t, lp in top.items() if t.strip().lower() in NO]
    if not yes and not no:
        return None

    def lse(v: list[float]) -> float:
        if not v:
            return -1e9
        m = max(v)
        return m + math.log(sum(math.exp(x - m) for x in v))

    return lse(yes) - lse(no)


class ChatClient(Protocol):
    name: str

    def complete(self, conversations: Sequence[Messages], *, max_tokens: int,
                 logprobs: bool = False) -> list[Completion | EndpointError]: ...


class LocalChat:
    """A chat model run in this process through a ``CausalLMAdapter``."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.name = f"local:{adapter.name}"
        self._answer_ids: dict[str, list[int]] | None = None

    def _candidates(self) -> dict[str, list[int]]:
        if self._answer_ids is None:
            ids: dict[str, list[int]] = {}
            for word in ("Yes", "No", "yes", "no", "1", "0"):
                for text in (word, " " + word):
                    toks = self.adapter.encode(text, add_special_tokens=False)
                    if len(toks) == 1:
                        ids.setdefault(word, []).append(toks[0])
            self._answer_ids = ids
        return self._answer_ids

    def complete(self, conversations: Sequence[Messages], *, max_tokens: int,
                 logprobs: bool = False) -> list[Completion | EndpointError]:
        import torch

        prompts = [self.adapter.render_chat(m) for m in conversations]
        if logprobs:
            with torch.no_grad():
                lp = self.adapter.next_token_logprobs(prompts)
            out: list[Completion | EndpointError] = []
            cands = self._candidates()
            for row in lp:
                top = {w: float(torch.logsumexp(row[ids], 0)) for w, ids in cands.items()}
                best = max(top, key=top.get)
                out.append(Completion(best, top))
            return out
        with torch.no_grad():
            texts = self.adapter.generate(prompts, max_new_tokens=max_tokens)
        return [Completion(t.strip()) for t in texts]


class HTTPChat:
    """An OpenAI-compatible chat endpoint over plain ``urllib`` (no client library needed)."""

    def __init__(self, url: str, model: str, *, timeout: float = 60.0, retries: int = 3, backoff: float = 1.0,
                 api_key_env: str | None = None, temperature: float = 0.0, top_logprobs: int = 5) -> None:
        if not url or not model:
            raise ConfigError("the HTTP explainer needs the endpoint's URL and the model name",
                              fix="set explain.llm.url=http://HOST:PORT/v1 and explain.llm.model=<served name>")
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model, self.timeout, self.retries, self.backoff = model, float(timeout), int(retries), float(backoff)
        self.temperature, self.top_logprobs = float(temperature), int(top_logprobs)
        self.api_key = None
        if api_key_env:
            self.api_key = os.environ.get(api_key_env)
            if not self.api_key:
                raise ConfigError(f"the environment variable {api_key_env!r} holding the endpoint key is not set",
                                  fix=f"export {api_key_env}=<key>, or drop explain.llm.api_key_env")
        self.name = f"http:{model}"

    def complete(self, conversations: Sequence[Messages], *, max_tokens: int,
                 logprobs: bool = False) -> list[Completion | EndpointError]:
        return [self._one(m, max_tokens, logprobs) for m in conversations]

    def _one(self, messages: Messages, max_tokens: int, logprobs: bool) -> Completion | EndpointError:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": int(max_tokens),
                                "temperature": self.temperature}
        if logprobs:
            body.update({"logprobs": True, "top_logprobs": self.top_logprobs})
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code} {err.reason}"
                if err.code not in (408, 429) and err.code < 500:
                    break  # the request itself is wrong: retrying cannot help
                continue
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
                last = f"no answer within {self.timeout:g} s" if isinstance(reason, TimeoutError) \
                    else f"cannot connect ({reason})"
                continue
            try:
                return _parse(raw)
            except (ValueError, KeyError, IndexError, TypeError) as err:
                last = f"unusable answer ({err}): {raw[:120]!r}"
        return EndpointError(f"endpoint {self.url} (model {self.model!r}) failed after {self.retries + 1} "
                             f"tries: {last}", fix="check that the server is up and serves this model "
                             "(explain.llm.url / explain.llm.model), or raise explain.llm.timeout")


def _parse(raw: bytes) -> Completion:
    data = json.loads(raw)
    choice = data["choices"][0]
    text = choice["message"]["content"]
    if not isinstance(text, str):
        raise TypeError("message content is not text")
    top = None
    content = (choice.get("logprobs") or {}).get("content") or []
    if content:
        first = content[0]
        top = {str(c["token"]): float(c["logprob"]) for c in first.get("top_logprobs") or []}
        top.setdefault(str(first["token"]), float(first["logprob"]))
    return Completion(text.strip(), top)


def build_client(opts: dict[str, Any]) -> ChatClient:
    """``explain.llm``: ``backend: local`` (``model``: a conf/model name) or ``backend: http``."""
    backend = opts.get("backend", "local")
    if backend == "http":
        return HTTPChat(opts.get("url"), opts.get("model"), timeout=float(opts.get("timeout", 60)),
                        retries=int(opts.get("retries", 3)), backoff=float(opts.get("backoff", 1.0)),
                        api_key_env=opts.get("api_key_env"))
    if backend == "local":
        from pathlib import Path

        from core.adapters import load_adapter

        name = opts.get("model") or "smollm2"
        path = Path(__file__).resolve().parents[2] / "conf" / "model" / f"{name}.yaml"
        if not path.exists():
            raise ConfigError(f"no model config conf/model/{name}.yaml for the local explainer",
                              fix="set explain.llm.model to a name under conf/model/ (e.g. smollm2)")
        return LocalChat(load_adapter(path))
    raise ConfigError(f"unknown explain.llm.backend {backend!r}", fix="use local or http")

"""The `openai` model: planning and streamed synthesis on any OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import logging
from base64 import b64encode
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

import httpx2
import openai
from openai import AsyncStream, omit
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from research_service.addresses import public_url
from research_service.errors import ConfigError
from research_service.providers.base import (
    AnswerRequest,
    FollowUpRequest,
    Plan,
    PlanRequest,
    Reporter,
    Source,
    Usage,
    estimate_tokens,
)
from research_service.providers.chat_replies import (
    check_event_stream,
    completion_message,
    reported_usage,
)
from research_service.providers.llm_errors import (
    BAD_REPLY_ERRORS,
    ENDED_EARLY,
    LLMCall,
    LLMStreamBroken,
    MalformedReply,
    as_llm_error,
    check_failure,
    describe_failure,
    server_message,
)
from research_service.providers.llm_retry import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_WAIT_S,
    call_with_retries,
)
from research_service.providers.plan_parsing import (
    PlanFormat,
    PlanParseError,
    follow_up_messages,
    parse_plan,
    plan_messages,
    plan_response_format,
    rejects_format,
    retry_plan_messages,
)
from research_service.providers.reasoning import AnswerStream
from research_service.text import well_formed

log = logging.getLogger(__name__)

PROVIDER_NAME: Final = "openai"
PLANNER_SETTING: Final = "RESEARCH_PLANNER_MODEL"
SYNTH_SETTING: Final = "RESEARCH_SYNTH_MODEL"

SYNTH_SYSTEM_PROMPT: Final = (
    "You answer research questions from numbered sources. Use only what the sources say. "
    "Cite each claim with the number of its source in square brackets, like [1] or [2][3], "
    "using only the numbers listed. If the sources do not answer the question, say so. "
    "Write plain prose: no preamble and no list of references at the end."
)


def render_sources(sources: Sequence[Source]) -> str:
    """The sources as the model sees them: `[n] title — url` then the snippet."""
    if not sources:
        return "(no sources were found)"
    return "\n\n".join(f"[{s.id}] {s.title} — {s.url}\n{s.snippet}" for s in sources)


def synthesis_messages(
    question: str, sources: Sequence[Source]
) -> list[ChatCompletionMessageParam]:
    """The chat messages that ask for a cited answer to `question` from `sources`."""
    user = f"Sources:\n\n{render_sources(sources)}\n\nQuestion: {question}"
    return [{"role": "system", "content": SYNTH_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def prompt_text(messages: Sequence[ChatCompletionMessageParam]) -> str:
    """All the text of `messages`, for estimating prompt tokens."""
    return "\n".join(str(message.get("content") or "") for message in messages)


@dataclass(slots=True)
class _OpenStream:
    """A synthesis stream that has produced its first visible text (or ended without any)."""

    stream: AsyncStream[ChatCompletionChunk]
    state: AnswerStream
    first: str
    ended: bool


class OpenAILLM:
    """A language model behind the OpenAI Chat Completions API (OpenAI, vLLM, Ollama …)."""

    name: str = PROVIDER_NAME

    def __init__(
        self,
        *,
        client: openai.AsyncOpenAI,
        planner_model: str,
        synth_model: str,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        json_schema: bool = True,
        key_setting: str = "OPENAI_API_KEY",
    ) -> None:
        self._client = client
        self.planner_model = planner_model
        self.synth_model = synth_model
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        # Lowered for good the first time the server rejects a format.
        self.plan_format = PlanFormat.JSON_SCHEMA if json_schema else PlanFormat.JSON_OBJECT
        base_url, secret = self.base_url, self._secrets
        self._plan_call = LLMCall(
            PROVIDER_NAME, base_url, planner_model, PLANNER_SETTING, key_setting, secret
        )
        self._synth_call = LLMCall(
            PROVIDER_NAME, base_url, synth_model, SYNTH_SETTING, key_setting, secret
        )
        self._limit_field = "max_tokens"

    @property
    def _secrets(self) -> tuple[str, ...]:
        """What no message may show: the key, and a gateway's password in the base URL.

        The password as written and as basic auth sends it: base64 of user:password, which a
        gateway's 401 may quote back.
        """
        url = self._client.base_url
        user, password = unquote(url.username or ""), unquote(url.password or "")
        basic = b64encode(f"{user}:{password}".encode()).decode() if password else ""
        return tuple(s for s in (self._client.api_key, password, basic) if s)

    @property
    def base_url(self) -> str:
        """The server this model talks to, as messages show it (no password, no query)."""
        return public_url(str(self._client.base_url))

    async def check(self) -> None:
        """Make sure the server answers and accepts the key; raise ConfigError if not."""
        try:
            page = await self._client.models.list()
            served = {model.id for model in page.data or ()}
        except openai.NotFoundError:
            # Every server this supports (OpenAI, vLLM, Ollama, llama.cpp, LM Studio) has it:
            # a 404 almost always means the base URL lacks its /v1.
            raise ConfigError(
                f"{self.base_url}/models answered 404 Not Found; the base URL usually ends in "
                "/v1 (e.g. http://127.0.0.1:11434/v1): fix OPENAI_BASE_URL"
            ) from None
        except Exception as exc:  # noqa: BLE001 - whatever the reply, it is not the API's
            # Beyond the SDK's errors: HTML or JSON of another shape fails inside the SDK's
            # parsing (AttributeError, TypeError, UnicodeDecodeError…).
            raise check_failure(exc, base_url=self.base_url, secret=self._secrets) from None
        for model, setting in (
            (self.planner_model, PLANNER_SETTING),
            (self.synth_model, SYNTH_SETTING),
        ):
            if served and model not in served:
                log.warning(
                    "%s does not list model %r (%s); requests may fail",
                    self.base_url,
                    model,
                    setting,
                )

    async def close(self) -> None:
        """Close the HTTP client and its connections."""
        await self._client.close()

    async def plan(self, request: PlanRequest) -> Plan:
        """Ask the model for 1..`breadth` queries; retry an unusable plan once, then fall back."""
        question, breadth, report = request.question, request.breadth, request.report
        messages = plan_messages(
            question, breadth=breadth, previous=request.previous, feedback=request.feedback
        )
        reply = await self._complete_plan(messages, report=report)
        try:
            return Plan(parse_plan(reply, breadth=breadth))
        except PlanParseError as exc:
            log.info("unusable plan from %s (%s); asking once more", self.planner_model, exc)
            error = exc
        messages += retry_plan_messages(reply, error=error, breadth=breadth)
        reply = await self._complete_plan(messages, report=report)
        try:
            return Plan(parse_plan(reply, breadth=breadth))
        except PlanParseError as exc:
            log.info(
                "unusable plan again from %s (%s); searching the question", self.planner_model, exc
            )
            return Plan(
                [" ".join(question.split())],
                fallback=f"the model's plan was unusable ({exc}); searching the question itself",
            )

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        """Ask the model what the sources leave open; [] when nothing (or no usable reply)."""
        messages = follow_up_messages(
            request.question, request.sources, asked=request.asked, breadth=request.breadth
        )
        reply = await self._complete_plan(messages, report=request.report)
        try:
            return parse_plan(reply, breadth=request.breadth)
        except PlanParseError as exc:
            # An empty list is how the model says the research is complete.
            log.info("no follow-up queries from %s (%s)", self.planner_model, exc)
            return []

    async def _complete_plan(
        self, messages: list[ChatCompletionMessageParam], *, report: Reporter
    ) -> str | None:
        """One planning completion (with retries); report its usage and return its text."""

        async def attempt() -> ChatCompletion:
            while True:
                fmt = self.plan_format
                response_format = plan_response_format(fmt)
                try:
                    # The read timeout bounds each read, not the reply: a server that
                    # trickles it (keep-alive whitespace) must still answer within it.
                    async with asyncio.timeout(self._reply_timeout_s()):
                        return await self._client.chat.completions.create(
                            model=self.planner_model,
                            messages=messages,
                            response_format=omit if response_format is None else response_format,
                        )
                except TimeoutError:
                    url = f"{self._client.base_url}chat/completions"
                    raise openai.APITimeoutError(request=httpx2.Request("POST", url)) from None
                except openai.APIStatusError as exc:
                    if fmt is PlanFormat.PROMPT or not rejects_format(exc):
                        raise
                    self._lower_plan_format(fmt, exc)

        completion = await call_with_retries(
            attempt,
            call=self._plan_call,
            report=report,
            max_attempts=self.max_attempts,
            max_wait_s=self.max_wait_s,
        )
        try:
            message = completion_message(completion)
        except MalformedReply as exc:
            raise as_llm_error(exc, call=self._plan_call, attempts=1) from exc
        text = well_formed(message.content) if message and message.content else None
        usage = reported_usage(completion.usage)
        if usage is not None:
            report.usage(usage)
        else:
            estimate = Usage(estimate_tokens(prompt_text(messages)), estimate_tokens(text or ""))
            report.usage(estimate, estimated=True)
        if message is not None and not text and message.refusal:
            return f"(refused: {well_formed(message.refusal)})"
        return text

    def _reply_timeout_s(self) -> float | None:
        """How long a whole planning reply may take: the client's read timeout."""
        timeout = self._client.timeout
        return timeout.read if isinstance(timeout, httpx2.Timeout) else timeout

    def _lower_plan_format(self, rejected: PlanFormat, exc: openai.APIStatusError) -> None:
        """Remember that the server rejects `rejected` and use the next looser format."""
        lower = rejected.looser()
        if self.plan_format is rejected:
            self.plan_format = lower
        log.warning(
            "%s rejected response_format %s (%s); using %s from now on",
            self.base_url,
            rejected.value,
            server_message(exc, hiding=self._secrets),
            lower.value,
        )

    async def synthesize(self, request: AnswerRequest) -> AsyncGenerator[str, None]:
        """Stream the cited answer; retried only until its first text, closed when closed."""
        report, max_tokens = request.report, request.max_tokens
        messages = synthesis_messages(request.question, request.sources)
        opened = await call_with_retries(
            lambda: self._open_stream(messages, max_tokens=max_tokens),
            call=self._synth_call,
            report=report,
            max_attempts=self.max_attempts,
            max_wait_s=self.max_wait_s,
        )
        state, sent = opened.state, 0
        try:
            if opened.first:
                sent += len(opened.first)
                yield opened.first
            while not opened.ended and not state.spent(max_tokens):
                try:
                    chunk = await anext(opened.stream)
                except StopAsyncIteration:
                    break
                if text := state.take(chunk):
                    sent += len(text)
                    yield text
            if tail := state.flush():
                sent += len(tail)
                yield tail
        except (openai.OpenAIError, *BAD_REPLY_ERRORS) as exc:
            reason = describe_failure(exc, hiding=self._secrets)
            raise self._broken(reason, sent=sent) from exc
        finally:
            await opened.stream.close()
            state.report_usage(report, prompt=prompt_text(messages), max_tokens=max_tokens)
        self._check_finish(state, sent=sent, max_tokens=max_tokens)

    def _check_finish(self, state: AnswerStream, *, sent: int, max_tokens: int | None) -> None:
        """Raise LLMStreamBroken unless the stream ended as an answer ends."""
        finish = state.finish_reason
        if finish is None:
            raise self._broken("the stream ended without a finish reason", sent=sent)
        if finish == "length":
            log.info("%s stopped at the token limit (max_tokens=%s)", self.synth_model, max_tokens)
        elif finish == "content_filter":
            raise self._broken("the server's content filter stopped it", sent=sent)
        elif finish in ("tool_calls", "function_call"):
            raise self._broken("the model called a tool, and this service offers none", sent=sent)

    async def _open_stream(
        self, messages: list[ChatCompletionMessageParam], *, max_tokens: int | None
    ) -> _OpenStream:
        """Start a synthesis stream and read it up to its first visible text."""
        try:
            stream = await self._create_stream(messages, max_tokens=max_tokens)
        except openai.BadRequestError as exc:
            # OpenAI's reasoning models refuse `max_tokens` and want `max_completion_tokens`;
            # most other servers take only the older name. Switch once and remember.
            if (
                max_tokens is None
                or self._limit_field != "max_tokens"
                or ("max_completion_tokens" not in server_message(exc))
            ):
                raise
            log.info("%s wants max_completion_tokens; using it from now on", self.base_url)
            self._limit_field = "max_completion_tokens"
            stream = await self._create_stream(messages, max_tokens=max_tokens)
        state = AnswerStream()
        try:
            while True:
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    if state.finish_reason is None:
                        check_event_stream(stream)
                        # Cut off before the answer began: as good as a dropped connection.
                        raise openai.APIConnectionError(
                            message=ENDED_EARLY,
                            request=stream.response.request,
                        ) from None
                    return _OpenStream(stream, state, first="", ended=True)
                if first := state.take(chunk):
                    return _OpenStream(stream, state, first=first, ended=False)
                if state.spent(max_tokens):  # reasoning alone used up the budget
                    return _OpenStream(stream, state, first="", ended=True)
        except BaseException:
            await stream.close()
            raise

    async def _create_stream(
        self, messages: list[ChatCompletionMessageParam], *, max_tokens: int | None
    ) -> openai.AsyncStream[ChatCompletionChunk]:
        newer = self._limit_field == "max_completion_tokens"
        return await self._client.chat.completions.create(
            model=self.synth_model,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=omit if max_tokens is None or newer else max_tokens,
            max_completion_tokens=max_tokens if max_tokens is not None and newer else omit,
        )

    def _broken(self, reason: str, *, sent: int) -> LLMStreamBroken:
        """The error for a stream that failed after part of the answer was sent."""
        return LLMStreamBroken(
            f"the answer stream from {self.base_url} broke after {sent} characters ({reason}); "
            "the answer is incomplete: ask again",
            provider=PROVIDER_NAME,
        )

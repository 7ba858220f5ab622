"""Provider factories by name: a new backend is one module plus one line here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TypeVar

from research_service.errors import ConfigError
from research_service.providers.base import LLMProvider, SearchProvider
from research_service.settings import Settings, source_of
from research_service.settings_fields import is_set

#: How the model provider's messages name the key to fix (the SDK's own variable).
KEY_HINT = "set OPENAI_API_KEY"


@asynccontextmanager
async def _builtin_llm(settings: Settings) -> AsyncIterator[LLMProvider]:
    from research_service.providers.builtin_llm import BuiltinLLM  # noqa: PLC0415 - lazy

    yield BuiltinLLM(token_delay_ms=settings.token_delay_ms)


@asynccontextmanager
async def _local_search(settings: Settings) -> AsyncIterator[SearchProvider]:
    from research_service.providers.local_search import open_local_search  # noqa: PLC0415

    provider = await open_local_search(settings)
    try:
        yield provider
    finally:
        provider.close()


@asynccontextmanager
async def _searxng_search(settings: Settings) -> AsyncIterator[SearchProvider]:
    import aiohttp  # noqa: PLC0415 - only needed with --search searxng

    from research_service.providers.searxng import SearxngSearch, client_timeout  # noqa: PLC0415

    timeout = client_timeout(settings.search_timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        provider = SearxngSearch.from_settings(session, settings)
        # An unreachable instance or one that refuses JSON is reported at start-up.
        await provider.check()
        yield provider


@asynccontextmanager
async def _openai_llm(settings: Settings) -> AsyncIterator[LLMProvider]:
    import httpx2  # noqa: PLC0415 - only needed with --llm openai (the SDK's HTTP library)
    import openai  # noqa: PLC0415

    from research_service.providers.capped_http import CappedTransport  # noqa: PLC0415
    from research_service.providers.openai_llm import OpenAILLM  # noqa: PLC0415

    if not settings.openai_api_key:
        raise ConfigError(
            "OPENAI_API_KEY is not set; set it (any value for a local server that ignores it) "
            "or use --llm builtin"
        )
    client = openai.AsyncOpenAI(
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        # tenacity owns the retry policy; the SDK's own retries would multiply it.
        max_retries=0,
        # Replies are read within a size (capped_http.py), over a pool as large as the SDK's.
        http_client=openai.DefaultAsyncHttpxClient(
            transport=CappedTransport(
                httpx2.AsyncHTTPTransport(
                    limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
                )
            )
        ),
        # openai.Timeout is the SDK's own HTTP client's timeout type.
        timeout=openai.Timeout(
            connect=settings.llm_connect_timeout_s,
            # Reads are bounded by the pipeline's first-token and between-token timeouts.
            read=max(settings.llm_first_token_timeout_s, settings.llm_token_timeout_s),
            write=settings.llm_connect_timeout_s,
            pool=settings.llm_connect_timeout_s,
        ),
    )
    provider = OpenAILLM(
        client=client,
        planner_model=settings.planner,
        synth_model=settings.synthesizer,
        max_attempts=settings.llm_max_attempts,
        max_wait_s=settings.llm_max_wait_s,
        key_setting=_key_variable(),
    )
    try:
        # A missing key or unreachable server is reported at start-up, not at the first run.
        try:
            await provider.check()
        except ConfigError as exc:
            raise _naming_the_key(exc) from None
        yield provider
    finally:
        await provider.close()


def _key_variable() -> str:
    """The variable a refused key came from: the SDK's own name unless ours was set."""
    variable = source_of("openai_api_key")
    return variable if is_set(variable) else "OPENAI_API_KEY"


def _naming_the_key(exc: ConfigError) -> ConfigError:
    """`exc`, asking to fix the variable the key really came from (RESEARCH_* wins)."""
    variable = source_of("openai_api_key")
    message = str(exc)
    if KEY_HINT not in message or variable == KEY_HINT.removeprefix("set "):
        return exc
    return ConfigError(message.replace(KEY_HINT, f"fix {variable} (it overrides OPENAI_API_KEY)"))


@asynccontextmanager
async def _cassette_llm(settings: Settings) -> AsyncIterator[LLMProvider]:
    from research_service.providers.cassettes import Cassette, CassetteLLM  # noqa: PLC0415

    yield CassetteLLM(Cassette.load(settings.cassettes))


@asynccontextmanager
async def _cassette_search(settings: Settings) -> AsyncIterator[SearchProvider]:
    from research_service.providers.cassettes import Cassette, CassetteSearch  # noqa: PLC0415

    yield CassetteSearch(Cassette.load(settings.cassettes))


LLMFactory = Callable[[Settings], AbstractAsyncContextManager[LLMProvider]]
SearchFactory = Callable[[Settings], AbstractAsyncContextManager[SearchProvider]]

LLM_PROVIDERS: dict[str, LLMFactory] = {
    "builtin": _builtin_llm,
    "openai": _openai_llm,
    "replay": _cassette_llm,
}
SEARCH_PROVIDERS: dict[str, SearchFactory] = {
    "local": _local_search,
    "searxng": _searxng_search,
    "replay": _cassette_search,
}

P = TypeVar("P", LLMProvider, SearchProvider)


@asynccontextmanager
async def _taped(
    settings: Settings,
    opened: AbstractAsyncContextManager[P],
    wrap: Callable[[P, Path], P],
) -> AsyncIterator[P]:
    """The opened provider, taping onto a cassette when --record-providers is set."""
    folder = settings.record_providers
    if folder is not None:
        from research_service.providers.cassettes import check_tape_folder  # noqa: PLC0415

        check_tape_folder(folder)  # said at start, not by every run failing
    async with opened as provider:
        yield provider if folder is None else wrap(provider, folder)


def _tape_llm(provider: LLMProvider, folder: Path) -> LLMProvider:
    from research_service.providers.cassettes import CassetteWriter, TapingLLM  # noqa: PLC0415

    return TapingLLM(provider, CassetteWriter(folder))


def _tape_search(provider: SearchProvider, folder: Path) -> SearchProvider:
    from research_service.providers.cassettes import CassetteWriter, TapingSearch  # noqa: PLC0415

    return TapingSearch(provider, CassetteWriter(folder))


def llm_provider(settings: Settings) -> AbstractAsyncContextManager[LLMProvider]:
    """Open the LLM provider named by `settings.llm`."""
    try:
        factory = LLM_PROVIDERS[settings.llm]
    except KeyError:
        raise ConfigError(
            f"unknown LLM provider {settings.llm!r}; choose one of {', '.join(LLM_PROVIDERS)}"
        ) from None
    return _taped(settings, factory(settings), _tape_llm)


def search_provider(settings: Settings) -> AbstractAsyncContextManager[SearchProvider]:
    """Open the search provider named by `settings.search`."""
    try:
        search_factory = SEARCH_PROVIDERS[settings.search]
    except KeyError:
        raise ConfigError(
            f"unknown search provider {settings.search!r}; "
            f"choose one of {', '.join(SEARCH_PROVIDERS)}"
        ) from None
    return _taped(settings, search_factory(settings), _tape_search)

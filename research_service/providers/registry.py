"""Provider factories by name: a new backend is one module plus one line here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from research_service.errors import ConfigError
from research_service.providers.base import LLMProvider, SearchProvider
from research_service.settings import Settings


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


LLMFactory = Callable[[Settings], AbstractAsyncContextManager[LLMProvider]]
SearchFactory = Callable[[Settings], AbstractAsyncContextManager[SearchProvider]]

LLM_PROVIDERS: dict[str, LLMFactory] = {"builtin": _builtin_llm}
SEARCH_PROVIDERS: dict[str, SearchFactory] = {"local": _local_search}


def llm_provider(settings: Settings) -> AbstractAsyncContextManager[LLMProvider]:
    """Open the LLM provider named by `settings.llm`."""
    try:
        return LLM_PROVIDERS[settings.llm](settings)
    except KeyError:
        raise ConfigError(
            f"unknown LLM provider {settings.llm!r}; choose one of {', '.join(LLM_PROVIDERS)}"
        ) from None


def search_provider(settings: Settings) -> AbstractAsyncContextManager[SearchProvider]:
    """Open the search provider named by `settings.search`."""
    try:
        return SEARCH_PROVIDERS[settings.search](settings)
    except KeyError:
        raise ConfigError(
            f"unknown search provider {settings.search!r}; "
            f"choose one of {', '.join(SEARCH_PROVIDERS)}"
        ) from None

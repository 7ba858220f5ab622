"""FakeOpenAI: the fake served on a loopback TCP port for the length of an `async with`."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

from aiohttp import web

from tests.fake_openai.app import DEFAULT_MODEL, FakeState, create_app
from tests.fake_openai.records import CHAT_PATH, RecordedRequest
from tests.fake_openai.script import Script
from tests.loopback import HOST, LoopbackServer


class FakeOpenAI(LoopbackServer):
    """An OpenAI-compatible server on `host:port` (port 0 picks a free one).

    Point the SDK at `base_url`, script replies on `script`, inspect `requests`. With
    `strict`, leaving the block raises if any request went unscripted or misused a fault.
    """

    def __init__(
        self,
        *,
        host: str = HOST,
        port: int = 0,
        models: Sequence[str] = (DEFAULT_MODEL,),
        api_key: str | None = None,
        reject_json_schema: bool = False,
        strict: bool = True,
    ) -> None:
        self.state = FakeState(
            models=list(models), api_key=api_key, reject_json_schema=reject_json_schema
        )
        super().__init__(host=host, port=port)
        self.strict = strict

    @property
    def script(self) -> Script:
        return self.state.script

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order."""
        return self.state.requests

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The `POST /v1/chat/completions` requests, in arrival order."""
        return [r for r in self.state.requests if r.path == CHAT_PATH]

    @property
    def problems(self) -> list[str]:
        """Unscripted requests and misused faults, each answered with a 500."""
        return self.state.problems

    @property
    def models(self) -> list[str]:
        return self.state.models

    @property
    def reject_json_schema(self) -> bool:
        return self.state.reject_json_schema

    @reject_json_schema.setter
    def reject_json_schema(self, value: bool) -> None:
        self.state.reject_json_schema = value

    @property
    def api_key(self) -> str | None:
        return self.state.api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self.state.api_key = value

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's `base_url`."""
        return f"{self.url}/v1"

    def make_app(self) -> web.Application:
        return create_app(self.state)

    async def close(self) -> None:
        """Cancel responses still running (held pauses included), then stop listening."""
        self.state.closing = True
        for task in list(self.state.active):
            task.cancel()
        await super().close()

    async def wait_for_request(self, number: int = 1, *, path: str = CHAT_PATH) -> RecordedRequest:
        """The `number`-th request (1-based) to `path`, once it has arrived."""

        def arrived() -> list[RecordedRequest]:
            return [r for r in self.state.requests if r.path == path]

        async with self.state.arrived:
            await self.state.arrived.wait_for(lambda: len(arrived()) >= number)
        return arrived()[number - 1]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        if self.strict and exc_type is None and self.state.problems:
            raise AssertionError("fake OpenAI server: " + "; ".join(self.state.problems))

"""`--log-format json`: a JSON object a line, request ids on the wire and in the log, no secrets."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import sys
from pathlib import Path

import httpx
import pytest

from research_service.logs import JsonFormatter, request_id_var, run_context, run_id_var
from research_service.web.request_id import REQUEST_ID_HEADER
from tests.served import CORPUS, start, stop
from tests.sse import listen
from tests.webhook_receiver import Receiver

API_KEY = "alice-log-test-key-" + "k" * 32
SECRET = "log-test-secret-" + "s" * 32
METRICS_TOKEN = "log-test-metrics-token-" + "t" * 24
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"w" * 32).decode()
HOOK_KEY = "hook-query-secret-" + "h" * 20
REQUIRED = ("time", "level", "logger", "message")
RFC3339_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def _record(message: str = "hello %s", *args: object) -> logging.LogRecord:
    return logging.LogRecord("research_service.x", logging.INFO, __file__, 1, message, args, None)


def test_a_json_line_has_time_level_logger_and_message() -> None:
    line = json.loads(JsonFormatter().format(_record("hello %s", "world")))
    assert RFC3339_UTC.fullmatch(line.pop("time"))
    assert line == {"level": "INFO", "logger": "research_service.x", "message": "hello world"}


def test_a_json_line_names_the_request_and_run_it_is_about() -> None:
    request_token = request_id_var.set("req-1")
    run_token = run_id_var.set("0123456789abcdef")
    try:
        line = json.loads(JsonFormatter().format(_record()))
    finally:
        run_id_var.reset(run_token)
        request_id_var.reset(request_token)
    assert line["request_id"] == "req-1"
    assert line["run_id"] == "0123456789abcdef"


def test_a_runs_task_names_its_run_and_not_the_request_that_started_it() -> None:
    token = request_id_var.set("req-1")
    try:
        context = run_context("0123456789abcdef")
    finally:
        request_id_var.reset(token)
    assert context.run(request_id_var.get) is None
    assert context.run(run_id_var.get) == "0123456789abcdef"


def test_a_traceback_stays_on_one_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]


async def test_json_logs_carry_request_ids_and_never_a_key_secret_or_token(tmp_path: Path) -> None:
    async with Receiver() as receiver:
        await _json_logs_carry_request_ids_and_never_a_secret(tmp_path, receiver)


async def _json_logs_carry_request_ids_and_never_a_secret(
    tmp_path: Path, receiver: Receiver
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{API_KEY}\n")
    hook = receiver.url(f"/hook?key={HOOK_KEY}")
    served = await start(
        "--log-format",
        "json",
        "--auth",
        "keys",
        "--store",
        "memory",
        "--api-keys-file",
        str(keys),
        "--corpus",
        str(CORPUS),
        "--token-delay-ms",
        "0",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--fetch-allow",
        "127.0.0.1",
        env={
            "RESEARCH_SECRET": SECRET,
            "RESEARCH_METRICS_TOKEN": METRICS_TOKEN,
            "RESEARCH_WEBHOOK_SECRET": WEBHOOK_SECRET,
        },
    )
    base = served.base.rstrip("/")
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.post(
                f"{base}/v1/runs",
                json={
                    "question": "How does photosynthesis work?",
                    "options": {"webhook": {"url": hook}},
                },
                headers={**bearer, REQUEST_ID_HEADER: "client-42.a:b_c"},
            )
            assert created.status_code == 201, created.text
            assert created.headers[REQUEST_ID_HEADER] == "client-42.a:b_c"
            run_id, events_url = created.json()["id"], created.json()["events_url"]
            token = events_url.split("token=", 1)[1]
            got = await listen(client, base + events_url, timeout=60)
            assert got.last[0] == "done"
            signed_in = await client.post(f"{base}/v1/session", json={"api_key": API_KEY})
            assert signed_in.status_code == 200, signed_in.text
            cookie = next(iter(signed_in.cookies.values()))
            bad_key = "mallory-guess-" + "m" * 32
            refused = await client.get(
                f"{base}/v1/runs",
                headers={"Authorization": f"Bearer {bad_key}", REQUEST_ID_HEADER: "bad id!"},
            )
            assert refused.status_code == 401
            assert re.fullmatch(r"[0-9a-f]{32}", refused.headers[REQUEST_ID_HEADER])
            long_id = "x" * 129
            health = await client.get(f"{base}/healthz", headers={REQUEST_ID_HEADER: long_id})
            assert health.headers[REQUEST_ID_HEADER] != long_id
            scraped = await client.get(
                f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
            )
            assert scraped.status_code == 200
            (delivered,) = await receiver.wait_for(1)
            assert delivered.verify(WEBHOOK_SECRET)["data"]["run_id"] == run_id
            await served.wait_log(rb'"status": 401')
            await served.wait_log(rb"delivered after 1 attempt")
    finally:
        assert await stop(served) == 0
    log = served.log.decode()
    secrets = (API_KEY, SECRET, token, token.rsplit(".", 1)[1], cookie, bad_key, METRICS_TOKEN)
    for secret in (*secrets, WEBHOOK_SECRET, WEBHOOK_SECRET[6:], HOOK_KEY):
        assert secret not in log
    lines = [json.loads(line) for line in log.splitlines()]
    for line in lines:
        assert all(line.get(name) for name in REQUIRED), line
        assert RFC3339_UTC.fullmatch(line["time"]), line
    access = [line for line in lines if line["logger"] == "aiohttp.access"]
    (create,) = [line for line in access if line["request_id"] == "client-42.a:b_c"]
    assert (create["method"], create["path"], create["status"]) == ("POST", "/v1/runs", 201)
    assert create["duration_ms"] >= 0
    assert create["remote"] == "127.0.0.1"
    (stream,) = [line for line in access if line["path"].startswith(f"/v1/runs/{run_id}/events")]
    assert stream["path"].endswith("?token=REDACTED")
    assert stream["run_id"] == run_id
    run_lines = [line for line in lines if line["logger"] != "aiohttp.access"]
    assert any(line.get("run_id") == run_id for line in run_lines)


async def test_text_logs_stay_as_they_were(tmp_path: Path) -> None:
    served = await start("--corpus", str(CORPUS), "--port", "0", "--data-dir", str(tmp_path))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            health = await client.get(served.base.rstrip("/") + "/healthz")
        assert re.fullmatch(r"[0-9a-f]{32}", health.headers[REQUEST_ID_HEADER])
        await served.wait_log(rb"GET /healthz")
    finally:
        assert await stop(served) == 0
    pattern = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
    for line in served.log.decode().splitlines():
        assert pattern.match(line), line


async def test_a_quote_in_a_header_cannot_forge_fields_of_the_access_line(tmp_path: Path) -> None:
    served = await start("--corpus", str(CORPUS), "--port", "0", "--data-dir", str(tmp_path))
    forged = 'x" 200 0 "-" "forged'
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await client.get(
                served.base.rstrip("/") + "/healthz",
                headers={"User-Agent": forged, "Referer": 'http://a/\\"b'},
            )
        await served.wait_log(rb"GET /healthz[^\n]*\n")
    finally:
        assert await stop(served) == 0
    (line,) = [line for line in served.log.decode().splitlines() if "GET /healthz" in line]
    # The six quotes of three fields: the request line and the two headers.
    assert line.count('"') == 6, line
    assert line.endswith('"http://a/\\x5C\\x22b" "x\\x22 200 0 \\x22-\\x22 \\x22forged"')


@pytest.mark.parametrize("command", ["serve", "worker", "replay"])
async def test_the_commands_that_log_take_log_format(command: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "research_service", command, "--help", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert b"--log-format" in out

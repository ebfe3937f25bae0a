"""Property-based fuzzing (hypothesis, fixed seed, bounded examples): every generated body,
query and control message gets a JSON 4xx or a success, never a 5xx, and the server (and the
socket) stays up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.app import create_app
from server.config import Settings
from tests.clock import ManualClock
from tests.conftest import TEST_SEED

KEYS = [
    "type",
    "severity",
    "onset",
    "duration_s",
    "sensor",
    "command",
    "op",
    "machines",
    "fields",
    "hz",
    "since",
    "id",
]
WORDS = [
    "overheating",
    "bias",
    "tool_breakage",
    "stuck",
    "ramp",
    "step",
    "intermittent",
    "spindle_speed",
    "start",
    "stop",
    "maintain",
    "reset",
    "subscribe",
    "unsubscribe",
    "cnc_01",
    "robot_01",
    "",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.sampled_from(WORDS),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)
    ),
    max_leaves=12,
)
BODIES = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6) | VALUES
FUZZ = settings(
    max_examples=4,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


async def _with_client(action: Any) -> None:
    app = create_app(Settings(seed=TEST_SEED), clock=ManualClock())
    async with TestClient(TestServer(app)) as client:
        await action(client)
        assert (await client.get("/health")).status == 200


def _is_json_4xx_or_success(status: int, text: str) -> bool:
    if status >= 500:
        return False
    if status >= 400:
        json.loads(text)  # a machine-readable body
    return True


@FUZZ
@given(st.lists(BODIES, min_size=40, max_size=40))
def test_fuzzed_fault_and_command_bodies_never_fail_the_server(bodies: list[Any]) -> None:
    async def post_all(client: TestClient[Any, Any]) -> None:
        for body in bodies:
            for path in ("/machines/cnc_01/faults", "/machines/robot_01/commands"):
                response = await client.post(path, data=json.dumps(body))
                assert _is_json_4xx_or_success(response.status, await response.text()), (
                    path,
                    body,
                    response.status,
                )

    asyncio.run(_with_client(post_all))


QUERY_TEXT = st.one_of(
    st.sampled_from(["60", "0", "-1", "1e400", "nan", "x", "", "3600"]), st.text(max_size=10)
)


@FUZZ
@given(st.lists(st.tuples(QUERY_TEXT, QUERY_TEXT, QUERY_TEXT), min_size=30, max_size=30))
def test_fuzzed_history_queries_never_fail_the_server(queries: list[tuple[str, str, str]]) -> None:
    async def read_all(client: TestClient[Any, Any]) -> None:
        for seconds, output, fields in queries:
            params = {"seconds": seconds, "format": output, "fields": fields}
            response = await client.get("/machines/conveyor_01/history", params=params)
            assert _is_json_4xx_or_success(response.status, await response.text()), params

    asyncio.run(_with_client(read_all))


@FUZZ
@given(st.lists(BODIES, min_size=15, max_size=15))
def test_fuzzed_control_messages_keep_the_socket(messages: list[Any]) -> None:
    async def send_all(client: TestClient[Any, Any]) -> None:
        async with client.ws_connect("/ws") as ws:
            for message in messages:
                await ws.send_str(json.dumps(message))
                answer = await ws.receive(timeout=5)
                while answer.type is WSMsgType.TEXT and "op" not in json.loads(answer.data):
                    answer = await ws.receive(timeout=5)  # a snapshot sent after an ack
                assert answer.type is WSMsgType.TEXT, (message, answer)
            await ws.send_json({"op": "unsubscribe", "id": "last"})
            while True:
                last = await ws.receive_json(timeout=5)
                if last.get("id") == "last":
                    break

    asyncio.run(_with_client(send_all))

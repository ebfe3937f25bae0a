"""``GET /machines/{id}/history``: the store's history as JSON or CSV, and its 4xx answers."""

from __future__ import annotations

import csv
import io

import pytest

from tests.conftest import MakeServer


async def test_history_fills_a_chart_with_the_frames_the_stream_sent(
    make_server: MakeServer,
) -> None:
    harness = await make_server()
    async with harness.client.ws_connect("/ws/machines/robot_01") as ws:
        streamed = [await ws.receive_str()]
        for _ in range(20):
            await harness.clock.tick()
            streamed.append(await ws.receive_str())
    response = await harness.client.get("/machines/robot_01/history?seconds=1")
    assert response.status == 200
    history = await response.json()
    assert [frame["seq"] for frame in history] == list(range(11, 22))
    assert await response.text() == "[" + ",".join(streamed[-11:]) + "]"


async def test_history_filters_fields_and_answers_csv(make_server: MakeServer) -> None:
    harness = await make_server()
    await harness.clock.tick(4)
    response = await harness.client.get(
        "/machines/conveyor_01/history?seconds=0.3&fields=items_processed,belt_speed&format=csv"
    )
    assert response.status == 200
    assert response.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert [int(row["seq"]) for row in rows] == [2, 3, 4, 5]
    assert list(rows[0]) == ["timestamp", "seq", "belt_speed", "items_processed"]
    json_rows = await (
        await harness.client.get(
            "/machines/conveyor_01/history?seconds=0.3&fields=belt_speed,items_processed"
        )
    ).json()
    assert [float(row["belt_speed"]) for row in rows] == [row["belt_speed"] for row in json_rows]
    assert [row["timestamp"] for row in rows] == [row["timestamp"] for row in json_rows]


async def test_history_defaults_to_what_is_held(make_server: MakeServer) -> None:
    harness = await make_server(history_seconds=0.5)
    await harness.clock.tick(10)
    history = await (await harness.client.get("/machines/cnc_01/history")).json()
    assert [frame["seq"] for frame in history] == [7, 8, 9, 10, 11]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("seconds=-1", "bad_seconds"),
        ("seconds=0", "bad_seconds"),
        ("seconds=abc", "bad_seconds"),
        ("seconds=nan", "bad_seconds"),
        ("seconds=100000", "bad_seconds"),
        ("format=xml", "bad_format"),
        ("fields=rpm", "unknown_field"),
        ("fields=", "unknown_field"),
    ],
)
async def test_bad_history_parameters_are_400(
    make_server: MakeServer, query: str, error: str
) -> None:
    harness = await make_server()
    response = await harness.client.get(f"/machines/robot_01/history?{query}")
    assert response.status == 400
    body = await response.json()
    assert body["error"] == error
    assert body["message"]


async def test_history_of_an_unknown_machine_is_404(make_server: MakeServer) -> None:
    harness = await make_server()
    response = await harness.client.get("/machines/robot_99/history")
    assert response.status == 404
    assert (await response.json())["valid_ids"] == ["robot_01", "cnc_01", "conveyor_01"]

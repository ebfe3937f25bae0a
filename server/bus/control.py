"""Plant control across the bus: web processes forward changes, the one simulator makes them.

A web process publishes each request on the control channel (Redis says how many received
it: none means no simulator, a 503 at once) and waits, within ``--bus-command-timeout``, for
the answer on its own reply channel (a 504 past it: the change may or may not have been
made). The simulator carries the request out with its local plant-control service, between
two steps as for a local request, and answers the change and the ``seq`` from which it shows,
or the refusal. The web process answers once its own store shows that ``seq`` (or the time
is up), so a client reading that process right after sees the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import redis.asyncio as redis
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from server.bus.client import Backoff, BusError
from server.bus.wire import BusKeys
from server.plant import LocalPlant, PlantChange, PlantUnavailableError
from server.store import Store
from simulation.errors import ControlError, UnknownMachineError
from simulation.faults import FaultRecord
from simulation.spec import FaultRequest

REQUEST_MAX_BYTES = 16 * 1024
READ_TIMEOUT_S = 1.0

log = logging.getLogger(__name__)


class RemotePlant:
    """The plant-control service of a web process: the simulator behind the bus does it."""

    def __init__(
        self,
        client: redis.Redis,
        keys: BusKeys,
        store: Store,
        *,
        process_id: str,
        timeout_s: float,
        connected: Any,
    ) -> None:
        self.client, self.keys, self.store = client, keys, store
        self.catalog = store.catalog
        self.process_id = process_id
        self.timeout_s = timeout_s
        self._connected = connected  # () -> bool: the feed's subscription (replies) is up
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def inject_fault(
        self, machine_id: str, request: FaultRequest
    ) -> PlantChange[FaultRecord]:
        answer = await self._call("inject_fault", machine_id, fault=dataclasses.asdict(request))
        return PlantChange(FaultRecord(**answer["result"]), answer["effective_seq"])

    async def clear_fault(self, machine_id: str, fault_id: str) -> PlantChange[FaultRecord]:
        answer = await self._call("clear_fault", machine_id, fault_id=fault_id)
        return PlantChange(FaultRecord(**answer["result"]), answer["effective_seq"])

    async def command(self, machine_id: str, command: str) -> PlantChange[str]:
        answer = await self._call("command", machine_id, command=command)
        return PlantChange(str(answer["result"]), answer["effective_seq"])

    async def active_faults(self, machine_id: str) -> tuple[FaultRecord, ...]:
        """The faults the latest frame of the stream shows (what every web process shows)."""
        slot, column = self.store.catalog.locate(machine_id)
        frame = self.store.latest
        assert frame is not None
        return frame.faults[slot].of(column)

    def resolve(self, data: bytes) -> None:
        """An answer from the simulator, read by the feed from this process's reply channel."""
        try:
            answer = json.loads(data)
            future = self._waiting.get(answer["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("bus: an unreadable control answer was ignored")
            return
        if future is not None and not future.done():
            future.set_result(answer)

    async def _call(self, op: str, machine_id: str, **arguments: Any) -> dict[str, Any]:
        if not self._connected():
            raise PlantUnavailableError(
                503, "bus_unavailable", "the bus to the simulator is down; try again shortly"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._waiting[request_id] = future
        request = {
            "id": request_id,
            "reply_to": self.keys.reply(self.process_id),
            "op": op,
            "machine_id": machine_id,
            **arguments,
        }
        try:
            try:
                receivers = await self.client.publish(self.keys.control, json.dumps(request))
            except BusError as error:
                raise PlantUnavailableError(
                    503, "bus_unavailable", f"the bus to the simulator is down ({error})"
                ) from None
            if not receivers:
                raise PlantUnavailableError(
                    503, "simulator_unavailable", "no simulator is running on the bus"
                )
            try:
                answer = await asyncio.wait_for(future, max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise PlantUnavailableError(
                    504,
                    "simulator_timeout",
                    f"the simulator did not answer within {self.timeout_s:g} s; the change "
                    "may or may not have been made (GET the machine's faults to see)",
                ) from None
        finally:
            self._waiting.pop(request_id, None)
        if "error" in answer:
            raise _refusal(answer["error"], self.catalog.size)
        with contextlib.suppress(TimeoutError):  # made either way; answer once it shows here
            await asyncio.wait_for(
                self.store.wait_newer(answer["effective_seq"] - 1),
                max(deadline - loop.time(), 0.0),
            )
        return answer


def _refusal(error: dict[str, Any], fleet_size: int) -> ControlError | PlantUnavailableError:
    """The simulator's refusal as the error a local plant would have raised."""
    if error.get("unknown_machine") is not None:
        return UnknownMachineError(str(error["unknown_machine"]), fleet_size)
    if "field" not in error:
        return PlantUnavailableError(502, "simulator_error", str(error.get("message")))
    return ControlError(
        str(error["message"]), field=str(error["field"]), valid=tuple(error.get("valid", ()))
    )


class ControlResponder:
    """The simulator's side: carries out the requests web processes publish, answers each."""

    def __init__(self, client: redis.Redis, keys: BusKeys, plant: LocalPlant) -> None:
        self.client, self.keys, self.plant = client, keys, plant
        self.handled = 0
        self.refused = 0
        self.bad_requests = 0
        self._backoff = Backoff()

    def collector(self) -> Collector:
        return _ResponderCollector(self)

    async def run(self) -> None:
        """Listen until cancelled; a lost link is made again with backoff."""
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.keys.control)
                self._backoff.reset()
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=READ_TIMEOUT_S
                    )
                    if message is not None:
                        await self.handle(message["data"])
            except BusError as error:
                delay = self._backoff.next_delay()
                log.warning("bus: control channel lost (%s); again in %.1f s", error, delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(*BusError):
                    await pubsub.aclose()

    async def handle(self, data: bytes) -> None:
        """Carry out one request and publish the answer; a malformed one is dropped."""
        if len(data) > REQUEST_MAX_BYTES:
            self.bad_requests += 1
            return
        try:
            request = json.loads(data)
            request_id, reply_to = str(request["id"]), str(request["reply_to"])
            if not reply_to.startswith(self.keys.reply("")):
                raise ValueError("a reply channel outside this plant")
        except (ValueError, KeyError, TypeError):
            self.bad_requests += 1
            log.warning("bus: a malformed control request was dropped")
            return
        answer = {"id": request_id} | await self._carry_out(request)
        await self.client.publish(reply_to, json.dumps(answer))

    async def _carry_out(self, request: dict[str, Any]) -> dict[str, Any]:
        plant = self.plant
        try:
            op, machine_id = request.get("op"), request.get("machine_id")
            if not isinstance(machine_id, str):
                raise ControlError("machine_id must be a string", field="machine_id")
            change: PlantChange[Any]
            if op == "inject_fault":
                change = await plant.inject_fault(machine_id, FaultRequest(**request["fault"]))
                result: Any = dataclasses.asdict(change.result)
            elif op == "clear_fault":
                change = await plant.clear_fault(machine_id, str(request["fault_id"]))
                result = dataclasses.asdict(change.result)
            elif op == "command":
                change = await plant.command(machine_id, request["command"])
                result = change.result
            else:
                raise ControlError(f"unknown op {op!r}", field="op")
        except UnknownMachineError as error:
            self.refused += 1
            return {"error": {"unknown_machine": error.machine_id, "message": str(error)}}
        except ControlError as error:
            self.refused += 1
            return {
                "error": {"message": str(error), "field": error.field, "valid": list(error.valid)}
            }
        except (TypeError, KeyError) as error:
            self.refused += 1
            return {"error": {"message": f"a malformed request: {error}"}}
        self.handled += 1
        return {"result": result, "effective_seq": change.effective_seq}


class _ResponderCollector(Collector):
    def __init__(self, responder: ControlResponder) -> None:
        self.responder = responder

    def collect(self) -> Iterator[Metric]:
        responder = self.responder
        for name, documentation, value in (
            ("dms_bus_control_handled", "Control requests carried out.", responder.handled),
            ("dms_bus_control_refused", "Control requests refused.", responder.refused),
            ("dms_bus_control_bad", "Malformed control requests dropped.", responder.bad_requests),
        ):
            yield CounterMetricFamily(name, documentation, value=value)

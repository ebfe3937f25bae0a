"""Hidden health: wear that acts through the physics, tool changes, failure, maintenance, RUL."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import State
from simulation.health import Degradation
from simulation.models import MachineModel
from simulation.models.base import HEALTH_WARNING
from simulation.models.cnc_mill import TAYLOR_N, TOOL_CHANGE_AT, CncMill
from simulation.models.conveyor_belt import WEAR_VIBRATION_MM_S, ConveyorBelt
from simulation.models.robotic_arm import RoboticArm
from simulation.spec import FaultRequest

SEED = 20261130
RUNNING, IDLE, WARNING, FAULT, MAINTENANCE = (int(state) for state in State)


def test_the_degradation_law() -> None:
    """h = 1 - d - (exp(a u^b) - 1), reaching 0 exactly at the end of life, ever faster."""
    life_s = np.full(4, 1000.0)
    wear = Degradation(life_s, np.random.default_rng(SEED), wear=True)
    assert np.all((wear.initial_wear >= 0.0) & (wear.initial_wear <= 0.01))
    assert np.all((wear.exponent >= 1.4) & (wear.exponent <= 1.6))
    curve = []
    for usage in np.linspace(0.0, 1100.0, 12):
        wear.usage_s[:] = usage
        curve.append(wear.health())
    health = np.array(curve)
    np.testing.assert_allclose(health[0], 1.0 - wear.initial_wear)
    d, b = wear.initial_wear, wear.exponent
    a = np.log(2.0 - d) / 1000.0**b
    np.testing.assert_allclose(health[5], 1.0 - d - np.expm1(a * 500.0**b))
    assert np.all(health[10] == 0.0)
    assert np.all(health[11] == 0.0)
    drops = -np.diff(health[:11], axis=0)
    assert np.all(np.diff(drops, axis=0) > 0.0)  # falls faster and faster
    steady = Degradation(life_s, np.random.default_rng(SEED), wear=False)
    assert np.all(steady.health() == 1.0)


def test_steady_machines_do_not_wear_and_have_no_rul() -> None:
    for model_type in (RoboticArm, CncMill, ConveyorBelt):
        model = model_type(10, np.random.default_rng(SEED), steady=True)
        for _ in range(200):
            model.step(5.0)
        assert np.all(model.health == 1.0)
        assert np.isnan(model.rul_s).all()


def test_tool_life_follows_taylor_for_the_cutting_speed() -> None:
    mill = CncMill(500, np.random.default_rng(SEED))
    speed = mill.cutting_speed_m_min
    np.testing.assert_allclose(speed * mill.tool_life_min**TAYLOR_N, mill.taylor_c_m_min)
    assert 10.0 < mill.tool_life_min.min() < 30.0  # minutes of cutting, at 900 m/min
    assert 120.0 < mill.tool_life_min.max() < 330.0  # and at 300 m/min
    slow, fast = speed < 400.0, speed > 800.0
    assert mill.tool_life_min[slow].min() > 2.0 * mill.tool_life_min[fast].max()


def test_tool_wear_raises_spindle_vibration_and_a_tool_change_resets_it() -> None:
    mill = CncMill(40, np.random.default_rng(SEED))
    dt_s, steps = 2.0, 3 * 1800
    health = np.empty((steps, mill.count))
    vibration = np.empty((steps, mill.count))
    cutting = np.empty((steps, mill.count), dtype=bool)
    changes = np.empty((steps, mill.count), dtype=np.int64)
    counted = np.empty((steps, mill.count))  # the tool_changes sensor
    usage = np.empty((steps, mill.count))
    for k in range(steps):
        readings = mill.step(dt_s)
        vibration[k] = readings[mill.ROW["vibration_spindle"]]
        counted[k] = readings[mill.ROW["tool_changes"]]
        health[k] = mill.health
        cutting[k] = mill.cutting_load > 0.0
        changes[k] = mill.tool_changes
        usage[k] = mill.wear.usage_s
    # Over each mill's first tool, the cutting vibration rises as its health falls.
    bins = ((1.0, 0.8), (0.8, 0.6), (0.6, 0.4))
    first_tool = cutting & (changes == 0)
    levels = np.array(
        [
            [
                vibration[first_tool[:, i] & (health[:, i] <= hi) & (health[:, i] > lo), i].mean()
                for hi, lo in bins
            ]
            for i in range(mill.count)
        ]
    )
    assert np.isfinite(levels).all()
    assert np.all(np.diff(levels.mean(axis=0)) > 0.1 * levels[:, 0].mean())
    assert np.mean(np.all(np.diff(levels, axis=1) > 0.0, axis=1)) > 0.9
    # At a tool change (at the start of a program cycle) the health comes back and the
    # vibration drops: compare the cutting of the cycle before with that of the cycle after.
    step, instance = np.nonzero(np.diff(changes, axis=0))
    step += 1
    per_cycle = np.round(mill._cycle_cutting_s / dt_s).astype(int)  # cutting samples a cycle
    ratios = []
    for k, i in zip(step, instance, strict=True):
        before = vibration[:k, i][cutting[:k, i]][-per_cycle[i] :]
        after = vibration[k:, i][cutting[k:, i]][: per_cycle[i]]
        assert health[k, i] > 0.98
        assert health[k, i] > health[k - 1, i] + 0.15  # a worn tool was replaced
        assert counted[k, i] == counted[k - 1, i] + 1  # the sensor counts it
        assert usage[k, i] < 0.01 * usage[k - 1, i]  # the new tool's wear starts from 0
        if len(before) == len(after) == per_cycle[i]:
            ratios.append(after.mean() / before.mean())
    assert len(ratios) >= 40
    np.testing.assert_array_equal(counted, changes)  # the sensor reads the controller's count
    assert np.all(np.diff(counted, axis=0) >= 0)  # never decreases
    assert max(ratios) < 0.95  # every change: even a tool changed early was a little worn
    assert np.mean(ratios) < 0.7
    # The controller changes tools a cycle ahead of its counter: before most of them fail.
    assert np.all(mill.wear.usage_s <= TOOL_CHANGE_AT * mill._nominal_life_s + mill._cycle_s)


def test_maintenance_puts_a_new_tool_in_and_counts_it() -> None:
    mill = CncMill(5, np.random.default_rng(SEED))
    for _ in range(600):
        mill.step(1.0)
    tool_changes = mill.ROW["tool_changes"]
    before = mill.step(1.0)[tool_changes]
    worn = mill.wear.usage_s.copy()
    assert mill.command(2, "maintain") == State.MAINTENANCE
    after = mill.step(1.0)[tool_changes]
    np.testing.assert_array_equal(after - before, [0, 0, 1, 0, 0])
    assert mill.wear.usage_s[2] == 0.0  # maintenance holds the feed: the new tool is unused
    assert worn[2] > 0.0
    assert mill.health[2] > 0.98


def twins(model_type: type[MachineModel], count: int) -> tuple[MachineModel, MachineModel]:
    """The same machines twice: ``worn`` is given 80 % of its life at once (health ~0.35)."""
    new, worn = (model_type(count, np.random.default_rng(SEED)) for _ in range(2))
    worn.wear.usage_s[:] = 0.8 * worn.wear.life_s
    worn._refresh()
    return new, worn


def test_a_worn_gearbox_draws_more_power_and_heats_and_shakes_more_for_the_same_motion() -> None:
    new, worn = twins(RoboticArm, 50)
    assert np.all((worn.health > 0.25) & (worn.health < 0.45))
    for _ in range(360):  # an hour, less than the worn arms' remaining life
        new_readings, worn_readings = new.step(10.0), worn.step(10.0)
    assert np.all(worn.state != FAULT)
    angle = new.ROW["joint_1_angle"]
    np.testing.assert_array_equal(new_readings[angle], worn_readings[angle])  # the same motion
    moving = new.speed_dps > 0.0
    assert moving.sum() > 10
    assert np.all(worn.power_w[moving] > new.power_w[moving] + 10.0)
    assert np.all(worn.temperature_c > new.temperature_c + 1.0)
    assert np.all(worn._vibration_mm_s() > new._vibration_mm_s())


def test_a_worn_bearing_runs_hotter_shakes_drags_and_slips_more() -> None:
    new, worn = twins(ConveyorBelt, 50)
    vibration, load = new.ROW["vibration_bearing"], new.ROW["motor_load"]
    shakes = []  # vibration of the worn bearings above the new ones', when both run
    for _ in range(360):  # an hour, less than the worn bearings' remaining life
        new_readings, worn_readings = new.step(10.0), worn.step(10.0)
        both = (new.operation.running == 1.0) & (worn.operation.running == 1.0)
        expected = WEAR_VIBRATION_MM_S * (1.0 - worn.health[both])
        shakes.append((worn_readings[vibration][both] - new_readings[vibration][both]) / expected)
        assert np.all(worn_readings[vibration][both] > new_readings[vibration][both] + 0.5)
    assert np.all(worn.state != FAULT)
    running = new.operation.running == 1.0
    assert running.sum() > 10
    assert np.all(worn.bearing_c[running] > new.bearing_c[running] + 10.0)
    assert np.all(worn_readings[vibration][running] > new_readings[vibration][running] + 0.5)
    # The wear adds 4 mm/s x (1 - health) at full speed, on average (the scatter has mean 1).
    assert np.mean(np.concatenate(shakes)) == pytest.approx(1.0, abs=0.05)
    assert np.all(worn_readings[load][running] > new_readings[load][running])  # drag: more load
    assert np.all(worn._slip_per_payload > 2.0 * new._slip_per_payload)
    assert np.all(worn.wear.usage_s > 0.8 * worn.wear.life_s)


def test_bearing_vibration_rises_over_the_bearings_life() -> None:
    """A P-F curve: vibration rises as health falls, and leaves the acceptable zone first."""
    used = (0.0, 0.5, 0.65, 0.95)  # share of the bearing's life used
    levels, temperatures, healths = [], [], []
    for share in used:
        belt = ConveyorBelt(100, np.random.default_rng(SEED))
        belt.operation.scheduled_stops = False  # keep running: compare the running levels
        belt.wear.usage_s[:] = share * belt.wear.life_s
        belt._refresh()
        vibration = np.empty((60, belt.count))
        equilibrium_c = np.zeros(belt.count)  # what the bearing heats to, without the lag
        for k in range(120):  # 20 minutes; the last 10 are kept
            readings = belt.step(10.0)
            if k >= 60:
                vibration[k - 60] = readings[belt.ROW["vibration_bearing"]]
                equilibrium_c += belt._bearing_target_c() / 60
        assert np.all(belt.state != FAULT)
        running = belt.operation.running == 1.0
        levels.append(vibration[:, running].mean(axis=0))
        temperatures.append(equilibrium_c[running])
        healths.append(np.median(belt.health))
    assert np.all(np.diff(healths) < 0.0)
    medians = [np.median(level) for level in levels]
    assert np.all(np.diff(medians) > 0.5)  # mm/s, each stage clearly above the last
    vibration = ConveyorBelt.SENSORS[ConveyorBelt.ROW["vibration_bearing"]]
    temperature = ConveyorBelt.SENSORS[ConveyorBelt.ROW["bearing_temperature"]]
    assert vibration.warning is not None
    assert temperature.warning is not None
    assert np.all(levels[0] < vibration.warning)  # new: acceptable at worst
    assert np.all(temperatures[1] < temperature.warning)  # half-way: the heat is fine yet
    # At 65 % of its life every bearing's vibration is at warning; few run hot enough yet.
    assert np.all(levels[2] >= vibration.warning)
    assert np.mean(temperatures[2] >= temperature.warning) < 0.5
    assert medians[3] > 0.85 * vibration.alarm  # near the end: close to the alarm


ACCELERATED = {  # a fault that makes the worn part age faster: (kind, severity, wear gain)
    RoboticArm: ("bearing_defect", 1.0, 4.0),
    CncMill: ("tool_wear", 0.3, 3.7),
    ConveyorBelt: ("bearing_defect", 1.0, 5.0),
}


@pytest.mark.parametrize("model_type", [RoboticArm, CncMill, ConveyorBelt])
def test_health_runs_out_into_the_fault_state_until_maintained(
    model_type: type[MachineModel],
) -> None:
    model = model_type(20, np.random.default_rng(SEED))
    if model_type is CncMill:  # no tool-life management: the accelerated tools wear out
        model._tool_change_at_s[:] = np.inf
    kind, severity, gain = ACCELERATED[model_type]
    for instance in range(model.count):
        model.inject_fault(instance, FaultRequest(kind=kind, severity=severity))
    rul_s = model.rul_s.copy()
    np.testing.assert_allclose(rul_s, model.wear.remaining_s() / gain)
    dt_s = 10.0
    running_s = np.zeros(model.count)  # running time until the failure
    failed_at = np.full(model.count, -1)
    warned = np.zeros(model.count, dtype=bool)
    for k in range(20_000):
        running_s += np.where(failed_at < 0, model.operation.running * dt_s, 0.0)
        readings = model.step(dt_s)
        warned |= model.state == WARNING
        new = (failed_at < 0) & (model.state == FAULT)
        failed_at[new] = k
        assert np.all(model.health[new] == 0.0)
        assert np.all(model.rul_s[new] == 0.0)
        if np.all(failed_at >= 0):
            break
    assert np.all(failed_at >= 0), "every machine fails in the end"
    assert np.all(warned)  # each went through 'warning' (health below 0.25) first
    # The RUL label was the running time left at the nominal duty: exact for arms (wear goes
    # with travel), close for mills (with load, here over a few program cycles) and belts
    # (with the payload, which varies).
    tolerance = 0.02 if model_type is RoboticArm else 0.1
    np.testing.assert_allclose(running_s, rul_s, rtol=tolerance, atol=3 * dt_s)
    # A failed machine stands still.
    for _ in range(3):
        readings = model.step(dt_s)
    assert np.all(model.state == FAULT)
    moving = {RoboticArm: "power_consumption", CncMill: "spindle_speed", ConveyorBelt: "belt_speed"}
    moving_row = model.ROW[moving[model_type]]
    if model_type is RoboticArm:
        assert np.all(model.speed_dps == 0.0)
    else:
        assert np.all(readings[moving_row] < 1.0)
    # Maintenance renews the part and clears the physical faults; then it runs again.
    assert model.command(0, "maintain") == State.MAINTENANCE
    assert model.health[0] > 0.98
    assert model.faults.of(0) == ()
    assert model.health[0] >= 1.0 - 0.01 > HEALTH_WARNING
    states = []
    for _ in range(int(model.DUTY.maintenance_s[1] / dt_s) + 1):
        model.step(dt_s)
        states.append(int(model.state[0]))
    assert states[0] == MAINTENANCE
    assert states[-1] == RUNNING
    assert np.all(model.state[1:] == FAULT)


def test_reset_is_refused_for_a_worn_out_machine() -> None:
    belt = ConveyorBelt(3, np.random.default_rng(SEED))
    belt.wear.usage_s[1] = belt.wear.life_s[1]
    belt.step(1.0)
    assert belt.state[1] == FAULT
    with pytest.raises(ValueError, match="maintain") as caught:
        belt.command(1, "reset")
    assert caught.value.field == "state"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="reset"):
        belt.command(1, "start")
    belt.inject_fault(2, FaultRequest(kind="belt_slip", severity=0.5))
    belt.inject_fault(2, FaultRequest(kind="bias", severity=0.5, sensor="motor_load"))
    belt.command(2, "reset")
    assert belt.faults.of(2) == ()

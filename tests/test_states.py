"""Operating states: run/idle schedules, what an idle machine reads, commands and warnings."""

from __future__ import annotations

import numpy as np
import pytest

from simulation import STATE_NAMES, ControlError, Fleet, State
from simulation.models import MachineModel
from simulation.models.base import ALARM_HOLD_S
from simulation.models.cnc_mill import CncMill, Move
from simulation.models.conveyor_belt import ConveyorBelt
from simulation.models.robotic_arm import SPIKE_FLOOR_MM_S, RoboticArm
from simulation.spec import FaultRequest

SEED = 20261130
RUNNING, IDLE, WARNING, FAULT, MAINTENANCE = (int(state) for state in State)


def record(model: MachineModel, dt_s: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Readings ``(steps, sensors, count)`` and states ``(steps, count)``."""
    readings = np.empty((steps, len(model.SENSORS), model.count))
    states = np.empty((steps, model.count), dtype=np.int8)
    for k in range(steps):
        readings[k] = model.step(dt_s)
        states[k] = model.state
    return readings, states


def test_state_codes_and_names() -> None:
    assert STATE_NAMES == ("running", "idle", "warning", "fault", "maintenance")
    assert [int(state) for state in State] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("model_type", [RoboticArm, CncMill, ConveyorBelt])
def test_machines_alternate_run_periods_and_idle_gaps(model_type: type[MachineModel]) -> None:
    model = model_type(100, np.random.default_rng(SEED))
    _, states = record(model, 5.0, 6 * 720)  # six hours
    duty = model.DUTY
    running = (states == RUNNING) | (states == WARNING)
    expected = sum(duty.run_s) / (sum(duty.run_s) + sum(duty.idle_s))
    assert running.mean() == pytest.approx(expected, abs=0.06)
    starts = np.count_nonzero(np.diff(running.astype(np.int8), axis=0) == 1, axis=0)
    assert np.all(starts >= 2)  # every machine went idle and started again
    assert set(np.unique(states)) <= {RUNNING, IDLE, WARNING, FAULT}
    assert model.operation.mode.dtype == np.int8


def test_an_idle_spindle_is_at_0_rpm_cooling_at_home() -> None:
    mill = CncMill(100, np.random.default_rng(SEED))
    readings, states = record(mill, 2.0, 3 * 1800)  # three hours
    idle = states == IDLE
    assert idle.any(axis=0).all()
    rows = mill.ROW
    settled = idle[3:] & idle[:-3]  # idle for 6 s: well over the spindle's time constant
    speed = readings[3:, rows["spindle_speed"]][settled]
    assert np.abs(speed).max() < 1.0  # rpm
    vibration = readings[3:, rows["vibration_spindle"]][settled]
    assert vibration.max() < 0.05  # mm/s: the vibration sensor's floor
    # Scheduled idle gaps start once the part is done: the mill waits at home.
    home = np.broadcast_to(mill.safe_z_mm, idle.shape)
    assert np.all(readings[:, rows["axis_x_position"]][idle] == 0.0)
    assert np.all(readings[:, rows["axis_y_position"]][idle] == 0.0)
    assert np.all(readings[:, rows["axis_z_position"]][idle] == home[idle])
    # The tool cools toward ambient while idle.
    still_idle = idle[1:] & idle[:-1]
    ambient = np.broadcast_to(mill.ambient_c, still_idle.shape)[still_idle]
    tool = rows["tool_temperature"]
    before, after = readings[:-1, tool][still_idle], readings[1:, tool][still_idle]
    warm = before > ambient + 1.0
    assert np.all(after[warm] < before[warm])


def test_a_stop_command_is_a_feed_hold_and_start_resumes() -> None:
    mill = CncMill(30, np.random.default_rng(SEED), steady=True)
    record(mill, 0.1, 600)
    cutting = np.flatnonzero(np.isin(mill.move, (Move.CUT, Move.SLOT)))[:5]
    hot = mill._tool_temperature_c[cutting].copy()
    for instance in cutting:
        assert mill.command(int(instance), "stop") == State.IDLE
    readings, states = record(mill, 0.1, 600)
    rows = mill.ROW
    spindle, tool = rows["spindle_speed"], rows["tool_temperature"]
    assert np.all(states[:, cutting] == IDLE)
    axes_rows = [rows["axis_x_position"], rows["axis_y_position"], rows["axis_z_position"]]
    axes = readings[:, axes_rows][:, :, cutting]
    assert np.all(axes == axes[0])  # the axes hold where they are
    assert np.all(np.abs(readings[50:, spindle, cutting]) < 1.0)  # after 5 s: > 12 time constants
    assert np.all(mill._spindle_rpm[cutting] >= np.finfo(np.float64).tiny)  # no subnormal
    assert np.all(readings[-1, tool, cutting] < hot)
    assert np.all(mill.cutting_load[cutting] == 0.0)
    for instance in cutting:
        assert mill.command(int(instance), "start") == State.RUNNING
    readings, states = record(mill, 0.1, 100)
    assert np.all(states[:, cutting] == RUNNING)
    assert np.all(readings[-1, spindle, cutting] > 0.9 * mill.spindle_setpoint_rpm[cutting])


def test_a_stopped_belt_is_still_draws_nothing_and_cools() -> None:
    belt = ConveyorBelt(20, np.random.default_rng(SEED), steady=True)
    record(belt, 1.0, 1800)
    items = belt.items_processed.copy()
    for instance in range(10):
        belt.command(instance, "stop")
    readings, states = record(belt, 1.0, 1200)
    speed, load = belt.ROW["belt_speed"], belt.ROW["motor_load"]
    bearing, items_row = belt.ROW["bearing_temperature"], belt.ROW["items_processed"]
    assert np.all(states[:, :10] == IDLE)
    assert np.all(readings[30:, speed, :10] < 1e-6)  # m/s: the drive ramps down in seconds
    assert np.all(np.abs(readings[30:, load, :10]) < 1e-6)  # %: a stopped drive draws nothing
    assert np.all(belt.drive_ratio >= np.finfo(np.float64).tiny)  # no subnormal floats
    minute_means = readings[:, bearing, :10].reshape(20, 60, 10).mean(axis=1)
    assert np.all(np.diff(minute_means, axis=0) < 0.0)  # the bearing cools
    assert np.all(belt.items_processed[:10] - items[:10] <= belt.capacity_items[:10])
    assert np.all(np.diff(readings[30:, items_row, :10], axis=0) == 0.0)  # nothing moves on it
    assert np.all(readings[:, speed, 10:] > 0.9 * belt.speed_setpoint_mps[10:])  # the others run
    belt.command(3, "start")
    readings, _ = record(belt, 1.0, 30)
    assert readings[-1, speed, 3] > 0.95 * belt.speed_setpoint_mps[3]


def test_an_idle_robot_holds_still_at_idle_power_and_its_spike_state_stays_normal() -> None:
    arm = RoboticArm(100, np.random.default_rng(SEED))
    readings, states = record(arm, 1.0, 3 * 3600)  # three hours
    idle = states == IDLE
    still = idle[1:] & idle[:-1]
    assert still.any(axis=0).all()
    angle, power = arm.ROW["joint_1_angle"], arm.ROW["power_consumption"]
    assert np.all(np.diff(readings[:, angle], axis=0)[still] == 0.0)
    # Scheduled gaps start at the end of a cycle: at the pick pose.
    pick = np.broadcast_to(arm.centre_deg - arm.amplitude_deg, idle.shape)
    np.testing.assert_allclose(readings[:, angle][idle], pick[idle], atol=1e-9)
    idle_power = np.broadcast_to(arm.power_idle_w, idle.shape)
    assert np.abs((readings[:, power] - idle_power)[idle]).mean() < 1.5  # W, the meter's noise
    # After minutes at rest the decaying stop spike is floored, never a subnormal float.
    spike = arm.stop_spike_state_mm_s
    assert np.all(spike >= SPIKE_FLOOR_MM_S)
    assert np.all(spike >= np.finfo(np.float64).tiny)


def test_commands_through_the_fleet() -> None:
    fleet = Fleet(seed=SEED, dt_s=10.0)
    fleet.step()
    assert fleet.command("robot_01", "stop") == "idle"
    frames = [fleet.step() for _ in range(720)]  # held through two hours of schedule
    slot, row = fleet.placement["robot_01"]
    assert {int(frame.state[slot][row]) for frame in frames} == {IDLE}
    assert fleet.command("robot_01", "start") == "running"
    assert fleet.command("robot_01", "start") == "running"  # idempotent
    assert fleet.command("cnc_01", "maintain") == "maintenance"
    assert fleet.command("cnc_01", "stop") == "maintenance"  # stays, then idles
    with pytest.raises(ControlError, match="maintenance") as caught:
        fleet.command("cnc_01", "start")
    assert caught.value.field == "state"
    slot, row = fleet.placement["cnc_01"]
    states = [int(fleet.step().state[slot][row]) for _ in range(180)]
    assert states[0] == MAINTENANCE
    assert states[-1] == IDLE  # stopped before: idle after the maintenance
    assert fleet.command("cnc_01", "reset") == "idle"  # nothing to reset: no change


def test_an_unknown_command_lists_the_valid_ones() -> None:
    fleet = Fleet(seed=SEED, dt_s=0.1)
    with pytest.raises(ControlError) as caught:
        fleet.command("conveyor_01", "explode")
    assert caught.value.field == "command"
    assert caught.value.valid == ("start", "stop", "maintain", "reset")
    assert "'explode'" in str(caught.value)
    assert "start, stop, maintain, reset" in str(caught.value)
    with pytest.raises(ControlError, match="robot_99"):
        fleet.command("robot_99", "start")


def test_an_alarm_level_reading_means_warning_for_a_few_seconds() -> None:
    """A mill whose coolant fails reads alarm-level tool temperatures on its heavy cuts."""
    mill = CncMill(50, np.random.default_rng(SEED), steady=True)
    tool = mill.ROW["tool_temperature"]
    alarm = mill.SENSORS[tool].alarm
    assert alarm is not None
    healthy, states = record(mill, 0.5, 600)
    assert healthy[:, tool].max() < alarm
    assert np.all(states == RUNNING)
    for instance in range(mill.count):
        mill.inject_fault(instance, FaultRequest(kind="overheating", severity=1.0))
    readings, states = record(mill, 0.5, 1200)
    over = readings[:, tool] >= alarm
    assert 0 < over.any(axis=0).sum() < mill.count  # only the heavy cutters
    # Warning while any reading of the last ALARM_HOLD_S was at alarm level, running otherwise.
    hold = round(ALARM_HOLD_S / 0.5)
    recent = np.array([over[max(0, k - hold + 1) : k + 1].any(axis=0) for k in range(len(over))])
    np.testing.assert_array_equal(states, np.where(recent, WARNING, RUNNING))

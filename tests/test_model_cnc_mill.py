"""The CNC mill model: a real tool path, load-driven spindle dip, tool heat and vibration.

These tests study the steady physics: mills built with ``steady=True`` run without idle gaps
and with sharp tools that do not wear. States, wear and faults have their own tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from simulation.models.cnc_mill import CncMill, Move

SEED = 20261130
ROW = CncMill.ROW
AXES = [ROW["axis_x_position"], ROW["axis_y_position"], ROW["axis_z_position"]]  # in x, y, z order
FEED_MOVES = (Move.PLUNGE, Move.CUT, Move.SLOT)


@dataclass(frozen=True)
class Trace:
    """Readings ``(steps, sensors, count)``, mean load and move kind ``(steps, count)``."""

    model: CncMill
    dt_s: float
    readings: np.ndarray
    load: np.ndarray
    move: np.ndarray


def record(model: CncMill, dt_s: float, duration_s: float) -> Trace:
    steps = round(duration_s / dt_s)
    readings = np.empty((steps, len(CncMill.SENSORS), model.count))
    load = np.empty((steps, model.count))
    move = np.empty((steps, model.count), dtype=np.int64)
    for k in range(steps):
        readings[k] = model.step(dt_s)
        load[k] = model.cutting_load
        move[k] = model.move
    return Trace(model, dt_s, readings, load, move)


@pytest.fixture(scope="module")
def trace() -> Trace:
    """200 mills for 10 simulated minutes at the server's 0.1 s tick (about 3 program cycles)."""
    return record(CncMill(200, np.random.default_rng(SEED), steady=True), 0.1, 600.0)


@pytest.fixture(scope="module")
def coarse_trace() -> Trace:
    """The same 200 mills stepped at 5 s for the same 10 minutes."""
    return record(CncMill(200, np.random.default_rng(SEED), steady=True), 5.0, 600.0)


def step_distance_mm(readings: np.ndarray) -> np.ndarray:
    """Straight-line distance each instance moved per step ``(steps - 1, count)``."""
    return np.sqrt((np.diff(readings[:, AXES], axis=0) ** 2).sum(axis=1))


def test_sensors_are_the_seed_names_in_order() -> None:
    assert CncMill.sensor_names() == (
        "spindle_speed",
        "tool_temperature",
        "axis_x_position",
        "axis_y_position",
        "axis_z_position",
        "vibration_spindle",
        "tool_changes",  # after the seed's six
    )
    assert [spec.integer for spec in CncMill.SENSORS] == [False] * 6 + [True]
    for spec in CncMill.SENSORS:
        assert spec.unit
        assert spec.description
        assert spec.typical_min < spec.typical_max


def test_same_seed_gives_identical_arrays() -> None:
    first, second = (CncMill(50, np.random.default_rng(SEED), steady=True) for _ in range(2))
    other = CncMill(50, np.random.default_rng(SEED + 1), steady=True)
    for dt_s in (0.1, 0.1, 2.5, 0.1) * 25:
        a, b, c = first.step(dt_s), second.step(dt_s), other.step(dt_s)
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_instances_get_their_own_parameters() -> None:
    model = CncMill(100, np.random.default_rng(SEED), steady=True)
    for name in (
        "spindle_setpoint_rpm",
        "tool_diameter_mm",
        "feed_mm_min",
        "rapid_mm_min",
        "pocket_length_mm",
        "depth_per_level_mm",
        "tool_tau_s",
    ):
        assert np.unique(getattr(model, name)).size == 100, name
    assert np.all((model.spindle_setpoint_rpm >= 12_000) & (model.spindle_setpoint_rpm <= 24_000))
    assert np.all((model.feed_mm_min >= 500) & (model.feed_mm_min <= 2_000))
    assert np.all((model.rapid_mm_min >= 5_000) & (model.rapid_mm_min <= 15_000))
    np.testing.assert_allclose(
        model.spindle_setpoint_rpm,
        1000 * model.cutting_speed_m_min / (np.pi * model.tool_diameter_mm),
    )


def test_step_returns_a_new_array_each_time() -> None:
    model = CncMill(10, np.random.default_rng(SEED), steady=True)
    first = model.step(0.1)
    kept = first.copy()
    second = model.step(0.1)
    assert first.shape == (7, 10)
    assert first.dtype == np.float64
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    second[:] = np.nan
    assert np.isfinite(model.step(0.1)).all()


def test_one_hour_of_1000_mills_stays_finite_and_physical() -> None:
    model = CncMill(1_000, np.random.default_rng(SEED), steady=True)
    low = np.full((len(CncMill.SENSORS), 1), np.inf)
    high = np.full((len(CncMill.SENSORS), 1), -np.inf)
    for _ in range(36_000):
        readings = model.step(0.1)
        np.minimum(low, readings.min(axis=1, keepdims=True), out=low)
        np.maximum(high, readings.max(axis=1, keepdims=True), out=high)
    assert np.isfinite(low).all()  # a NaN would propagate into the minimum
    assert np.isfinite(high).all()
    physical = {
        "spindle_speed": (11_000, 24_100),
        "tool_temperature": (19.5, 250),
        "axis_x_position": (0, 350),
        "axis_y_position": (0, 150),
        "axis_z_position": (-20, 75),
        "vibration_spindle": (0, 10),
        "tool_changes": (0, 0),  # sharp tools that do not wear are never changed
    }
    for name, (lowest, highest) in physical.items():
        assert low[ROW[name], 0] >= lowest, name
        assert high[ROW[name], 0] <= highest, name


def test_positions_are_continuous_within_the_speed_bound(trace: Trace) -> None:
    model, dt_s = trace.model, trace.dt_s
    distance = step_distance_mm(trace.readings)
    assert np.all(distance <= model.rapid_mm_min / 60 * dt_s * (1 + 1e-9) + 1e-9)
    # Between two feed moves the tool never goes faster than the programmed feed.
    feeding = np.isin(trace.move[:-1], FEED_MOVES) & np.isin(trace.move[1:], FEED_MOVES)
    bound = model.feed_mm_min / 60 * dt_s * (1 + 1e-9) + 1e-9
    assert np.all(distance[feeding] <= np.broadcast_to(bound, feeding.shape)[feeding])
    assert distance.max() > 0.9 * (model.rapid_mm_min.min() / 60 * dt_s)  # rapids are rapid


def test_positions_are_continuous_at_five_second_steps(coarse_trace: Trace) -> None:
    model, dt_s = coarse_trace.model, coarse_trace.dt_s
    distance = step_distance_mm(coarse_trace.readings)
    assert np.all(distance <= model.rapid_mm_min / 60 * dt_s * (1 + 1e-9) + 1e-9)
    assert np.isfinite(coarse_trace.readings).all()


@pytest.mark.parametrize(("dt_s", "duration_s"), [(0.01, 30.0), (10.0, 3_600.0)])
def test_extreme_steps_stay_finite_and_continuous(dt_s: float, duration_s: float) -> None:
    model = CncMill(100, np.random.default_rng(SEED), steady=True)
    readings = record(model, dt_s, duration_s).readings
    assert np.isfinite(readings).all()
    distance = step_distance_mm(readings)
    assert np.all(distance <= model.rapid_mm_min / 60 * dt_s * (1 + 1e-9) + 1e-9)
    tool_temperature = readings[:, ROW["tool_temperature"]]
    assert np.all(tool_temperature < model.ambient_c + model.tool_rise_full_load_c)


def test_the_path_visits_rapids_plunges_and_cuts_at_their_speeds(trace: Trace) -> None:
    """Every mill visits every move kind, and each kind moves at its programmed speed."""
    model, dt_s = trace.model, trace.dt_s
    x, y, z = AXES
    velocity = np.diff(trace.readings[:, AXES], axis=0) / dt_s  # (steps - 1, 3, count)
    speed = np.sqrt((velocity**2).sum(axis=1))
    same_kind = trace.move[1:] == trace.move[:-1]
    programmed = {
        Move.RAPID: model.rapid_mm_min / 60,
        Move.PLUNGE: model.plunge_feed_mm_min / 60,
        Move.CUT: model.feed_mm_min / 60,
        Move.SLOT: model.feed_mm_min / 60,
        Move.DWELL: np.zeros(model.count),
    }
    for kind, expected in programmed.items():
        within = same_kind & (trace.move[1:] == kind)
        assert within.any(axis=0).all(), f"move kind {kind} not visited by every mill"
        fastest = np.where(within, speed, 0.0).max(axis=0)  # a step inside one segment
        np.testing.assert_allclose(fastest, expected, rtol=1e-6, atol=1e-6)
    plunging = same_kind & (trace.move[1:] == Move.PLUNGE)
    assert np.all(velocity[:, 2][plunging] < 0)
    cutting = same_kind & np.isin(trace.move[1:], (Move.CUT, Move.SLOT))
    assert np.all(trace.readings[1:, z][cutting] < 0)  # inside the part
    assert np.all(np.abs(velocity[:, 2][cutting]) < 1e-6)  # in the XY plane
    dwelling = trace.move == Move.DWELL
    assert np.all(trace.readings[:, x][dwelling] == 0)  # at home
    assert np.all(trace.readings[:, y][dwelling] == 0)
    assert np.all(
        trace.readings[:, z][dwelling] == np.broadcast_to(model.safe_z_mm, dwelling.shape)[dwelling]
    )


def test_cutting_fraction_is_plausible(trace: Trace) -> None:
    cutting = np.isin(trace.move, FEED_MOVES).mean(axis=0)
    assert np.all((cutting > 0.5) & (cutting < 0.99))
    assert 0.7 < cutting.mean() < 0.9
    assert np.all(trace.load[np.isin(trace.move, FEED_MOVES)] > 0)
    assert np.all((trace.load >= 0) & (trace.load <= 1))


def test_five_second_steps_follow_the_same_path_and_load(trace: Trace, coarse_trace: Trace) -> None:
    """The path and the time-averaged load are exact at any step; the readings stay close."""
    ratio = round(coarse_trace.dt_s / trace.dt_s)
    fine = trace.readings[ratio - 1 :: ratio]  # the fine readings at the coarse times
    coarse = coarse_trace.readings
    np.testing.assert_allclose(coarse[:, AXES], fine[:, AXES], atol=1e-6)
    np.testing.assert_allclose(coarse_trace.load.mean(axis=0), trace.load.mean(axis=0), rtol=1e-9)
    tool = ROW["tool_temperature"]
    temperature_gap = np.abs(coarse[:, tool] - fine[:, tool])
    assert np.median(temperature_gap) < 3
    assert temperature_gap.max() < 25
    setpoint = coarse_trace.model.spindle_setpoint_rpm
    assert np.all(np.abs(coarse[:, ROW["spindle_speed"]] / setpoint - 1) < 0.085)
    vibration = coarse[:, ROW["vibration_spindle"]]
    assert np.all((vibration > 0) & (vibration < 10))


def steady(load: np.ndarray, steps: int) -> np.ndarray:
    """Where the load has not changed over the last ``steps`` steps."""
    held = np.zeros(load.shape, dtype=bool)
    held[steps:] = True
    for lag in range(1, steps + 1):
        held[steps:] &= load[steps:] == load[steps - lag : -lag]
    return held


def test_spindle_dips_a_few_percent_under_load(trace: Trace) -> None:
    model = trace.model
    dip = 1 - trace.readings[:, ROW["spindle_speed"]] / model.spindle_setpoint_rpm
    # Held for 2 s (over five spindle time constants) the speed settles at the drooped setpoint.
    settled = steady(trace.load, 20)
    expected = model.spindle_droop_full_load * trace.load
    assert np.all(np.abs(dip - expected)[settled] < 0.0025)  # 5 sigma of the read-out jitter
    assert np.all(np.abs(dip[settled & (trace.load == 0)]) < 0.0025)
    cutting = trace.load > 0
    mean_cutting_dip = np.nanmean(np.where(cutting, dip, np.nan), axis=0)
    assert np.all((mean_cutting_dip > 0.002) & (mean_cutting_dip < 0.08))
    assert 0.005 < np.median(mean_cutting_dip) < 0.04
    assert np.corrcoef(expected.ravel(), dip.ravel())[0, 1] > 0.9


def test_tool_heats_exponentially_toward_a_load_dependent_plateau() -> None:
    """Under a constant load the tool approaches ``ambient + rise * sqrt(load)`` with ``tau``."""
    model = CncMill(100, np.random.default_rng(SEED), steady=True)
    load = np.linspace(0.1, 1.0, 100)
    plateau = model.ambient_c + model.tool_rise_full_load_c * np.sqrt(load)
    assert np.all(plateau - model.ambient_c > 55)
    assert np.all(plateau - model.ambient_c < 225)
    dt_s = 1.0
    temperature = [model._tool_temperature_c.copy()]
    for _ in range(round(3 * model.tool_tau_s.max())):
        model._update_tool_temperature(np.sqrt(load), dt_s)
        temperature.append(model._tool_temperature_c.copy())
    history = np.array(temperature)
    increments = np.diff(history, axis=0)
    assert np.all(increments > 0)
    assert np.all(np.diff(increments, axis=0) < 0)  # the increments shrink
    three_tau = np.round(3 * model.tool_tau_s).astype(int)
    reached = (history[three_tau, np.arange(100)] - model.ambient_c) / (plateau - model.ambient_c)
    np.testing.assert_allclose(reached, 1 - np.exp(-3), atol=0.02)


def test_tool_heats_while_cutting_and_cools_otherwise(trace: Trace) -> None:
    model = trace.model
    change = np.diff(trace.readings[:, ROW["tool_temperature"]], axis=0)
    load = trace.load[1:]
    warm = trace.readings[:-1, ROW["tool_temperature"]] > model.ambient_c + 1
    assert np.all(change[(load == 0) & warm] < 0)  # rapids and dwells cool
    target = model.ambient_c + model.tool_rise_full_load_c * np.sqrt(load)
    below = trace.readings[:-1, ROW["tool_temperature"]] < target - 1
    assert np.all(change[below] > 0)
    # Over a dwell (part change) the tool loses a clear share of its heat.
    start, end = warm_dwell_edges(trace)
    rise_before = start - model.ambient_c[None]
    assert np.median((end - model.ambient_c[None]) / rise_before) < 0.8


def warm_dwell_edges(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """Tool temperature at the start and end of each instance's last complete dwell."""
    dwell = trace.move == Move.DWELL
    starts, ends = [], []
    for i in range(trace.model.count):
        edges = np.flatnonzero(np.diff(dwell[:, i].astype(np.int8)))
        begin, finish = edges[-2:] if dwell[edges[-1], i] else edges[-3:-1]
        starts.append(trace.readings[begin + 1, ROW["tool_temperature"], i])
        ends.append(trace.readings[finish, ROW["tool_temperature"], i])
    return np.array(starts), np.array(ends)


def test_vibration_rises_with_cutting_load(trace: Trace) -> None:
    vibration = trace.readings[:, ROW["vibration_spindle"]]
    cutting = trace.load > 0.05
    idle = trace.load == 0
    for i in range(trace.model.count):
        assert vibration[cutting[:, i], i].mean() > 1.5 * vibration[idle[:, i], i].mean()
    assert np.corrcoef(trace.load.ravel(), vibration.ravel())[0, 1] > 0.6
    idle_level = vibration[idle]
    assert 0.2 < np.median(idle_level) < 0.8
    assert np.all(idle_level > 0)

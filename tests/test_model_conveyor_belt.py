"""Physical properties of the vectorised conveyor belt model, checked over simulated time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from simulation.models.conveyor_belt import ConveyorBelt

SEED = 20261130
ROW = ConveyorBelt.ROW  # a sensor's row in the readings, by name
SEED_SENSORS = ("belt_speed", "motor_load", "bearing_temperature", "items_processed")


def make_belt(count: int, seed: int = SEED) -> ConveyorBelt:
    """Belts that run without stops and do not wear: the steady physics."""
    return ConveyorBelt(count, np.random.default_rng(seed), steady=True)


@dataclass
class Run:
    """Time averages over a measuring window that follows a warm-up."""

    window_s: float
    processed: np.ndarray  # items that left the belt during the window
    mean_on_belt: np.ndarray
    mean_speed_mps: np.ndarray
    mean_load_pct: np.ndarray
    mean_bearing_c: np.ndarray


def run(belt: ConveyorBelt, dt_s: float, warmup_s: float, window_s: float) -> Run:
    for _ in range(round(warmup_s / dt_s)):
        belt.step(dt_s)
    steps = round(window_s / dt_s)
    start = belt.items_processed.copy()
    on_belt = np.zeros(belt.count)
    speed = np.zeros(belt.count)
    load = np.zeros(belt.count)
    bearing = np.zeros(belt.count)
    for _ in range(steps):
        readings = belt.step(dt_s)
        on_belt += belt.items_on_belt
        speed += readings[ROW["belt_speed"]]
        load += readings[ROW["motor_load"]]
        bearing += readings[ROW["bearing_temperature"]]
    return Run(
        window_s=steps * dt_s,
        processed=belt.items_processed - start,
        mean_on_belt=on_belt / steps,
        mean_speed_mps=speed / steps,
        mean_load_pct=load / steps,
        mean_bearing_c=bearing / steps,
    )


def test_sensors_are_the_seed_names_in_order() -> None:
    assert ConveyorBelt.TYPE_NAME == "conveyor_belt"
    assert ConveyorBelt.sensor_names() == (
        "belt_speed",
        "motor_load",
        "bearing_temperature",
        "items_processed",
        "vibration_bearing",  # after the seed's four
    )
    assert [sensor.unit for sensor in ConveyorBelt.SENSORS] == ["m/s", "%", "°C", "items", "mm/s"]
    assert [sensor.integer for sensor in ConveyorBelt.SENSORS] == [False] * 3 + [True, False]
    vibration = ConveyorBelt.SENSORS[ROW["vibration_bearing"]]
    assert (vibration.warning, vibration.alarm) == (1.8, 4.5)  # ISO 10816, small machines
    assert vibration.grafana_unit == "suffix: mm/s"
    for sensor in ConveyorBelt.SENSORS:
        assert sensor.description
        assert sensor.typical_min < sensor.typical_max


def test_step_returns_a_new_array_it_never_touches_again() -> None:
    belt = make_belt(50)
    first = belt.step(0.1)
    kept = first.copy()
    for _ in range(100):
        second = belt.step(0.1)
    assert first.shape == (5, 50)
    assert first.dtype == np.float64
    assert second is not first
    np.testing.assert_array_equal(first, kept)


def test_same_seed_gives_identical_readings() -> None:
    first, second = make_belt(200), make_belt(200)
    for dt_s in [0.1] * 300 + [5.0] * 20:
        np.testing.assert_array_equal(first.step(dt_s), second.step(dt_s))
    other = make_belt(200, seed=SEED + 1)
    assert not np.array_equal(other.step(0.1), first.step(0.1))


def test_instances_get_their_own_parameters() -> None:
    belt = make_belt(500)
    for name in (
        "speed_setpoint_mps",
        "length_m",
        "item_mass_kg",
        "mean_arrival_rate_per_s",
        "no_load_pct",
        "bearing_tau_s",
        "bearing_rise_full_load_k",
        "ambient_c",
    ):
        values = getattr(belt, name)
        assert np.unique(values).size == belt.count, name
    assert belt.speed_setpoint_mps.min() >= 0.5
    assert belt.speed_setpoint_mps.max() <= 2.5
    assert belt.length_m.min() >= 5.0
    assert belt.length_m.max() <= 50.0
    rate = belt.mean_arrival_rate_per_s
    assert rate.min() > 0.05
    assert rate.max() < 2.0
    assert rate.max() / rate.min() > 10.0
    readings = belt.step(0.1)
    assert np.unique(readings[ROW["belt_speed"]]).size == belt.count


def test_one_hour_of_1000_belts_at_10_hz_stays_finite_and_physical() -> None:
    belt = make_belt(1000)
    readings = belt.step(0.1)
    low, high = readings.copy(), readings.copy()
    items = readings[ROW["items_processed"]]
    for _ in range(36_000 - 1):  # one simulated hour at the server's 10 Hz
        readings = belt.step(0.1)
        np.minimum(low, readings, out=low)
        np.maximum(high, readings, out=high)
        assert (readings[ROW["items_processed"]] >= items).all()
        items = readings[ROW["items_processed"]]
    assert np.isfinite(low).all()
    assert np.isfinite(high).all()
    assert np.array_equal(items, np.round(items))
    setpoint = belt.speed_setpoint_mps
    speed, load, bearing = ROW["belt_speed"], ROW["motor_load"], ROW["bearing_temperature"]
    assert (low[speed] > 0.9 * setpoint).all()  # slip is a few % at most
    assert (high[speed] < 1.005 * setpoint).all()  # a belt never overruns its drive
    assert (low[load] > belt.no_load_pct - 3.0).all()
    assert high[load].max() < 103.0  # a short belt packed full is full load, plus noise
    assert (low[bearing] > belt.ambient_c - 0.1).all()  # starts at ambient, only warms
    assert (high[bearing] < belt.ambient_c + belt.bearing_rise_full_load_k).all()
    assert items.min() > 0  # every belt has delivered within the hour
    assert (belt.items_on_belt <= belt.capacity_items).all()


@pytest.mark.parametrize("dt_s", [1.0, 5.0])
def test_throughput_matches_the_arrival_rate_and_littles_law_holds(dt_s: float) -> None:
    belt = make_belt(400)
    result = run(belt, dt_s, warmup_s=300.0, window_s=3600.0)
    expected = belt.mean_arrival_rate_per_s * result.window_s
    # The rate drifts slowly (12 %, 15 min) around its mean: compare the fleet total.
    assert result.processed.sum() / expected.sum() == pytest.approx(1.0, abs=0.02)
    assert np.median(result.processed / expected) == pytest.approx(1.0, abs=0.05)
    assert np.corrcoef(result.processed, expected)[0, 1] > 0.98
    # Little's law: items on the belt = throughput x transit time (length / speed).
    throughput_per_s = result.processed / result.window_s
    transit_s = belt.length_m / result.mean_speed_mps
    little = throughput_per_s * transit_s
    assert result.mean_on_belt.sum() / little.sum() == pytest.approx(1.0, abs=0.03)
    assert np.corrcoef(result.mean_on_belt, little)[0, 1] > 0.98
    assert result.mean_on_belt.max() > 10.0  # long, busy belts are among them


def test_each_item_rides_the_belt_length_at_the_belt_speed() -> None:
    belt = make_belt(100)
    dt_s, steps = 0.5, 2400
    loaded = np.zeros((steps + 1, belt.count))
    processed = np.zeros((steps + 1, belt.count))
    speed = np.zeros(belt.count)
    for k in range(1, steps + 1):
        speed += belt.step(dt_s)[ROW["belt_speed"]]
        loaded[k] = belt.items_loaded
        processed[k] = belt.items_processed
    transit_s = belt.length_m / (speed / steps)
    # First in, first out after one transit: delivered by t = loaded by t - transit.
    times_s = dt_s * np.arange(steps + 1)
    earlier = np.floor((times_s[:, None] - transit_s) / dt_s).astype(int)
    loaded_earlier = np.where(
        earlier >= 0, np.take_along_axis(loaded, np.clip(earlier, 0, steps), axis=0), 0.0
    )
    mismatch = np.abs(processed - loaded_earlier)
    assert mismatch.mean() < 0.3
    assert np.percentile(mismatch, 99) <= 2.0
    assert processed[-1].sum() > 10_000


def test_items_leave_in_bulk_when_a_step_is_longer_than_the_transit() -> None:
    belt = make_belt(150)
    short_fast = belt.length_m / belt.speed_setpoint_mps < 5.0
    assert short_fast.sum() >= 5  # these carry each item on and off within one 10 s step
    result = run(belt, 10.0, warmup_s=300.0, window_s=3 * 3600.0)
    expected = belt.mean_arrival_rate_per_s * result.window_s
    assert result.processed.sum() / expected.sum() == pytest.approx(1.0, abs=0.02)
    ratio = result.processed[short_fast].sum() / expected[short_fast].sum()
    assert ratio == pytest.approx(1.0, abs=0.05)
    little = result.processed / result.window_s * belt.length_m / result.mean_speed_mps
    assert result.mean_on_belt.sum() / little.sum() == pytest.approx(1.0, abs=0.03)


def test_an_overfed_belt_fills_up_and_refuses_items() -> None:
    belt = make_belt(100)
    belt.mean_arrival_rate_per_s *= 10.0
    result = run(belt, 1.0, warmup_s=200.0, window_s=600.0)
    # A full belt delivers at most one belt-load per transit.
    most_per_s = belt.capacity_items * belt.speed_setpoint_mps / belt.length_m
    assert (result.processed / result.window_s <= 1.01 * most_per_s).all()
    assert np.mean(result.mean_on_belt > 0.9 * belt.capacity_items) > 0.9
    assert (belt.items_on_belt <= belt.capacity_items).all()


def test_motor_load_follows_the_items_on_the_belt() -> None:
    belt = make_belt(200)
    steps = 3000
    loads = np.empty((steps, belt.count))
    on_belt = np.empty((steps, belt.count))
    for k in range(steps):
        loads[k] = belt.step(0.2)[ROW["motor_load"]]
        on_belt[k] = belt.items_on_belt
    window = slice(1000, None)  # after the belts have filled
    centred_loads = loads[window] - loads[window].mean(axis=0)
    centred_items = on_belt[window] - on_belt[window].mean(axis=0)
    corr = (centred_loads * centred_items).sum(axis=0) / np.sqrt(
        (centred_loads**2).sum(axis=0) * (centred_items**2).sum(axis=0)
    )
    assert np.median(corr) > 0.9
    # Each item adds its share: the load reading rises and falls with every item.
    share_pct = (100.0 - belt.no_load_pct) * belt.item_mass_kg / belt.rated_payload_kg
    slope = (centred_loads * centred_items).sum(axis=0) / (centred_items**2).sum(axis=0)
    assert np.median(slope / share_pct) == pytest.approx(1.0, abs=0.05)
    # An empty belt reads its no-load friction share.
    empty = on_belt == 0
    offset = np.where(empty, loads - belt.no_load_pct, np.nan)
    assert np.nanmean(offset) == pytest.approx(0.0, abs=0.1)
    assert 0.3 < np.nanstd(offset) < 0.8  # the reading's own noise
    mean_load = loads[window].mean()
    assert 25.0 < mean_load < 60.0


def test_belt_speed_holds_its_setpoint_and_slips_more_under_load() -> None:
    loaded, empty = make_belt(300), make_belt(300)
    empty.mean_arrival_rate_per_s[:] = 0.0  # same belts, nothing to carry
    loaded_run = run(loaded, 0.5, warmup_s=300.0, window_s=1200.0)
    loaded_speed = np.stack([loaded.step(0.5)[ROW["belt_speed"]] for _ in range(600)])
    empty_speed = np.stack([empty.step(0.5)[ROW["belt_speed"]] for _ in range(600)])
    setpoint = loaded.speed_setpoint_mps
    # Empty belts hold the setpoint; loaded ones lose a small, load-proportional slip.
    assert np.abs(empty_speed.mean(axis=0) / setpoint - 1.0).max() < 0.002
    slip = 1.0 - loaded_run.mean_speed_mps / setpoint
    assert (slip > 0.0005).mean() > 0.95
    assert slip.max() < 0.02
    payload = loaded_run.mean_on_belt * loaded.item_mass_kg / loaded.rated_payload_kg
    expected_slip = loaded.full_load_slip_fraction * payload
    assert np.corrcoef(slip, expected_slip)[0, 1] > 0.9
    # The slip noise grows with load.
    relative_noise_loaded = (loaded_speed.std(axis=0) / setpoint).mean()
    relative_noise_empty = (empty_speed.std(axis=0) / setpoint).mean()
    assert relative_noise_loaded > 2.0 * relative_noise_empty


def test_bearing_temperature_lags_a_step_in_the_load() -> None:
    belt = make_belt(150)
    run(belt, 10.0, warmup_s=1.5 * 3600.0, window_s=10.0)  # to thermal equilibrium
    dt_s = 4.0
    settled = belt.step(dt_s)
    belt.mean_arrival_rate_per_s *= 2.0  # the upstream line speeds up
    steps = round(3600.0 / dt_s)
    readings = np.stack([belt.step(dt_s) for _ in range(steps)])
    load, bearing = ROW["motor_load"], ROW["bearing_temperature"]
    final_load = readings[-150:, load].mean(axis=0)  # the last 10 minutes
    final_bearing = belt.ambient_c + belt.bearing_rise_full_load_k * final_load / 100.0
    load_rise = (readings[:, load] - settled[load]) / (final_load - settled[load])
    bearing_rise = (readings[:, bearing] - settled[bearing]) / (final_bearing - settled[bearing])
    two_minutes = round(120.0 / dt_s) - 1
    # Two minutes on, the motor load has taken the step while the bearing has barely moved.
    assert np.median(load_rise[two_minutes]) > 0.8
    assert np.median(bearing_rise[two_minutes]) < 0.25
    # It follows a first-order lag with each bearing's own thermal time constant.
    instances = np.arange(belt.count)
    for taus, expected in ((1.0, 1.0 - np.exp(-1.0)), (2.0, 1.0 - np.exp(-2.0))):
        at_tau = np.round(taus * belt.bearing_tau_s / dt_s).astype(int) - 1
        assert np.median(bearing_rise[at_tau, instances]) == pytest.approx(expected, abs=0.08)


def test_bearing_heats_from_ambient_in_proportion_to_the_motor_load() -> None:
    belt = make_belt(200)
    first = belt.step(1.0)
    np.testing.assert_allclose(first[ROW["bearing_temperature"]], belt.ambient_c, atol=0.5)
    result = run(belt, 10.0, warmup_s=1.5 * 3600.0, window_s=3600.0)
    # Averaged over an hour, the lag passes the mean load through at its static gain.
    expected = belt.ambient_c + belt.bearing_rise_full_load_k * result.mean_load_pct / 100.0
    error = np.abs(result.mean_bearing_c - expected)
    assert np.median(error) < 0.2
    assert error.max() < 1.0
    rise = result.mean_bearing_c - belt.ambient_c
    assert rise.min() > 3.0
    assert rise.max() < 25.0


def test_steps_of_5_s_agree_with_small_steps() -> None:
    fine, coarse = make_belt(300), make_belt(300)  # same seed: the same belts
    fine_run = run(fine, 0.5, warmup_s=300.0, window_s=1500.0)
    coarse_run = run(coarse, 5.0, warmup_s=300.0, window_s=1500.0)
    # Mean payload = design fill of the belt's item places, so the load expected is:
    expected = fine.no_load_pct + (100.0 - fine.no_load_pct) * fine.design_fill_fraction
    for result in (fine_run, coarse_run):
        assert result.mean_load_pct.mean() == pytest.approx(expected.mean(), rel=0.02)
        assert np.corrcoef(result.mean_load_pct, expected)[0, 1] > 0.9
    np.testing.assert_allclose(coarse_run.mean_speed_mps, fine_run.mean_speed_mps, rtol=0.005)
    assert coarse_run.processed.sum() / fine_run.processed.sum() == pytest.approx(1.0, abs=0.03)


def test_bearing_vibration_grows_with_speed_and_load_and_is_a_floor_when_stopped() -> None:
    loaded, empty = make_belt(300), make_belt(300)
    empty.mean_arrival_rate_per_s[:] = 0.0  # same belts, nothing to carry
    empty.arrival_rate_per_s[:] = 0.0
    loaded_run = run(loaded, 0.5, warmup_s=300.0, window_s=10.0)  # filled
    steps = 2400  # 20 minutes
    vibration = np.empty((steps, loaded.count))
    payload = np.empty((steps, loaded.count))
    empty_vibration = np.empty((steps, loaded.count))
    for k in range(steps):
        vibration[k] = loaded.step(0.5)[ROW["vibration_bearing"]]
        payload[k] = loaded.payload_fraction
        empty_vibration[k] = empty.step(0.5)[ROW["vibration_bearing"]]
    assert loaded_run.window_s == 10.0
    # Healthy bearings stay in the good and acceptable zones, below the warning threshold.
    warning = ConveyorBelt.SENSORS[ROW["vibration_bearing"]].warning
    assert warning is not None
    assert vibration.max() < warning
    assert 0.2 < np.median(vibration) < 0.8
    # Empty, the level grows in proportion to the belt speed (the scatter has mean 1).
    empty_mean = empty_vibration.mean(axis=0)
    level = loaded.vibration_mm_s_per_mps * loaded.speed_setpoint_mps
    np.testing.assert_allclose(empty_mean, level + 0.02, rtol=0.015)  # plus the floor
    assert np.corrcoef(empty_mean, loaded.speed_setpoint_mps)[0, 1] > 0.8
    # The payload raises it by its load gain: loaded belts shake more than the same belts empty.
    expected = level * (1.0 + loaded.vibration_load_gain * payload.mean(axis=0)) + 0.02
    np.testing.assert_allclose(vibration.mean(axis=0), expected, rtol=0.015)
    assert np.all(vibration.mean(axis=0) > empty_mean)
    # Successive readings scatter by +-15 % around the level.
    ratio = empty_vibration / (level + 0.02)
    assert ratio.min() >= 0.85
    assert ratio.max() <= 1.15
    assert np.std(ratio) == pytest.approx(0.15 / np.sqrt(3.0), rel=0.02)
    # A stopped belt reads the sensor's small floor once the drive has run down.
    for instance in range(10):
        loaded.command(instance, "stop")
    stopped = np.stack([loaded.step(0.5)[ROW["vibration_bearing"]] for _ in range(60)])
    assert np.all(stopped[20:, :10] < 0.025)  # after 10 s: the drive is at a standstill
    assert np.all(stopped[20:, :10] > 0.015)
    assert np.all(stopped[:, 10:] > 0.05)  # the others run on


def test_the_vibration_sensor_leaves_the_seed_sensors_samples_unchanged() -> None:
    """It draws from its own stream: the seed's four sensors do not depend on it."""
    seed_rows = [ROW[name] for name in SEED_SENSORS]
    plain, other = make_belt(100), make_belt(100)
    other.vibration_rng = np.random.default_rng(SEED + 1)
    for _ in range(600):
        a, b = plain.step(0.5), other.step(0.5)
        np.testing.assert_array_equal(a[seed_rows], b[seed_rows])
    assert not np.array_equal(a[ROW["vibration_bearing"]], b[ROW["vibration_bearing"]])

"""Physical properties of the vectorised robotic arm model, checked over simulated time."""

from __future__ import annotations

import numpy as np
import pytest

from simulation.models.robotic_arm import RoboticArm

SEED = 20240611
ROW = RoboticArm.ROW


def make_arm(count: int, seed: int = SEED) -> RoboticArm:
    """Arms that run without idle gaps and do not wear: the steady physics."""
    return RoboticArm(count, np.random.default_rng(seed), steady=True)


def simulate(arm: RoboticArm, dt_s: float, steps: int) -> np.ndarray:
    """Readings of ``steps`` steps, shaped (steps, sensors, count)."""
    return np.stack([arm.step(dt_s) for _ in range(steps)])


def joint_speed_dps(angles: np.ndarray, dt_s: float) -> np.ndarray:
    """Mean |joint speed| over each step after the first, from the angle readings alone."""
    return np.abs(np.diff(angles, axis=0)) / dt_s


def seconds_since_arrival(angles: np.ndarray, dt_s: float) -> np.ndarray:
    """Time since the joint last came to rest at pick or place (NaN before the first one).

    Row ``k`` describes reading ``k + 1``; it is 0 where that reading ends the step in which
    the joint arrived (it moved during that step and not during the next one).
    """
    still = np.diff(angles, axis=0) == 0.0  # row k: no motion between readings k and k + 1
    arrived = ~still[:-1] & still[1:]
    steps = np.arange(arrived.shape[0])[:, None]
    index = np.where(arrived, steps, -1)
    last = np.maximum.accumulate(index, axis=0)
    since = (steps - last) * dt_s
    return np.where(last >= 0, since, np.nan)


def test_sensors_are_the_seed_names_in_order() -> None:
    assert RoboticArm.TYPE_NAME == "robotic_arm"
    assert RoboticArm.sensor_names() == (
        "joint_1_angle",
        "temperature_core",
        "vibration_level",
        "power_consumption",
    )
    units = [sensor.unit for sensor in RoboticArm.SENSORS]
    assert units == ["deg", "°C", "mm/s", "W"]
    for sensor in RoboticArm.SENSORS:
        assert sensor.description
        assert sensor.typical_min < sensor.typical_max


def test_step_returns_a_new_array_it_never_touches_again() -> None:
    arm = make_arm(50)
    first = arm.step(0.1)
    kept = first.copy()
    second = arm.step(0.1)
    assert first.shape == (4, 50)
    assert first.dtype == np.float64
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)
    state = (arm.joint_angle_deg, arm.power_w, arm.temperature_c, arm.speed_dps)
    assert not any(np.shares_memory(second, array) for array in state)


def test_same_seed_gives_identical_readings_and_other_seeds_differ() -> None:
    def run(seed: int) -> np.ndarray:
        arm = make_arm(300, seed)
        return np.concatenate([simulate(arm, 0.1, 300), simulate(arm, 5.0, 20)])

    np.testing.assert_array_equal(run(SEED), run(SEED))
    assert not np.array_equal(run(SEED), run(SEED + 1))


def test_each_instance_draws_its_own_parameters_from_realistic_ranges() -> None:
    arm = make_arm(1000)
    ranges = {
        "period_s": (3.0, 8.0),
        "amplitude_deg": (30.0, 150.0),
        "centre_deg": (-90.0, 90.0),
        "power_idle_w": (40.0, 90.0),
        "ambient_c": (20.0, 30.0),
        "thermal_tau_s": (15 * 60.0, 40 * 60.0),
        "vibration_base_mm_s": (0.3, 0.8),
        "stop_spike_mm_s": (1.0, 2.5),
    }
    for name, (low, high) in ranges.items():
        values = getattr(arm, name)
        assert np.unique(values).size == arm.count, name
        assert values.min() >= low, name
        assert values.max() <= high, name
        assert values.max() - values.min() > 0.5 * (high - low), name
    assert arm.peak_speed_dps.max() <= 180.0
    assert np.unique(arm.phase).size == arm.count


def test_one_hour_of_1000_arms_stays_finite_and_physical() -> None:
    angle, temperature = ROW["joint_1_angle"], ROW["temperature_core"]
    vibration, power = ROW["vibration_level"], ROW["power_consumption"]
    arm = make_arm(1000)
    low = np.full((len(RoboticArm.SENSORS), arm.count), np.inf)
    high = np.full((len(RoboticArm.SENSORS), arm.count), -np.inf)
    for _ in range(36_000):  # one simulated hour at the server's 10 Hz
        readings = arm.step(0.1)
        np.minimum(low, readings, out=low)
        np.maximum(high, readings, out=high)
    assert np.isfinite(low).all()
    assert np.isfinite(high).all()
    slack = 1e-9
    assert (low[angle] >= arm.centre_deg - arm.amplitude_deg - slack).all()
    assert (high[angle] <= arm.centre_deg + arm.amplitude_deg + slack).all()
    assert np.abs(low[angle]).max() <= 360.0
    assert np.abs(high[angle]).max() <= 360.0
    assert low[power].min() > 0.0
    assert high[power].max() < 500.0
    assert (low[temperature] > arm.ambient_c - 1.0).all()
    assert (high[temperature] < arm.ambient_c + 35.0).all()
    assert low[vibration].min() > 0.0
    assert high[vibration].max() < 10.0


def test_joint_moves_smoothly_between_pick_and_place_with_dwells() -> None:
    arm = make_arm(200)
    dt_s = 0.01
    angles = simulate(arm, dt_s, 3000)[:, ROW["joint_1_angle"]]  # 30 s, several cycles
    speed = joint_speed_dps(angles, dt_s)
    accel = np.abs(np.diff(angles, n=2, axis=0)) / dt_s**2
    # Reaches both poses, never beyond.
    np.testing.assert_allclose(angles.min(axis=0), arm.centre_deg - arm.amplitude_deg, atol=1e-6)
    np.testing.assert_allclose(angles.max(axis=0), arm.centre_deg + arm.amplitude_deg, atol=1e-6)
    # Speed and acceleration are bounded by the analytic peaks: no jumps anywhere.
    assert speed.max() <= 180.0
    np.testing.assert_allclose(speed.max(axis=0), arm.peak_speed_dps, rtol=0.01)
    assert (accel.max(axis=0) <= 1.02 * arm.peak_accel_dps2 + 1.0).all()
    # It rests at each end for its dwell share of the cycle: sine-like, not a pure sine.
    still_share = (speed == 0.0).mean(axis=0)
    np.testing.assert_allclose(still_share, 2.0 * arm.dwell_fraction, atol=0.03)


def test_power_tracks_joint_speed_and_falls_to_idle_at_rest() -> None:
    arm = make_arm(200)
    dt_s = 0.1
    readings = simulate(arm, dt_s, 1800)  # three minutes
    speed = joint_speed_dps(readings[:, ROW["joint_1_angle"]], dt_s)
    power = readings[1:, ROW["power_consumption"]]
    correlation = np.array([np.corrcoef(power[:, i], speed[:, i])[0, 1] for i in range(arm.count)])
    assert correlation.min() > 0.8
    assert np.median(correlation) > 0.9
    at_rest = speed == 0.0
    idle_error = np.abs(np.where(at_rest, power - arm.power_idle_w, 0.0).sum(axis=0))
    assert (idle_error / at_rest.sum(axis=0) < 1.0).all()  # W, mean of noise only
    moving_peak = np.percentile(power, 95, axis=0)
    assert np.median(moving_peak) > 120.0
    assert moving_peak.max() < 400.0


def test_core_heats_from_ambient_toward_its_plateau() -> None:
    temperature = ROW["temperature_core"]
    arm = make_arm(200)
    first_hour = simulate(arm, 1.0, 3600)[:, temperature]
    np.testing.assert_allclose(first_hour[0], arm.ambient_c, atol=0.5)
    ten_minute_means = first_hour.reshape(6, 600, arm.count).mean(axis=1)
    assert (np.diff(ten_minute_means, axis=0) > 0.0).all()
    later = simulate(arm, 10.0, 3 * 360)[:, temperature]  # up to 4 h, > 6 time constants
    plateau = arm.ambient_c + arm.cycle_mean_power_w() * arm.thermal_resistance_k_per_w
    np.testing.assert_allclose(later[-60:].mean(axis=0), plateau, atol=0.5)
    rise = plateau - arm.ambient_c
    assert rise.min() >= 10.0
    assert rise.max() <= 30.0


def test_vibration_spikes_when_the_joint_stops_and_rises_with_speed() -> None:
    arm = make_arm(200)
    dt_s = 0.05
    readings = simulate(arm, dt_s, 2400)  # two minutes
    since = seconds_since_arrival(readings[:, ROW["joint_1_angle"]], dt_s)
    vibration = readings[1:-1, ROW["vibration_level"]]  # aligned with ``since``
    speed = joint_speed_dps(readings[:, ROW["joint_1_angle"]], dt_s)[:-1]
    assert vibration.min() > 0.0
    near = since < 0.25
    away = since >= 1.0
    near_mean = np.where(near, vibration, 0.0).sum(axis=0) / near.sum(axis=0)
    away_mean = np.where(away, vibration, 0.0).sum(axis=0) / away.sum(axis=0)
    assert (near_mean - away_mean > 0.25).all()  # mm/s
    assert (near_mean > 1.3 * away_mean).all()
    assert np.median(near_mean / away_mean) > 2.0
    assert 0.3 < np.median(away_mean) < 1.2  # mm/s: ISO 10816 "good" zone for small machines
    # Away from the stops, the level climbs with joint speed at the instance's own rate.
    slopes = np.array(
        [np.polyfit(speed[away[:, i], i], vibration[away[:, i], i], 1)[0] for i in range(arm.count)]
    )
    assert (slopes > 0.0).mean() > 0.95
    assert 0.7 < np.median(slopes / arm.vibration_mm_s_per_dps) < 1.3


@pytest.mark.parametrize("big_dt_s", [5.0, 10.0])
def test_big_steps_agree_with_small_steps(big_dt_s: float) -> None:
    angle, temperature = ROW["joint_1_angle"], ROW["temperature_core"]
    vibration, power = ROW["vibration_level"], ROW["power_consumption"]
    minutes = 20
    small_arm, big_arm = make_arm(200), make_arm(200)
    small = simulate(small_arm, 0.1, minutes * 600)
    big = simulate(big_arm, big_dt_s, int(minutes * 60 / big_dt_s))
    assert np.isfinite(big).all()
    assert big[:, power].min() > 0.0
    assert big[:, vibration].min() > 0.0
    # The motion is analytic: the same simulated time gives the same pose.
    np.testing.assert_allclose(big[-1, angle], small[-1, angle], atol=1e-6)
    # Power is the mean over each step, so its time average does not depend on dt.
    np.testing.assert_allclose(big[:, power].mean(axis=0), small[:, power].mean(axis=0), atol=1.0)
    temperature_gap = np.abs(big[-1, temperature] - small[-1, temperature])
    assert temperature_gap.max() < 0.8
    assert temperature_gap.mean() < 0.25
    # Stops crossed inside a big step still leave their spike: the fleet mean is kept.
    fleet_mean_ratio = big[:, vibration].mean() / small[:, vibration].mean()
    assert 0.95 < fleet_mean_ratio < 1.05

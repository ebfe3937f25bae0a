"""Robotic arm: a pick-and-place joint whose motion drives power, heat and vibration.

Each instance runs one joint through a periodic cycle: dwell at the pick pose, a smooth
minimum-jerk move to the place pose, dwell, and a smooth move back. The motion is analytic
in the cycle phase, so angle, travel and speed changes are exact for any step length.
The *load* of a step (mean |joint speed| and mean |joint acceleration| over the step) sets
the electrical power; that power heats the core through a first-order thermal lag, and
joint speed plus the hard stop at each arrival (pick or place) set the vibration level.

Arms work in run periods of several minutes with idle gaps between them; a run period ends
at the end of a cycle (the arm waits at the pick pose). A stop command or a fault holds the
joint where it is. The joint's gearbox wears with travel: wear raises friction (so power and
heat for the same motion), the baseline and speed vibration, and the jolt of each stop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulation.models.base import MachineModel
from simulation.signals import first_order_lag, lag_gain, uniform
from simulation.spec import DutyCycle, SensorSpec

MAX_JOINT_SPEED_DPS = 170.0  # deg/s, design peak; UR5-class joints allow about 180 deg/s
# Minimum-jerk move of stroke S in time T: peak speed 15/8 S/T, peak |accel| 10/sqrt(3) S/T^2.
MIN_JERK_PEAK_SPEED = 15.0 / 8.0
MIN_JERK_PEAK_ACCEL = 10.0 / np.sqrt(3.0)
POWER_NOISE_W = 1.5  # W, white measurement noise of the power meter (1 sigma)
TEMPERATURE_NOISE_K = 0.1  # K, stationary std of the core-temperature fluctuation
TEMPERATURE_NOISE_TAU_S = 20.0  # s, correlation time of that fluctuation
VIBRATION_NOISE_LOG = 0.08  # std of the log of the (always positive) vibration noise factor
UNIT_UNIFORM_SCALE = np.sqrt(12.0)  # scales U(-1/2, 1/2) to zero mean, unit variance
SPIKE_FLOOR_MM_S = 1e-9  # the decaying stop spike never goes below this (no subnormal floats)
LIFE_H = (20.0, 60.0)  # running hours at the nominal cycle until the gearbox fails (health 0)
FRICTION_WEAR_GAIN = 1.0  # a fully worn gearbox has twice the friction
VIBRATION_BASE_WEAR_GAIN = 1.0  # ... twice the baseline vibration
VIBRATION_SPEED_WEAR_GAIN = 2.0  # ... three times the speed-dependent vibration
SPIKE_WEAR_GAIN = 1.0  # ... and twice the jolt at each stop (backlash)
BEARING_FRICTION_GAIN = 0.6  # a joint bearing defect of severity 1 adds 60 % friction,
BEARING_VIBRATION_MM_S = 2.0  # ... 2 mm/s of vibration at peak joint speed,
BEARING_WEAR_GAIN = 3.0  # ... and makes the gearbox wear 4x faster
OVERHEAT_GAIN = 1.5  # overheating of severity 1 (fan failure) raises the thermal resistance 2.5x


@dataclass(frozen=True, slots=True)
class _StepCoefficients:
    """Factors that depend only on the step length; cached while dt stays the same."""

    dt_s: float
    phase_increment: np.ndarray  # cycles advanced per step
    thermal_gain: np.ndarray  # exact first-order-lag gain of the core temperature
    spike_decay: np.ndarray  # decay of the stop-spike vibration over one step
    noise_decay: float  # decay of the temperature fluctuation over one step
    noise_kick_k: float  # innovation std that keeps that fluctuation at TEMPERATURE_NOISE_K


class RoboticArm(MachineModel):
    """A fleet of pick-and-place arms (base joint), stepped together."""

    TYPE_NAME = "robotic_arm"
    SENSORS = (
        SensorSpec(
            name="joint_1_angle",
            unit="deg",
            description="Base joint angle: a smooth pick-and-place cycle with dwells at each end",
            typical_min=-240.0,
            typical_max=240.0,
            decimals=2,
            grafana_unit="degree",
        ),
        SensorSpec(
            name="temperature_core",
            unit="°C",
            description="Core temperature: a slow first-order lag of the power drawn",
            typical_min=20.0,
            typical_max=60.0,
            decimals=2,
            warning=65.0,
            alarm=80.0,
            grafana_unit="celsius",
        ),
        SensorSpec(
            name="vibration_level",
            unit="mm/s",
            description="RMS vibration velocity: rises with speed, spikes at each pick/place stop",
            typical_min=0.3,
            typical_max=2.5,
            decimals=3,
            warning=1.8,
            alarm=4.5,
            grafana_unit="suffix: mm/s",
        ),
        SensorSpec(
            name="power_consumption",
            unit="W",
            description="Electrical power: idle draw plus joint friction and inertia terms",
            typical_min=40.0,
            typical_max=350.0,
            decimals=1,
            warning=400.0,
            alarm=500.0,
            grafana_unit="watt",
        ),
    )
    PHYSICAL_FAULTS = ("overheating", "bearing_defect")
    DUTY = DutyCycle(run_s=(300.0, 1800.0), idle_s=(60.0, 600.0), maintenance_s=(600.0, 1800.0))

    def _setup(self) -> None:
        self._draw_motion_parameters()
        self._draw_power_parameters()
        self._draw_thermal_parameters()
        self._draw_vibration_parameters()
        self._init_state()
        self._coefficients: _StepCoefficients | None = None
        self._init_condition()

    # ------------------------------------------------------------------ parameters
    def _draw_motion_parameters(self) -> None:
        """Cycle period, dwell share, amplitude and centre, kept under the joint speed limit."""
        n, rng = self.count, self.rng
        self.period_s = uniform(rng, 3.0, 8.0, n)
        self.dwell_fraction = uniform(rng, 0.05, 0.15, n)  # of the cycle, at each end
        self.move_fraction = 0.5 - self.dwell_fraction  # of the cycle, for each move
        move_s = self.period_s * self.move_fraction
        max_amplitude_deg = np.minimum(
            150.0, MAX_JOINT_SPEED_DPS * move_s / (2.0 * MIN_JERK_PEAK_SPEED)
        )
        self.amplitude_deg = 30.0 + rng.random(n) * (max_amplitude_deg - 30.0)
        self.centre_deg = uniform(rng, -90.0, 90.0, n)
        self._stroke_deg = 2.0 * self.amplitude_deg  # one move, pick to place
        self.peak_speed_dps = MIN_JERK_PEAK_SPEED * self._stroke_deg / move_s
        self.peak_accel_dps2 = MIN_JERK_PEAK_ACCEL * self._stroke_deg / move_s**2
        # Per cycle the joint travels two strokes and its speed rises and falls twice.
        self._cycle_travel_deg = 2.0 * self._stroke_deg
        self._cycle_speed_change_dps = 4.0 * self.peak_speed_dps

    def _draw_power_parameters(self) -> None:
        n, rng = self.count, self.rng
        self.power_idle_w = uniform(rng, 40.0, 90.0, n)  # controller, brakes released, holding
        self.friction_w_per_dps = uniform(rng, 0.8, 1.4, n)  # gear friction and viscous losses
        self.inertia_w_per_dps2 = uniform(rng, 0.08, 0.16, n)  # torque to accelerate the links

    def _draw_thermal_parameters(self) -> None:
        """Ambient, time constant, and a thermal resistance sized for the arm's own duty."""
        n, rng = self.count, self.rng
        self.ambient_c = uniform(rng, 20.0, 30.0, n)
        self.thermal_tau_s = uniform(rng, 15.0 * 60.0, 40.0 * 60.0, n)
        nominal_rise_k = uniform(rng, 10.0, 30.0, n)
        self.thermal_resistance_k_per_w = nominal_rise_k / self.cycle_mean_power_w()

    def _draw_vibration_parameters(self) -> None:
        n, rng = self.count, self.rng
        self.vibration_base_mm_s = uniform(rng, 0.3, 0.8, n)  # ISO 10816 small machine "good"
        self.vibration_mm_s_per_dps = uniform(rng, 0.001, 0.003, n)
        self.stop_spike_mm_s = uniform(rng, 1.0, 2.5, n)  # peak added by each hard stop
        self.stop_spike_tau_s = uniform(rng, 0.2, 0.4, n)
        # Stops come every half period, so the tail of k stops in a row is a geometric series.
        self._half_period_over_spike_tau = 0.5 * self.period_s / self.stop_spike_tau_s
        self._spike_ratio = np.exp(-self._half_period_over_spike_tau)
        self._spike_series_mm_s = self.stop_spike_mm_s / (1.0 - self._spike_ratio)

    def _init_state(self) -> None:
        n = self.count
        self.phase = self.rng.random(n)  # position in the cycle, in cycles [0, 1)
        self.joint_angle_deg, self._travel_deg, self._speed_change_dps, self._half = (
            self._motion_profile(self.phase)
        )
        # The load of the last step: what drives power, heat and vibration.
        self.speed_dps = np.zeros(n)  # mean |joint speed| over the step
        self.accel_dps2 = np.zeros(n)  # mean |joint acceleration| over the step
        self.power_w = self.power_idle_w.copy()  # noise-free electrical power
        self.temperature_c = self.ambient_c.copy()
        self._temperature_noise_k = np.zeros(n)
        self.stop_spike_state_mm_s = np.zeros(n)
        # Phase at which the running arm stops: the end of the cycle once its run period ended.
        self._phase_limit = np.full(n, np.inf)
        self._finishing = False  # any arm finishing its cycle before it goes idle

    def _init_condition(self) -> None:
        """The gearbox's wear driver (joint travel) and the factors that wear and faults set."""
        n = self.count
        # Usage is joint travel: a running second at the cycle-mean |speed| is one usage second.
        self._wear_driver_nominal = self._cycle_travel_deg / self.period_s
        self._friction_w_per_dps = np.zeros(n)
        self._thermal_resistance_k_per_w = np.zeros(n)
        self._vibration_base_mm_s = np.zeros(n)
        self._vibration_mm_s_per_dps = np.zeros(n)
        self._spike_series_eff_mm_s = np.zeros(n)

    def _new_life_s(self, idx: np.ndarray) -> np.ndarray:
        return 3600.0 * self.events.uniform(*LIFE_H, idx.size)

    def _update_factors(self, idx: np.ndarray | slice) -> np.ndarray:
        """Gearbox wear and faults, as friction, heat, vibration and wear-rate factors."""
        worn = 1.0 - self.health[idx]
        heat, defect = self.faults.intensity[:, idx]  # in PHYSICAL_FAULTS order
        self._friction_w_per_dps[idx] = self.friction_w_per_dps[idx] * (
            1.0 + FRICTION_WEAR_GAIN * worn + BEARING_FRICTION_GAIN * defect
        )
        self._thermal_resistance_k_per_w[idx] = self.thermal_resistance_k_per_w[idx] * (
            1.0 + OVERHEAT_GAIN * heat
        )
        self._vibration_base_mm_s[idx] = self.vibration_base_mm_s[idx] * (
            1.0 + VIBRATION_BASE_WEAR_GAIN * worn
        )
        self._vibration_mm_s_per_dps[idx] = (
            self.vibration_mm_s_per_dps[idx] * (1.0 + VIBRATION_SPEED_WEAR_GAIN * worn)
            + BEARING_VIBRATION_MM_S * defect / self.peak_speed_dps[idx]
        )
        self._spike_series_eff_mm_s[idx] = self._spike_series_mm_s[idx] * (
            1.0 + SPIKE_WEAR_GAIN * worn
        )
        return 1.0 + BEARING_WEAR_GAIN * defect

    def _end_run(self, idx: np.ndarray) -> None:
        """The arm finishes its cycle, then goes idle at the pick pose."""
        self._phase_limit[idx] = 1.0
        self._finishing = True

    def _stop_cycle(self, idx: np.ndarray) -> None:
        self._phase_limit[idx] = np.inf
        self._finishing = bool(np.isfinite(self._phase_limit).any())

    # --------------------------------------------------------------------- physics
    def cycle_mean_power_w(self) -> np.ndarray:
        """Mean electrical power over a whole cycle of the nominal motion, as new (analytic)."""
        return self._electrical_power(
            self._cycle_travel_deg / self.period_s,
            self._cycle_speed_change_dps / self.period_s,
            self.friction_w_per_dps,
        )

    def _motion_profile(
        self, phase: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Angle, travel since cycle start, speed change since cycle start, and half (0 or 1).

        Travel integrates |speed| and the speed change integrates |acceleration|, so the
        difference between two phases gives exact step means, whatever the step length.
        """
        half = np.floor(2.0 * phase)  # 0: dwell at pick, move to place; 1: dwell, move back
        # Progress u through the move (0 at departure, 1 at arrival), stored as x = u - 1/2.
        x = (phase - 0.5 * half - self.dwell_fraction) / self.move_fraction - 0.5
        np.minimum(np.maximum(x, -0.5, out=x), 0.5, out=x)  # dwell before, arrived after
        x2 = x * x
        # Minimum-jerk stroke s = 10u^3 - 15u^4 + 6u^5, as s - 1/2 = x (15/8 - 5x^2 + 6x^4).
        centred_stroke = ((6.0 * x2 - 5.0) * x2 + 15.0 / 8.0) * x
        # Speed / peak speed = 30/(15/8) u^2 (1-u)^2 = (1 - 4x^2)^2. |accel| integrates to
        # that shape while speeding up and to 2 - shape while slowing down.
        speed_shape = (1.0 - 4.0 * x2) ** 2
        speed_change = np.copysign(1.0 - speed_shape, x) + (1.0 + 2.0 * half)
        speed_change *= self.peak_speed_dps
        travel = (centred_stroke + (0.5 + half)) * self._stroke_deg
        direction = 1.0 - 2.0 * half
        angle = self.centre_deg + direction * self._stroke_deg * centred_stroke
        return angle, travel, speed_change, half

    def _advance_motion(self, dt_s: float, phase_increment: np.ndarray) -> np.ndarray:
        """Move every running joint on by one step; set the step's load; return its stops."""
        raw_phase = phase_increment * self.operation.running + self.phase
        if self._finishing:
            np.minimum(raw_phase, self._phase_limit, out=raw_phase)
            finished = (raw_phase >= self._phase_limit).nonzero()[0]
            if finished.size:
                self._stop_cycle(finished)
                self.operation.go_idle(finished, self.time_s)
        cycles = np.floor(raw_phase)
        stops = np.floor(2.0 * raw_phase) - self._half  # arrivals at pick or place
        self.phase = raw_phase - cycles
        previous_travel, previous_change = self._travel_deg, self._speed_change_dps
        self.joint_angle_deg, self._travel_deg, self._speed_change_dps, self._half = (
            self._motion_profile(self.phase)
        )
        inv_dt = 1.0 / dt_s
        travel = cycles * self._cycle_travel_deg + (self._travel_deg - previous_travel)
        change = cycles * self._cycle_speed_change_dps + (self._speed_change_dps - previous_change)
        self.speed_dps = travel * inv_dt
        self.accel_dps2 = change * inv_dt
        usage = travel * self._usage_rate
        self.wear.usage_s += usage
        return stops

    def _electrical_power(
        self, speed_dps: np.ndarray, accel_dps2: np.ndarray, friction_w_per_dps: np.ndarray
    ) -> np.ndarray:
        """Idle draw plus friction losses (speed) plus torque to accelerate inertia."""
        return (
            self.power_idle_w
            + friction_w_per_dps * speed_dps
            + self.inertia_w_per_dps2 * accel_dps2
        )

    def _update_temperature(self, coefficients: _StepCoefficients, kick: np.ndarray) -> None:
        """Core temperature lags toward ambient + power * R_th, plus a small OU fluctuation.

        ``kick`` is a zero-mean, unit-variance innovation per instance.
        """
        target_c = self.ambient_c + self.power_w * self._thermal_resistance_k_per_w
        first_order_lag(self.temperature_c, target_c, coefficients.thermal_gain)
        self._temperature_noise_k *= coefficients.noise_decay
        self._temperature_noise_k += coefficients.noise_kick_k * kick

    def _update_stop_spikes(self, stops: np.ndarray, decay: np.ndarray) -> None:
        """Decay the spike, then add every stop crossed in the step, decayed to the step end.

        A step in which no arm stops adds exactly 0 (``1 - ratio**0``): it skips the addition.
        """
        self.stop_spike_state_mm_s *= decay
        if np.count_nonzero(stops):
            half_periods_since_stop = 2.0 * self.phase - self._half  # 0..1
            last_stop_decay = np.exp(-half_periods_since_stop * self._half_period_over_spike_tau)
            self.stop_spike_state_mm_s += (
                self._spike_series_eff_mm_s * last_stop_decay * (1.0 - self._spike_ratio**stops)
            )
        np.maximum(self.stop_spike_state_mm_s, SPIKE_FLOOR_MM_S, out=self.stop_spike_state_mm_s)

    def _vibration_mm_s(self) -> np.ndarray:
        """Baseline plus a mild speed term plus the stop spike (noise-free)."""
        return (
            self._vibration_base_mm_s
            + self._vibration_mm_s_per_dps * self.speed_dps
            + self.stop_spike_state_mm_s
        )

    # ------------------------------------------------------------------------ step
    def _step_coefficients(self, dt_s: float) -> _StepCoefficients:
        """Factors that depend on dt only, recomputed when the step length changes."""
        if self._coefficients is None or self._coefficients.dt_s != dt_s:
            noise_decay = float(np.exp(-dt_s / TEMPERATURE_NOISE_TAU_S))
            self._coefficients = _StepCoefficients(
                dt_s=dt_s,
                phase_increment=dt_s / self.period_s,
                thermal_gain=np.asarray(lag_gain(dt_s, self.thermal_tau_s)),
                spike_decay=np.exp(-dt_s / self.stop_spike_tau_s),
                noise_decay=noise_decay,
                noise_kick_k=TEMPERATURE_NOISE_K * float(np.sqrt(1.0 - noise_decay**2)),
            )
        return self._coefficients

    def _advance(self, dt_s: float) -> np.ndarray:
        coefficients = self._step_coefficients(dt_s)
        stops = self._advance_motion(dt_s, coefficients.phase_increment)
        self.power_w = self._electrical_power(
            self.speed_dps, self.accel_dps2, self._friction_w_per_dps
        )
        # Uniform innovations are about 5x cheaper than normal ones; the lagged temperature sums
        # many of them, and the vibration factor only needs to stay positive and spread.
        innovations = (self.rng.random((2, self.count)) - 0.5) * UNIT_UNIFORM_SCALE
        self._update_temperature(coefficients, innovations[0])
        self._update_stop_spikes(stops, coefficients.spike_decay)

        row = self.ROW
        readings = np.empty((len(self.SENSORS), self.count))
        readings[row["joint_1_angle"]] = self.joint_angle_deg
        power = readings[row["power_consumption"]]
        self.rng.standard_normal(out=power)
        power *= POWER_NOISE_W
        power += self.power_w
        np.add(self.temperature_c, self._temperature_noise_k, out=readings[row["temperature_core"]])
        np.multiply(innovations[1], VIBRATION_NOISE_LOG, out=innovations[1])
        np.exp(innovations[1], out=innovations[1])
        np.multiply(self._vibration_mm_s(), innovations[1], out=readings[row["vibration_level"]])
        return readings

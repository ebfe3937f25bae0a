"""Conveyor belt: items arrive at random, ride the belt and leave; their mass drives the motor.

Each instance is one belt of fixed length running at a setpoint speed. Items arrive as a
Poisson process whose rate drifts slowly around the instance's design rate; each one rides
the belt's length at the belt speed and is counted in ``items_processed`` when it leaves
the far end. The mass on the belt (the *payload*) sets the motor load, the slip of the belt
on its drive pulley, the drive-pulley bearing's vibration and, through a slow thermal lag of
the motor load, the bearing temperature.

Belts start and stop (the drive ramps the speed with a soft-start lag); a stopped belt
carries nothing and draws nothing. The drive-pulley bearing wears while the belt runs, faster
under load (bearing life goes with load cubed); its wear adds vibration, friction heat, drag
and slip.

Items are tracked exactly, for any step length, with a small ring per instance holding the
belt's odometer reading at each item's arrival: the head item leaves once the belt has
travelled the belt's length past that reading. Only the head is ever looked at, so a step
costs O(1) per instance however many items ride the belt. Arrivals and departures inside
one step are played in order, so long steps (several items on and off) stay exact.
"""

from __future__ import annotations

import numpy as np

from simulation.models.base import MachineModel
from simulation.signals import (
    first_order_lag,
    lag_gain,
    ou_advance,
    ou_coefficients,
    ou_step,
    uniform,
)
from simulation.spec import DutyCycle, SensorSpec

RING_SLOTS = 64  # items one belt can track at once; a power of two (ring index by bit mask)
_SLOT_MASK = RING_SLOTS - 1
MAX_ARRIVALS_PER_STEP = 256  # bound of the per-step arrival loop (exact for steps up to ~100 s)
RATE_DRIFT_TAU_S = 900.0  # s, correlation time of the slow drift of the arrival rate
RATE_DRIFT_UPDATE_S = 1.0  # s, the drift is advanced (exactly) once this much time has passed
RATE_DRIFT_STD = 0.12  # relative standard deviation of the arrival rate around its mean
MIN_RATE_FACTOR = 0.2  # the drifting rate never falls below this share of its mean
SPEED_NOISE_TAU_S = 2.0  # s, correlation time of the belt-speed fluctuation
SLIP_JITTER_LOG_STD = 0.3  # std of the log-normal stick-slip factor around the mean slip
SPEED_REGULATION_STD = 0.0005  # relative speed error of the drive's regulation (1 sigma)
MOTOR_LOAD_NOISE_PCT = 0.5  # %, measurement noise of the drive's load reading (1 sigma)
BEARING_ADC_STEP_K = 0.05  # K, resolution of the bearing sensor's converter (uniform error)
DRIVE_TAU_S = 1.5  # s, soft-start/stop lag of the drive speed
DRIVE_FLOOR = 1e-12  # a stopped drive's speed ratio decays to this, never to subnormal floats
LIFE_H = (10.0, 30.0)  # running hours at the design load until the bearing fails (health 0)
BEARING_LOAD_GAIN = 1.0  # bearing load = tension share * (1 + gain * payload_fraction)
WEAR_RISE_K = 45.0  # K, friction heat of a fully worn bearing at full speed
DEFECT_RISE_K = 80.0  # K, friction heat of a bearing defect of severity 1 at full speed
WEAR_DRAG = 0.3  # no-load share grows by this fraction with a fully worn bearing
DEFECT_DRAG = 0.5  # ... and with a bearing defect of severity 1
DEFECT_WEAR_GAIN = 4.0  # a bearing defect of severity 1 makes the bearing wear 5x faster
OVERHEAT_GAIN = 1.5  # overheating of severity 1 (cooling lost) raises every heat rise 2.5x
SLIP_WEAR_GAIN = 2.0  # a fully worn belt drive slips 3x more under load
SLIP_FAULT_GAIN = 4.0  # belt slip of severity 1: 5x more slip under load ...
SLIP_FAULT_FLOOR = 0.08  # ... and 8 % slip even when empty
WEAR_VIBRATION_MM_S = 4.0  # mm/s RMS a fully worn bearing adds at full speed
DEFECT_VIBRATION_MM_S = 6.0  # mm/s RMS a bearing defect of severity 1 adds at full speed
VIBRATION_FLOOR_MM_S = 0.02  # mm/s, the sensor's noise floor (a stopped belt reads about this)
VIBRATION_SCATTER = 0.15  # successive RMS readings scatter uniformly by +-15 % (std 8.7 %)
# Bearing geometry for the defect frequencies (MODELLING.md, a 6205-style deep-groove bearing:
# 9 balls, ball / pitch diameter 7.94 / 38.5 mm, contact angle 0).
BEARING_BALLS = 9
BALL_PITCH_RATIO = 7.94 / 38.5


class ConveyorBelt(MachineModel):
    """A fleet of in-plant belt conveyors carrying discrete items, stepped together."""

    TYPE_NAME = "conveyor_belt"
    SENSORS = (
        SensorSpec(
            name="belt_speed",
            unit="m/s",
            description="Belt surface speed: the drive's setpoint less slip that grows with load; "
            "0 when stopped",
            typical_min=0.0,
            typical_max=2.5,
            decimals=3,
            grafana_unit="velocityms",
        ),
        SensorSpec(
            name="motor_load",
            unit="%",
            description="Drive motor load: no-load friction plus the mass of the items on the "
            "belt; 0 when stopped",
            typical_min=0.0,
            typical_max=70.0,
            decimals=1,
            warning=90.0,
            alarm=105.0,
            grafana_unit="percent",
        ),
        SensorSpec(
            name="bearing_temperature",
            unit="°C",
            description="Drive-pulley bearing temperature: a slow thermal lag of the motor load "
            "and the bearing's friction",
            typical_min=20.0,
            typical_max=50.0,
            decimals=2,
            warning=60.0,
            alarm=75.0,
            grafana_unit="celsius",
        ),
        SensorSpec(
            name="items_processed",
            unit="items",
            description="Items that have left the end of the belt since start; never decreases",
            typical_min=0.0,
            typical_max=100_000.0,
            decimals=0,
            integer=True,
        ),
        SensorSpec(
            name="vibration_bearing",
            unit="mm/s",
            description="Drive-pulley bearing vibration velocity, RMS: grows with belt speed and "
            "load, and with bearing wear and defects (impacts at the BPFO/BPFI defect "
            "frequencies); a small floor when stopped (thresholds: ISO 10816 small machines)",
            typical_min=0.0,
            typical_max=1.2,
            decimals=2,
            warning=1.8,
            alarm=4.5,
            grafana_unit="suffix: mm/s",
        ),
    )
    PHYSICAL_FAULTS = ("overheating", "bearing_defect", "belt_slip")
    DUTY = DutyCycle(run_s=(900.0, 5400.0), idle_s=(60.0, 900.0), maintenance_s=(1200.0, 2700.0))

    def _setup(self) -> None:
        # The vibration sensor came later: its own stream leaves the other sensors' samples
        # exactly as they were for a given seed.
        self.vibration_rng = self.rng.spawn(1)[0]
        self._draw_belt_parameters()
        self._draw_drive_parameters()
        self._draw_thermal_parameters()
        self._draw_vibration_parameters()
        self._init_items()
        self._init_state()
        self._init_condition()

    # -- parameters ------------------------------------------------------------------------

    def _draw_belt_parameters(self) -> None:
        """Geometry, speed and the design flow of items of each belt."""
        n, rng = self.count, self.rng
        self.speed_setpoint_mps = uniform(rng, 0.5, 2.5, n)  # in-plant belts
        self.length_m = uniform(rng, 5.0, 50.0, n)
        self.item_pitch_m = uniform(rng, 0.5, 1.0, n)  # item length plus the smallest gap
        self.item_mass_kg = uniform(rng, 2.0, 25.0, n)  # parcels and totes
        # Mean share of the belt's item places in use: the flow the line was designed for.
        self.design_fill_fraction = uniform(rng, 0.15, 0.35, n)
        # A belt packed at the pitch holds length / pitch items; the ring bounds what we track.
        self.capacity_items = np.minimum(
            np.floor(self.length_m / self.item_pitch_m), RING_SLOTS
        ).astype(np.int64)
        # Mean items on the belt = rate * transit time = design_fill_fraction * length / pitch.
        self.mean_arrival_rate_per_s = (
            self.design_fill_fraction * self.speed_setpoint_mps / self.item_pitch_m
        )

    def _draw_drive_parameters(self) -> None:
        """Motor sizing and belt slip."""
        n, rng = self.count, self.rng
        self.no_load_pct = uniform(rng, 15.0, 30.0, n)  # idler and belt friction, empty belt
        # The drive is sized so that a belt packed at the item pitch is full (100 %) load.
        self.rated_payload_kg = self.item_mass_kg * self.length_m / self.item_pitch_m
        self.full_load_slip_fraction = uniform(rng, 0.01, 0.03, n)  # slip fraction at full payload

    def _draw_thermal_parameters(self) -> None:
        """Ambient and the drive-pulley bearing's thermal response."""
        n, rng = self.count, self.rng
        self.ambient_c = uniform(rng, 20.0, 30.0, n)
        self.bearing_rise_full_load_k = uniform(rng, 15.0, 35.0, n)  # rise at 100 % motor load
        self.bearing_tau_s = uniform(rng, 300.0, 1200.0, n)  # 5 to 20 min thermal inertia

    def _draw_vibration_parameters(self) -> None:
        """The bearing's vibration levels, and its shaft and defect frequencies (ground truth)."""
        n, rng = self.count, self.vibration_rng
        self.vibration_mm_s_per_mps = uniform(rng, 0.15, 0.3, n)  # healthy, empty, per m/s
        self.vibration_load_gain = uniform(rng, 0.5, 1.0, n)  # a full payload adds this share
        self.pulley_diameter_m = uniform(rng, 0.15, 0.4, n)
        self.shaft_rate_hz = self.speed_setpoint_mps / (np.pi * self.pulley_diameter_m)
        half_balls = BEARING_BALLS / 2.0 * self.shaft_rate_hz
        self.bpfo_hz = half_balls * (1.0 - BALL_PITCH_RATIO)  # outer race defect
        self.bpfi_hz = half_balls * (1.0 + BALL_PITCH_RATIO)  # inner race defect
        # At the setpoint: healthy and empty, and what a full payload adds.
        self._vibration_empty_mm_s = self.vibration_mm_s_per_mps * self.speed_setpoint_mps
        self._vibration_per_payload_mm_s = self._vibration_empty_mm_s * self.vibration_load_gain

    # -- state -----------------------------------------------------------------------------

    def _init_items(self) -> None:
        """Empty belts: per instance a ring of arrival odometer readings and item counters."""
        n = self.count
        self.odometer_m = np.zeros(n)  # belt travel since start
        # Odometer reading at each item's arrival; a free slot holds +inf (never leaves).
        self.ring_arrival_m = np.full((n, RING_SLOTS), np.inf)
        # Items ever loaded and ever delivered; they also index the ring's tail and head.
        self.items_loaded = np.zeros(n, dtype=np.int64)
        # Belt travel, counted from the odometer at the start of the step, until the head
        # item leaves; infinite on an empty belt.
        self.head_exit_m = np.full(n, np.inf)
        self.items_processed = np.zeros(n, dtype=np.int64)
        self.items_on_belt = np.zeros(n, dtype=np.int64)  # loaded - processed, after each step
        # Unit-rate time to the next arrival (a time-changed Poisson process).
        self.arrival_clock = self.rng.standard_exponential(n)

    def _init_state(self) -> None:
        n = self.count
        self.rate_drift = np.zeros(n)  # unit-variance OU, relative drift of the arrival rate
        self._drift_pending_s = 0.0  # time since the drift was last advanced
        self.arrival_rate_per_s = self.mean_arrival_rate_per_s.copy()
        self.speed_noise = np.zeros(n)  # unit-variance OU behind stick-slip and regulation
        self.payload_fraction = np.zeros(n)  # mass on the belt / rated payload
        self.motor_load_pct = self.no_load_pct.copy()  # noise-free load that drives the heat
        self.bearing_c = self.ambient_c.copy()  # cold start at ambient
        self.drive_ratio = self.operation.running.copy()  # drive speed / setpoint, 0..1
        self._gain_dt_s = -1.0
        self._bearing_gain = np.zeros(n)
        self._drive_gain = 0.0
        self._speed_noise_ou: tuple[np.ndarray | float, np.ndarray | float] = (1.0, 0.0)  # per dt

    def _init_condition(self) -> None:
        """The bearing's wear driver (load cubed) and the factors that wear and faults set."""
        n = self.count
        # Bearing wear rate per running second, at the design load, is 1 (one usage second).
        self._wear_driver_nominal = (1.0 + BEARING_LOAD_GAIN * self.design_fill_fraction) ** 3
        self._rise_per_pct = np.zeros(n)  # K of bearing rise per % motor load
        self._friction_rise_k = np.zeros(n)  # K of bearing friction heat at full speed
        self._no_load_eff_pct = np.zeros(n)
        self._load_span_pct = np.zeros(n)  # 100 - no-load share
        self._slip_per_payload = np.zeros(n)
        self._slip_floor = np.zeros(n)
        self._slipping = np.empty(0, dtype=np.int64)
        self._vibration_mm_s = np.zeros(n)  # at full speed, empty: healthy level, wear, defect

    def _new_life_s(self, idx: np.ndarray) -> np.ndarray:
        return 3600.0 * self.events.uniform(*LIFE_H, idx.size)

    def _update_factors(self, idx: np.ndarray | slice) -> np.ndarray:
        """Bearing wear and faults, as heat, drag, slip and wear-rate factors of ``idx``."""
        worn = 1.0 - self.health[idx]
        heat, defect, slip = self.faults.intensity[:, idx]  # in PHYSICAL_FAULTS order
        cooling_loss = 1.0 + OVERHEAT_GAIN * heat
        self._rise_per_pct[idx] = self.bearing_rise_full_load_k[idx] * cooling_loss / 100.0
        self._friction_rise_k[idx] = (WEAR_RISE_K * worn + DEFECT_RISE_K * defect) * cooling_loss
        no_load = self.no_load_pct[idx] * (1.0 + WEAR_DRAG * worn + DEFECT_DRAG * defect)
        self._no_load_eff_pct[idx] = no_load
        self._load_span_pct[idx] = 100.0 - no_load
        self._slip_per_payload[idx] = self.full_load_slip_fraction[idx] * (
            1.0 + SLIP_WEAR_GAIN * worn + SLIP_FAULT_GAIN * slip
        )
        self._slip_floor[idx] = SLIP_FAULT_FLOOR * slip
        self._vibration_mm_s[idx] = (
            self._vibration_empty_mm_s[idx] + WEAR_VIBRATION_MM_S * worn
        ) + DEFECT_VIBRATION_MM_S * defect
        self._slipping = self._slip_floor.nonzero()[0]
        return 1.0 + DEFECT_WEAR_GAIN * defect

    # -- physics ---------------------------------------------------------------------------

    def _drift_arrival_rate(self, dt_s: float) -> None:
        """Let the arrival rate wander slowly around its mean (piecewise constant, ~1 s pieces)."""
        self._drift_pending_s += dt_s
        if self._drift_pending_s < RATE_DRIFT_UPDATE_S:
            return
        ou_step(self.rate_drift, self._drift_pending_s, RATE_DRIFT_TAU_S, 1.0, self.rng)
        self._drift_pending_s = 0.0
        factor = 1.0 + RATE_DRIFT_STD * self.rate_drift
        np.maximum(factor, MIN_RATE_FACTOR, out=factor)
        np.multiply(factor, self.mean_arrival_rate_per_s, out=self.arrival_rate_per_s)

    def _step_gains(self, dt_s: float) -> None:
        """Lag gains and speed-noise coefficients for ``dt_s``; recomputed only when dt changes."""
        if dt_s != self._gain_dt_s:
            self._bearing_gain = np.asarray(lag_gain(dt_s, self.bearing_tau_s))
            self._drive_gain = float(lag_gain(dt_s, DRIVE_TAU_S))
            self._speed_noise_ou = ou_coefficients(dt_s, SPEED_NOISE_TAU_S, 1.0)
            self._gain_dt_s = dt_s

    def _run_drive(self) -> None:
        """The drive ramps toward the setpoint while running and toward standstill otherwise."""
        first_order_lag(self.drive_ratio, self.operation.running, self._drive_gain)
        np.maximum(self.drive_ratio, DRIVE_FLOOR, out=self.drive_ratio)

    def _belt_speed_mps(self) -> np.ndarray:
        """Drive speed less slip (mean proportional to payload, plus faults), regulation error."""
        # Stick-slip: a log-normal factor of mean 1, so the slip spreads more under load.
        slip = SLIP_JITTER_LOG_STD * self.speed_noise
        slip -= 0.5 * SLIP_JITTER_LOG_STD**2
        np.exp(slip, out=slip)
        mean_slip = self.payload_fraction * self._slip_per_payload
        if self._slipping.size:  # belts with a belt_slip fault slip even when empty
            mean_slip[self._slipping] += self._slip_floor[self._slipping]
        slip *= mean_slip
        speed = SPEED_REGULATION_STD * self.speed_noise
        speed += slip
        np.subtract(1.0, speed, out=speed)
        np.maximum(speed, 0.0, out=speed)
        speed *= self.speed_setpoint_mps
        speed *= self.drive_ratio
        return speed

    def _update_load(self) -> None:
        """Payload from the items on the belt, and the motor load it takes to carry it."""
        np.subtract(self.items_loaded, self.items_processed, out=self.items_on_belt)
        np.multiply(self.items_on_belt, self.item_mass_kg, out=self.payload_fraction)
        self.payload_fraction /= self.rated_payload_kg
        np.multiply(self._load_span_pct, self.payload_fraction, out=self.motor_load_pct)
        self.motor_load_pct += self._no_load_eff_pct
        self.motor_load_pct *= self.drive_ratio

    def _accrue_wear(self, elapsed_s: float) -> None:
        """The bearing's usage clock runs with speed and with the bearing load cubed.

        It advances once a refresh (a simulated second), at the speed and load of that moment:
        bearing wear is a matter of hours, the payload a matter of seconds.
        """
        rate = self.payload_fraction * BEARING_LOAD_GAIN
        rate += 1.0
        cube = rate * rate
        cube *= rate
        cube *= self.drive_ratio
        cube *= self._usage_rate
        cube *= elapsed_s
        self.wear.usage_s += cube

    def _bearing_target_c(self) -> np.ndarray:
        """Equilibrium bearing temperature for the present motor load, speed and friction."""
        heat = self._rise_per_pct * self.motor_load_pct + self.ambient_c
        return heat + self._friction_rise_k * self.drive_ratio

    def _heat_bearing(self) -> None:
        first_order_lag(self.bearing_c, self._bearing_target_c(), self._bearing_gain)

    def _read_vibration(self, out: np.ndarray) -> None:
        """RMS velocity: the healthy level (grows with the payload), wear and defect terms, all
        with the drive's speed; the sensor's floor; a uniform scatter of +-15 %."""
        np.multiply(self.payload_fraction, self._vibration_per_payload_mm_s, out=out)
        out += self._vibration_mm_s
        out *= self.drive_ratio
        out += VIBRATION_FLOOR_MM_S
        scatter = self.vibration_rng.random(self.count) * (2.0 * VIBRATION_SCATTER)
        scatter += 1.0 - VIBRATION_SCATTER
        out *= scatter

    # -- items -----------------------------------------------------------------------------

    def _move_items(self, dt_s: float, travel_m: np.ndarray) -> None:
        """Arrivals and departures during a step in which the belt moves ``travel_m``.

        Each arrival happens at its own point of the step. Departures are played at the end
        of the step, except on a full belt, which first lets go of the items that left
        before the arrival (the order only matters when room is short).
        """
        # Unit-rate time that passes in this step; upstream feeds a belt as fast as it runs.
        elapsed = self.arrival_rate_per_s * dt_s * self.drive_ratio
        idx = (self.arrival_clock < elapsed).nonzero()[0]
        for _ in range(MAX_ARRIVALS_PER_STEP):
            if idx.size == 0:
                break
            clock, step_elapsed = self.arrival_clock[idx], elapsed[idx]
            self._load_items(idx, travel_m[idx] * (clock / step_elapsed))
            clock += self.rng.standard_exponential(idx.size)
            self.arrival_clock[idx] = clock
            idx = idx[clock < step_elapsed]
        else:  # still arriving after the bound: the rest of this step's arrivals are dropped
            self.arrival_clock[idx] = elapsed[idx] + self.rng.standard_exponential(idx.size)
        self.arrival_clock -= elapsed
        leaving = (self.head_exit_m <= travel_m).nonzero()[0]
        if leaving.size:
            self._release_items(leaving, travel_m[leaving])
        self.head_exit_m -= travel_m

    def _load_items(self, idx: np.ndarray, at_m: np.ndarray) -> None:
        """Load one item on each belt in ``idx`` at ``at_m`` of the step's travel, if it fits."""
        loaded = self.items_loaded[idx]
        room = loaded - self.items_processed[idx] < self.capacity_items[idx]
        if not room.all():  # full: release what left before this arrival; refuse if still full
            self._release_items(idx[~room], at_m[~room])
            room = loaded - self.items_processed[idx] < self.capacity_items[idx]
            idx, at_m, loaded = idx[room], at_m[room], loaded[room]
        self.ring_arrival_m[idx, loaded & _SLOT_MASK] = self.odometer_m[idx] + at_m
        self.items_loaded[idx] = loaded + 1
        # Items keep their order, so a new item only becomes the head of an empty belt.
        self.head_exit_m[idx] = np.minimum(self.head_exit_m[idx], at_m + self.length_m[idx])

    def _release_items(self, idx: np.ndarray, limit_m: np.ndarray) -> None:
        """Let every head item on belts ``idx`` whose exit lies within ``limit_m`` leave."""
        leaving = self.head_exit_m[idx] <= limit_m
        while leaving.any():
            idx, limit_m = idx[leaving], limit_m[leaving]
            done = self.items_processed[idx]
            self.ring_arrival_m[idx, done & _SLOT_MASK] = np.inf  # free the head's slot
            done += 1
            self.items_processed[idx] = done
            # Exit of the next item, from the step's start odometer (+inf on an empty belt).
            exit_m = self.ring_arrival_m[idx, done & _SLOT_MASK] - self.odometer_m[idx]
            exit_m += self.length_m[idx]
            self.head_exit_m[idx] = exit_m
            leaving = exit_m <= limit_m

    # -- step ------------------------------------------------------------------------------

    def _advance(self, dt_s: float) -> np.ndarray:
        rng = self.rng
        self._step_gains(dt_s)
        self._drift_arrival_rate(dt_s)
        ou_advance(self.speed_noise, *self._speed_noise_ou, rng)
        self._run_drive()
        speed = self._belt_speed_mps()
        travel_m = speed * dt_s
        self._move_items(dt_s, travel_m)
        self.odometer_m += travel_m
        self._update_load()
        self._heat_bearing()

        row = self.ROW
        out = np.empty((len(self.SENSORS), self.count))
        out[row["belt_speed"]] = speed
        load = out[row["motor_load"]]
        rng.standard_normal(out=load)
        load *= MOTOR_LOAD_NOISE_PCT
        load *= self.drive_ratio  # a drive at standstill reads 0
        load += self.motor_load_pct
        bearing = out[row["bearing_temperature"]]
        rng.random(self.count, out=bearing)
        bearing -= 0.5
        bearing *= BEARING_ADC_STEP_K
        bearing += self.bearing_c
        out[row["items_processed"]] = self.items_processed
        self._read_vibration(out[row["vibration_bearing"]])
        return out

"""A vectorised 3-axis CNC mill running a pocketing program: spindle, tool heat, axes, vibration.

Every instance loops the same program shape (rapid in, plunge, zig-zag passes at several depths,
retract, rapid home, dwell for the part change) with its own dimensions, feeds and speeds. The
current move of each instance is a segment index plus the time spent in it; a move that is a feed
move in material sets the cutting load (spindle power used / rated power, 0..1) that drives the
spindle's speed dip, the tool's heating and the spindle vibration.

Mills work in batches of parts: a run period ends at the end of a program cycle (the mill
waits at home, spindle stopped), then an idle gap follows. A stop command or a fault is a
feed hold: the axes stop where they are and the spindle runs down. The tool wears while it
cuts, at a rate set by Taylor's tool life for its cutting speed; a worn tool needs more power
(more spindle dip and heat) and chatters (more vibration). The controller changes the tool at
the end of the cycle in which its tool-life counter expires (the ``tool_changes`` sensor counts
the changes, those at maintenance included); a tool that wears out before that fails the machine.
"""

from __future__ import annotations

import numpy as np

from simulation.models.base import MachineModel
from simulation.signals import first_order_lag, lag_gain, uniform
from simulation.spec import DutyCycle, SensorSpec


class Move:
    """Codes for the kind of a program segment; the kinds that remove material carry a load."""

    RAPID = 0  # G0 positioning in air
    PLUNGE = 1  # G1 down in z at plunge feed, full tool diameter in material
    CUT = 2  # G1 zig-zag pass at the programmed feed, radial engagement = stepover
    SLOT = 3  # G1 at full width: the first pass of a depth level and the stepover moves
    DWELL = 4  # standing at home with the spindle running: part change, probing
    KINDS = 5  # how many kinds there are (not a kind)


ZIGZAG_LINES = 8  # passes per depth level
DEPTH_LEVELS = 3  # depth steps per pocket
MIN_SEGMENT_S = 1e-3  # floor for a segment's duration, so every segment consumes time
VIBRATION_LOG_SIGMA = 0.15  # spread of successive RMS readings (lognormal)
VIBRATION_FLOOR_MM_S = 0.02  # sensor noise floor, mm/s RMS
SPINDLE_NOISE_FRACTION = 5e-4  # speed read-out jitter (std) as a fraction of the speed
JITTER_SPAN = SPINDLE_NOISE_FRACTION * np.sqrt(12.0)  # width of the uniform jitter, per rpm
SPINDLE_FLOOR_RPM = 1e-6  # a stopped spindle's speed decays to this, never to subnormal floats
TAYLOR_N = 0.4  # Taylor exponent of the coated carbide end mills (V * T^n = C)
TAYLOR_C_M_MIN = (2_400.0, 3_000.0)  # Taylor constant per mill (tool grade, coolant, alloy)
TOOL_LIFE_LOG_STD = 0.1  # tool-to-tool scatter of the life around Taylor's (lognormal)
TOOL_CHANGE_AT = 0.8  # the controller changes the tool after this share of its Taylor life
FORCE_WEAR_GAIN = 0.6  # a worn-out tool (flank wear 0.3 mm) needs 60 % more cutting power
HEAT_WEAR_GAIN = 0.3  # ... and rubs: 30 % more temperature rise for the same power
VIBRATION_WEAR_GAIN = 1.5  # ... and chatters: 2.5x the cutting vibration
TOOL_WEAR_FAULT_GAIN = 9.0  # accelerated tool wear of severity 1: the tool wears 10x faster
BREAKAGE_FORCE_GAIN = 0.5  # a broken edge of severity 1: 50 % more cutting power,
BREAKAGE_VIBRATION_GAIN = 2.0  # ... and 3x the cutting vibration (run-out of the flutes)
OVERHEAT_GAIN = 1.0  # overheating of severity 1 (coolant lost) doubles the tool's rise
BEARING_VIBRATION_MM_S = 5.0  # spindle bearing defect of severity 1, at the set speed (~ speed)
IMBALANCE_VIBRATION_MM_S = 6.0  # spindle imbalance of severity 1, at the set speed (~ speed^2)


def _pocket_program() -> tuple[np.ndarray, np.ndarray]:
    """The program shared by all instances: segment kinds and start/end waypoint matrices.

    A waypoint ``(pocket, x_frac, y_frac, safe, clear, level)`` stands for the point
    ``x = pocket*x0 + x_frac*path_length``, ``y = pocket*y0 + y_frac*path_width``,
    ``z = safe*safe_z + clear*clearance_z - level*depth_per_level``; home is ``(0, 0, safe_z)``.
    Each is a ``(3, 7)`` matrix acting on an instance's program vector
    ``(x0, path_length, y0, path_width, safe_z, clearance_z, depth_per_level)``.
    """
    home = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0)

    def at(
        x: float, y: float, *, safe: float = 0.0, clear: float = 0.0, level: float = 0.0
    ) -> tuple[float, ...]:
        """A point in the pocket at fractions ``x``, ``y`` of the path."""
        return (1.0, x, y, safe, clear, level)

    moves = [(Move.RAPID, at(0.0, 0.0, safe=1.0))]
    x = 0.0
    for level in range(1, DEPTH_LEVELS + 1):
        moves.append((Move.RAPID, at(0.0, 0.0, clear=1.0, level=level - 1)))
        moves.append((Move.PLUNGE, at(0.0, 0.0, level=level)))
        x = 0.0
        for line in range(ZIGZAG_LINES):
            y = line / (ZIGZAG_LINES - 1)
            if line:
                moves.append((Move.SLOT, at(x, y, level=level)))
            x = 1.0 - x
            moves.append((Move.SLOT if line == 0 else Move.CUT, at(x, y, level=level)))
        moves.append((Move.RAPID, at(x, 1.0, clear=1.0)))
        if level < DEPTH_LEVELS:
            moves.append((Move.RAPID, at(0.0, 0.0, clear=1.0)))
    moves.append((Move.RAPID, at(x, 1.0, safe=1.0)))
    moves.append((Move.RAPID, home))
    moves.append((Move.DWELL, home))

    def matrix(point: tuple[float, ...]) -> list[list[float]]:
        pocket, x_frac, y_frac, safe, clear, level = point
        return [
            [pocket, x_frac, 0.0, 0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, pocket, y_frac, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, safe, clear, -level],
        ]

    kinds = np.array([kind for kind, _ in moves], dtype=np.int64)
    ends = [matrix(point) for _, point in moves]
    starts = ends[-1:] + ends[:-1]
    return kinds, np.concatenate([np.array(starts), np.array(ends)], axis=1)


_KINDS, _SEGMENT_POINTS = _pocket_program()  # (segments,), (segments, 6 = start xyz + end xyz, 7)
SEGMENT_COUNT = len(_KINDS)
_NEXT = np.roll(np.arange(SEGMENT_COUNT), -1)


class CncMill(MachineModel):
    """A 3-axis mill pocketing aluminium parts in a loop, 12,000-24,000 rpm high-speed spindle."""

    TYPE_NAME = "cnc_mill"
    SENSORS = (
        SensorSpec(
            name="spindle_speed",
            unit="rpm",
            description="Measured spindle speed; dips a few percent under cutting load, "
            "0 when stopped",
            typical_min=0,
            typical_max=24_100,
            decimals=0,
            grafana_unit="rotrpm",
        ),
        SensorSpec(
            name="tool_temperature",
            unit="°C",
            description="Tool shank temperature; heats while cutting, cools on rapids and dwells",
            typical_min=20,
            typical_max=230,
            decimals=1,
            warning=260.0,
            alarm=320.0,
            grafana_unit="celsius",
        ),
        SensorSpec(
            name="axis_x_position",
            unit="mm",
            description="X axis position in the work coordinate system",
            typical_min=0,
            typical_max=350,
            decimals=3,
            grafana_unit="lengthmm",
        ),
        SensorSpec(
            name="axis_y_position",
            unit="mm",
            description="Y axis position in the work coordinate system",
            typical_min=0,
            typical_max=150,
            decimals=3,
            grafana_unit="lengthmm",
        ),
        SensorSpec(
            name="axis_z_position",
            unit="mm",
            description="Z axis position; 0 is the part's top face, negative inside the part",
            typical_min=-20,
            typical_max=75,
            decimals=3,
            grafana_unit="lengthmm",
        ),
        SensorSpec(
            name="vibration_spindle",
            unit="mm/s",
            description="Spindle housing vibration velocity, RMS; rises with cutting load "
            "(thresholds: ISO 10816 zones C and D of a class II machine)",
            typical_min=0,
            typical_max=4.5,
            decimals=2,
            warning=2.8,
            alarm=7.1,
            grafana_unit="suffix: mm/s",
        ),
        SensorSpec(
            name="tool_changes",
            unit="changes",
            description="Tool changes since start: by the controller's tool-life management and "
            "at each maintenance; never decreases",
            typical_min=0.0,
            typical_max=100.0,
            decimals=0,
            integer=True,
        ),
    )
    PHYSICAL_FAULTS = (
        "overheating",
        "bearing_defect",
        "tool_wear",
        "tool_breakage",
        "spindle_imbalance",
    )
    INSTANT_FAULTS = frozenset({"tool_breakage"})
    DUTY = DutyCycle(run_s=(1200.0, 5400.0), idle_s=(120.0, 1200.0), maintenance_s=(600.0, 1800.0))

    def _setup(self) -> None:
        self._draw_parameters()
        self._init_path()
        self._spindle_rpm = self.spindle_setpoint_rpm.copy()
        self._tool_temperature_c = self.ambient_c.copy()
        self._gain_dt_s = np.nan
        self._spindle_gain = np.zeros(self.count)
        self._tool_gain = np.zeros(self.count)
        self._init_condition()

    # --- parameters -------------------------------------------------------------------------

    def _draw_parameters(self) -> None:
        """Each instance's machine, tool, program and thermal parameters."""
        n, rng = self.count, self.rng
        self.ambient_c = uniform(rng, 20.0, 28.0, n)
        # Spindle and tool: N = 1000 * Vc / (pi * D), so the cutting speed follows from N and D.
        self.spindle_setpoint_rpm = uniform(rng, 12_000.0, 24_000.0, n)
        self.tool_diameter_mm = uniform(rng, 8.0, 12.0, n)
        self.cutting_speed_m_min = np.pi * self.tool_diameter_mm * self.spindle_setpoint_rpm / 1000
        self.spindle_power_w = uniform(rng, 800.0, 1_500.0, n)
        self.spindle_tau_s = uniform(rng, 0.1, 0.4, n)
        self.spindle_droop_full_load = uniform(rng, 0.04, 0.08, n)
        self.specific_cutting_energy_j_mm3 = uniform(rng, 0.6, 0.9, n)  # aluminium alloys
        # Program: feeds, rapids and the pocket's geometry.
        self.feed_mm_min = uniform(rng, 800.0, 2_000.0, n)
        self.plunge_feed_mm_min = self.feed_mm_min * uniform(rng, 0.25, 0.5, n)
        self.rapid_mm_min = uniform(rng, 5_000.0, 15_000.0, n)
        self.stepover_mm = self.tool_diameter_mm * uniform(rng, 0.3, 0.5, n)
        self.depth_per_level_mm = self.tool_diameter_mm * uniform(rng, 0.3, 0.5, n)
        self.pocket_length_mm = uniform(rng, 80.0, 200.0, n)
        self.pocket_x_mm = uniform(rng, 20.0, 150.0, n)
        self.pocket_y_mm = uniform(rng, 20.0, 100.0, n)
        self.safe_z_mm = uniform(rng, 25.0, 75.0, n)
        self.clearance_z_mm = uniform(rng, 1.0, 5.0, n)
        self.dwell_s = uniform(rng, 10.0, 40.0, n)
        # Tool heat and vibration.
        self.tool_tau_s = uniform(rng, 20.0, 90.0, n)
        self.tool_rise_full_load_c = uniform(rng, 180.0, 220.0, n)
        self.vibration_idle_mm_s = uniform(rng, 0.3, 0.6, n)
        self.vibration_full_load_mm_s = uniform(rng, 1.5, 2.5, n)
        # Derived program quantities.
        self._program_vector = np.stack(
            [
                self.pocket_x_mm,
                self.pocket_length_mm - self.tool_diameter_mm,  # tool-centre path
                self.pocket_y_mm,
                (ZIGZAG_LINES - 1) * self.stepover_mm,
                self.safe_z_mm,
                self.clearance_z_mm,
                self.depth_per_level_mm,
            ],
            axis=1,
        )
        self._droop_rpm = self.spindle_droop_full_load * self.spindle_setpoint_rpm
        self._move_table = self._build_move_table()

    def _build_move_table(self) -> np.ndarray:
        """Per instance and move kind ``(count, kinds, 3)``: s per mm, fixed s, cutting load.

        A move lasts ``length * s_per_mm + fixed_s``: moves have no fixed time, a dwell (zero
        length) is all fixed time.
        """
        feed = self.feed_mm_min / 60
        plunge = self.plunge_feed_mm_min / 60
        rapid = self.rapid_mm_min / 60
        s_per_mm = 1.0 / np.stack([rapid, plunge, feed, feed, rapid], axis=1)
        fixed_s = np.zeros((self.count, Move.KINDS))
        fixed_s[:, Move.DWELL] = self.dwell_s
        depth = self.depth_per_level_mm
        diameter = self.tool_diameter_mm
        # A plunge starts at the clearance height: only the last `depth` of it is in material.
        plunge_in_material = depth / (depth + self.clearance_z_mm)
        removal_mm3_s = np.stack(
            [
                np.zeros(self.count),
                np.pi / 4 * diameter**2 * plunge * plunge_in_material,
                self.stepover_mm * depth * feed,
                diameter * depth * feed,
                np.zeros(self.count),
            ],
            axis=1,
        )
        power_w = self.specific_cutting_energy_j_mm3[:, None] * removal_mm3_s
        load = np.minimum(power_w / self.spindle_power_w[:, None], 1.0)
        return np.stack([s_per_mm, fixed_s, load], axis=2)

    # --- tool path ----------------------------------------------------------------------------

    def _init_path(self) -> None:
        """Start every instance at a random point of its program, so the fleet is not in step."""
        n = self.count
        self._segment = np.zeros(n, dtype=np.int64)
        self._segment_time_s = np.zeros(n)
        self._segment_duration_s = np.zeros(n)
        self._segment_motion = np.zeros((6, n))  # start x, y, z (mm); velocity x, y, z (mm/s)
        self._segment_load = np.zeros(n)
        everyone = np.arange(n)
        self._cycle_s = np.zeros(n)
        self._cycle_load_s = np.zeros(n)  # integral of the cutting load over a cycle
        self._cycle_cutting_s = np.zeros(n)  # time in material per cycle
        for segment in range(SEGMENT_COUNT):
            duration_s, load = self._enter_segment(everyone, np.full(n, segment, dtype=np.int64))
            self._cycle_s += duration_s
            self._cycle_load_s += duration_s * load
            self._cycle_cutting_s += duration_s * (load > 0)
        self._enter_segment(everyone, self.rng.integers(0, SEGMENT_COUNT, n))
        self._segment_time_s = self._segment_duration_s * self.rng.random(n)
        self._cutting_load = self._segment_load.copy()

    def _enter_segment(self, idx: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Put instances ``idx`` at the start of ``segment``; return its duration and load."""
        kind = _KINDS[segment]
        motion = (_SEGMENT_POINTS[segment] @ self._program_vector[idx, :, None])[:, :, 0]
        delta = motion[:, 3:]  # end minus start, then divided by the duration: velocity
        delta -= motion[:, :3]
        s_per_mm, fixed_s, load = self._move_table[idx, kind].T
        duration_s = np.sqrt(np.einsum("ij,ij->i", delta, delta)) * s_per_mm + fixed_s
        np.maximum(duration_s, MIN_SEGMENT_S, out=duration_s)
        delta /= duration_s[:, None]
        self._segment[idx] = segment
        self._segment_duration_s[idx] = duration_s
        self._segment_motion[:, idx] = motion.T
        self._segment_load[idx] = load
        return duration_s, load

    def _advance_path(self, dt_s: float) -> None:
        """Move every running instance ``dt_s`` along its program; set the step's mean load."""
        running = self.operation.running
        advance_s = running * dt_s
        self._segment_time_s += advance_s
        np.multiply(self._segment_load, running, out=self._cutting_load)
        crossed = (self._segment_time_s >= self._segment_duration_s).nonzero()[0]
        if crossed.size:
            self._cross_segments(crossed, dt_s)

    def _cross_segments(self, idx: np.ndarray, dt_s: float) -> None:
        """Carry instances ``idx`` over the segment ends they reached, as many as ``dt_s`` covers.

        The step's mean load is corrected by the time spent in each later segment. Whole program
        cycles inside one step are skipped (fmod), so the loop runs at most about SEGMENT_COUNT
        times (each time over the instances still crossing): every segment lasts > 0. A mill
        that ends its cycle here changes its tool if due, and stops at home if its run is over.
        """
        excess_s = np.fmod(
            self._segment_time_s[idx] - self._segment_duration_s[idx], self._cycle_s[idx]
        )
        old_load = self._segment_load[idx]
        while True:
            segment = _NEXT[self._segment[idx]]
            duration_s, load = self._enter_segment(idx, segment)
            self._cutting_load[idx] += (load - old_load) * (excess_s / dt_s)
            inside = excess_s < duration_s
            wrapped = (segment == 0).nonzero()[0]
            if wrapped.size:
                halted = wrapped[self._end_cycle(idx[wrapped])]
                inside[halted] = True
                excess_s[halted] = 0.0
            if inside.all():
                self._segment_time_s[idx] = excess_s
                return
            self._segment_time_s[idx[inside]] = excess_s[inside]
            onward = ~inside
            excess_s = excess_s[onward] - duration_s[onward]
            old_load = load[onward]
            idx = idx[onward]

    def _end_cycle(self, idx: np.ndarray) -> np.ndarray:
        """Instances ``idx`` finished a program cycle: change due tools; which of them stop here.

        Like a controller's tool-life management, a tool whose counter would expire during the
        next cycle is changed before it starts.
        """
        due = self.wear.usage_s[idx] + self._cycle_s[idx] >= self._tool_change_at_s[idx]
        if due.any():
            self._change_tools(idx[due])
        halted = self._finishing[idx]
        if halted.any():
            self._finishing[idx[halted]] = False
            self.operation.go_idle(idx[halted], self.time_s)
        return halted

    def _change_tools(self, idx: np.ndarray) -> None:
        """Put new, cold tools in ``idx`` (counted); the faults of the old tools go with them."""
        self.tool_changes[idx] += 1
        self.wear.renew(idx, self._new_life_s(idx))
        self._tool_temperature_c[idx] = self.ambient_c[idx]
        self.faults.clear(idx, ("tool_wear", "tool_breakage"))
        self._renewed(idx)

    # --- condition -----------------------------------------------------------------------------

    def _init_condition(self) -> None:
        """Taylor tool lives, the tool-wear driver (cutting load) and the factors that wear and
        faults set."""
        n = self.count
        self.taylor_c_m_min = uniform(self.events, *TAYLOR_C_M_MIN, n)
        # Taylor: V * T^n = C, T in minutes of cutting at the cutting speed V (m/min).
        self.tool_life_min = (self.taylor_c_m_min / self.cutting_speed_m_min) ** (1 / TAYLOR_N)
        cutting_share = self._cycle_cutting_s / self._cycle_s
        self._nominal_life_s = 60.0 * self.tool_life_min / cutting_share  # running seconds
        self._tool_change_at_s = TOOL_CHANGE_AT * self._nominal_life_s
        # The tool wears with the cutting load: a running second at the cycle-mean load is one
        # usage second.
        self._wear_driver_nominal = self._cycle_load_s / self._cycle_s
        self.tool_changes = np.zeros(n, dtype=np.int64)
        self._finishing = np.zeros(n, dtype=bool)
        self._force_factor = np.zeros(n)
        self._tool_rise_c = np.zeros(n)
        self._vibration_cut_mm_s = np.zeros(n)
        self._vibration_per_rpm = np.zeros(n)
        self._imbalance_per_rpm2 = np.zeros(n)
        self._imbalanced = np.empty(0, dtype=np.int64)

    def _new_life_s(self, idx: np.ndarray) -> np.ndarray:
        scatter = np.exp(TOOL_LIFE_LOG_STD * self.events.standard_normal(idx.size))
        return self._nominal_life_s[idx] * scatter

    def _update_factors(self, idx: np.ndarray | slice) -> np.ndarray:
        """Tool wear and faults, as force, heat, vibration and wear-rate factors of ``idx``."""
        worn = 1.0 - self.health[idx]
        # In PHYSICAL_FAULTS order:
        heat, bearing, tool_wear, breakage, imbalance = self.faults.intensity[:, idx]
        self._force_factor[idx] = 1.0 + FORCE_WEAR_GAIN * worn + BREAKAGE_FORCE_GAIN * breakage
        self._tool_rise_c[idx] = (
            self.tool_rise_full_load_c[idx]
            * (1.0 + HEAT_WEAR_GAIN * worn)
            * (1.0 + OVERHEAT_GAIN * heat)
        )
        self._vibration_cut_mm_s[idx] = self.vibration_full_load_mm_s[idx] * (
            1.0 + VIBRATION_WEAR_GAIN * worn + BREAKAGE_VIBRATION_GAIN * breakage
        )
        setpoint = self.spindle_setpoint_rpm[idx]
        self._vibration_per_rpm[idx] = (
            self.vibration_idle_mm_s[idx] + BEARING_VIBRATION_MM_S * bearing
        ) / setpoint
        self._imbalance_per_rpm2[idx] = IMBALANCE_VIBRATION_MM_S * imbalance / setpoint**2
        self._imbalanced = np.flatnonzero(self._imbalance_per_rpm2)
        return 1.0 + TOOL_WEAR_FAULT_GAIN * tool_wear

    def _end_run(self, idx: np.ndarray) -> None:
        """The mill finishes the part it is cutting, then waits at home."""
        self._finishing[idx] = True

    def _stop_cycle(self, idx: np.ndarray) -> None:
        self._finishing[idx] = False

    def _on_fault(self, instance: int, kind: str, severity: float) -> None:
        """A broken edge takes ``severity`` of the tool's remaining life at once."""
        if kind == "tool_breakage":
            usage = self.wear.usage_s[instance]
            self.wear.usage_s[instance] = usage + severity * (self.wear.life_s[instance] - usage)

    def _on_maintain(self, idx: np.ndarray) -> None:
        """Maintenance puts a new tool in, too (counted)."""
        self.tool_changes[idx] += 1
        self._tool_temperature_c[idx] = self.ambient_c[idx]

    # --- physics ------------------------------------------------------------------------------

    def _lag_gains(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Exact first-order gains (spindle, tool) for ``dt_s``; recomputed only when dt changes."""
        if dt_s != self._gain_dt_s:
            self._gain_dt_s = dt_s
            self._spindle_gain = np.asarray(lag_gain(dt_s, self.spindle_tau_s))
            self._tool_gain = np.asarray(lag_gain(dt_s, self.tool_tau_s))
        return self._spindle_gain, self._tool_gain

    def _update_spindle(self, load: np.ndarray, dt_s: float) -> None:
        """Speed lags toward the setpoint minus a droop proportional to the load; 0 if stopped."""
        target = self._droop_rpm * load
        np.subtract(self.spindle_setpoint_rpm, target, out=target)
        target *= self.operation.running
        first_order_lag(self._spindle_rpm, target, self._lag_gains(dt_s)[0])
        np.maximum(self._spindle_rpm, SPINDLE_FLOOR_RPM, out=self._spindle_rpm)

    def _update_tool_temperature(self, sqrt_load: np.ndarray, dt_s: float) -> None:
        """Tool heats toward ``ambient + rise * sqrt(load)``; at no load it cools."""
        target = self._tool_rise_c * sqrt_load + self.ambient_c
        first_order_lag(self._tool_temperature_c, target, self._lag_gains(dt_s)[1])

    def _read_spindle_speed(self, out: np.ndarray) -> None:
        """Measured speed: spindle speed plus encoder jitter (uniform, std 0.05 % of the speed)."""
        jitter = (self.rng.random(self.count) - 0.5) * self._spindle_rpm * JITTER_SPAN
        np.add(jitter, self._spindle_rpm, out=out)

    def _read_vibration(self, sqrt_load: np.ndarray, out: np.ndarray) -> None:
        """RMS velocity: idle level (scales with speed) plus a cutting term, lognormal scatter.

        A spindle imbalance adds a 1x-rate component growing with the speed squared.
        """
        np.multiply(self._spindle_rpm, self._vibration_per_rpm, out=out)
        out += self._vibration_cut_mm_s * sqrt_load
        if self._imbalanced.size:
            rpm = self._spindle_rpm[self._imbalanced]
            out[self._imbalanced] += self._imbalance_per_rpm2[self._imbalanced] * rpm * rpm
        scatter = self.rng.standard_normal(self.count)
        scatter *= VIBRATION_LOG_SIGMA
        np.exp(scatter, out=scatter)
        out *= scatter
        out += VIBRATION_FLOOR_MM_S

    def _read_positions(self, out: np.ndarray) -> None:
        """Axis positions ``(3, count)``: segment start plus velocity times time in segment."""
        np.multiply(self._segment_motion[3:], self._segment_time_s, out=out)
        out += self._segment_motion[:3]

    # --- public -------------------------------------------------------------------------------

    @property
    def cutting_load(self) -> np.ndarray:
        """Mean cutting load (0..1, spindle power used / rated) over the last step, a copy."""
        return self._cutting_load.copy()

    @property
    def move(self) -> np.ndarray:
        """Kind of the move each instance is in now (codes of :class:`Move`), a new array."""
        return _KINDS[self._segment]

    def _advance(self, dt_s: float) -> np.ndarray:
        self._advance_path(dt_s)
        self.wear.usage_s += self._cutting_load * self._usage_rate * dt_s
        load = self._cutting_load * self._force_factor  # the load the tool's condition needs
        self._update_spindle(load, dt_s)
        sqrt_load = np.sqrt(load)  # heat and vibration grow sub-linearly with the load
        self._update_tool_temperature(sqrt_load, dt_s)
        row = self.ROW
        out = np.empty((len(self.SENSORS), self.count))
        self._read_spindle_speed(out[row["spindle_speed"]])
        out[row["tool_temperature"]] = self._tool_temperature_c
        self._read_positions(out[row["axis_x_position"] : row["axis_z_position"] + 1])
        self._read_vibration(sqrt_load, out[row["vibration_spindle"]])
        out[row["tool_changes"]] = self.tool_changes
        return out

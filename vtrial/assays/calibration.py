r"""Calibrating a functional assay's unknown parameter to a target IC50, with optax.

The parameter $\theta$ named in the config's `[calibration]` table (e.g. the anakinra Ki
at the human receptor, or the transducer ratio $\tau$) is chosen so that the response at
$I_{tot} = c$ lies exactly halfway between the response without anakinra (top) and with
the receptor fully blocked (bottom):

$$r(\theta) = \operatorname{logit} \frac{C(c; \theta) - C_{bottom}(\theta)}
                                         {C_{top}(\theta) - C_{bottom}(\theta)} = 0 .$$

Each evaluation solves three wells (no anakinra, anakinra at $c$, no IL-1β) with diffrax;
$r$ is minimised in $r^2$ by optax L-BFGS on $\log\theta$ (`logit` for `fu_plasma`)
through `vtrial.estimation.least_squares.fit_least_squares`, gradients through the solve
(`vtrial.assays._ode.well_readout`).

The midpoint concentration of a curve that is not exactly logistic (kinetics, the
whole-blood sink) differs slightly from the IC50 of a four-parameter logistic fitted to it,
which is what the assay reports. So the calibration is repeated with
$c \leftarrow c \cdot \mathrm{target}/\mathrm{IC50}_{4PL}$ until the 4PL IC50 of the
simulated noise-free curve is within `rtol` of the target (usually one or two rounds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import jax.numpy as jnp
import numpy as np

from vtrial.assays._ode import well_readout
from vtrial.assays.functional import MODEL_NAMES, fit_functional, functional_model, model_parameters, simulate_functional
from vtrial.assays.specs import CALIBRATABLE, FunctionalSpec
from vtrial.errors import SpecError
from vtrial.estimation.least_squares import fit_least_squares


def _cytokine(y, p):
    return y[3]


#: The calibrated value is searched within this factor of the config's value (both ways);
#: `fu_plasma` within (1e-6, 1]. A target outside what the bracket can reach is reported
#: as such, in bounded time, instead of driving the solve to absurd values.
BRACKET_FACTOR = 1e4


@lru_cache(maxsize=None)
def _residual(model_name: str):
    # One module-level residual per calibratable parameter, so each compiles once. The
    # parameter is theta = exp(log_lo + z (log_hi - log_lo)), z in (0, 1): the bracket.
    def residual(params, data):
        theta = jnp.exp(data["log_lo"] + params["z"] * (data["log_hi"] - data["log_lo"]))
        v = well_readout(functional_model(), _cytokine, model_name)(theta, data["wells"], data["t_end"])
        frac = (v[1] - v[2]) / (v[0] - v[2])
        return jnp.reshape(jnp.log(frac) - jnp.log1p(-frac), (1,))

    return residual


def bracket(parameter: str, value: float) -> tuple[float, float]:
    """The interval `calibrate` searches for `parameter`, around its config value."""
    if parameter == "fu_plasma":
        return 1e-6, 1.0
    return value / BRACKET_FACTOR, value * BRACKET_FACTOR


@dataclass(frozen=True)
class CalibrationResult:
    """Outcome of `calibrate`: the parameter (config name), its calibrated value, the
    target and achieved 4PL IC50 (nM), and one `(midpoint_conc_nm, value, ic50_nm)` per round."""

    parameter: str
    value: float
    initial: float
    target_ic50_nm: float
    ic50_nm: float
    rounds: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def relative_error(self) -> float:
        return self.ic50_nm / self.target_ic50_nm - 1.0


def calibrate(spec: FunctionalSpec, *, rtol: float = 1e-3, max_rounds: int = 5) -> CalibrationResult:
    """Calibrate `spec.calibration.parameter` so the simulated 4PL IC50 is the target.

    Starts from the config's current value and searches `bracket(parameter, value)`.
    **Raises** `SpecError`, naming the bracket, if the target cannot be reached in it (e.g.
    a Ki-limited IC50 below the Ki, or a target typed in the wrong unit) or the optimiser
    fails; the search is bounded (`max_rounds` rounds of at most 200 steps).
    """
    cal = spec.calibration
    if cal.parameter not in CALIBRATABLE:
        raise SpecError("calibration.parameter", f"must be one of {', '.join(CALIBRATABLE)}")
    name = MODEL_NAMES[cal.parameter]
    residual = _residual(name)
    params = spec.parameters
    value = initial = float(getattr(params, cal.parameter))
    lo, hi = bracket(cal.parameter, initial)
    bounds = {"log_lo": np.log(lo), "log_hi": np.log(hi)}
    c = cal.target_ic50_nm
    rounds = []
    ic50 = float("nan")
    for _ in range(max_rounds):
        wells = model_parameters(params, [0.0, c, 0.0])
        wells["l_tot"][2] = 0.0
        del wells[name]
        data = {"wells": wells, "t_end": float(spec.incubation_h), **bounds}
        # The midpoint must be crossed inside the bracket: the residual changes sign there.
        ends = [float(residual({"z": z}, data)[0]) for z in (0.0, 1.0)]
        if not (np.all(np.isfinite(ends)) and ends[0] * ends[1] < 0):
            raise SpecError(f"calibration.{cal.parameter}", (
                f"no value of {cal.parameter} in [{lo:.4g}, {hi:.4g}] (the config value x/÷ {BRACKET_FACTOR:g}) puts "
                f"the curve midpoint at {c:.4g} nM (target IC50 {cal.target_ic50_nm:.4g} nM); "
                "check the target's unit (nM) and the assumed parameters: a competitive antagonist's IC50 cannot "
                "fall below its Ki"))
        z0 = float(np.clip(np.log(value / lo) / np.log(hi / lo), 1e-6, 1 - 1e-6))
        fit = fit_least_squares(residual, {"z": z0}, data=data, transforms={"z": "logit"}, tol=1e-12, steps=200)
        z = float(fit.estimates["z"])
        value = float(lo * (hi / lo) ** z)
        if not (np.isfinite(value) and abs(float(fit.objective)) < 1e-8):
            raise SpecError(f"calibration.{cal.parameter}",
                            f"no value in [{lo:.4g}, {hi:.4g}] puts the curve midpoint at {c:.4g} nM (best {value:.4g}, "
                            f"residual {fit.objective:.3g}); check the assumed parameters")
        params = params.model_copy(update={cal.parameter: value})
        plate = simulate_functional(spec, typical=True, parameters=params)
        ic50 = fit_functional(spec, plate).ic50_nm
        rounds.append((c, value, ic50))
        if abs(ic50 / cal.target_ic50_nm - 1.0) <= rtol:
            break
        c *= cal.target_ic50_nm / ic50
    return CalibrationResult(cal.parameter, value, initial, cal.target_ic50_nm, ic50, rounds)

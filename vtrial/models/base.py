"""Models as data plus a right-hand side.

A `Model` declares its states, parameters, covariates, dose routes, observables and
parameter-timed events (e.g. a disease onset), and one pure JAX function for the
vector field of a single animal. Everything that varies per animal (parameters,
covariates, dose records) is passed in as data, so one compiled solve serves every arm,
regimen candidate and estimation step.

The vector field has the signature `vector_field(t, y, p, rate) -> dy/dt` with
- `t`: time (h), scalar;
- `y`: state vector, shape `(n_states,)`, in the units the states declare;
- `p`: mapping of every parameter and covariate name to a scalar;
- `rate`: zero-order input currently running into each state, shape `(n_states,)`,
  in state-unit per hour (already scaled by bioavailability).

A model that does not add `rate` to its right-hand side would silently ignore
infusions, so `Model` checks at construction that its right-hand side responds to it.

A model also owns its domain facts, so generic code never needs to know them: each
observable's unit, the endpoints a trial reports by default (`Endpoint`: e.g. the
inhibition of paw swelling over days 22-28 for CIA-1) and the panels of its report figure
(`Panel`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.errors import SpecError
from vtrial.models.linear_pk import LinearPK

VectorField = Callable[[jnp.ndarray, jnp.ndarray, Mapping[str, jnp.ndarray], jnp.ndarray], jnp.ndarray]
ObservableFn = Callable[[jnp.ndarray, Mapping[str, jnp.ndarray]], jnp.ndarray]
IndividualFn = Callable[[Mapping[str, jnp.ndarray]], Mapping[str, jnp.ndarray]]


@dataclass(frozen=True)
class Parameter:
    """A structural parameter: typical value, unit, allowed closed range and source.

    `treatment`: the parameter is an intervention, not a property of the animal or its
    disease (e.g. the knockout switch `il1r_ko`): an arm that fixes it is a treated arm,
    whose inhibition endpoints are reported against the reference arm."""

    name: str
    value: float
    unit: str
    lower: float = 0.0
    upper: float = math.inf
    description: str = ""
    source: str = ""
    treatment: bool = False

    def __post_init__(self):
        if not (self.lower <= self.value <= self.upper):
            raise SpecError(
                f"parameter {self.name}",
                f"typical value {self.value} is outside its allowed range "
                f"[{self.lower}, {self.upper}]",
            )


@dataclass(frozen=True)
class State:
    """A state: name, unit and initial value (a number, or the name of a parameter)."""

    name: str
    unit: str
    initial: float | str = 0.0
    description: str = ""


@dataclass(frozen=True)
class Covariate:
    """A per-animal covariate the model reads (e.g. body weight `bw`, kg).

    - numeric (default): `positive=True` requires values > 0 (a weight, an age; what a
      power effect needs), `positive=False` takes any finite number (e.g. a centred age);
    - categorical: `levels` lists the allowed integer codes (e.g. `(0, 1)` for sex,
      `tuple(range(1, 11))` for an Apgar score); the model's `individual` function reads
      the code (`jnp.where(p["sex"] == 1, ...)`).

    `reference` is the value used where no value is given (it must itself be allowed).
    """

    name: str
    unit: str
    reference: float
    description: str = ""
    positive: bool = True
    levels: tuple[int, ...] = ()

    def __post_init__(self):
        if any(isinstance(v, bool) or not isinstance(v, int) for v in self.levels):
            raise SpecError(f"covariate {self.name}.levels", f"must be integer codes, got {self.levels!r}")
        bad, rule = self.check(np.asarray(self.reference, dtype=float))
        if bad.any():
            raise SpecError(f"covariate {self.name}.reference", f"{self.reference!r} is not allowed; {rule}")

    def check(self, values: np.ndarray) -> tuple[np.ndarray, str]:
        """(which of `values` are not allowed, the rule), host side."""
        finite = np.isfinite(values)
        if self.levels:
            return ~(finite & np.isin(values, self.levels)), f"{self.name} is categorical: one of the codes {', '.join(map(str, self.levels))}"
        if self.positive:
            return ~(finite & (values > 0)), "covariates must be finite and > 0"
        return ~finite, "covariates must be finite numbers"


@dataclass(frozen=True)
class Route:
    """A dose route: which state receives the dose, with optional bioavailability and lag.

    `bioavailability` and `lag` name parameters or covariates of the model (or are None
    for 1 and 0); a covariate is taken from each dose record's own row (NONMEM's F and
    ALAG from data items). A bolus adds `F * amount` to `state`; an infusion of a
    regimen adds `F * amount / duration` per hour over its duration (the duration is
    kept, the rate scaled); a dataset's RATE is kept and the duration scaled instead
    (NONMEM). `rate` and `duration` name the parameter or covariate that gives the
    infusion rate (mg/h) of a record with RATE = -1 and the duration (h) of one with
    RATE = -2 (NONMEM's R and D; None: such records are refused).
    """

    name: str
    state: str
    bioavailability: str | None = None
    lag: str | None = None
    rate: str | None = None
    duration: str | None = None


@dataclass(frozen=True)
class ParameterEvent:
    """An instantaneous addition at a per-animal time taken from the parameters.

    At `t = p[time]` the amount `p[amount]` is added to `state`, exactly like a lagged
    bolus (e.g. the disease onset of CIA-1).
    """

    time: str
    state: str
    amount: str


@dataclass(frozen=True)
class Observable:
    """A derived output of one state vector, with its unit (e.g. `conc_mg_per_l`, "mg/L").

    By convention the name also states the unit, since it becomes a column name."""

    name: str
    fn: ObservableFn
    description: str = ""
    unit: str = ""


#: Per-animal statistics an `Endpoint` can take of an observable over the output times.
STATISTICS = ("value", "auc", "mean", "max", "min", "tmax")


@dataclass(frozen=True)
class Endpoint:
    """A per-animal number computed from one observable.

    - `statistic`: `value` (at `start_h`; with no `start_h`, at the last output time, the
      end of the run as the config sets it), `auc` (observable unit x h), `mean`
      (time-weighted: AUC / window length), `max`, `min`, `tmax` (h; the first time of
      the maximum). A trial takes `auc`, `mean`, `max`, `min` and `tmax` from the solver,
      exactly whatever the output times (`vtrial.engine.exposure`); from sampled data
      (`vtrial.analysis.endpoints.endpoint_values` alone) they are the trapezoidal AUC and
      the largest sample;
    - `start_h`, `end_h`: the window (default: all output times); both ends are added to
      the output times;
    - `inhibition`: also report, under this name, the percent inhibition of this endpoint
      relative to the mean of the reference arm, `100 (1 - x_i / mean x_ref)`, for the
      treated arms only (doses, or a `treatment` parameter such as a knockout): for an
      untreated arm (PBS, mock infection) an inhibition means nothing and is not reported;
    - `role`: `"exposure"` or `"response"` lets a config swap the observable of every
      endpoint of that role (`[endpoints] concentration` / `response`) and the window of
      the response endpoints (`inhibition_window_days`).
    """

    name: str
    observable: str
    statistic: str
    start_h: float | None = None
    end_h: float | None = None
    inhibition: str | None = None
    role: str | None = None
    description: str = ""

    def __post_init__(self):
        where = f"endpoints.{self.name}"
        if self.statistic not in STATISTICS:
            raise SpecError(f"{where}.statistic", f"unknown statistic {self.statistic!r}; allowed: {', '.join(STATISTICS)}")
        if self.role not in (None, "exposure", "response"):
            raise SpecError(f"{where}.role", f"must be 'exposure', 'response' or none, got {self.role!r}")
        for name in ("start_h", "end_h"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                raise SpecError(f"{where}.{name}", f"must be a finite time >= 0 h, got {v!r}")
        if self.statistic == "value":
            if self.end_h is not None:
                raise SpecError(where, "a 'value' endpoint takes its time as start_h (none: the end of the run), and no end_h")
        elif self.start_h is not None and self.end_h is not None and not self.start_h < self.end_h:
            raise SpecError(where, f"the window must have start_h < end_h, got {self.start_h} and {self.end_h}")

    def unit(self, observable_unit: str) -> str:
        """The unit of this endpoint's values, given its observable's unit."""
        if self.statistic == "tmax":
            return "h"
        if self.statistic == "auc":
            return f"{observable_unit}*h" if observable_unit else "h"
        return observable_unit

    def times_h(self) -> tuple[float, ...]:
        """The window's ends (or the time of a `value`): times the output grid must contain."""
        return tuple(t for t in (self.start_h, self.end_h) if t is not None)


def standard_endpoints(
    concentration: str | None, response: str | None = None, window_h: tuple[float, float] | None = None
) -> tuple[Endpoint, ...]:
    """The usual exposure and response endpoints of a PK/PD model.

    - of `concentration`: `cmax`, `tmax_h` and `auc` over all output times (role exposure);
      the same names measure plasma in one model and a biophase in another, so
      `endpoints.csv` states each endpoint's `observable` and what it `measures`;
    - of `response`: `response_auc_window`, its AUC over `window_h`, and `inhibition_pct`,
      its inhibition relative to the reference arm (role response).
    """
    out = []
    if concentration is not None:
        out += [
            Endpoint("cmax", concentration, "max", role="exposure", description=f"peak of {concentration}"),
            Endpoint("tmax_h", concentration, "tmax", role="exposure", description=f"time of the peak of {concentration}"),
            Endpoint("auc", concentration, "auc", role="exposure", description=f"AUC of {concentration} over all output times"),
        ]
    if response is not None:
        if window_h is None:
            raise SpecError("endpoints.inhibition_window_days", f"the response endpoints of {response!r} need a window")
        out.append(
            Endpoint(
                "response_auc_window", response, "auc", window_h[0], window_h[1], inhibition="inhibition_pct",
                role="response", description="AUC of the response over the window",
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class Panel:
    """One panel of a trial's report figure: an observable and its axis label."""

    observable: str
    label: str = ""
    log_scale: bool = False


@dataclass(frozen=True, eq=False)
class Model:
    """A dynamical model of one animal (or one well), as data plus a right-hand side.

    Models compare and hash by identity, so each distinct model compiles once and is
    reused from the cache for every later call with the same shapes.
    """

    name: str
    states: tuple[State, ...]
    parameters: tuple[Parameter, ...]
    vector_field: VectorField
    observables: tuple[Observable, ...]
    routes: tuple[Route, ...] = ()
    covariates: tuple[Covariate, ...] = ()
    events: tuple[ParameterEvent, ...] = ()
    description: str = ""
    time_unit: str = "h"
    linear_pk: LinearPK | None = None
    endpoints: tuple[Endpoint, ...] = ()
    panels: tuple[Panel, ...] = ()
    report_time_unit: str = "day"
    individual: IndividualFn | None = None

    def __post_init__(self):
        _check_unique("states", [s.name for s in self.states])
        names = [p.name for p in self.parameters] + [c.name for c in self.covariates]
        _check_unique("parameters and covariates", names)
        _check_unique("observables", [o.name for o in self.observables])
        _check_unique("routes", [r.name for r in self.routes])
        object.__setattr__(self, "_derived", self._check_individual(set(names)))
        known = set(names) | set(self._derived)
        states = set(self.state_names)
        for s in self.states:
            if isinstance(s.initial, str) and s.initial not in known:
                raise SpecError(f"{self.name}.states.{s.name}.initial", f"unknown parameter {s.initial!r}")
        for r in self.routes:
            if r.state not in states:
                raise SpecError(f"{self.name}.routes.{r.name}", f"unknown state {r.state!r}")
            for ref in (r.bioavailability, r.lag, r.rate, r.duration):
                if ref is not None and ref not in known:
                    raise SpecError(f"{self.name}.routes.{r.name}", f"unknown parameter {ref!r}")
        for e in self.events:
            if e.state not in states:
                raise SpecError(f"{self.name}.events", f"unknown state {e.state!r}")
            for ref in (e.time, e.amount):
                if ref not in known:
                    raise SpecError(f"{self.name}.events", f"unknown parameter {ref!r}")
        if self.linear_pk is not None:
            for name in self.linear_pk.states:
                if name not in states:
                    raise SpecError(f"{self.name}.linear_pk", f"unknown state {name!r}")
            try:  # traced only (no values needed): a name it reads that the model lacks fails here
                jax.eval_shape(lambda p: self.linear_pk.constants(self.derive(p)), self.typical_inputs())
            except KeyError as e:
                raise SpecError(f"{self.name}.linear_pk", f"its constants read {e.args[0]!r}, which is no parameter, covariate or derived quantity") from None
        check_endpoints(self, self.endpoints, f"{self.name}.endpoints")
        for panel in self.panels:
            if panel.observable not in self.observable_names:
                raise SpecError(f"{self.name}.panels", f"unknown observable {panel.observable!r}; known: {', '.join(self.observable_names)}")
        if self.report_time_unit not in ("h", "day"):
            raise SpecError(f"{self.name}.report_time_unit", f"must be 'h' or 'day', got {self.report_time_unit!r}")
        self._check_rate_is_used()

    # -- names and lookups -------------------------------------------------------------
    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parameters)

    @property
    def covariate_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.covariates)

    @property
    def observable_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.observables)

    @property
    def derived_names(self) -> tuple[str, ...]:
        """The quantities `individual` computes (NONMEM's $PK variables), in its order."""
        return self._derived

    @property
    def n_states(self) -> int:
        return len(self.states)

    def typical_values(self) -> dict[str, float]:
        """Typical parameter values and reference covariate values."""
        out = {p.name: p.value for p in self.parameters}
        out.update({c.name: c.reference for c in self.covariates})
        return out

    def typical_inputs(self) -> dict[str, np.ndarray]:
        """`typical_values` as float64 scalars on the host, the arguments of the jitted
        checks of a model's functions at the typical values. Checks evaluate the model's
        functions inside one `jax.jit` each, never op by op: every eager JAX operation is
        a compilation of its own (tens of ms each in a new process, even from the
        persistent cache), and a model's checks would otherwise run dozens of them."""
        return {k: np.asarray(v, dtype=np.float64) for k, v in self.typical_values().items()}

    def observable(self, name: str) -> Observable:
        for o in self.observables:
            if o.name == name:
                return o
        raise SpecError(name, f"unknown observable of model {self.name}; known: {', '.join(self.observable_names)}")

    def report_panels(self) -> tuple[Panel, ...]:
        """The declared panels, or one per observable (at most three) when none are declared."""
        if self.panels:
            return self.panels
        return tuple(Panel(o.name, f"{o.name} ({o.unit})" if o.unit else o.name) for o in self.observables[:3])

    def parameter(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise SpecError(name, f"unknown parameter of model {self.name}; known: {', '.join(self.parameter_names)}")

    def state_index(self, name: str) -> int:
        try:
            return self.state_names.index(name)
        except ValueError:
            raise SpecError(name, f"unknown state of model {self.name}; known: {', '.join(self.state_names)}") from None

    def route(self, name: str) -> Route:
        for r in self.routes:
            if r.name == name:
                return r
        allowed = ", ".join(r.name for r in self.routes) or "(this model takes no doses)"
        raise SpecError("route", f"unknown route {name!r} for model {self.name}; allowed: {allowed}")

    def route_index(self, name: str) -> int:
        return self.routes.index(self.route(name))

    # -- values ------------------------------------------------------------------------
    def derive(self, p: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        """`p` (one animal's parameters, random effects applied, and covariates) with the
        quantities the model's `individual` function computes from them added: what the
        vector field, the linear PK, routes, events, initial states and observables read.
        Pure and idempotent (a derived name is recomputed from the same inputs), so it
        may be applied per record, under jit, vmap and grad."""
        if self.individual is None:
            return dict(p)
        out = dict(p)
        out.update(self.individual(p))
        return out

    def initial_state(self, p: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
        """The state vector at the start of the solve for parameters `p`."""
        return jnp.stack([jnp.asarray(p[s.initial] if isinstance(s.initial, str) else s.initial, dtype=float) for s in self.states])

    def observe(self, y: jnp.ndarray, p: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        """Observables of one state vector `y` (shape `(n_states,)`); `p` with or without
        the derived quantities (`derive`)."""
        p = self.derive(p)
        return {o.name: o.fn(y, p) for o in self.observables}

    def validate_values(self, values: Mapping[str, float], where: str) -> None:
        """Reject unknown names, non-finite values and values outside the declared ranges
        (host side). For arrays (a table's column) the first offending row is named."""
        known = {p.name: p for p in self.parameters}
        covs = set(self.covariate_names)
        for name, value in values.items():
            if name not in known and name not in covs:
                raise SpecError(
                    f"{where}.{name}",
                    f"unknown parameter of model {self.name}; known: {', '.join(self.parameter_names + self.covariate_names)}",
                )
            if isinstance(value, bool) or (isinstance(value, np.ndarray) and value.dtype == bool):
                raise SpecError(f"{where}.{name}", "must be a number, not true/false")
            try:
                arr = np.asarray(value, dtype=float)
            except (TypeError, ValueError):
                raise SpecError(f"{where}.{name}", f"must be a number, got {value!r}") from None
            if name in covs:
                bad, rule = self.covariate(name).check(arr)
            else:
                spec = known[name]
                bad = ~(np.isfinite(arr) & (arr >= spec.lower) & (arr <= spec.upper))
                rule = f"must be a finite number in [{spec.lower}, {spec.upper}] {spec.unit}"
            if np.any(bad):
                flat = np.atleast_1d(arr)
                i = int(np.flatnonzero(np.atleast_1d(bad))[0])
                row = f"row {i + 1}: " if arr.ndim else ""
                raise SpecError(f"{where}.{name}", f"{row}{flat[i]!r} is not allowed; {rule}")

    def covariate(self, name: str) -> Covariate:
        for c in self.covariates:
            if c.name == name:
                return c
        raise SpecError(name, f"unknown covariate of model {self.name}; known: {', '.join(self.covariate_names) or 'none'}")

    def _check_individual(self, inputs: set[str]) -> tuple[str, ...]:
        """The derived names: `individual` evaluated at the typical values (covariates at
        their references) must return new names mapped to finite scalars."""
        if self.individual is None:
            return ()
        where = f"{self.name}.individual"
        if not callable(self.individual):
            raise SpecError(where, "must be a function of the parameters and covariates returning a dict of derived quantities")

        names: list[str] = []  # in `individual`'s order (a dict coming out of jit is sorted by key)

        def derived(p):  # traced: the checks of names and shapes happen here, the values come back
            try:
                out = self.individual(p)
            except Exception as e:  # the model author's code: name it, whatever it raised
                raise SpecError(where, f"failed at the typical values: {type(e).__name__}: {e}") from None
            if not isinstance(out, Mapping) or not out:
                raise SpecError(where, f"must return a non-empty dict name -> value, got {type(out).__name__}")
            for k, v in out.items():
                if not isinstance(k, str) or not k:
                    raise SpecError(where, f"derived names must be strings, got {k!r}")
                if k in inputs:
                    raise SpecError(f"{where}.{k}", "is already a parameter or covariate of the model; give the derived quantity its own name")
                if jnp.shape(v) != ():
                    raise SpecError(f"{where}.{k}", f"must be a scalar for one animal, got shape {jnp.shape(v)}")
            names[:] = list(out)
            return tuple(out.values())

        values = jax.jit(derived)(self.typical_inputs())
        for k, v in zip(names, values):
            if not np.isfinite(v):
                raise SpecError(f"{where}.{k}", f"is {float(v)!r} at the typical values (covariates at their references)")
        return tuple(names)

    def _check_rate_is_used(self) -> None:
        if not self.routes:
            return
        routed = [self.state_index(r.state) for r in self.routes]

        def responses(p):  # d(dy_i/dt)/d(rate_i) for each route's state i, by a unit bump
            p = self.derive(p)
            y = self.initial_state(p)
            n = self.n_states
            base = self.vector_field(0.0, y, p, jnp.zeros(n))
            return jnp.stack([self.vector_field(0.0, y, p, jnp.zeros(n).at[i].set(1.0))[i] - base[i] for i in routed])

        for r, i, response in zip(self.routes, routed, np.asarray(jax.jit(responses)(self.typical_inputs()))):
            if not abs(response - 1.0) < 1e-9:
                raise SpecError(
                    f"{self.name}.vector_field",
                    f"must add rate[{i}] to d{r.state}/dt (infusions into route {r.name!r} would be ignored)",
                )


def check_endpoints(model: Model, endpoints, where: str) -> None:
    """Endpoints must name observables of `model` and have unique names (inhibitions too)."""
    _check_unique(where, [n for e in endpoints for n in (e.name, e.inhibition) if n is not None])
    for e in endpoints:
        if e.observable not in model.observable_names:
            raise SpecError(
                f"{where}.{e.name}.observable",
                f"unknown observable {e.observable!r}; known: {', '.join(model.observable_names)}",
            )


def _check_unique(what: str, names: list[str]) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise SpecError(what, f"name {n!r} is declared twice")
        seen.add(n)

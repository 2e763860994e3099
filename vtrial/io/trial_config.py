"""Schema of a virtual-trial config (`kind = "trial"`), and its lowering to library objects.

Every field can be overridden in the TOML without touching code: parameters, variability,
covariates, residual error, arms and their doses, output and sampling times, endpoints,
solver. See `configs/cia_rat_liu2011.toml` for a complete example.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from vtrial.design.dosing import Bolus, Infusion, Regimen
from vtrial.errors import SpecError
from vtrial.limits import MAX_ANIMALS, MAX_CV_PERCENT, MAX_DOSE_RECORDS, MAX_SEED, check_count, grid_size
from vtrial.io.config import NamesModel, Strict
from vtrial.models import Model
from vtrial.models.base import Endpoint, check_endpoints, standard_endpoints
from vtrial.design.population import CovariateDistribution, CovariateEffect, Population, ResidualError
from vtrial.engine.solve import SolverOptions
from vtrial.design.trial import Arm

NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Pos = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1, le=MAX_DOSE_RECORDS)]
Animals = Annotated[int, Field(ge=1, le=MAX_ANIMALS)]
CvPercent = Annotated[float, Field(ge=0, le=MAX_CV_PERCENT)]


class BolusSpec(Strict):
    type: Literal["bolus"]
    amount: NonNeg
    unit: str = "mg"
    route: str = "iv"
    time_h: NonNeg = 0.0
    every_h: Pos | None = None
    count: Count = 1

    def build(self) -> Bolus:
        return Bolus(self.amount, self.time_h, self.unit, self.route, self.every_h, self.count)


class InfusionSpec(Strict):
    type: Literal["infusion"]
    duration_h: Pos
    start_h: NonNeg = 0.0
    rate: NonNeg | None = None
    amount: NonNeg | None = None
    unit: str = "mg/h"
    route: str = "iv"
    every_h: Pos | None = None
    count: Count = 1

    @model_validator(mode="after")
    def _one_of(self):
        if (self.rate is None) == (self.amount is None):
            raise ValueError("give exactly one of rate (e.g. 100 with unit mg/kg/day) or amount")
        return self

    def build(self) -> Infusion:
        return Infusion(self.duration_h, self.start_h, self.rate, self.amount, self.unit, self.route, self.every_h, self.count)


DoseSpec = Annotated[BolusSpec | InfusionSpec, Field(discriminator="type")]


class ArmSpec(Strict):
    name: Annotated[str, Field(min_length=1)]
    doses: list[DoseSpec] = Field(description="the regimen; an empty list for a vehicle arm")
    animals: Animals | None = None
    parameters: dict[str, float] = Field(default={}, description="values every animal of this arm takes (e.g. a knockout switch)")


class CovariateSpec(Strict):
    median: Pos
    cv_percent: CvPercent = 0.0
    unit: str = ""


class CovariateEffectSpec(Strict):
    parameter: str
    covariate: str
    reference: Pos
    exponent: Annotated[float, Field(ge=-100, le=100)]
    # `vtrial.design.population.CovariateEffect`: power (default), linear, exponential, categorical
    shape: Literal["power", "linear", "exponential", "categorical"] = "power"
    below: bool = False


class ResidualSpec(Strict):
    additive: NonNeg = 0.0
    proportional: NonNeg = 0.0


class CorrelationSpec(Strict):
    a: str
    b: str
    r: Annotated[float, Field(gt=-1, lt=1)]


class VariabilitySpec(Strict):
    cv_percent: dict[str, CvPercent] = {}
    omega2: dict[str, Annotated[float, Field(ge=0)]] = {}  # <= MAX_OMEGA2 for exponential effects (Population.build)
    correlation: list[CorrelationSpec] = []
    # NONMEM's CL = THETA*EXP(ETA) ("exponential", default) or THETA + ETA ("additive")
    kind: dict[str, Literal["exponential", "additive"]] = {}
    # inter-occasion variances: one kappa per occasion ([occasions] start_h), same kind
    occasions: dict[str, Annotated[float, Field(ge=0)]] = {}


class OccasionsSpec(Strict):
    """A trial's occasions: occasion k holds from right after `start_h[k]` on."""

    start_h: Annotated[list[NonNeg], Field(min_length=1)]


class OutputSpec(Strict):
    end_h: Pos
    every_h: Pos = 24.0
    start_h: NonNeg = 0.0


class SamplingSpec(Strict):
    """Sampling times of one observable: explicit `times_h`, or a grid; plus `offset_h`."""

    times_h: list[NonNeg] | None = None
    start_h: NonNeg | None = None
    end_h: NonNeg | None = None
    every_h: Pos | None = None
    offset_h: NonNeg = 0.0

    @model_validator(mode="after")
    def _one_form(self):
        grid = (self.start_h, self.end_h, self.every_h)
        if self.times_h is None and None in grid:
            raise ValueError("give times_h, or start_h, end_h and every_h")
        if self.times_h is not None and any(v is not None for v in grid):
            raise ValueError("give either times_h or a grid (start_h, end_h, every_h), not both")
        return self

    def times(self, field: str = "sampling") -> np.ndarray:
        if self.times_h is not None:
            t = np.asarray(self.times_h, dtype=float)
        else:
            grid_size(field, self.start_h, self.end_h, self.every_h)
            t = np.arange(self.start_h, self.end_h + 1e-9 * self.every_h, self.every_h)
        return t + self.offset_h


class EndpointDefSpec(Strict):
    """An endpoint of the config's own: a statistic of an observable (see `vtrial.models.Endpoint`)."""

    name: Annotated[str, Field(min_length=1)]
    observable: str
    statistic: Literal["value", "auc", "mean", "max", "min", "tmax"]
    time_h: NonNeg | None = None
    start_h: NonNeg | None = None
    end_h: NonNeg | None = None
    inhibition: str | None = None

    @model_validator(mode="after")
    def _times(self):
        if self.statistic == "value" and (self.time_h is None or self.start_h is not None or self.end_h is not None):
            raise ValueError("a 'value' endpoint takes time_h (and no start_h/end_h)")
        if self.statistic != "value" and self.time_h is not None:
            raise ValueError(f"a {self.statistic!r} endpoint takes a window start_h/end_h, not time_h")
        return self

    def build(self) -> Endpoint:
        start = self.time_h if self.statistic == "value" else self.start_h
        return Endpoint(self.name, self.observable, self.statistic, start, self.end_h, self.inhibition)


class EndpointSpec(Strict):
    """Which endpoints `endpoints.csv` reports: the model's own (see its card), changed by
    `concentration` (the observable of its exposure endpoints), `response` and
    `inhibition_window_days` (observable and window of its response endpoints), plus
    `extra` ones; `model_defaults = false` keeps only the `extra` ones."""

    reference_arm: str | None = None
    inhibition_window_days: Annotated[list[NonNeg], Field(min_length=2, max_length=2)] | None = None
    concentration: str | None = None
    response: str | None = None
    model_defaults: bool = True
    extra: list[EndpointDefSpec] = []


class SolverSpec(Strict):
    method: Literal["tsit5", "dopri5", "dopri8", "kvaerno3", "kvaerno5"] = "tsit5"
    rtol: Annotated[float, Field(gt=0, lt=1)] = 1e-8
    atol: Pos = 1e-10
    max_steps: Annotated[int, Field(ge=1)] = 100_000
    dtype: Literal["float64", "float32"] = "float64"
    pk: Literal["auto", "ode"] = "auto"
    events: Literal["auto", "jumps", "split"] = "auto"
    max_step_h: Pos | None = None  # longest step (h); see SolverOptions.max_step_h

    def build(self) -> SolverOptions:
        return SolverOptions(self.method, self.rtol, self.atol, self.max_steps, self.dtype, self.pk, self.events,
                             max_step_h=self.max_step_h)


class PopulationSpec(Strict):
    """The keys that describe the animals, shared by every config that simulates them
    (trial, optimize, power): typical values, variability, covariates and their effects,
    residual error. Declared once so the three kinds cannot drift apart;
    `build_population` lowers them."""

    parameters: dict[str, float] = {}
    variability: VariabilitySpec = VariabilitySpec()
    covariates: dict[str, CovariateSpec] = {}
    covariate_effects: list[CovariateEffectSpec] = []
    residual: dict[str, ResidualSpec] = {}
    occasions: OccasionsSpec | None = None


class TrialConfig(PopulationSpec, NamesModel):
    name: str = "trial"
    description: str = ""
    model: str
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    animals_per_arm: Animals = 100
    chunk_size: Animals = 4096
    arms: Annotated[list[ArmSpec], Field(min_length=1)]
    output: OutputSpec
    sampling: dict[str, SamplingSpec] = {}
    endpoints: EndpointSpec = EndpointSpec()
    solver: SolverSpec = SolverSpec()


class BuiltTrial:
    """The library objects a `TrialConfig` lowers to (all validated, nothing compiled)."""

    def __init__(self, cfg: TrialConfig, animals_per_arm: int | None = None):
        self.cfg = cfg
        self.model: Model = cfg.load_model()
        self.population = build_population(self.model, cfg)
        if self.population.iov and not self.population.occasion_start_h:
            raise SpecError("occasions.start_h", "[variability.occasions] needs the occasions' start times: [occasions] start_h = [0, ...]")
        n = animals_per_arm or cfg.animals_per_arm
        names = [a.name for a in cfg.arms]
        if len(set(names)) != len(names):
            raise SpecError("arms", "arm names must be unique")
        self.arms = tuple(
            Arm(a.name, Regimen(tuple(d.build() for d in a.doses), f"arms.{i}"), animals_per_arm or a.animals or n, a.parameters)
            for i, a in enumerate(cfg.arms)
        )
        check_count("animals_per_arm", sum(a.n_animals for a in self.arms), MAX_ANIMALS, "animals in all arms")
        for i, arm in enumerate(self.arms):
            arm.regimen.records(self.model, f"arms.{i}")  # unit, route and mg/kg errors now, not mid-run
        self.sampling = {}
        for name, s in cfg.sampling.items():
            if name not in self.model.observable_names:
                raise SpecError(f"sampling.{name}", f"unknown observable; known: {', '.join(self.model.observable_names)}")
            t = s.times(f"sampling.{name}")
            if np.any(t > cfg.output.end_h):
                raise SpecError(f"sampling.{name}", f"times beyond output.end_h = {cfg.output.end_h} h")
            self.sampling[name] = t
        ep = cfg.endpoints
        if ep.reference_arm is not None and ep.reference_arm not in names:
            raise SpecError("endpoints.reference_arm", f"unknown arm {ep.reference_arm!r}; arms: {', '.join(names)}")
        self.endpoints = resolve_endpoints(self.model, ep)
        out = cfg.output
        for e in self.endpoints:
            late = [t for t in e.times_h() if t > out.end_h]
            if late:
                where = "endpoints.inhibition_window_days" if e.role == "response" and ep.inhibition_window_days else f"endpoints.{e.name}"
                raise SpecError(where, f"endpoint {e.name!r} needs time {late[0]:g} h, after output.end_h = {out.end_h} h")
        grid_size("output", out.start_h, out.end_h, out.every_h)
        grid = np.arange(out.start_h, out.end_h + 1e-9 * out.every_h, out.every_h)
        extra = [*self.sampling.values(), np.array([t for e in self.endpoints for t in e.times_h()] + [out.end_h])]
        self.times_h = np.unique(np.concatenate([grid, *extra]))
        self.options = cfg.solver.build()


def resolve_endpoints(model: Model, ep: EndpointSpec) -> tuple[Endpoint, ...]:
    """The model's endpoints as the config's `[endpoints]` table changes them (see `EndpointSpec`)."""
    for key in ("concentration", "response"):
        name = getattr(ep, key)
        if name is not None and name not in model.observable_names:
            raise SpecError(f"endpoints.{key}", f"unknown observable {name!r}; known: {', '.join(model.observable_names)}")
    window = None
    if ep.inhibition_window_days is not None:
        lo, hi = ep.inhibition_window_days
        if not lo < hi:
            raise SpecError("endpoints.inhibition_window_days", "must be [first_day, last_day] with first < last")
        window = (lo * 24.0, hi * 24.0)
    endpoints = list(model.endpoints) if ep.model_defaults else []
    if ep.concentration is not None:
        if any(e.role == "exposure" for e in endpoints):
            endpoints = [replace(e, observable=ep.concentration) if e.role == "exposure" else e for e in endpoints]
        else:
            endpoints = list(standard_endpoints(ep.concentration)) + endpoints
    if ep.response is not None or window is not None:
        if any(e.role == "response" for e in endpoints):
            endpoints = [
                replace(e, observable=ep.response or e.observable, start_h=window[0] if window else e.start_h,
                        end_h=window[1] if window else e.end_h) if e.role == "response" else e
                for e in endpoints
            ]
        elif ep.response is None:
            raise SpecError("endpoints.inhibition_window_days", f"model {model.name} declares no response endpoint; set endpoints.response too")
        elif window is None:
            raise SpecError("endpoints.inhibition_window_days", f"the response endpoints of {ep.response!r} need a window [first_day, last_day]")
        else:
            endpoints += list(standard_endpoints(None, ep.response, window))
    for i, e in enumerate(ep.extra):
        try:
            endpoints.append(e.build())
        except SpecError as err:
            raise SpecError(f"endpoints.extra.{i}", err.problem) from None
    check_endpoints(model, endpoints, "endpoints")
    return tuple(endpoints)


def build_population(model: Model, cfg: PopulationSpec) -> Population:
    model.validate_values(cfg.parameters, "parameters")
    unknown = [c for c in cfg.covariates if c not in model.covariate_names]
    if unknown:
        raise SpecError(f"covariates.{unknown[0]}", f"unknown covariate; model {model.name} has: {', '.join(model.covariate_names) or 'none'}")
    for k in cfg.variability.kind:
        if k not in cfg.variability.omega2 or not cfg.variability.omega2[k] > 0:
            raise SpecError(f"variability.kind.{k}", f"{k!r} has no random effect; give its variance in [variability.omega2]")
    for where, names in (("variability.cv_percent", cfg.variability.cv_percent), ("variability.omega2", cfg.variability.omega2)):
        for k in names:
            if k not in model.parameter_names:
                raise SpecError(f"{where}.{k}", f"unknown parameter of model {model.name}; known: {', '.join(model.parameter_names)}")
    population = Population.build(
        model,
        typical=cfg.parameters,
        cv_percent=cfg.variability.cv_percent,
        omega2=cfg.variability.omega2,
        correlation={(c.a, c.b): c.r for c in cfg.variability.correlation},
        additive=tuple(k for k, v in cfg.variability.kind.items() if v == "additive"),
        covariates=[CovariateDistribution(k, c.median, c.cv_percent / 100.0, c.unit) for k, c in cfg.covariates.items()],
        covariate_effects=[CovariateEffect(e.parameter, e.covariate, e.reference, e.exponent, e.shape, e.below) for e in cfg.covariate_effects],
        residual={k: ResidualError(r.additive, r.proportional) for k, r in cfg.residual.items()},
    )
    iov = {k: v for k, v in cfg.variability.occasions.items() if v > 0}
    if not iov:
        return population
    start = tuple(cfg.occasions.start_h) if cfg.occasions is not None else ()
    return replace(population, iov=iov, occasion_start_h=start)

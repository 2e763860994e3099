"""Schemas of the study-design configs: `kind = "optimize"` (dose optimisation) and
`kind = "power"` (study size), and their lowering to library objects.

Both reuse the trial config's pieces (`vtrial.io.trial_config`): model, parameters,
variability, covariates, residual, arms, output, sampling, endpoint definitions and
solver mean the same as in a trial. See `configs/cia_dose_optimization.toml` and
`configs/cia_power.toml`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from vtrial.design.gradient_search import GradientSettings
from vtrial.design.optimize import METHODS, Uncertainty
from vtrial.design.population import Population
from vtrial.design.regimen_space import RegimenSpace, interval_hours
from vtrial.design.targets import Requirement, check_requirements, requirement_times
from vtrial.errors import SpecError
from vtrial.io.config import NamesModel, Strict
from vtrial.io.trial_config import (
    Animals, ArmSpec, BuiltTrial, EndpointDefSpec, EndpointSpec, NonNeg, OutputSpec, PopulationSpec, Pos, SamplingSpec,
    SolverSpec, TrialConfig, VariabilitySpec, build_population,
)
from vtrial.limits import MAX_ANIMALS, MAX_GRID, MAX_SEED
from vtrial.models import Model

Fraction = Annotated[float, Field(gt=0, le=1)]


class _CriterionSpec(EndpointDefSpec):
    """An endpoint (as `[[endpoints.extra]]` of a trial) with a bound per animal."""

    at_least: float | None = None
    at_most: float | None = None
    relative_to_untreated: bool = Field(False, description="judge 100 (1 - x / x_untreated) of the same animal (%)")

    @model_validator(mode="after")
    def _bound(self):
        if (self.at_least is None) == (self.at_most is None):
            raise ValueError("give exactly one of at_least or at_most")
        if self.inhibition is not None:
            raise ValueError("inhibition is a trial report's key; use relative_to_untreated")
        if self.statistic == "tmax":
            raise ValueError("a time of peak is not a criterion; use value, auc, mean, max or min")
        return self

    def requirement(self, fraction: float, where: str) -> Requirement:
        try:
            return Requirement(self.name, self.build(), self.at_least, self.at_most, fraction, self.relative_to_untreated)
        except SpecError as e:
            raise SpecError(where, e.problem) from None


class TargetSpec(_CriterionSpec):
    """The response criterion per animal and the PTA to reach (share of animals)."""

    name: Annotated[str, Field(min_length=1)] = "target"
    pta: Fraction


class ConstraintSpec(_CriterionSpec):
    """An exposure constraint: a bound per animal and the share of animals that must meet it."""

    fraction: Fraction = 0.9


class SpaceSpec(Strict):
    """The regimens searched (see `vtrial.design.regimen_space`)."""

    daily_dose_mg_per_kg: Annotated[list[Pos], Field(min_length=2, max_length=2)]
    grid_points: Annotated[int, Field(ge=2, le=MAX_GRID)] = 40
    start_day: Annotated[list[NonNeg], Field(min_length=1)]
    duration_days: Annotated[list[Pos], Field(min_length=1)]
    pump_routes: list[str] = []
    bolus_routes: list[str] = []
    intervals: list[str | Pos] = ["qd"]
    loading_dose_days: list[NonNeg] = [0.0]

    def build(self) -> RegimenSpace:
        intervals = tuple(interval_hours(v, f"space.intervals.{i}") for i, v in enumerate(self.intervals))
        return RegimenSpace(
            tuple(self.daily_dose_mg_per_kg), tuple(d * 24.0 for d in self.start_day), tuple(d * 24.0 for d in self.duration_days),
            tuple(self.pump_routes), tuple(self.bolus_routes), intervals, tuple(self.loading_dose_days), self.grid_points,
        )


class GradientSpec(Strict):
    """Settings of the gradient search (defaults suit most problems; see `GradientSettings`)."""

    stages: list[Annotated[list[float], Field(min_length=2, max_length=2)]] = [[0.25, 0.05], [1.0, 0.01]]
    penalty: Pos = 20.0
    trust_radius: Pos = 0.5
    tolerance: Pos = 1e-3
    max_iterations: Annotated[int, Field(ge=1, le=MAX_GRID)] = 30
    newton_steps: Annotated[int, Field(ge=1, le=MAX_GRID)] = 10
    prune_ratio: Annotated[float, Field(ge=1)] = 1.25
    lanes_per_batch: Animals = 256

    def build(self) -> GradientSettings:
        return GradientSettings(tuple(tuple(s) for s in self.stages), self.penalty, self.trust_radius, self.tolerance,
                                self.max_iterations, self.newton_steps, self.prune_ratio, self.lanes_per_batch)


class UncertaintySpec(VariabilitySpec):
    """Uncertainty of typical values (log-normal around the config's values, as
    `[variability]`: CV%, omega^2, correlations) and how many draws to take."""

    draws: Annotated[int, Field(ge=2, le=MAX_ANIMALS)] = 50


class OptimizeConfig(PopulationSpec, NamesModel):
    name: str = "optimize"
    description: str = ""
    model: str
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    animals: Animals = 1000
    verify_animals: Animals | None = None
    chunk_size: Animals = 4096
    methods: Annotated[list[Literal["grid", "gradient"]], Field(min_length=1)] = list(METHODS)
    output: OutputSpec
    target: TargetSpec
    constraints: list[ConstraintSpec] = []
    space: SpaceSpec
    gradient: GradientSpec = GradientSpec()
    uncertainty: UncertaintySpec | None = None
    solver: SolverSpec = SolverSpec()


class BuiltOptimization:
    """The library objects an `OptimizeConfig` lowers to (validated, nothing compiled)."""

    def __init__(self, cfg: OptimizeConfig):
        self.cfg = cfg
        self.model: Model = cfg.load_model()
        self.population = build_population(self.model, cfg)
        self.space = cfg.space.build()
        self.target = cfg.target.requirement(cfg.target.pta, "target")
        self.constraints = tuple(c.requirement(c.fraction, f"constraints.{i}") for i, c in enumerate(cfg.constraints))
        self._check_requirements(cfg.output.every_h)
        self.options = cfg.solver.build()
        self.gradient = cfg.gradient.build()
        self.uncertainty = None
        if cfg.uncertainty is not None:
            u = cfg.uncertainty
            for where, names in (("uncertainty.cv_percent", u.cv_percent), ("uncertainty.omega2", u.omega2)):
                for k in names:
                    if k not in self.model.parameter_names:
                        raise SpecError(f"{where}.{k}", f"unknown parameter of model {self.model.name}")
            typical = {k: v for k, v in self.population.typical_parameters().items() if k in self.model.parameter_names}
            self.uncertainty = Uncertainty(
                Population.build(self.model, typical=typical, cv_percent=u.cv_percent, omega2=u.omega2,
                                 correlation={(c.a, c.b): c.r for c in u.correlation}),
                u.draws,
            )


    def _check_requirements(self, every_h: float) -> None:
        """The requirements' observables and windows, each reported at its config key
        (`target`, `constraints.<i>`) rather than the library's `requirements.<name>`."""
        keys = ["target", *(f"constraints.{i}" for i in range(len(self.constraints)))]
        seen = {}
        for key, r in zip(keys, (self.target, *self.constraints)):
            if r.name in seen:
                raise SpecError(f"{key}.name", f"{r.name!r} is already the name of {seen[r.name]}; give each its own")
            seen[r.name] = key
            try:
                check_requirements(self.model, [r])
                requirement_times([r], every_h)
            except SpecError as e:
                inner = f"requirements.{r.name}"
                if not e.field.startswith(inner):
                    raise
                raise SpecError(key + e.field[len(inner):], e.problem) from None


class PowerConfig(PopulationSpec, NamesModel):
    name: str = "power"
    description: str = ""
    model: str
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    replicates: Animals = 1000
    animals_per_arm: Annotated[list[Annotated[int, Field(ge=2, le=MAX_ANIMALS)]], Field(min_length=1, max_length=MAX_GRID)]
    control_arm: str
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    target_power: Annotated[float, Field(gt=0, lt=1)] = 0.8
    tests: Annotated[list[Literal["welch", "mann_whitney", "dunnett"]], Field(min_length=1)] = ["welch", "mann_whitney"]
    correction: Literal["holm", "bonferroni", "none"] = "holm"
    chunk_size: Animals = 4096
    arms: Annotated[list[ArmSpec], Field(min_length=2)]
    output: OutputSpec
    sampling: dict[str, SamplingSpec] = {}
    endpoint: EndpointDefSpec
    solver: SolverSpec = SolverSpec()


class BuiltPower:
    """The library objects a `PowerConfig` lowers to: built as the trial of its arms
    (`BuiltTrial`), so arms, sampling, output times and solver mean what they mean in a
    trial config."""

    def __init__(self, cfg: PowerConfig):
        for i, arm in enumerate(cfg.arms):
            if arm.animals is not None:
                raise SpecError(f"arms.{i}.animals", "the animals per arm come from animals_per_arm in a power config")
        if cfg.endpoint.inhibition is not None:
            raise SpecError("endpoint.inhibition", "not used by a power analysis; the test compares each arm with control_arm")
        trial = TrialConfig(
            name=cfg.name, model=cfg.model, seed=cfg.seed, **{k: getattr(cfg, k) for k in PopulationSpec.model_fields}, arms=cfg.arms,
            output=cfg.output, sampling=cfg.sampling, endpoints=EndpointSpec(model_defaults=False, extra=[cfg.endpoint]),
            solver=cfg.solver,
        )
        trial._config_folder = cfg._config_folder  # a model file relative to the power config's folder
        built = BuiltTrial(trial)
        self.cfg = cfg
        self.model, self.population, self.arms = built.model, built.population, built.arms
        self.endpoint = built.endpoints[0]
        self.times_h, self.sampling, self.options = built.times_h, built.sampling, built.options
        if self.endpoint.observable not in self.population.residual:
            raise SpecError(f"residual.{self.endpoint.observable}",
                            f"the endpoint is computed from observations of {self.endpoint.observable!r}: give its residual error")
        if cfg.control_arm not in [a.name for a in self.arms]:
            raise SpecError("control_arm", f"unknown arm {cfg.control_arm!r}; arms: {', '.join(a.name for a in self.arms)}")

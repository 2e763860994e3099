r"""Virtual populations: typical values, inter-animal variability, covariates, residual error.

Individual parameters are drawn as
$\theta_i = \theta_{typ} \prod_c (x_{ic}/x_{c,ref})^{e_c} \exp(\eta_i)$ (exponential
random effects, log-normal parameters: NONMEM's `CL = THETA * EXP(ETA)`) or
$\theta_{typ} \prod_c (\cdot) + \eta_i$ (additive, normal: `THETA + ETA`) with
$\eta_i \sim N(0, \Omega)$ (diagonal or full), covariates $x_{ic}$ log-normal around
their median. The model's own `individual` function (NONMEM's $PK) then computes its
derived quantities from these parameters and the covariates, inside the solve. Variability may be given as CV% ($\omega^2 = \ln(1 + CV^2)$) or as
$\omega^2$ directly.

Randomness: animal `i` uses `fold_in(key, i)` and nothing else, so an animal's draws do
not depend on the chunk size, the batch it lands in or the device it runs on.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.design.occasions import check_occasions
from vtrial.errors import SpecError
from vtrial.limits import MAX_CV_PERCENT
from vtrial.models.base import Model

#: Largest variance of a log-normal random effect: that of a CV of MAX_CV_PERCENT.
MAX_OMEGA2 = math.log1p((MAX_CV_PERCENT / 100.0) ** 2)

# Stream identifiers folded into each animal's key.
_ETA, _COVARIATES, _RESIDUAL = 0, 1, 2


@dataclass(frozen=True)
class CovariateDistribution:
    """A log-normal covariate (`cv` as a fraction; 0 fixes it at `median`)."""

    name: str
    median: float
    cv: float = 0.0
    unit: str = ""

    def __post_init__(self):
        if not (self.median > 0 and math.isfinite(self.median)):
            raise SpecError(f"covariates.{self.name}.median", f"must be > 0, got {self.median}")
        if not (self.cv >= 0 and self.cv <= MAX_CV_PERCENT / 100.0):
            raise SpecError(f"covariates.{self.name}.cv_percent", f"must lie in [0, {MAX_CV_PERCENT:g}] %, got {100 * self.cv}")

    @property
    def sigma(self) -> float:
        return math.sqrt(math.log1p(self.cv**2))


#: Shapes of a covariate effect (`effect_factor`); "categorical_below" is a categorical
#: effect of a dichotomised covariate (`CovariateEffect.below`).
COVARIATE_SHAPES = ("power", "linear", "exponential", "categorical")


@dataclass(frozen=True)
class CovariateEffect:
    """A covariate effect: parameter *= `effect_factor(shape, covariate, reference, exponent)`.

    `shape` "power" (default): (covariate / reference) ** exponent (reference > 0);
    "linear": 1 + exponent * (covariate - reference); "exponential":
    exp(exponent * (covariate - reference)); "categorical": 1 + exponent where the
    covariate differs from `reference` (the reference category), or with `below` where
    it is below `reference` (e.g. APGR < 5). `exponent` is the effect's coefficient; 0
    is no effect for every shape."""

    parameter: str
    covariate: str
    reference: float
    exponent: float
    shape: str = "power"
    below: bool = False

    def __post_init__(self):
        for name in ("reference", "exponent"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)):
                raise SpecError(f"covariate_effects.{self.parameter}.{name}", f"must be a finite number, got {v!r}")
        if self.shape not in COVARIATE_SHAPES:
            raise SpecError(f"covariate_effects.{self.parameter}.shape", f"must be one of {', '.join(COVARIATE_SHAPES)}, got {self.shape!r}")
        if self.below and self.shape != "categorical":
            raise SpecError(f"covariate_effects.{self.parameter}.below", "applies to a categorical effect only")
        if self.shape == "power" and not self.reference > 0:
            raise SpecError(f"covariate_effects.{self.parameter}.reference", "a power effect's reference must be > 0")

    @property
    def kind(self) -> str:
        """The static key of `effect_factor`: the shape, or "categorical_below"."""
        return "categorical_below" if self.below else self.shape


def effect_factor(kind: str, covariate, reference, coefficient):
    """The factor a covariate effect multiplies its parameter by (`CovariateEffect`;
    `kind`: `CovariateEffect.kind`, static). JAX or NumPy arrays alike."""
    if kind == "power":
        return (covariate / reference) ** coefficient
    if kind == "linear":
        return 1.0 + coefficient * (covariate - reference)
    if kind == "exponential":
        return jnp.exp(coefficient * (covariate - reference))
    if kind == "categorical":
        return 1.0 + coefficient * (covariate != reference)
    if kind == "categorical_below":
        return 1.0 + coefficient * (covariate < reference)
    raise ValueError(kind)


@dataclass(frozen=True)
class ResidualError:
    r"""Combined residual error: $y = f + \sqrt{a^2 + (b f)^2}\,\epsilon$, $\epsilon \sim N(0,1)$.

    `additive` ($a$) is in the observable's unit; `proportional` ($b$) is a fraction
    (0.15 = 15%). Either may be 0, not both.
    """

    additive: float = 0.0
    proportional: float = 0.0

    def __post_init__(self):
        if self.additive < 0 or self.proportional < 0:
            raise SpecError("residual", "additive and proportional must be >= 0")

    def sd(self, f):
        return jnp.sqrt(self.additive**2 + (self.proportional * f) ** 2)

    def sample(self, key, f):
        return f + self.sd(f) * jax.random.normal(key, jnp.shape(f), dtype=jnp.result_type(f))

    def log_prob(self, y, f):
        sd = self.sd(f)
        return -0.5 * ((y - f) / sd) ** 2 - jnp.log(sd) - 0.5 * math.log(2 * math.pi)


def omega_from_cv(cv_percent: Mapping[str, float]) -> dict[str, float]:
    """Variances of log-normal random effects from CV% ($\\omega^2 = \\ln(1 + CV^2)$)."""
    return {k: math.log1p((v / 100.0) ** 2) for k, v in cv_percent.items()}


@dataclass(frozen=True)
class Population:
    """Everything needed to draw virtual animals of one model.

    - `typical`: overrides of the model's typical values;
    - `iiv_names` / `omega`: the parameters with random effects and their covariance
      (log scale for exponential effects, the parameter's unit for additive ones); build
      with `Population.build` from CV% or variances;
    - `additive`: those of `iiv_names` whose random effect is additive (the others are
      exponential);
    - `covariates`: distributions of covariates (others sit at their reference);
    - `covariate_effects`: power relations added on top of the model's own equations;
    - `residual`: residual error per observable name;
    - `iov`: inter-occasion variances per parameter (one kappa per occasion, of the
      parameter's kind), `occasion_start_h`: a trial's occasion start times
      (`vtrial.design.occasions`; a dataset's simulation takes its OCC column instead).
    """

    model: Model
    typical: Mapping[str, float] = field(default_factory=dict)
    iiv_names: tuple[str, ...] = ()
    omega: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    covariates: tuple[CovariateDistribution, ...] = ()
    covariate_effects: tuple[CovariateEffect, ...] = ()
    residual: Mapping[str, ResidualError] = field(default_factory=dict)
    additive: tuple[str, ...] = ()
    iov: Mapping[str, float] = field(default_factory=dict)
    occasion_start_h: tuple[float, ...] = ()

    def __post_init__(self):
        m = self.model
        check_occasions(self)
        m.validate_values(self.typical, "population.typical")
        for n in self.iiv_names:
            if n not in m.parameter_names:
                raise SpecError(f"population.iiv.{n}", f"unknown parameter; known: {', '.join(m.parameter_names)}")
        for n in self.additive:
            if n not in self.iiv_names:
                raise SpecError(f"variability.kind.{n}", "an additive random effect needs a variance (omega2) > 0")
        omega = np.asarray(self.omega, dtype=float)
        k = len(self.iiv_names)
        if omega.shape != (k, k):
            raise SpecError("population.omega", f"must be {k}x{k} for {k} random effects, got shape {omega.shape}")
        if k:
            if not np.allclose(omega, omega.T):
                raise SpecError("population.omega", "must be symmetric")
            try:
                np.linalg.cholesky(omega + 1e-300 * np.eye(k))
            except np.linalg.LinAlgError:
                raise SpecError("population.omega", "must be positive definite (check the correlations)") from None
        for c in self.covariates:
            if c.name not in m.covariate_names:
                raise SpecError(f"population.covariates.{c.name}", f"unknown covariate; model {m.name} has: {', '.join(m.covariate_names) or 'none'}")
        for e in self.covariate_effects:
            if e.parameter not in m.parameter_names:
                raise SpecError(f"population.covariate_effects.{e.parameter}", "unknown parameter")
            if e.covariate not in m.covariate_names:
                raise SpecError(f"population.covariate_effects.{e.parameter}.covariate", f"unknown covariate {e.covariate!r}")
        for name in self.residual:
            if name not in m.observable_names:
                raise SpecError(f"population.residual.{name}", f"unknown observable; known: {', '.join(m.observable_names)}")

    @classmethod
    def build(
        cls,
        model: Model,
        *,
        typical: Mapping[str, float] | None = None,
        cv_percent: Mapping[str, float] | None = None,
        omega2: Mapping[str, float] | None = None,
        correlation: Mapping[tuple[str, str], float] | None = None,
        covariates=(),
        covariate_effects=(),
        residual: Mapping[str, ResidualError] | None = None,
        additive: tuple[str, ...] = (),
    ) -> "Population":
        """Population from CV% and/or variances plus optional pairwise correlations;
        `additive`: parameters whose random effect is additive (variance in the
        parameter's unit squared, given as omega2, not CV%)."""
        for k in additive:
            if k in (cv_percent or {}):
                raise SpecError(f"variability.cv_percent.{k}", "an additive random effect has no CV%; give its variance in omega2")
        for k, v in (cv_percent or {}).items():
            if not (isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= MAX_CV_PERCENT):
                raise SpecError(f"variability.cv_percent.{k}", f"must be a number in [0, {MAX_CV_PERCENT:g}] %, got {v!r}")
        variances = dict(omega_from_cv(cv_percent or {}))
        for k, v in (omega2 or {}).items():
            if k in variances:
                raise SpecError(f"population.iiv.{k}", "given both as CV% and as omega^2; give one")
            variances[k] = v
        for k, v in variances.items():
            if k in additive and isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf:
                continue  # in the parameter's unit: no log-scale cap
            if not (isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= MAX_OMEGA2):
                raise SpecError(f"variability.omega2.{k}", f"variance on the log scale must lie in [0, {MAX_OMEGA2:g}], got {v!r}")
        names = tuple(k for k, v in variances.items() if v > 0)
        sd = np.sqrt([variances[n] for n in names])
        corr = np.eye(len(names))
        for (a, b), r in (correlation or {}).items():
            for n in (a, b):
                if n not in names:
                    raise SpecError(f"population.correlation.{a}.{b}", f"{n!r} has no random effect")
            if not (isinstance(r, int | float) and -1 < r < 1):
                raise SpecError(f"population.correlation.{a}.{b}", f"must lie in (-1, 1), got {r!r}")
            i, j = names.index(a), names.index(b)
            corr[i, j] = corr[j, i] = r
        omega = corr * np.outer(sd, sd)
        return cls(
            model=model,
            typical=dict(typical or {}),
            iiv_names=names,
            omega=omega,
            covariates=tuple(covariates),
            covariate_effects=tuple(covariate_effects),
            residual=dict(residual or {}),
            additive=tuple(n for n in additive if n in names),
        )

    def typical_parameters(self) -> dict[str, float]:
        """Typical values (model defaults with overrides), covariates at their medians."""
        out = self.model.typical_values()
        out.update(self.typical)
        for c in self.covariates:
            out[c.name] = c.median
        return out

    def sample(self, key, n_animals: int, *, first_index: int = 0) -> dict[str, np.ndarray]:
        """Individual parameters and covariates of animals `first_index .. + n_animals`.

        Returns a dict of name -> array `(n_animals,)`, the same for a given animal index
        however the animals are split into calls.
        """
        if n_animals < 0:
            raise SpecError("n_animals", "must be >= 0")
        k = len(self.iiv_names)
        chol = np.linalg.cholesky(self.omega + 1e-300 * np.eye(k)) if k else np.zeros((0, 0))
        draw = _sampler(
            tuple(c.name for c in self.covariates),
            tuple((e.parameter, e.covariate) for e in self.covariate_effects),
            self.iiv_names,
            tuple(self.additive),
            tuple(e.kind for e in self.covariate_effects),
        )
        # Host arrays: each eager JAX conversion would compile a program of its own.
        draws = draw(
            key,
            np.arange(first_index, first_index + n_animals, dtype=np.int64),
            {name: np.asarray(v, dtype=np.float64) for name, v in self.typical_parameters().items()},
            np.asarray([c.median for c in self.covariates], dtype=np.float64),
            np.asarray([c.sigma for c in self.covariates], dtype=np.float64),
            np.asarray([e.reference for e in self.covariate_effects], dtype=np.float64),
            np.asarray([e.exponent for e in self.covariate_effects], dtype=np.float64),
            np.asarray(chol, dtype=np.float64),
        )
        return {name: np.asarray(v) for name, v in draws.items()}

    def typical_animals(self, n_animals: int = 1) -> dict[str, np.ndarray]:
        """`n_animals` copies of the typical animal (no variability)."""
        return {k: np.full(n_animals, v, dtype=float) for k, v in self.typical_parameters().items()}


def individual_parameters(p, effects, eff_ref, eff_exp, iiv_names, eta, additive=(), shapes=()):
    r"""One animal's parameters: $\theta_i = \theta_{typ} \prod_c (x_c/x_{c,ref})^{e_c} \exp(\eta)$
    (or `+ eta` for the names in `additive`, static; `shapes`: each effect's
    `CovariateEffect.kind`, static, default all "power": `effect_factor`).

    - `p`: typical values and this animal's covariates, name -> scalar;
    - `effects`: `(parameter, covariate)` pairs (static); `eff_ref`, `eff_exp`: their
      references and exponents, arrays `(n_effects,)`;
    - `iiv_names`: the parameters with random effects (static), `eta`: `(n_iiv,)` or None.

    The one place covariates and random effects enter: population draws and population
    estimation (`vtrial.estimation`) both call it. Returns a new dict.
    """
    p = dict(p)
    for j, (par, cov) in enumerate(effects):
        p[par] = p[par] * effect_factor(shapes[j] if shapes else "power", p[cov], eff_ref[j], eff_exp[j])
    for j, n in enumerate(iiv_names):
        p[n] = p[n] + eta[j] if n in additive else p[n] * jnp.exp(eta[j])
    return p


@lru_cache(maxsize=64)
def _sampler(covariates: tuple[str, ...], effects: tuple[tuple[str, str], ...], iiv_names: tuple[str, ...], additive: tuple[str, ...] = (),
             shapes: tuple[str, ...] = ()):
    """The jitted, vmapped draw of animals for one population *structure*.

    All numbers (typical values, covariate medians and spreads, effect references and
    exponents, the Cholesky factor of omega) are arguments, so a later `sample` of the
    same structure and number of animals reuses the compiled function.
    """

    def one(key, i, base, cov_median, cov_sigma, eff_ref, eff_exp, chol):
        key = jax.random.fold_in(key, i)
        p = dict(base)
        if covariates:
            z = jax.random.normal(jax.random.fold_in(key, _COVARIATES), (len(covariates),))
            for j, c in enumerate(covariates):
                p[c] = cov_median[j] * jnp.exp(cov_sigma[j] * z[j])
        eta = chol @ jax.random.normal(jax.random.fold_in(key, _ETA), (len(iiv_names),)) if iiv_names else None
        return individual_parameters(p, effects, eff_ref, eff_exp, iiv_names, eta, additive, shapes)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None, None, None, None, None, None)))


# Keys computed by one compiled program each: op by op, every operation (the seed's
# conversion, threefry's seeding, each fold-in) would compile a program of its own.
_seed_key = jax.jit(jax.random.PRNGKey)
_fold_in_each = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(None, 0)))


def seed_key(seed: int) -> np.ndarray:
    """`PRNGKey(seed)` as a host array."""
    return np.asarray(_seed_key(np.int64(seed)))


def arm_keys(seed: int, n_arms: int) -> np.ndarray:
    """The key of each arm's animals, `fold_in(PRNGKey(seed), a)` for arm `a`, shape `(n_arms, 2)`."""
    return np.asarray(_fold_in_each(seed_key(seed), np.arange(n_arms, dtype=np.int64)))


def residual_keys(key, animal_index):
    """The residual-error key of an animal (independent of its parameter draws)."""
    return jax.random.fold_in(jax.random.fold_in(key, animal_index), _RESIDUAL)


def observable_stream(name: str) -> int:
    """The number folded into an animal's residual key for observable `name`: a hash of the
    name, so an observable's noise does not depend on which others are observed."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class ResidualDraw:
    """Observations with residual error, computed inside the compiled solve of each animal
    (a `vtrial.engine.runner.AbstractLaneOutputs`).

    Animal `k` (arm `a`, at position `i` in its arm) draws the error of observable `name`
    at every output time from
    `fold_in(residual_keys(fold_in(PRNGKey(seed), a), i), observable_stream(name))`, so
    each value depends only on the animal, the observable and the time: not on the other
    animals in its chunk, the chunk size, the device, or which other observables are
    observed. The error model is `y = f + sqrt(a^2 + (b f)^2) eps` (`ResidualError`).

    Static part: the observable names. Per animal (`lane`): `arm`, `position`. Shared:
    what `shared(...)` returns (the key and the error parameters), so a new seed or new
    error values reuse the compiled solve.
    """

    observables: tuple[str, ...]

    def lane(self, arm_index, position) -> dict[str, np.ndarray]:
        return {"arm": np.asarray(arm_index, np.int64), "position": np.asarray(position, np.int64)}

    def shared(self, residual: Mapping[str, ResidualError], seed: int) -> dict:
        return {
            "key": seed_key(seed),
            "stream": np.asarray([observable_stream(n) for n in self.observables], np.uint32),
            "additive": np.asarray([residual[n].additive for n in self.observables], float),
            "proportional": np.asarray([residual[n].proportional for n in self.observables], float),
        }

    def __call__(self, observables, status, lane, shared) -> dict:
        base = residual_keys(jax.random.fold_in(shared["key"], lane["arm"]), lane["position"])
        out = {}
        for j, name in enumerate(self.observables):
            f = observables[name]
            eps = jax.random.normal(jax.random.fold_in(base, shared["stream"][j]), f.shape, dtype=f.dtype)
            sd = jnp.sqrt(shared["additive"][j] ** 2 + (shared["proportional"][j] * f) ** 2)
            out[name] = f + sd.astype(f.dtype) * eps
        return out

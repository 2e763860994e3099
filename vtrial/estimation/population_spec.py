r"""What a population fit estimates, and how it is packed into one unconstrained vector.

Individual parameters follow NONMEM's mu-referenced model, the same equation as virtual
populations (`vtrial.design.population.individual_parameters`):
$\theta_i = \theta_{typ} \prod_c (x_{ic}/x_{c,ref})^{e_c} \exp(\eta_i)$ (exponential
random effects) or $\ldots + \eta_i$ (additive, `EstimationSpec.additive`),
$\eta_i \sim N(0, \Omega)$; the model's own `individual` function (NONMEM's $PK) maps
them and the covariates to what it solves with. The optimiser works on one unconstrained
vector `[typical values on their estimation scales | estimated covariate exponents |
Cholesky factor of Omega (log diagonal, then the off-diagonals of each block) | log
residual SDs]` (fixed quantities left out), so every value it tries is valid.

Typical values are estimated on the scale their bounds imply, as NONMEM's bounded THETA
(`theta_scale`, the one place this is decided): `log` for (0, inf), `log(x - a)` for
(a, inf), `log(b - x)` for (-inf, b), `logit` of (x - a)/(b - a) for a finite (a, b),
`identity` for (-inf, inf). The bounds are the model parameter's range unless
`EstimationSpec.bounds` narrows them; an initial value must lie strictly inside.

Names (as `parameters.csv` has them, and as `fixed` takes them): a typical value by its
model name, `omega2_<p>` (a variance of Omega), `<observable>.additive` /
`<observable>.proportional`, `exponent_<p>_<covariate>` (a covariate effect's exponent).
Fixing a variance of a correlated block fixes the whole block (every variance of it must
be named): NONMEM's `$OMEGA BLOCK(n) FIX`, as a Cholesky factor cannot hold one entry of a
block while the others move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vtrial.design.population import CovariateEffect, ResidualError
from vtrial.errors import SpecError
from vtrial.models.base import Model

RESIDUAL_KINDS = ("additive", "proportional")


@dataclass(frozen=True)
class EstimationSpec:
    """The statistical model around a structural `Model`, with initial values.

    - `typical`: initial typical values of the parameters to estimate (model units);
      every other model parameter stays at the model's value;
    - `fixed`: names held at their initial value: typical parameters of `typical`, or
      residual components `"<observable>.additive"` / `"<observable>.proportional"`;
    - `omega2`: initial variances of the random effects, one per parameter with
      inter-individual variability, in this order (log scale for exponential effects,
      the parameter's unit squared for additive ones);
    - `bounds`: `(lower, upper)` of estimated typical values, within the model's range
      (default: the model parameter's range); they choose the estimation scale;
    - `additive`: parameters of `omega2` whose random effect is additive (normal:
      `p = typical + eta`); the others are exponential (log-normal: `typical * exp(eta)`);
    - `blocks`: groups of those parameters whose effects are correlated (a full block
      of Omega each); others are independent (diagonal);
    - `correlation`: initial correlations within blocks, `{(p1, p2): r}` (default 0);
    - `covariate_effects`: power covariate effects (exponents and references as given);
    - `estimate_exponents`: `(parameter, covariate)` of the effects whose exponent is
      estimated (from its value in `covariate_effects`); the others stay as given;
    - `residual`: initial residual error per observable (`ResidualError`: additive SD in
      the DV unit of the dataset, proportional as a fraction); a component given as 0
      is absent from the model, others are estimated unless fixed;
    - `iov_omega2`: initial variances of inter-occasion random effects (one kappa per
      occasion and subject, all occasions sharing the variance: NONMEM's `$OMEGA
      BLOCK(1) ... SAME`), same kind as the parameter's eta (`additive`), named
      `iov_omega2_<p>` (`vtrial.estimation.occasions`).
    """

    typical: Mapping[str, float]
    omega2: Mapping[str, float] = field(default_factory=dict)
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    additive: tuple[str, ...] = ()
    blocks: tuple[tuple[str, ...], ...] = ()
    correlation: Mapping[tuple[str, str], float] = field(default_factory=dict)
    covariate_effects: tuple[CovariateEffect, ...] = ()
    residual: Mapping[str, ResidualError] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()
    estimate_exponents: tuple[tuple[str, str], ...] = ()
    iov_omega2: Mapping[str, float] = field(default_factory=dict)


THETA_SCALES = ("identity", "log", "log_lower", "log_upper", "logit")


def theta_scale(lower: float, upper: float) -> str:
    """The estimation scale of a typical value bounded to (lower, upper), as NONMEM's
    bounded THETA: `log` for (0, inf), `log_lower` (log(x - a)) for (a, inf),
    `log_upper` (log(b - x)) for (-inf, b), `logit` for a finite (a, b), `identity`
    for (-inf, inf)."""
    lo, hi = math.isfinite(lower), math.isfinite(upper)
    if lo and hi:
        return "logit"
    if lo:
        return "log" if lower == 0 else "log_lower"
    return "log_upper" if hi else "identity"


#: A positive lower bound at most this fraction of the estimate is a positivity guard
#: (e.g. a volume's 1e-12): log(x - a) is then log x to better than 6 digits (its SE and
#: interval too), and `scale_label` names the scale `log`. The estimation keeps log(x - a).
POSITIVITY_GUARD = 1e-6


def scale_label(lower: float, upper: float, value: float | None = None) -> str:
    """How `parameters.csv` names a scale: `log`, `log(x + 0.99)`, `log(5 - x)`,
    `logit`, `logit((x - 1)/(3 - 1))`, `identity`; `log` too for (a, inf) with a
    positive `a` at most `POSITIVITY_GUARD` x `value` (the estimate)."""
    kind = theta_scale(lower, upper)
    if kind == "log_lower" and value is not None and 0 < lower <= POSITIVITY_GUARD * abs(value):
        return "log"
    if kind == "log_lower":
        return f"log(x {'-' if lower > 0 else '+'} {abs(lower):g})"
    if kind == "log_upper":
        return f"log({upper:g} - x)"
    if kind == "logit" and (lower, upper) != (0.0, 1.0):
        return f"logit((x - {lower:g})/({upper:g} - {lower:g}))"
    return kind


def to_estimation_scale(value: float, lower: float, upper: float) -> float:
    """The estimation-scale value of a typical value strictly inside (lower, upper)."""
    kind = theta_scale(lower, upper)
    if kind == "log":
        return math.log(value)
    if kind == "log_lower":
        return math.log(value - lower)
    if kind == "log_upper":
        return math.log(upper - value)
    if kind == "logit":
        return math.log((value - lower) / (upper - value))
    return float(value)


def from_estimation_scale(x, lower: float, upper: float):
    """The typical value of an estimation-scale value `x` (JAX, differentiable; the
    inverse of `to_estimation_scale`)."""
    kind = theta_scale(lower, upper)
    if kind == "log":
        return jnp.exp(x)
    if kind == "log_lower":
        return lower + jnp.exp(x)
    if kind == "log_upper":
        return upper - jnp.exp(x)
    if kind == "logit":
        return lower + (upper - lower) * jax.nn.sigmoid(x)
    return x


def estimation_name(name: str, lower: float, upper: float) -> str:
    """The covariance matrix's name of a typical value's estimation-scale entry:
    `log_<p>` (log scales, shifted or not), `logit_<p>`, `<p>` (identity)."""
    kind = theta_scale(lower, upper)
    return {"identity": name, "logit": f"logit_{name}"}.get(kind, f"log_{name}")


def omega_name(iiv_names, i: int, j: int) -> str:
    """`omega2_<p>` for a variance, `omega_<p1>_<p2>` for a covariance (p1 first in order)."""
    a, b = iiv_names[min(i, j)], iiv_names[max(i, j)]
    return f"omega2_{a}" if i == j else f"omega_{a}_{b}"


def exponent_name(parameter: str, covariate: str) -> str:
    return f"exponent_{parameter}_{covariate}"


def iov_name(parameter: str) -> str:
    """`iov_omega2_<p>`: the variance of the inter-occasion random effects of `p`."""
    return f"iov_omega2_{parameter}"


def iov_layout(model: Model, spec: EstimationSpec, n_occasions: int):
    """Check `spec.iov_omega2`: `(iov_names, initial SDs, estimated indices, initial x)`.
    An occasion changes a parameter through the dynamics and the observations; a
    parameter a dose route or a model event reads is evaluated once per subject (at its
    first occasion), so IOV there is refused rather than half applied."""
    names = model.parameter_names
    route_parameters = {getattr(r, a) for r in model.routes for a in ("lag", "bioavailability", "rate", "duration")}
    route_parameters |= {getattr(ev, a) for ev in model.events for a in ("time", "amount")}
    iov = tuple(n for n in names if n in spec.iov_omega2)
    for n in spec.iov_omega2:
        where = f"variability.occasions.{n}"
        if n not in names:
            raise SpecError(where, f"not a parameter of model {model.name}; known: {', '.join(names)}")
        _positive(where, spec.iov_omega2[n])
        if n in route_parameters:
            raise SpecError(where, f"{n} is a dose route's or an event's parameter; inter-occasion variability applies to parameters "
                                   "of the dynamics and observations")
        if n not in spec.additive and model.parameter(n).lower < 0:
            raise SpecError(where, f"{n} may be <= 0 (range from {model.parameter(n).lower:g}): an exponential occasion effect "
                                   "needs a positive parameter; make its random effects additive in [variability.kind]")
    sd = [math.sqrt(float(spec.iov_omega2[n])) for n in iov]
    estimated = tuple(j for j, n in enumerate(iov) if iov_name(n) not in spec.fixed)
    return iov, sd, estimated, [math.log(sd[j]) for j in estimated]


class Layout(NamedTuple):
    """The static structure of a fit (hashable: it keys the compiled functions).

    - `parameter_names`: every model parameter, in model order;
    - `theta_names`: the estimated typical values (the first entries of `x`);
    - `theta_bounds`: `(lower, upper)` of each, which set its scale (`theta_scale`);
    - `constant_names`: model parameters not estimated (values in `Constants.values`);
    - `iiv_names`: parameters with random effects (order of eta);
    - `additive`: those of them whose random effect is additive;
    - `exponents_estimated`: indices into `effects` of the estimated exponents;
    - `chol_entries`: `(i, j)` of the estimated Cholesky entries (diagonal first);
    - `block_pairs`: `(i, j)`, i > j, of every covariance of Omega's blocks (estimated or fixed);
    - `residual_estimated`: `(observable index, kind index)` of the estimated residual SDs;
    - `effects`: `(parameter, covariate)` of the covariate effects;
    - `covariate_names`: the model's covariates (values per subject, else its reference);
    - `iov_names`: parameters with inter-occasion variability; `n_occasions`: occasions
      (kappas per parameter and subject, padded to the dataset's levels); `iov_estimated`:
      indices into `iov_names` of the estimated IOV variances. The subject's random
      effects are `[eta (iiv_names) | kappa (n_occasions x iov_names, occasion-major)]`.
    """

    parameter_names: tuple[str, ...]
    theta_names: tuple[str, ...]
    constant_names: tuple[str, ...]
    iiv_names: tuple[str, ...]
    exponents_estimated: tuple[int, ...]
    chol_entries: tuple[tuple[int, int], ...]
    block_pairs: tuple[tuple[int, int], ...]
    residual_estimated: tuple[tuple[int, int], ...]
    effects: tuple[tuple[str, str], ...]
    covariate_names: tuple[str, ...]
    n_observables: int
    theta_bounds: tuple[tuple[float, float], ...] = ()
    additive: tuple[str, ...] = ()
    iov_names: tuple[str, ...] = ()
    n_occasions: int = 0
    iov_estimated: tuple[int, ...] = ()
    effect_shapes: tuple[str, ...] = ()  # each effect's `CovariateEffect.kind` (empty: all power)

    @property
    def n_theta(self) -> int:
        return len(self.theta_names)

    @property
    def n_x(self) -> int:
        return (len(self.theta_names) + len(self.exponents_estimated) + len(self.chol_entries) + len(self.residual_estimated)
                + len(self.iov_estimated))

    @property
    def n_iiv(self) -> int:
        return len(self.iiv_names)

    @property
    def n_kappa(self) -> int:
        return len(self.iov_names) * self.n_occasions

    @property
    def n_eta(self) -> int:
        """Random effects per subject: the etas, then the kappas of every occasion."""
        return len(self.iiv_names) + self.n_kappa


class Constants(NamedTuple):
    """Numbers that are not estimated (arrays; changing them does not recompile)."""

    values: jnp.ndarray  # (n_constants,) the fixed model parameters
    residual_sd: jnp.ndarray  # (n_observables, 2) all residual SDs; estimated ones are overwritten
    effect_reference: jnp.ndarray
    effect_exponent: jnp.ndarray  # estimated ones are overwritten
    dv_scale: jnp.ndarray  # (n_observables,)
    chol: jnp.ndarray  # (n_iiv, n_iiv) the initial Cholesky factor; estimated entries are overwritten
    iov_sd: jnp.ndarray | None = None  # (n_iov,) SDs of the kappas; estimated ones are overwritten


class Unpacked(NamedTuple):
    typical: dict  # every model parameter -> scalar
    chol: jnp.ndarray  # (n_iiv, n_iiv) lower-triangular factor of Omega (etas)
    residual_sd: jnp.ndarray  # (n_observables, 2): additive (DV unit), proportional (fraction)
    effect_exponent: jnp.ndarray  # (n_effects,) the covariate effects' exponents
    iov_sd: jnp.ndarray | None = None  # (n_iov,) SDs of the kappas (None without occasions)


def _positive(where: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        raise SpecError(where, f"must be a finite number > 0 to be estimated on the log scale, got {v!r}")
    return float(v)


def _bounds(model: Model, spec: EstimationSpec, name: str) -> tuple[float, float]:
    """An estimated typical value's (lower, upper): the model's range, or the narrower
    bounds of `spec.bounds`; its initial value strictly inside (as NONMEM's THETA)."""
    par = model.parameter(name)
    lower, upper = par.lower, par.upper
    where = f"parameters.{name}"
    if name in spec.bounds:
        where = f"bounds.{name}"
        b = spec.bounds[name]
        ok = isinstance(b, tuple | list) and len(b) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v) for v in b)
        if not ok:
            raise SpecError(where, f"must be [lower, upper] (numbers; inf and -inf for none), got {b!r}")
        lower, upper = float(b[0]), float(b[1])
        if not lower < upper:
            raise SpecError(where, f"lower must be < upper, got [{lower:g}, {upper:g}]")
        if lower < par.lower or upper > par.upper:
            raise SpecError(where, f"[{lower:g}, {upper:g}] reaches outside the model's range of {name}, [{par.lower:g}, {par.upper:g}] {par.unit}")
    v = spec.typical[name]
    if isinstance(v, bool) or not isinstance(v, int | float) or not (lower < v < upper):
        raise SpecError(f"parameters.{name}", f"initial value {v!r} must lie strictly inside its bounds ({lower:g}, {upper:g}) to be "
                                              f"estimated (on the {scale_label(lower, upper)} scale); fix it or widen the bounds")
    return lower, upper


def build_layout(model: Model, spec: EstimationSpec, dv_scale, n_occasions: int = 0) -> tuple[Layout, Constants, np.ndarray]:
    """Check `spec` against `model`; return the layout, the constants and the initial `x`
    (`n_occasions`: the dataset's occasion levels, for `spec.iov_omega2`)."""
    names = model.parameter_names
    if not spec.typical:
        raise SpecError("parameters", f"give initial values of the parameters to estimate; model {model.name} has: {', '.join(names)}")
    model.validate_values(dict(spec.typical), "parameters")
    for n in spec.typical:
        if n not in names:
            raise SpecError(f"parameters.{n}", f"not a parameter of model {model.name} (covariates are data); known: {', '.join(names)}")
    residual_names = {f"{o}.{k}" for o in model.observable_names for k in RESIDUAL_KINDS}
    omega_names = [omega_name(tuple(spec.omega2), i, i) for i in range(len(spec.omega2))]
    omega_names += [iov_name(n) for n in spec.iov_omega2]
    for n in spec.fixed:
        if n not in spec.typical and n not in residual_names and n not in omega_names:
            known = list(spec.typical) + omega_names + sorted(residual_names)
            raise SpecError(f"fixed.{n}", f"must name a parameter of [parameters], a variance of Omega or a residual component; known: {', '.join(known)}")
    theta_names = tuple(n for n in names if n in spec.typical and n not in spec.fixed)
    theta_bounds = tuple(_bounds(model, spec, n) for n in theta_names)
    for n in spec.bounds:
        if n not in theta_names:
            raise SpecError(f"bounds.{n}", f"bounds apply to estimated typical values; estimated: {', '.join(theta_names) or 'none'}")
    x_theta = [to_estimation_scale(float(spec.typical[n]), *b) for n, b in zip(theta_names, theta_bounds)]
    values = dict(model.typical_values())
    values.update(spec.typical)
    constant_names = tuple(n for n in names if n not in theta_names)

    iiv = tuple(spec.omega2)
    for n in iiv:
        if n not in names:
            raise SpecError(f"variability.omega.{n}", f"not a parameter of model {model.name}; known: {', '.join(names)}")
        _positive(f"variability.omega.{n}", spec.omega2[n])
    for n in spec.additive:
        if n not in iiv:
            raise SpecError(f"variability.kind.{n}", "an additive random effect needs an initial variance in [variability.omega]")
    block_of = {n: (n,) for n in iiv}
    for b, block in enumerate(spec.blocks):
        for n in block:
            if n not in iiv:
                raise SpecError(f"variability.block[{b}].{n}", "needs an initial variance in [variability.omega]")
            if len(block_of[n]) > 1:
                raise SpecError(f"variability.block[{b}].{n}", "is already in another block")
            block_of[n] = tuple(block)
    sd = np.sqrt([spec.omega2[n] for n in iiv])
    corr = np.eye(len(iiv))
    for (a, b), r in spec.correlation.items():
        for n in (a, b):
            if n not in iiv:
                raise SpecError(f"variability.correlation.{a}.{b}", f"{n!r} has no random effect")
        if b not in block_of[a]:
            raise SpecError(f"variability.correlation.{a}.{b}", "correlated effects must be in one [[variability.block]]")
        if not (isinstance(r, int | float) and -1 < r < 1):
            raise SpecError(f"variability.correlation.{a}.{b}", f"must lie in (-1, 1), got {r!r}")
        i, j = iiv.index(a), iiv.index(b)
        corr[i, j] = corr[j, i] = r
    omega = corr * np.outer(sd, sd)
    try:
        chol = np.linalg.cholesky(omega) if iiv else np.zeros((0, 0))
    except np.linalg.LinAlgError:
        raise SpecError("variability.correlation", "the initial Omega is not positive definite (check the correlations)") from None
    k = len(iiv)
    fixed_omega = {n for i, n in enumerate(iiv) if omega_name(iiv, i, i) in spec.fixed}
    for n in fixed_omega:
        unfixed = [m for m in block_of[n] if m not in fixed_omega]
        if unfixed:
            raise SpecError(f"fixed.omega2_{n}", f"{n} is in a correlated block with {', '.join(unfixed)}: fix every variance of the "
                                                 "block (the whole block is then fixed, as NONMEM's BLOCK FIX) or none")
    pairs = [(i, j) for i in range(k) for j in range(i) if iiv[j] in block_of[iiv[i]]]
    entries = [(i, j) for i, j in [(i, i) for i in range(k)] + pairs if iiv[i] not in fixed_omega]
    x_chol = [math.log(chol[i, j]) if i == j else chol[i, j] for i, j in entries]

    n_obs = len(model.observables)
    residual_sd = np.zeros((n_obs, 2))
    estimated = []
    for name, err in spec.residual.items():
        if name not in model.observable_names:
            raise SpecError(f"residual.{name}", f"unknown observable; known: {', '.join(model.observable_names)}")
        if not isinstance(err, ResidualError):
            raise SpecError(f"residual.{name}", "must be a ResidualError(additive=..., proportional=...)")
        if err.additive == 0 and err.proportional == 0:
            raise SpecError(f"residual.{name}", "give an initial additive or proportional SD (or both) > 0")
        o = model.observable_names.index(name)
        for kind_index, kind in enumerate(RESIDUAL_KINDS):
            v = float(getattr(err, kind))
            residual_sd[o, kind_index] = v
            if v > 0 and f"{name}.{kind}" not in spec.fixed:
                estimated.append((o, kind_index))
    x_res = [math.log(residual_sd[o, c]) for o, c in estimated]

    effects = tuple((e.parameter, e.covariate) for e in spec.covariate_effects)
    for e in spec.estimate_exponents:
        if tuple(e) not in effects:
            raise SpecError(f"covariate_effects.{exponent_name(*e)}", "to estimate an exponent, give the covariate effect (its exponent is the initial value)")
    exponents_estimated = tuple(i for i, e in enumerate(effects) if e in {tuple(e) for e in spec.estimate_exponents})
    x_exponents = [float(spec.covariate_effects[i].exponent) for i in exponents_estimated]
    for e in spec.covariate_effects:
        if e.parameter not in names:
            raise SpecError(f"covariates.{e.parameter}", f"unknown parameter; known: {', '.join(names)}")
        if e.covariate not in model.covariate_names:
            raise SpecError(f"covariates.{e.parameter}.covariate", f"unknown covariate {e.covariate!r}; model {model.name} has: {', '.join(model.covariate_names) or 'none'}")
        if e.shape == "power" and not e.reference > 0:
            raise SpecError(f"covariates.{e.parameter}.reference", "must be > 0")

    iov_names, iov_sd, iov_estimated, x_iov = iov_layout(model, spec, n_occasions)
    layout = Layout(
        parameter_names=names,
        theta_names=theta_names,
        constant_names=constant_names,
        iiv_names=iiv,
        exponents_estimated=exponents_estimated,
        chol_entries=tuple(entries),
        block_pairs=tuple(pairs),
        residual_estimated=tuple(estimated),
        effects=effects,
        covariate_names=model.covariate_names,
        n_observables=n_obs,
        theta_bounds=theta_bounds,
        additive=tuple(n for n in iiv if n in spec.additive),
        iov_names=iov_names,
        n_occasions=int(n_occasions) if iov_names else 0,
        iov_estimated=iov_estimated,
        effect_shapes=tuple(e.kind for e in spec.covariate_effects),
    )

    def put(v):  # on the device as float64 (device_put compiles nothing; jnp.asarray compiles a small program)
        return jax.device_put(np.asarray(v, float))

    constants = Constants(
        values=put([float(values[n]) for n in constant_names]),
        residual_sd=put(residual_sd),
        effect_reference=put([e.reference for e in spec.covariate_effects]),
        effect_exponent=put([e.exponent for e in spec.covariate_effects]),
        dv_scale=put(np.asarray(dv_scale, float).reshape(n_obs)),
        chol=put(chol),
        iov_sd=put(iov_sd) if iov_names else None,
    )
    return layout, constants, np.asarray(x_theta + x_exponents + x_chol + x_res + x_iov, float)


def unpack(layout: Layout, constants: Constants, x) -> Unpacked:
    """Model-scale values from the unconstrained vector `x` (JAX, differentiable)."""
    nt, ne, nc = layout.n_theta, len(layout.exponents_estimated), len(layout.chol_entries)
    typical = {n: from_estimation_scale(x[i], *layout.theta_bounds[i]) for i, n in enumerate(layout.theta_names)}
    typical.update({n: constants.values[i] for i, n in enumerate(layout.constant_names)})
    exponents = constants.effect_exponent.astype(x.dtype)
    for m, i in enumerate(layout.exponents_estimated):
        exponents = exponents.at[i].set(x[nt + m])
    chol = constants.chol.astype(x.dtype)
    for m, (i, j) in enumerate(layout.chol_entries):
        v = x[nt + ne + m]
        chol = chol.at[i, j].set(jnp.exp(v) if i == j else v)
    sd = constants.residual_sd.astype(x.dtype)
    for m, (o, c) in enumerate(layout.residual_estimated):
        sd = sd.at[o, c].set(jnp.exp(x[nt + ne + nc + m]))
    iov_sd = None
    if layout.iov_names:
        iov_sd = constants.iov_sd.astype(x.dtype)
        first = nt + ne + nc + len(layout.residual_estimated)
        for m, j in enumerate(layout.iov_estimated):  # x holds log SD (as Cholesky diagonals)
            iov_sd = iov_sd.at[j].set(jnp.exp(x[first + m]))
    return Unpacked(typical, chol, sd, exponents, iov_sd)


def reported_names(layout: Layout, observable_names) -> tuple[str, ...]:
    """Names of the estimation-scale quantities (NONMEM's scales): typical values on
    their estimation scales (`estimation_name`: `log_<p>`, `logit_<p>` or `<p>`),
    `exponent_<p>_<covariate>` for covariate exponents, `omega2_<p>` / `omega_<p1>_<p2>`
    for Omega, `<observable>.additive` / `.proportional` for residual SDs."""
    out = [estimation_name(n, *b) for n, b in zip(layout.theta_names, layout.theta_bounds)]
    out += [exponent_name(*layout.effects[i]) for i in layout.exponents_estimated]
    out += [omega_name(layout.iiv_names, i, j) for i, j in layout.chol_entries]
    out += [f"{observable_names[o]}.{RESIDUAL_KINDS[c]}" for o, c in layout.residual_estimated]
    out += [iov_name(layout.iov_names[j]) for j in layout.iov_estimated]
    return tuple(out)


def reported_values(layout: Layout, constants: Constants, x):
    """The estimation-scale values named by `reported_names` (JAX; its Jacobian maps the
    covariance of `x` to NONMEM's scales)."""
    u = unpack(layout, constants, x)
    omega = u.chol @ u.chol.T
    vals = [x[i] for i in range(layout.n_theta)]
    vals += [u.effect_exponent[i] for i in layout.exponents_estimated]
    vals += [omega[i, j] for i, j in layout.chol_entries]
    vals += [u.residual_sd[o, c] for o, c in layout.residual_estimated]
    vals += [u.iov_sd[j] ** 2 for j in layout.iov_estimated]
    return jnp.stack(vals) if vals else jnp.zeros((0,), x.dtype)

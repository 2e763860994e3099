r"""A population fit's own covariate effects (power, linear, exponential, categorical) (`[[covariate_effects]]`) following
covariates that change within a subject, as a model's $PK does (NONMEM's next
observation carried back, `vtrial.engine.events.CovariateChanges`).

The estimation applies $\theta_i = \theta_{typ} \prod_c (x_c/x_{c,ref})^{e_c} e^{\eta}$
with the subject's first covariate values (`individual_parameters`). Where the engine
switches the covariates (`parameters_at`, `record_parameters`) it calls the model's
`derive`; the model of `follow_covariates` rescales each affected parameter there by
$F(x_{now})/F(x_{then})$, $F(x)$ the product of the effects' factors
(`vtrial.design.population.effect_factor`, e.g. $(x_c/x_{c,ref})^{e_c}$ for a power effect) (exponential random
effects and typical values), or adds $\theta_{typ}(F(x_{now}) - F(x_{then}))$ (additive
random effects), and records $x_{now}$ as the values its parameters now hold for, so
applying `derive` again changes nothing. Relative, not recomputed from the typical value,
so that the FOCE expansions' perturbations of a parameter (`Problem.expand`) carry
through. The references, exponents (estimated or not) and typical values travel in the
parameters under `_KEY`-prefixed names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import lru_cache

import jax
import jax.numpy as jnp

from vtrial.design.population import effect_factor
from vtrial.engine.events import covariate_changes
from vtrial.models.base import Model

_KEY = "__effect"


def _held(covariate: str) -> str:
    return f"{_KEY}_held_{covariate}"


def with_effect_values(p: dict, layout, constants, u) -> dict:
    """`p` (a subject's parameters, the fit's power effects applied at the covariates in
    `p`) with what `follow_covariates`'s `derive` needs: each effect's reference and
    exponent, the typical value of each affected parameter, the covariate values the
    parameters hold for. `p` itself without effects."""
    if not layout.effects:
        return p
    p = dict(p)
    for j, (par, cov) in enumerate(layout.effects):
        p[f"{_KEY}_reference_{j}"] = constants.effect_reference[j]
        p[f"{_KEY}_exponent_{j}"] = u.effect_exponent[j]
        p[f"{_KEY}_typical_{par}"] = u.typical[par]
        p[_held(cov)] = p[cov]
    return p


@dataclasses.dataclass(frozen=True, eq=False)
class _EffectsFollowCovariates(Model):
    effects: tuple[tuple[str, str], ...] = ()
    additive: tuple[str, ...] = ()
    shapes: tuple[str, ...] = ()  # each effect's `CovariateEffect.kind` (empty: all power)

    def derive(self, p: Mapping[str, jnp.ndarray]) -> dict[str, jnp.ndarray]:
        q = dict(p)
        if f"{_KEY}_reference_0" in q:
            now, then = {}, {}
            for j, (par, cov) in enumerate(self.effects):
                r, e = q[f"{_KEY}_reference_{j}"], q[f"{_KEY}_exponent_{j}"]
                kind = self.shapes[j] if self.shapes else "power"
                now[par] = now.get(par, 1.0) * effect_factor(kind, q[cov], r, e)
                then[par] = then.get(par, 1.0) * effect_factor(kind, q[_held(cov)], r, e)
            for par in now:
                if par in self.additive:
                    q[par] = q[par] + q[f"{_KEY}_typical_{par}"] * (now[par] - then[par])
                else:
                    q[par] = q[par] * now[par] / then[par]
            for _, cov in self.effects:
                q[_held(cov)] = q[cov]
        return Model.derive(self, q)


@lru_cache(maxsize=32)
def follow_covariates(model: Model, effects: tuple, additive: tuple, shapes: tuple = ()) -> Model:
    """`model` whose `derive` makes the power `effects` follow the covariates in effect
    (one per model and effects: compiled functions key on the model's identity)."""
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(Model)}
    with jax.ensure_compile_time_eval():  # the model's checks evaluate it, also when built while tracing
        return _EffectsFollowCovariates(**fields, effects=effects, additive=additive, shapes=shapes)


def model_for(model: Model, layout, doses) -> Model:
    """The model a fit solves a subject with: `follow_covariates` where the fit has power
    effects and the subject's covariates change (static: the records' pytree structure)."""
    if layout.effects and covariate_changes(doses) is not None:
        return follow_covariates(model, tuple(layout.effects), tuple(layout.additive), tuple(layout.effect_shapes))
    return model

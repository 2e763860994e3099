"""Shared pieces of the in vitro assays: plates, batched solves, noise, fit tables, plots.

A plate is a set of wells, each a parameter set of a model without dose routes. Every
plate is solved in one call of `vtrial.engine.runner.simulate_population`; the batch is padded
to a bucket size (64, 128, 256, ...) so plates of different sizes reuse one compiled
solve. Noise is keyed per well index (`fold_in(PRNGKey(seed), well)`), so a well's noise
does not depend on the plate layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from vtrial.design.dosing import Regimen, lower_regimens
from vtrial.estimation.curvefit import check_curve_data, fit_logistic4
from vtrial.errors import SpecError
from vtrial.estimation.least_squares import FitResult
from vtrial.models.base import Model
from vtrial.engine.runner import PopulationSolution, simulate_population
from vtrial.engine.solve import SolverOptions

#: Solver of the differentiable read-outs (`vtrial.assays._ode`): binding is stiff at high
#: antagonist concentrations (k_on I up to ~3000 /h), so implicit.
BINDING_SOLVER = SolverOptions(solver="kvaerno5", rtol=1e-8, atol=1e-12)
#: Default solver of plate simulations through `simulate_population`. Explicit: stiffness
#: only limits its step size (about 3,000 cheap steps for 300 nM anakinra over 3 h), it
#: compiles in half the time of Kvaerno5, and it runs on every runner path (Kvaerno5
#: through `solve_animal` under `shard_map` currently fails inside lineax).
PLATE_SOLVER = SolverOptions(solver="tsit5", rtol=1e-8, atol=1e-12)
#: Above this many explicit steps (stiffness x duration / 3) a plate uses `BINDING_SOLVER`.
_MAX_EXPLICIT_STEPS = 30_000

#: Columns of every `curve_fit.csv`: the contract columns, then `method` and `note`.
CURVE_COLUMNS = ["parameter", "estimate", "se", "ci_low", "ci_high", "unit", "method", "note"]

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def bucket_size(n: int, smallest: int = 64) -> int:
    """Padded batch size for `n` wells: `smallest`, then powers of two."""
    size = smallest
    while size < n:
        size *= 2
    return size


def log_grid(start: float, stop: float, n: int) -> np.ndarray:
    """`n` log-spaced concentrations from `start` to `stop` (inclusive)."""
    return np.logspace(np.log10(start), np.log10(stop), n)


@contextlib.contextmanager
def compile_timer() -> Iterator[dict[str, float]]:
    """Sum JAX tracing, lowering and compilation time inside the block into `["seconds"]`."""
    out = {"seconds": 0.0}

    def listener(name, duration, **_):
        if name in _COMPILE_EVENTS:
            out["seconds"] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield out
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@contextlib.contextmanager
def config_keys(names: Mapping[str, str]) -> Iterator[None]:
    """Report a `SpecError` about a model parameter under the config key it came from:
    `names` maps model names to config keys (e.g. `kd_l` -> `parameters.il1b_kd_nm`), so
    a user reads `parameters.il1b_kd_nm`, never `population.typical.kd_l`."""
    try:
        yield
    except SpecError as e:
        parts = e.field.split(".")
        for i, part in enumerate(parts):
            if part in names:
                raise SpecError(".".join([names[part], *parts[i + 1:]]), e.problem) from None
        raise


def config_names(model_names: Mapping[str, str], prefix: str, **derived: str) -> dict[str, str]:
    """Model name -> config key, from a config -> model mapping (`prefix.<config key>`),
    plus `derived` model names (e.g. `r_tot` from the cell keys)."""
    return {**{m: f"{prefix}.{c}" for c, m in model_names.items()}, **derived}


def simulate_plate(
    model: Model,
    wells: Mapping[str, np.ndarray],
    times_h: Sequence[float],
    *,
    options: SolverOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PopulationSolution:
    """Solve every well of a plate in one batched call (no doses; concentrations are parameters).

    `wells[name]` has shape `(n_wells,)` (scalars broadcast). The batch is padded to
    `bucket_size(n_wells)` by repeating the last well and the padding is dropped.
    `options=None` picks `PLATE_SOLVER`, or `BINDING_SOLVER` when the binding stiffness
    $k_{on,I}(I_{tot} + R_{tot}) + k_{on,L}(L_{tot} + R_{tot})$ times the duration would
    take an explicit solver more than 30,000 steps.
    """
    if options is None:
        g = lambda k: np.asarray(wells.get(k, 0.0), float)  # noqa: E731
        stiffness = float(np.max(g("kon_i") * (g("i_tot") + g("r_tot")) + g("kon_l") * (g("l_tot") + g("r_tot"))))
        explicit_steps = stiffness * float(np.max(times_h)) / 3.0
        options = PLATE_SOLVER if explicit_steps < _MAX_EXPLICIT_STEPS else BINDING_SOLVER
    n = max(np.size(v) for v in wells.values())
    m = bucket_size(n)
    idx = np.minimum(np.arange(m), n - 1)
    params = {k: np.broadcast_to(np.asarray(v, float), (n,))[idx] for k, v in wells.items()}
    sol = simulate_population(
        model, params, lower_regimens(model, [Regimen()] * m), times_h, options=options, chunk_size=m, on_chunk=progress
    )
    return PopulationSolution(
        sol.states[:n], {k: v[:n] for k, v in sol.observables.items()}, sol.status[:n], sol.n_steps[:n], sol.times_h
    )


# ---------------------------------------------------------------------------
# noise, keyed per well


@lru_cache(maxsize=1)
def _poisson_fn():
    def one(key, i, mu):
        return jax.random.poisson(jax.random.fold_in(key, i), mu).astype(jnp.float64)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0)))


def poisson_counts(seed: int, mean: np.ndarray, stream: int = 0) -> np.ndarray:
    """Poisson counts with means `mean` (1-D); well `i` draws from `fold_in(fold_in(key, stream), i)`."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), stream)
    mean = np.asarray(mean, float)
    return np.asarray(_poisson_fn()(key, jnp.arange(mean.size), jnp.asarray(mean)))


@lru_cache(maxsize=1)
def _noise_fn():
    def one(key, i, mu, cv, sd):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        sigma = jnp.sqrt(jnp.log1p(cv**2))
        z1 = jax.random.normal(k1, mu.shape)
        z2 = jax.random.normal(k2, mu.shape)
        return jnp.maximum(mu * jnp.exp(sigma * z1 - 0.5 * sigma**2) + sd * z2, 0.0)

    return jax.jit(jax.vmap(one, in_axes=(None, 0, 0, None, None)))


def measurement_noise(seed: int, mean: np.ndarray, cv: float, sd: float, stream: int = 0) -> np.ndarray:
    """Measurement error: log-normal proportional error (coefficient of variation `cv`,
    mean preserving) plus additive normal error (`sd`, same unit), floored at 0. Used for
    immunoassay read-outs and for well-to-well variation of cells and pipetting.

    `mean` has shape `(n_wells, ...)`; well `i` draws from `fold_in(fold_in(key, stream), i)`.
    """
    key = jax.random.fold_in(jax.random.PRNGKey(seed), stream)
    mean = np.asarray(mean, float)
    return np.asarray(_noise_fn()(key, jnp.arange(mean.shape[0]), jnp.asarray(mean), float(cv), float(sd)))


# ---------------------------------------------------------------------------
# fitting


def fit_logistic4_scaled(conc, response, *, conc_unit: str = "nM", response_unit: str = "") -> FitResult:
    """`vtrial.estimation.curvefit.fit_logistic4` on the response divided by its largest magnitude,
    with `bottom`/`top`, their SEs, intervals and covariance, and the SSR mapped back.

    It is the same least-squares problem and the same estimates; the scaling keeps the
    optimiser's convergence test, which is absolute in the parameters, meaningful for
    responses in the thousands (counts per minute, pg/mL): unscaled, an exact fit of
    20,000-cpm data can end at the optimum and still be flagged as not converged.
    """
    y = np.asarray(response, float).ravel()
    conc = np.asarray(conc, float).ravel()
    solved = np.isfinite(y)  # simulated wells whose solve failed carry NaN: left out, and said so
    left_out = int(np.count_nonzero(~solved))
    if left_out:
        conc, y = conc[solved], y[solved]
        if np.unique(conc).size < 4:
            raise SpecError("wells", f"{left_out} of {solved.size} wells failed to solve, leaving too few concentrations "
                                     "for a curve fit; the design's numbers are outside what the model can solve")
    check_curve_data(conc, y)  # on the data as given: scaling would hide overflowing values
    s = float(np.max(np.abs(y))) if y.size and np.max(np.abs(y)) > 0 else 1.0
    fit = fit_logistic4(conc, y / s, conc_unit=conc_unit, response_unit=response_unit)
    if left_out:
        fit = dataclasses.replace(fit, warnings=fit.warnings + (f"{left_out} wells failed to solve and were left out of the fit",))
    k = {n: (s if n in ("bottom", "top") else 1.0) for n in fit.names}
    back = lambda d: {n: v * k[n] for n, v in d.items()}  # noqa: E731
    kv = np.array([k[n] for n in fit.names])
    return dataclasses.replace(
        fit, estimates=back(fit.estimates), se=back(fit.se), ci_low=back(fit.ci_low), ci_high=back(fit.ci_high),
        unconstrained=back(fit.unconstrained), covariance=fit.covariance * np.outer(kv, kv),
        objective=fit.objective * s * s, ssr=fit.ssr * s * s,
    )


# ---------------------------------------------------------------------------
# curve_fit.csv rows


def fit_rows(fit: FitResult, method: str, *, rename: Mapping[str, str] | None = None, notes: Mapping[str, str] | None = None,
             units: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Rows of `curve_fit.csv` from a `FitResult` (columns `CURVE_COLUMNS`)."""
    frame = fit.to_frame(units)
    frame["method"] = method
    frame["note"] = [(notes or {}).get(p, "") for p in frame["parameter"]]
    frame["parameter"] = [(rename or {}).get(p, p) for p in frame["parameter"]]
    return frame[CURVE_COLUMNS]


def value_row(parameter: str, estimate: float, unit: str, method: str, note: str = "", se: float = float("nan"),
              ci: tuple[float, float] = (float("nan"), float("nan"))) -> pd.DataFrame:
    """One row of `curve_fit.csv`."""
    return pd.DataFrame([[parameter, float(estimate), float(se), float(ci[0]), float(ci[1]), unit, method, note]], columns=CURVE_COLUMNS)


def goodness_of_fit_rows(fit: FitResult, y: np.ndarray, unit: str, method: str = "4pl") -> pd.DataFrame:
    """`r_squared` and `residual_se` of a least-squares fit of data `y`."""
    y = np.asarray(y, float)
    sst = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - fit.ssr / sst if sst > 0 else float("nan")
    return pd.concat(
        [
            value_row("r_squared", r2, "1", method, "1 - SSR/SST"),
            value_row("residual_se", fit.residual_se, unit, method, f"sqrt(SSR/(n-p)), n = {fit.n_obs}, p = {fit.n_params}"),
        ],
        ignore_index=True,
    )


def curve_table(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(list(parts), ignore_index=True)[CURVE_COLUMNS]


# ---------------------------------------------------------------------------
# plot


def plot_curve(
    conc: np.ndarray,
    response: np.ndarray,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    conc_label: str,
    response_label: str,
    title: str,
    ic50: float | None = None,
):
    """A figure of the data (points) and fitted curves (lines) on a log concentration axis.

    `curves` maps a legend label to `(x, y)`. Zero concentrations are drawn at the left
    edge with open markers. Returns the matplotlib figure (save it with
    `vtrial.io.writers.save_figure`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = np.asarray(conc, float)
    response = np.asarray(response, float)
    pos = conc > 0
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter(conc[pos], response[pos], s=18, color="C0", alpha=0.8, label="data", zorder=3)
    if (~pos).any():
        x0 = conc[pos].min() / 10 if pos.any() else 1e-3
        ax.scatter(np.full((~pos).sum(), x0), response[~pos], s=24, facecolors="none", edgecolors="C0", label="no antagonist")
    for i, (label, (x, y)) in enumerate(curves.items()):
        ax.plot(x, y, color=f"C{i + 1}", lw=1.6, ls="-" if i == 0 else "--", label=label)
    if ic50 is not None and np.isfinite(ic50):
        ax.axvline(ic50, color="C1", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel(conc_label)
    ax.set_ylabel(response_label)
    ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig

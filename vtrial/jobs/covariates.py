"""The `covariates` job: stepwise covariate modelling (`vtrial covariates`, PsN's scm).

The candidates of `[covariate_search]` (`vtrial.io.covariate_search`) are all present in
one model whose coefficients a candidate left out holds at 0 (no effect, whatever the
shape); every step fits all its models at once (`vtrial.estimation.batched_fit.fit_batch`,
one replicate per model, warm-started from the current model's estimates and EBEs):

- forward inclusion: from the base model (the config without candidates), each step
  fits the current model plus each remaining candidate and includes the one with the
  largest drop of the OFV if it is significant (p of the drop against a chi-square of
  the candidate's degrees of freedom below `forward_p`: dOFV > 3.84 for 1 df at 0.05);
  once a relation parameter ~ covariate is in, its other shapes leave the search;
- backward elimination: from the forward model, each step fits it without each included
  relation and removes the one whose removal raises the OFV least, unless that rise is
  significant at `backward_p` (dOFV > 6.63 for 1 df at 0.01).

A model that did not converge is logged and never chosen.

Outputs (written into a folder moved into place whole):
- `scm_log.csv`: every model fitted: `step`, `direction` (base, forward, backward),
  `candidate`, `ofv`, `dOFV` (forward: the drop; backward: the rise when removed),
  `df`, `p`, `converged`, `chosen`;
- `final_fit.toml`: the final model as a fit config (the base config with its
  `[[covariate_effects]]`, coefficients estimated from their final values, the
  estimates as initial values; `[covariate_search]` left out): `vtrial fit` loads it;
- `covariates.json`: the relations included, the base and final OFV, the steps.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2

from vtrial.design.population import CovariateEffect
from vtrial.errors import SpecError
from vtrial.io.config import read_toml, validate
from vtrial.io.covariate_search import toml_text
from vtrial.io.fit_config import FitConfig
from vtrial.io.run_folder import RunFolder, output_folder
from vtrial.io.writers import atomic_write, write_csv, write_json
from vtrial.jobs.bootstrap import read_fit_inputs


def candidate_effects(search, data) -> list[CovariateEffect]:
    """Each candidate as a `CovariateEffect` of coefficient 0, its reference resolved from
    the data when not given (the median; categorical: the most common value)."""
    out = []
    for c in search.candidates:
        values = np.asarray(data.covariates[c.covariate], float)
        if c.reference is not None:
            reference = float(c.reference)
        elif c.shape == "categorical":
            levels, counts = np.unique(values, return_counts=True)
            reference = float(levels[np.argmax(counts)])
        else:
            reference = float(np.median(values))
        out.append(CovariateEffect(c.parameter, c.covariate, reference, 0.0, c.shape, c.below))
    return out


def _p_value(d_ofv: float, df: int) -> float:
    return float(chi2.sf(d_ofv, df)) if np.isfinite(d_ofv) else float("nan")


class _Search:
    """The full model (base + every candidate) and the fits of sets of candidates."""

    def __init__(self, built, data, search):
        from vtrial.estimation.population import prepare_problem

        self.built, self.data = built, data
        base = built.estimation_spec()
        self.effects = candidate_effects(search, data)
        self.labels = [c.label for c in search.candidates]
        self.relations = [(c.parameter, c.covariate) for c in search.candidates]
        n_base = len(base.covariate_effects)
        self.spec = dataclasses.replace(
            base, covariate_effects=tuple(base.covariate_effects) + tuple(self.effects),
            estimate_exponents=tuple(base.estimate_exponents) + tuple(self.relations),
        )
        layout = prepare_problem(built.model, data, self.spec, built.method, built.options).layout
        position = {k: layout.n_theta + m for m, k in enumerate(layout.exponents_estimated)}
        self.columns = [position[n_base + c] for c in range(len(self.effects))]  # x entry of each candidate
        self.n_x = layout.n_x

    def fit(self, sets, x0, eta0):
        """Fit the model of each set of candidates (one batch), from `x0` / `eta0`."""
        from vtrial.estimation.batched_fit import fit_batch

        r = len(sets)
        free = np.ones((r, self.n_x), bool)
        x = np.repeat(np.asarray(x0)[None], r, axis=0)
        for row, included in enumerate(sets):
            for c in range(len(self.effects)):
                if c not in included:
                    free[row, self.columns[c]] = False
                    x[row, self.columns[c]] = 0.0
        b = self.built
        return fit_batch(b.model, self.data, self.spec, np.ones((r, self.data.n_subjects)), x0=x, free=free,
                         eta0=np.repeat(np.asarray(eta0)[None], r, axis=0), method=b.method, solver=b.options,
                         max_iterations=b.max_iterations, tolerance=b.tolerance)


def _fit_step(s: _Search, search, step: int, direction: str, candidates, sets, current, on_step):
    """One step of the search: the model of each set of candidates fitted in one batch
    from the current model (`current`: its OFV, x and EBEs), one log row per candidate
    (`candidates[row]` is the one `sets[row]` adds, forward, or leaves out, backward).
    Forward chooses the largest drop of the OFV that is significant at `forward_p`;
    backward the smallest rise that is not significant at `backward_p` (the relation that
    matters least). Returns the rows, the chosen row and the chosen model as `current`
    (None, None: none qualifies, which ends that direction); a model that did not converge
    is never chosen."""
    forward = direction == "forward"
    fits = s.fit(sets, current[1], current[2])
    rows, chosen = [], None
    for row, c in enumerate(candidates):
        ofv = float(fits.ofv[row])
        d = current[0] - ofv if forward else ofv - current[0]  # forward: the drop; backward: the rise
        p = _p_value(d, 1)
        ok = bool(fits.converged[row])
        rows.append(dict(step=step, direction=direction, candidate=s.labels[c], ofv=ofv, dOFV=d, df=1, p=p,
                         converged=ok, chosen=False))
        qualifies = p < search.forward_p if forward else p >= search.backward_p
        if ok and qualifies and (chosen is None or (d > rows[chosen]["dOFV"] if forward else d < rows[chosen]["dOFV"])):
            chosen = row
    if on_step is not None:
        on_step(direction, step)
    if chosen is None:
        return rows, None, None
    rows[chosen]["chosen"] = True
    return rows, chosen, (float(fits.ofv[chosen]), fits.x[chosen], fits.eta[chosen])


def search_covariates(built, data, search, on_step=None):
    """Forward inclusion then backward elimination (module docstring). Returns the log
    (a DataFrame of `scm_log.csv`'s rows), the included candidates (indices), the final
    model's `BatchedFit` (one row) and the search's full model (`_Search`)."""
    s = _Search(built, data, search)
    log = []
    base = s.fit([()], _start(s), np.zeros((data.n_subjects, len(built.iiv_names))))
    log.append(dict(step=0, direction="base", candidate="", ofv=float(base.ofv[0]), dOFV=np.nan, df=0, p=np.nan,
                    converged=bool(base.converged[0]), chosen=True))
    if not base.converged[0]:
        raise SpecError("covariate_search", f"the base model did not converge ({base.stopped[0]}): fix it with vtrial fit first")
    included: tuple[int, ...] = ()
    current = (float(base.ofv[0]), base.x[0], base.eta[0])
    step = 0
    while True:
        taken = {s.relations[c] for c in included}
        remaining = [c for c in range(len(s.effects)) if c not in included and s.relations[c] not in taken]
        if not remaining:
            break
        step += 1
        rows, chosen, model = _fit_step(s, search, step, "forward", remaining, [included + (c,) for c in remaining],
                                        current, on_step)
        log += rows
        if chosen is None:
            break
        included, current = included + (remaining[chosen],), model
    while included:
        step += 1
        rows, chosen, model = _fit_step(s, search, step, "backward", included,
                                        [tuple(c for c in included if c != out) for out in included], current, on_step)
        log += rows
        if chosen is None:
            break
        included, current = tuple(c for c in included if c != included[chosen]), model
    final = s.fit([included], current[1], current[2])
    return pd.DataFrame(log), included, final, s


def _start(s: _Search) -> np.ndarray:
    from vtrial.estimation.population import prepare_problem

    return prepare_problem(s.built.model, s.data, s.spec, s.built.method, s.built.options).x0


def final_config(table: dict, folder: Path, s: _Search, included, final) -> dict:
    """The config table of the final model (module docstring), validated as a fit config."""
    table = {k: v for k, v in table.items() if k != "covariate_search"}
    model = str(table["model"])
    if ".py:" in model and not Path(model.split(":")[0]).is_absolute():
        table["model"] = str((folder / model.split(":")[0]).resolve()) + ":" + model.split(":", 1)[1]
    estimates = dict(zip(final.natural_names, final.natural[0].tolist()))
    table["parameters"] = {k: float(estimates.get(k, v)) for k, v in table.get("parameters", {}).items()}
    effects = list(table.get("covariate_effects", []))
    for c in included:
        e = s.effects[c]
        coefficient = float(final.x[0, s.columns[c]])
        entry = dict(parameter=e.parameter, covariate=e.covariate, reference=float(e.reference), exponent=coefficient,
                     estimate=True)
        if e.shape != "power":
            entry["shape"] = e.shape
        if e.below:
            entry["below"] = True
        effects.append(entry)
    if effects:
        table["covariate_effects"] = effects
    table["kind"] = "fit"
    validate(FitConfig, {k: v for k, v in table.items() if k != "kind"}, folder)
    return {"kind": "fit", **{k: v for k, v in table.items() if k != "kind"}}


def run_covariates(config: str | Path, data: str | Path, *, out: str | Path | None = None, on_step=None) -> dict:
    """`vtrial covariates`: the stepwise search of the config's `[covariate_search]`
    (module docstring); returns the facts of `covariates.json` with `out_dir`."""
    inputs = read_fit_inputs(config, data)
    search = inputs.cfg.covariate_search
    if search is None:
        raise SpecError("covariate_search", "missing: give [[covariate_search.candidates]] (parameter, covariate, shape) in the config")
    folder = RunFolder(output_folder(out, f"covariates-{Path(config).stem}"),
                       {"kind": "covariates", "config_sha256": inputs.config_sha256}, chunks=False)
    start = time.perf_counter()
    try:
        log, included, final, s = search_covariates(inputs.built, inputs.data, search, on_step)
        table, _ = read_toml(config)
        text = toml_text(final_config(table, inputs.folder, s, included, final))
        write_csv(log, folder.path / "scm_log.csv")
        atomic_write(folder.path / "final_fit.toml", lambda p: p.write_text(
            f"# The final model of vtrial covariates {Path(config).name}: fit it with vtrial fit final_fit.toml DATA.csv\n" + text))
        facts = {"included": [s.labels[c] for c in included], "base_ofv": float(log["ofv"].iloc[0]),
                 "final_ofv": float(final.ofv[0]), "final_converged": bool(final.converged[0]),
                 "steps": int(log["step"].max()), "models_fitted": int(len(log)), "seconds": time.perf_counter() - start}
        write_json(facts, folder.path / "covariates.json")
    except BaseException:
        folder.discard()
        raise
    return {**facts, "out_dir": str(folder.commit())}

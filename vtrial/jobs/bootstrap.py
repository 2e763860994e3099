"""The `bootstrap` job: case-resampling bootstrap of a population fit (`vtrial bootstrap`).

Every replicate draws the dataset's subjects with replacement (within the strata of a
column with `stratify`, each stratum keeping its size, as PsN's `-stratify_on`) and is
fitted from the original fit's estimates and EBEs; the replicates are fitted together, a
batch at a time (`vtrial.estimation.batched_fit.fit_batch`: one computation over
replicates x subjects). Replicate `r` draws from `numpy.random.default_rng([seed, r])`,
so its subjects do not depend on the batches, and a replicate's fit does not depend on
which others share its batch.

Outputs (the run folder is written hidden and moved into place whole; finished batches
are kept in it, so an interrupted run continues with `resume=True` / `--resume`):
- `bootstrap_results.csv`: one row per fit, PsN's raw_results layout: `replicate` (0:
  the original dataset), `minimization_successful` (1/0), `stopped` (why the optimiser
  stopped), `iterations`, `covariance_step_run` (0: no replicate runs the step, as
  PsN's default), `ofv`, then every estimate as `parameters.csv` names it (typical values
  in their units, `omega2_<p>`, `omega_<p1>_<p2>`, `<observable>.proportional`, ...);
- `bootstrap_summary.csv`: PsN's bootstrap_results blocks as rows (`statistic`:
  `original`, `mean`, `median`, `bias` (mean - original), `se` (SD over replicates),
  `percentile_2.5`, `percentile_97.5`, `n_used`, `failed_share`), one column per
  estimate and `ofv`; statistics over the replicates whose minimisation succeeded;
- `bootstrap.json`: samples, seed, stratify, the counts and the wall time.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vtrial.errors import DataError, SpecError
from vtrial.io.config import read_toml, validate
from vtrial.io.fit_config import FitConfig
from vtrial.io.run_folder import RunFolder, output_folder
from vtrial.io.writers import write_csv, write_json
from vtrial.jobs.context import RunContext

#: Replicates fitted in one batch (memory grows with batch x subjects). On the 2-core CPU
#: Bolus_2CPT's 50 replicates take 16 s in batches of 10 or in one of 50 (the batch's
#: LAPACK calls are chunked under jaxlib's parallel threshold: `fit_batch`); a GPU gains
#: from the larger batch.
DEFAULT_BATCH = 50
MAX_SAMPLES = 100_000


@dataclass(frozen=True)
class FitInputs:
    """A fit config and its dataset, read and checked (nothing compiled)."""

    cfg: FitConfig
    built: object
    data: object
    config_sha256: str
    data_sha256: str
    folder: Path


def read_fit_inputs(config: str | Path, data: str | Path) -> FitInputs:
    """A fit config (`kind = "fit"`) and its NONMEM-style dataset, as `vtrial fit` reads them."""
    from vtrial.jobs.fit import prepare_fit

    table, sha = read_toml(config)
    kind = table.pop("kind", "fit")
    if kind != "fit":
        raise SpecError("kind", f"needs a fit config (kind = \"fit\"), got {kind!r}")
    cfg = validate(FitConfig, table, Path(config).parent)
    if not Path(data).is_file():
        raise SpecError("DATA", f"{data}: file not found")
    built, population_data = prepare_fit(cfg, RunContext(out_dir=Path("."), data=Path(data)))
    return FitInputs(cfg, built, population_data, sha, hashlib.sha256(Path(data).read_bytes()).hexdigest(), Path(config).parent)


def strata(data_file: str | Path, ids, column: str) -> np.ndarray:
    """Each subject's value of `column` (its first row's) in the dataset, in `ids` order."""
    frame = pd.read_csv(data_file)
    if column not in frame.columns:
        raise DataError(f"{data_file}: --stratify column {column!r} not found; columns: {', '.join(map(str, frame.columns))}")
    id_col = next((c for c in frame.columns if str(c).upper() == "ID"), None)
    if id_col is None:
        raise DataError(f"{data_file}: no ID column")
    first = frame.groupby(id_col, sort=False)[column].first()
    try:
        return np.asarray([first.loc[i] for i in ids])
    except KeyError as e:
        raise DataError(f"{data_file}: ID {e.args[0]} has no {column!r} value") from None


def resample_counts(n_subjects: int, replicates, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """How often each subject is drawn in each replicate `(len(replicates), n_subjects)`:
    `n_subjects` draws with replacement (per stratum of `groups`, as many as the stratum
    holds), replicate `r` from `default_rng([seed, r])`."""
    groups = np.zeros(n_subjects) if groups is None else np.asarray(groups)
    members = [np.flatnonzero(groups == g) for g in pd.unique(groups)]
    out = np.zeros((len(replicates), n_subjects))
    for row, r in enumerate(replicates):
        rng = np.random.default_rng([seed, int(r)])
        for m in members:
            np.add.at(out[row], rng.choice(m, size=m.size, replace=True), 1.0)
    return out


def _rows(fit, replicates) -> pd.DataFrame:
    frame = pd.DataFrame({
        "replicate": np.asarray(replicates, int),
        "minimization_successful": fit.converged.astype(int),
        "stopped": list(fit.stopped),
        "iterations": fit.iterations,
        "covariance_step_run": 0,
        "ofv": fit.ofv,
    })
    return pd.concat([frame, pd.DataFrame(fit.natural, columns=list(fit.natural_names))], axis=1)


def summarise(results: pd.DataFrame) -> pd.DataFrame:
    """`bootstrap_summary.csv` from `bootstrap_results.csv`'s rows (module docstring)."""
    columns = ["ofv"] + list(results.columns[results.columns.get_loc("ofv") + 1:])
    original = results[results["replicate"] == 0][columns].iloc[0]
    reps = results[results["replicate"] > 0]
    used = reps[reps["minimization_successful"] == 1][columns]
    n = len(reps)
    rows = {
        "original": original,
        "mean": used.mean(),
        "median": used.median(),
        "bias": used.mean() - original,
        "se": used.std(ddof=1),
        "percentile_2.5": used.quantile(0.025),
        "percentile_97.5": used.quantile(0.975),
        "n_used": pd.Series(float(len(used)), index=columns),
        "failed_share": pd.Series((n - len(used)) / n if n else np.nan, index=columns),
    }
    out = pd.DataFrame(rows).T[columns]
    out.insert(0, "statistic", out.index)
    return out.reset_index(drop=True)


def run_bootstrap(config: str | Path, data: str | Path, *, samples: int, stratify: str | None = None, seed: int = 0,
                  out: str | Path | None = None, resume: bool = False, batch: int = DEFAULT_BATCH,
                  progress=None) -> dict:
    """`vtrial bootstrap`: fit `samples` case-resampled replicates of `data` (module
    docstring); returns the facts of `bootstrap.json` with `out_dir`.

    `batch`: replicates fitted together (results do not depend on it);
    `progress(done, total)`: called as batches finish."""
    from vtrial.estimation.batched_fit import fit_batch

    if not (isinstance(samples, int) and 1 <= samples <= MAX_SAMPLES):
        raise SpecError("--samples", f"must be a whole number in [1, {MAX_SAMPLES}], got {samples!r}")
    if not (isinstance(batch, int) and batch >= 1):
        raise SpecError("--batch", f"must be a whole number >= 1, got {batch!r}")
    inputs = read_fit_inputs(config, data)
    built, pdata = inputs.built, inputs.data
    groups = strata(data, pdata.ids, stratify) if stratify else None
    manifest = {"kind": "bootstrap", "config_sha256": inputs.config_sha256, "data_sha256": inputs.data_sha256,
                "samples": samples, "seed": seed, "stratify": stratify, "batch": batch, "method": built.method}
    folder = RunFolder(output_folder(out, f"bootstrap-{Path(config).stem}"), manifest, resume=resume)
    start = time.perf_counter()
    chunks = folder.path / "chunks"
    chunks.mkdir(exist_ok=True)
    try:
        spec = built.estimation_spec()
        options = dict(method=built.method, solver=built.options, max_iterations=built.max_iterations, tolerance=built.tolerance)
        original = fit_batch(built.model, pdata, spec, np.ones((1, pdata.n_subjects)), **options)
        parts = [_rows(original, [0])]
        firsts = range(1, samples + 1, batch)
        for done, first in enumerate(firsts):
            path = chunks / f"replicates_{first:06d}.csv"
            if not path.is_file():
                replicates = np.arange(first, min(first + batch, samples + 1))
                weights = resample_counts(pdata.n_subjects, replicates, seed, groups)
                r = len(replicates)
                fit = fit_batch(built.model, pdata, spec, weights, x0=np.repeat(original.x, r, axis=0),
                                eta0=np.repeat(original.eta, r, axis=0), **options)
                write_csv(_rows(fit, replicates), path)
            parts.append(pd.read_csv(path))
            if progress is not None:
                progress(done + 1, len(firsts))
        results = pd.concat(parts, ignore_index=True)
        write_csv(results, folder.path / "bootstrap_results.csv")
        write_csv(summarise(results), folder.path / "bootstrap_summary.csv")
        reps = results[results["replicate"] > 0]
        facts = {"samples": samples, "seed": seed, "stratify": stratify, "method": built.method,
                 "n_subjects": pdata.n_subjects, "original_ofv": float(original.ofv[0]),
                 "original_converged": bool(original.converged[0]),
                 "failed": int((reps["minimization_successful"] == 0).sum()), "seconds": time.perf_counter() - start}
        write_json(facts, folder.path / "bootstrap.json")
    except BaseException:
        if not any(chunks.glob("replicates_*.csv")):
            folder.discard()
        raise
    out_path = folder.commit()
    return {**facts, "out_dir": str(out_path)}

"""The `fit` job's front door: fit configs (errors name their keys), `vtrial run --dataset`
(the simulated study read back by the NONMEM reader), `vtrial fit` / `vtrial check`
parsing and exit codes, and the files a fit writes.

The file-writing tests replace `vtrial.estimation.fit_population` by a tiny stand-in
(`_StandInFit`, defined here and used nowhere else) that returns the config's initial values
as "estimates": they test how the job writes a result (files, plots, VPC, exit status), not
the estimation, which tests/test_population_fit.py covers.
"""

from __future__ import annotations

import copy
import json
import tomllib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import vtrial as vt
import vtrial.estimation
from vtrial.cli import app
from vtrial.errors import SpecError
from vtrial.io.covariate_search import toml_text
from vtrial.io.nonmem import read_nonmem
from vtrial.models import get_model

from conftest import REPO_ROOT, shared_data

runner = CliRunner()
CONFIG = REPO_ROOT / "configs" / "bolus_2cpt_fit.toml"
BOLUS = "data/bolus_2cpt/bolus_2cpt_nonmem.csv"  # reference data outside the repository (shared_data)
BOLUS_TABLE = tomllib.loads(CONFIG.read_text())


class _Result:
    """A CLI result with its output's line breaks (rich wraps at 80 columns) undone."""

    def __init__(self, result):
        self.exit_code = result.exit_code
        self.output = " ".join(result.output.split())


def invoke(*args):
    return _Result(runner.invoke(app, [str(a) for a in args], catch_exceptions=False))


# ---------------------------------------------------------------------------
# configs


def test_the_shipped_fit_config_checks_without_its_dataset():
    summary = vt.check_config(CONFIG)
    assert summary["kind"] == "fit" and summary["random_effects"] == ["cl", "v1", "q", "v2"]


def test_the_shipped_fit_config_checks_with_its_dataset():
    summary = vt.check_config(CONFIG, data=shared_data(BOLUS))
    assert (summary["n_subjects"], summary["n_observations"]) == (120, 2280)


def _set(table, path, value):
    node = table
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value


BAD_KEYS = [
    (("model",), "three_compartment", "model"),
    (("parameters", "clearance"), 1.0, "parameters.clearance"),
    (("parameters", "cl"), -1.0, "parameters.cl"),
    (("parameters", "cl"), "4", "parameters.cl"),
    (("fixed",), ["vc"], "fixed.0"),
    (("variability", "omega", "vc"), 0.1, "variability.omega.vc"),
    (("variability", "omega", "cl"), 0.0, "variability.omega.cl"),
    (("variability", "cv_percent", "cl"), 30.0, "variability.cv_percent.cl"),
    (("variability", "block"), [{"parameters": ["cl", "v1"]}], "variability.block.0"),
    (("variability", "block"), [{"parameters": ["cl", "v1"], "correlation": 1.5}], "variability.block.0.correlation"),
    (("variability", "block"), [{"parameters": ["cl", "v1"], "correlation": [[1, 0.2]]}], "variability.block.0.correlation"),
    (("variability", "block"), [{"parameters": ["cl", "ka"], "correlation": 0.2}], "variability.block.0.parameters"),
    (("residual", "conc_mg_per_l", "proportional"), 0.0, "residual.conc_mg_per_l"),
    (("residual", "auc"), {"additive": 1.0}, "residual.auc"),
    (("residual",), KeyError, "residual"),
    (("data", "amt_unit"), "litre", "data.amt_unit"),
    (("data", "routes", "oral"), [1], "data.routes.oral"),
    (("data", "observables", "conc_mg_per_l", "unit"), "ug", "data.observables.conc_mg_per_l.unit"),
    (("data", "observables", "conc_mg_per_l", "colour"), "red", "data.observables.conc_mg_per_l.colour"),
    (("estimation", "method"), "saem", "estimation.method"),
    (("estimation", "max_iterations"), 0, "estimation.max_iterations"),
    (("estimation", "covariance"), "rs", "estimation.covariance"),
    (("vpc", "replicates"), -1, "vpc.replicates"),
    (("covariate_effects",), [{"parameter": "cl", "covariate": "wt", "reference": 70.0, "exponent": 0.75}],
     "covariate_effects.0.covariate"),
    (("solver", "method"), "euler", "solver.method"),
    (("estimate",), {}, "estimate"),
]


@pytest.mark.parametrize("path,value,key", BAD_KEYS, ids=[k for _, _, k in BAD_KEYS])
def test_config_errors_name_the_key(path, value, key):
    table = copy.deepcopy(BOLUS_TABLE)
    _set(table, path, value)
    with pytest.raises(SpecError) as info:
        vt.check_config(table)
    assert info.value.field == key or str(info.value).startswith(key) or f"\n{key}:" in str(info.value), str(info.value)


def test_blocks_give_correlated_initial_omega_and_the_core_spec():
    from vtrial.io.fit_config import BuiltFit, FitConfig
    from vtrial.io.config import validate

    table = copy.deepcopy(BOLUS_TABLE)
    table.pop("kind")
    table["variability"]["block"] = [{"parameters": ["cl", "v1"], "correlation": 0.5}]
    built = BuiltFit(validate(FitConfig, table))
    assert built.omega[0, 1] == pytest.approx(0.5 * 0.15)
    assert built.correlation() == {("cl", "v1"): pytest.approx(0.5)}
    del table["variability"]["omega"]["q"]
    table["variability"]["block"] = [{"parameters": ["q", "v2"], "covariance": [[0.2, 0.05], [0.05, 0.1]]}]
    table["variability"]["omega"].pop("v2")
    built = BuiltFit(validate(FitConfig, table))
    i, j = built.iiv_names.index("q"), built.iiv_names.index("v2")
    assert (built.omega[i, i], built.omega[j, j], built.omega[i, j]) == pytest.approx((0.2, 0.1, 0.05))


def test_fixed_variances_and_estimated_exponents_reach_the_spec():
    """`fixed` takes `omega2_<p>`; `estimate = true` on a covariate effect estimates its
    exponent; fixing part of a correlated block is refused by name at check time."""
    from vtrial.io.fit_config import BuiltFit, FitConfig
    from vtrial.io.config import validate

    table = copy.deepcopy(BOLUS_TABLE)
    table.pop("kind")
    table["fixed"] = ["omega2_q"]
    table["covariate_effects"] = [{"parameter": "cl", "covariate": "bw", "reference": 0.25, "exponent": 0.75, "estimate": True},
                                  {"parameter": "v1", "covariate": "bw", "reference": 0.25, "exponent": 1.0}]
    spec = BuiltFit(validate(FitConfig, table)).estimation_spec()
    assert spec.fixed == ("omega2_q",) and spec.estimate_exponents == (("cl", "bw"),)
    assert [e.exponent for e in spec.covariate_effects] == [0.75, 1.0]
    table["variability"]["block"] = [{"parameters": ["q", "v2"], "correlation": 0.3}]
    with pytest.raises(SpecError) as info:
        vt.check_config({"kind": "fit", **table})
    assert "fixed.omega2_q" in str(info.value) and "block" in str(info.value)


# ---------------------------------------------------------------------------
# vtrial run --dataset: the simulated study, read back


TRIAL = {
    "kind": "trial", "name": "pk_study", "model": "two_compartment", "seed": 3, "animals_per_arm": 3,
    "parameters": {"cl": 0.1, "v1": 1.0, "q": 0.2, "v2": 2.0},
    "variability": {"cv_percent": {"cl": 30.0, "v1": 20.0}},
    "covariates": {"bw": {"median": 0.25, "cv_percent": 10.0, "unit": "kg"}},
    "residual": {"conc_mg_per_l": {"proportional": 0.1, "additive": 0.01}},
    "arms": [
        {"name": "bolus", "doses": [{"type": "bolus", "amount": 2.0, "unit": "mg/kg", "every_h": 24.0, "count": 2}]},
        {"name": "infusion", "doses": [{"type": "infusion", "amount": 1.0, "unit": "mg", "duration_h": 2.0, "start_h": 1.0}]},
    ],
    "output": {"end_h": 48.0, "every_h": 24.0},
    "sampling": {"conc_mg_per_l": {"times_h": [0.5, 1.0, 4.0, 24.0, 30.0, 47.0]}},
}


@pytest.fixture(scope="module")
def simulated_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    config = folder / "pk_study.toml"
    config.write_text(toml_text(TRIAL))
    result = invoke("run", config, "--out", folder / "run", "--dataset", folder / "study.csv")
    assert result.exit_code == 0, result.output
    return folder


def test_run_dataset_reads_back_into_the_same_study(simulated_study):
    model = get_model("two_compartment")
    data = read_nonmem(simulated_study / "study.csv", model)
    animals = pd.read_parquet(simulated_study / "run" / "animals.parquet")
    observations = pd.read_parquet(simulated_study / "run" / "observations.parquet")
    assert sorted(data.ids.tolist()) == list(range(1, len(animals) + 1))
    order = np.argsort(data.ids)
    np.testing.assert_allclose(data.covariates["bw"][order], animals["bw"].to_numpy(), rtol=1e-9)
    for k, row in enumerate(order):
        a = animals.iloc[k]
        obs = observations[(observations.arm == a.arm) & (observations.animal == a.animal)].sort_values("time_h")
        mask = data.obs_mask[row]
        np.testing.assert_allclose(data.obs_time_h[row][mask], obs.time_h.to_numpy())
        np.testing.assert_allclose(data.dv[row][mask], obs.conc_mg_per_l.to_numpy(), rtol=1e-9)
        doses = data.doses.take(row)
        real = doses.amount > 0
        if a.arm == "bolus":
            np.testing.assert_allclose(doses.time_h[real], [0.0, 24.0])
            np.testing.assert_allclose(doses.amount[real], 2.0 * a.bw, rtol=1e-9)  # mg/kg written as mg
            np.testing.assert_array_equal(doses.duration_h[real], 0.0)
        else:
            np.testing.assert_allclose(doses.time_h[real], [1.0])
            np.testing.assert_allclose(doses.amount[real], [1.0])
            np.testing.assert_allclose(doses.duration_h[real], [2.0])
        np.testing.assert_array_equal(doses.per_kg, 0.0)
    raw = pd.read_csv(simulated_study / "study.csv", dtype=str)
    assert list(raw.columns) == ["ID", "TIME", "AMT", "RATE", "EVID", "CMT", "DVID", "DV", "MDV", "BW", "ARM"]


def test_run_dataset_is_refused_where_it_cannot_apply(tmp_path):
    config = tmp_path / "pk.toml"
    config.write_text(toml_text(TRIAL))
    result = invoke("run", config, "--out", tmp_path / "out", "--dataset", tmp_path / "study.parquet")
    assert result.exit_code == 2 and "--dataset" in result.output and not (tmp_path / "out").exists()
    result = invoke("run", REPO_ROOT / "configs" / "cia_power.toml", "--out", tmp_path / "out", "--dataset", tmp_path / "s.csv")
    assert result.exit_code == 2 and "--dataset" in result.output


# ---------------------------------------------------------------------------
# vtrial fit: parsing and exit codes


def test_fit_command_refuses_bad_input_with_exit_2(tmp_path):
    out = tmp_path / "out"
    result = invoke("fit", CONFIG, tmp_path / "missing.csv", "--out", out)
    assert result.exit_code == 2 and "missing.csv" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,TIME,AMT,EVID,CMT,DV,MDV\n1,0,100,1,1,.,1\n1,1,.,0,1,.,0\n")
    result = invoke("fit", CONFIG, bad, "--out", out)
    assert result.exit_code == 2 and "row 2" in result.output and "column DV" in result.output
    assert not out.exists()
    result = invoke("fit", CONFIG)
    assert result.exit_code == 2  # DATA is required
    result = invoke("run", CONFIG, "--out", out)
    assert result.exit_code == 2 and "DATA" in result.output


def test_fit_command_refuses_a_bad_method_or_kind_with_a_good_dataset(tmp_path):
    bolus, out = shared_data(BOLUS), tmp_path / "out"
    result = invoke("fit", CONFIG, bolus, "--out", out, "--method", "saem")
    assert result.exit_code == 2 and "--method" in result.output
    result = invoke("fit", REPO_ROOT / "configs" / "cia_power.toml", bolus, "--out", out)
    assert result.exit_code == 2 and "kind" in result.output
    assert not out.exists()


def test_check_accepts_a_fit_config_and_its_dataset(tmp_path):
    result = invoke("check", CONFIG)
    assert result.exit_code == 0 and "fit" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("ID,TIME,AMT,EVID,CMT,DV,MDV\n1,0,100,1,1,.,1\n1,1,.,0,1,3,0\n1,0.5,.,0,1,3,0\n")
    result = invoke("check", CONFIG, "--data", bad)
    assert result.exit_code == 2 and "TIME" in result.output


# ---------------------------------------------------------------------------
# what a fit writes (with a stand-in for the estimator: see the module docstring)


@dataclass
class _StandInFit:
    """Test double of `PopulationFit`: the initial values as estimates, data as predictions."""

    spec: object
    data: object
    model: object
    method: str
    converged: bool = True
    covariance_step: str = "ok"
    warnings: list = field(default_factory=list)

    ofv = 123.4
    ofv_with_constant = 150.0
    aic = 133.4
    bic = 140.0
    iterations = 7
    seconds = 0.5
    eta_shrinkage_pct = {"cl": 10.0, "v1": 20.0}
    epsilon_shrinkage_pct = {"conc_mg_per_l": 5.0}
    censoring = "none"
    n_censored = 0

    @property
    def n_subjects(self):
        return int(len(self.data.ids))

    @property
    def n_observations(self):
        return int(self.data.obs_mask.sum())

    def to_frame(self):
        rows = [(k, v, False) for k, v in self.spec.typical.items()]
        rows += [(f"omega2_{k}", v, False) for k, v in self.spec.omega2.items()]
        rows += [(f"{o}.{kind}", getattr(r, kind), False) for o, r in self.spec.residual.items()
                 for kind in ("additive", "proportional") if getattr(r, kind) > 0]
        return pd.DataFrame({"name": [r[0] for r in rows], "estimate": [r[1] for r in rows], "se": np.nan, "rse_pct": np.nan,
                             "ci_low": np.nan, "ci_high": np.nan, "unit": "", "fixed": [r[2] for r in rows]})

    def individual_frame(self):
        return pd.DataFrame({"ID": self.data.ids, "eta_cl": 0.0})

    def predictions_frame(self):
        m = self.data.obs_mask
        s = np.nonzero(m)[0]
        dv = self.data.dv[m]
        return pd.DataFrame({"ID": self.data.ids[s], "TIME": self.data.obs_time_h[m], "observable": "conc_mg_per_l", "DV": dv,
                             "PRED": dv * 0.9, "IPRED": dv * 0.95, "RES": dv * 0.1, "IWRES": 0.1, "CWRES": np.linspace(-2, 2, dv.size)})


def _stand_in(converged=True, covariance="ok"):
    calls = []

    def fit_population(model, data, spec, *, method, solver, max_iterations, tolerance, covariance: str, on_iteration,
                       censoring=None):
        calls.append(dict(method=method, max_iterations=max_iterations, covariance=covariance))
        if on_iteration is not None:
            on_iteration(1, 200.0)
        return _StandInFit(spec, data, model, method, converged, covariance_step)

    covariance_step = covariance
    return fit_population, calls


FIT = """
kind = "fit"
model = "two_compartment"
[parameters]
cl = 0.1
v1 = 1.0
q = 0.2
v2 = 2.0
[variability.omega]
cl = 0.09
v1 = 0.04
[residual.conc_mg_per_l]
proportional = 0.1
additive = 0.01
[estimation]
method = "foce"
[vpc]
replicates = 5
"""


def test_fit_writes_its_files_and_a_trial_seed(simulated_study, tmp_path, monkeypatch):
    stand_in, calls = _stand_in()
    monkeypatch.setattr(vtrial.estimation, "fit_population", stand_in, raising=False)
    config = tmp_path / "pk_fit.toml"
    config.write_text(FIT)
    out = tmp_path / "fit"
    result = invoke("fit", config, simulated_study / "study.csv", "--out", out, "--method", "laplace")
    assert result.exit_code == 0, result.output
    assert calls == [{"method": "laplace", "max_iterations": 200, "covariance": "sandwich"}]
    for name in ("parameters.csv", "individual.csv", "predictions.csv", "fit.json", "gof.png", "vpc.png", "vpc.csv",
                 "trial_seed.toml", "run.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "fit.json").read_text())
    assert info["ofv"] == 123.4 and info["converged"] is True and info["n_subjects"] == 6 and info["device"]
    assert info["eta_shrinkage_pct"] == {"cl": 10.0, "v1": 20.0}
    assert "omega2_cl" in result.output  # the estimates are printed after a successful fit
    vpc = pd.read_csv(out / "vpc.csv")
    assert set(vpc.percentile) == {5.0, 50.0, 95.0} and (vpc.sim_low <= vpc.sim_high).all()
    assert np.isfinite(vpc.observed).all()
    # the estimates seed a trial config: add arms and output, and it checks
    seed = tomllib.loads((out / "trial_seed.toml").read_text())
    assert seed["variability"]["omega2"] == {"cl": 0.09, "v1": 0.04}
    assert seed["residual"]["conc_mg_per_l"] == {"additive": 0.01, "proportional": 0.1}
    seed.update(arms=TRIAL["arms"], output=TRIAL["output"], kind="trial")
    assert vt.check_config(seed)["kind"] == "trial"


def test_a_gof_figure_that_cannot_be_drawn_is_recorded_and_the_rest_is_written(simulated_study, tmp_path, monkeypatch):
    """The goodness-of-fit figure is drawn in a thread while the VPC is simulated: its
    failure is still a warning in run.json, and every number and the VPC figure are written."""
    import vtrial.jobs.fit as fit_job

    def broken(*args, **kwargs):
        raise ValueError("arange: cannot compute length")

    stand_in, _ = _stand_in()
    monkeypatch.setattr(vtrial.estimation, "fit_population", stand_in, raising=False)
    monkeypatch.setattr(fit_job, "plot_gof", broken)
    config = tmp_path / "pk_fit.toml"
    config.write_text(FIT)
    out = tmp_path / "fit"
    result = invoke("fit", config, simulated_study / "study.csv", "--out", out)
    assert result.exit_code == 0, result.output
    assert not (out / "gof.png").exists()
    for name in ("parameters.csv", "predictions.csv", "vpc.csv", "vpc.png", "fit.json", "run.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "run.json").read_text())
    assert info["warnings"] == ["gof.png was not drawn: ValueError: arange: cannot compute length"]


@pytest.mark.parametrize("converged,covariance,words", [(False, "ok", "did not converge"),
                                                         (True, "failed: R matrix not positive definite", "covariance step")])
def test_a_failed_fit_writes_its_outputs_and_exits_3(simulated_study, tmp_path, monkeypatch, converged, covariance, words):
    stand_in, _ = _stand_in(converged, covariance)
    monkeypatch.setattr(vtrial.estimation, "fit_population", stand_in, raising=False)
    config = tmp_path / "pk_fit.toml"
    config.write_text(FIT.replace("replicates = 5", "replicates = 0"))
    out = tmp_path / "fit"
    result = invoke("fit", config, simulated_study / "study.csv", "--out", out)
    assert result.exit_code == 3, result.output
    assert words in result.output
    info = json.loads((out / "fit.json").read_text())
    assert (info["converged"], info["covariance_step"]) == (converged, covariance)
    if not converged:
        assert "OFV: 123.4" not in result.output  # no numbers printed as if it had succeeded


def test_covariance_none_skips_the_step_and_succeeds(simulated_study, tmp_path, monkeypatch):
    """`covariance = "none"` (a NONMEM run without $COV): the estimator is asked for no
    covariance step, and a converged fit without one exits 0."""
    stand_in, calls = _stand_in(True, "not requested")
    monkeypatch.setattr(vtrial.estimation, "fit_population", stand_in, raising=False)
    config = tmp_path / "pk_fit.toml"
    config.write_text(FIT.replace('method = "foce"', 'method = "foce"\ncovariance = "none"').replace("replicates = 5", "replicates = 0"))
    out = tmp_path / "fit"
    result = invoke("fit", config, simulated_study / "study.csv", "--out", out)
    assert result.exit_code == 0, result.output
    assert calls[0]["covariance"] is None
    assert json.loads((out / "fit.json").read_text())["covariance_step"] == "not requested"


@pytest.mark.long  # a real fit stopped by its iteration limit (the exit-3 path is checked by default with the stand-in estimator)
def test_the_real_estimator_stopped_early_says_so_and_exits_3(simulated_study, tmp_path):
    """End to end with the real estimator (no stand-in): `vtrial fit` on the study that
    `vtrial run --dataset` wrote, allowed one outer iteration, cannot converge; it writes
    every output saying so, prints no estimates table and exits 3. The OFV it reports is
    the estimator's own objective at the parameters it stopped at."""
    config = tmp_path / "pk_fit.toml"
    config.write_text(FIT.replace("replicates = 5", "replicates = 0").replace('method = "foce"', 'method = "foce"\nmax_iterations = 1'))
    out = tmp_path / "fit"
    result = invoke("fit", config, simulated_study / "study.csv", "--out", out)
    assert result.exit_code == 3, result.output
    assert "not a minimum" in result.output and "SE and 95% CI" not in result.output  # no table as if it had succeeded
    info = json.loads((out / "fit.json").read_text())
    assert info["converged"] is False and info["iterations"] == 1
    assert (info["n_subjects"], info["n_observations"]) == (6, 36)
    parameters = pd.read_csv(out / "parameters.csv")
    assert {"cl", "v1", "omega2_cl", "conc_mg_per_l.proportional"} <= set(parameters["name"])
    predictions = pd.read_csv(out / "predictions.csv")
    assert len(predictions) == 36 and np.isfinite(predictions[["PRED", "IPRED", "CWRES"]].to_numpy()).all()
    model = get_model("two_compartment")
    data = read_nonmem(simulated_study / "study.csv", model)
    table = {k: v for k, v in tomllib.loads(config.read_text()).items() if k != "kind"}  # the job table reads `kind`
    spec = vt.io.fit_config.BuiltFit(vt.io.fit_config.FitConfig.model_validate(table)).estimation_spec()
    start = vtrial.estimation.population_objective(model, data, spec, method="foce", gradient=False)
    assert info["ofv"] < start.ofv  # the one iteration it took went downhill


def test_the_cia_study_written_by_run_dataset_checks_against_cia_fit(tmp_path):
    """configs/cia_fit.toml reads the card's reference study as `vtrial run --dataset`
    writes it: s.c. pump doses by CMT 1, concentrations and paw volumes by DVID, BW."""
    study = tmp_path / "cia_study.csv"
    result = invoke("run", REPO_ROOT / "configs" / "cia_rat_liu2011.toml", "--out", tmp_path / "run", "--animals-per-arm", 1,
                    "--dataset", study)
    assert result.exit_code == 0, result.output
    summary = vt.check_config(REPO_ROOT / "configs" / "cia_fit.toml", data=study)
    assert (summary["n_subjects"], summary["n_observations"]) == (4, 4 * (36 + 14))  # every arm sampled, the vehicle one too
    model = get_model("cia_rat")
    data = read_nonmem(study, model, tomllib.loads((REPO_ROOT / "configs" / "cia_fit.toml").read_text())["data"])
    observed = {model.observable_names[j] for j in np.unique(data.obs_observable[data.obs_mask])}
    assert observed == {"conc_mg_per_l", "paw_volume_ml"}
    treated = data.doses.amount.sum(axis=1) > 0
    assert treated.tolist() == [False, True, True, True]
    assert set(np.unique(data.doses.route[data.doses.amount > 0])) == {model.route_index("sc")}
    np.testing.assert_allclose(np.sort(data.doses.duration_h[data.doses.amount > 0]), [33.0, 188.0, 188.0], rtol=1e-8)


# ---------------------------------------------------------------------------
# the VPC's simulations and numbers


def test_replicate_studies_without_variability_are_each_subjects_prediction():
    """With no random effects and no residual error, every replicate of every subject is
    the engine's solve of that subject's own doses, covariates and observation times."""
    from vtrial.design.population import Population
    from vtrial.design.replicate_study import simulate_replicate_studies
    from vtrial.engine.events import DoseRecords

    model = get_model("two_compartment")
    population = Population(model, typical={"cl": 0.2, "v1": 1.5})
    doses = DoseRecords(np.array([[0.0, 12.0], [1.0, 0.0]]), np.array([[1.0, 0.5], [2.0, 0.0]]), np.zeros((2, 2)),
                        np.array([[0.0, 0.0], [2.0, 0.0]]), np.zeros((2, 2), np.int32))
    times = np.array([[0.5, 6.0, 13.0], [0.5, 3.0, 3.0]])
    sims = simulate_replicate_studies(population, doses, {}, times, np.zeros((2, 3), np.int64), replicates=3, seed=1)
    assert sims.shape == (3, 2, 3)
    for s in range(2):
        one = vt.simulate_population(model, {k: np.full(1, v) for k, v in population.typical_parameters().items()},
                                     doses.take([s]), np.unique(times[s]), states=False)
        expected = np.interp(times[s], np.unique(times[s]), one.observables["conc_mg_per_l"][0])
        for r in range(3):
            np.testing.assert_allclose(sims[r, s], expected, rtol=1e-12)


def test_vpc_table_compares_observed_and_simulated_percentiles_per_bin():
    from vtrial.analysis.fit_plots import vpc_table

    rng = np.random.default_rng(0)
    time = np.repeat([1.0, 2.0, 4.0], 200)
    dv = rng.normal(10.0, 1.0, time.size)
    sims = rng.normal(10.0, 1.0, (100, time.size))
    table = vpc_table(np.zeros(time.size, int), time, dv, sims, ["y"])
    assert len(table) == 3 * 3 and table.time.unique().tolist() == [1.0, 2.0, 4.0]
    median = table[table.percentile == 50.0]
    assert ((median.sim_low < 10.0) & (median.sim_high > 10.0)).all()
    assert ((median.observed - 10.0).abs() < 0.2).all()
    shifted = vpc_table(np.zeros(time.size, int), time, dv + 3.0, sims, ["y"])
    assert (shifted[shifted.percentile == 50.0].observed > shifted[shifted.percentile == 50.0].sim_high).all()


def test_vtrial_fit_reads_the_config_and_data_and_calls_the_estimator(simulated_study, monkeypatch, tmp_path):
    stand_in, calls = _stand_in()
    monkeypatch.setattr(vtrial.estimation, "fit_population", stand_in, raising=False)
    table = tomllib.loads(FIT)
    result = vt.fit(table, simulated_study / "study.csv", method="fo")
    assert result.n_subjects == 6 and calls[-1]["method"] == "fo"
    assert set(result.to_frame().name) >= {"cl", "v1", "q", "v2", "omega2_cl", "conc_mg_per_l.proportional"}
    # a fitted result seeds a trial config
    text = vt.trial_config_from_fit(result, "two_compartment", path=tmp_path / "seed.toml")
    seed = tomllib.loads((tmp_path / "seed.toml").read_text())
    assert tomllib.loads(text) == seed and seed["parameters"] == {"cl": 0.1, "v1": 1.0, "q": 0.2, "v2": 2.0}
    seed.update(kind="trial", arms=TRIAL["arms"], output=TRIAL["output"],
                covariate_effects=[{"parameter": "cl", "covariate": "bw", "reference": 0.25, "exponent": 0.75}])
    assert vt.check_config(seed)["kind"] == "trial"
    # dv_scale: one number for every observable, or one per observable; anything else is named
    assert vt.trial_config_from_fit(result, "two_compartment", 1.0) == vt.trial_config_from_fit(result, "two_compartment", [1.0])
    for bad in ([1.0, 2.0], 0.0, float("nan")):
        with pytest.raises(SpecError, match="dv_scale"):
            vt.trial_config_from_fit(result, "two_compartment", bad)
    with pytest.raises(SpecError, match="kind"):
        vt.fit({**table, "kind": "trial"}, simulated_study / "study.csv")
    with pytest.raises(SpecError, match="DATA"):
        vt.fit(table, tmp_path / "none.csv")


def test_the_trial_seed_carries_correlations_and_covariate_effects():
    from vtrial.design.population import CovariateEffect, Population, ResidualError
    from vtrial.io.fit_config import trial_config_fragment

    model = get_model("two_compartment")
    population = Population.build(model, typical={"cl": 0.3}, omega2={"cl": 0.1, "v1": 0.2}, correlation={("cl", "v1"): 0.4},
                                  covariate_effects=[CovariateEffect("cl", "bw", 0.25, 0.75)],
                                  residual={"conc_mg_per_l": ResidualError(0.01, 0.1)})
    seed = tomllib.loads(trial_config_fragment(model, population))
    assert seed["variability"]["correlation"] == [{"a": "cl", "b": "v1", "r": pytest.approx(0.4)}]
    assert seed["covariate_effects"] == [{"parameter": "cl", "covariate": "bw", "reference": 0.25, "exponent": 0.75}]
    seed.update(kind="trial", arms=TRIAL["arms"], output=TRIAL["output"])
    assert vt.check_config(seed)["kind"] == "trial"

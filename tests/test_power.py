"""Power by replicate virtual studies (`vtrial.power`, the `power` job).

- a normal endpoint with a known effect (one-compartment infusions, no variability
  between animals, additive measurement error): the simulated power of the t-tests
  matches the analytic power within Monte Carlo error at every study size;
- the smaller studies are the first animals of the largest (nested), and the results do
  not depend on the chunk size;
- the job writes power.csv, power.png and study_size.json; bad input is refused before
  anything is solved; the shipped CIA config builds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import vtrial as vt
from vtrial.analysis.statistics import t_test_power
from vtrial.io.config import read_toml, validate
from vtrial.io.optimize_config import BuiltPower, PowerConfig
from vtrial.limits import MAX_ANIMALS

ROOT = Path(__file__).resolve().parents[1]
MODEL = vt.models.one_compartment()
SIGMA, RATES, CL = 0.5, (0.1, 0.13), 0.1  # steady state R / CL: 1.0 and 1.3 mg/L, effect 0.3 mg/L
SIZES = (5, 10, 20)
REPLICATES = 2000
CHUNK = 500  # one compiled batch shape for every test but the chunk-size check


def _arms():
    return [vt.Arm(name, vt.Regimen((vt.Infusion(240.0, rate=r, unit="mg/h"),))) for name, r in zip(("control", "treated"), RATES)]


def _power(**kw):
    population = vt.Population.build(MODEL, residual={"conc_mg_per_l": vt.ResidualError(additive=SIGMA)})
    args = dict(control="control", endpoint=vt.Endpoint("c200", "conc_mg_per_l", "value", 200.0), times_h=[0.0, 100.0, 200.0],
                animals_per_arm=SIZES, replicates=REPLICATES, tests=("welch", "dunnett", "mann_whitney"), seed=3, chunk_size=CHUNK)
    return vt.power(MODEL, _arms(), population, **{**args, **kw})


@pytest.fixture(scope="module")
def result():
    return _power()


def test_power_matches_the_analytic_t_test_power(result):
    effect = (RATES[1] - RATES[0]) / CL / SIGMA  # standardised: 0.6
    for test in ("welch", "dunnett"):  # with one comparison Dunnett's test is Student's t
        got = result.table[result.table["test"] == test].set_index("n")["power"]
        for n in SIZES:
            want = float(t_test_power(effect, n))
            mc_se = np.sqrt(want * (1 - want) / REPLICATES)
            assert abs(got[n] - want) < 3.5 * mc_se, (test, n, got[n], want)
    # the Mann-Whitney test is slightly less powerful on normal data (efficiency 3/pi)
    mw = result.table[result.table["test"] == "mann_whitney"].set_index("n")["power"]
    welch = result.table[result.table["test"] == "welch"].set_index("n")["power"]
    assert np.all(mw <= welch + 0.02)


def test_table_intervals_and_smallest_n(result):
    t = result.table
    assert list(t.columns[:6]) == ["n", "test", "comparison", "power", "ci_low", "ci_high"]
    assert np.all((t["ci_low"] <= t["power"]) & (t["power"] <= t["ci_high"]))
    assert set(t["comparison"]) == {"treated vs control"}
    assert result.smallest_n["welch: treated vs control"] is None  # power at n = 20 is ~0.46 < 0.8
    high = _power(target_power=0.4, tests=("welch",), replicates=200)
    assert high.smallest_n["welch: treated vs control"] == 20


def test_smaller_studies_are_nested_and_chunks_do_not_matter(result):
    small = _power(animals_per_arm=(5,), replicates=50, chunk_size=7)
    # the replicate studies of another largest size hold other animals, but a study's
    # first animals are always the same: positions r * n_max + k of the arm
    assert small.endpoint_values["control"].shape == (50, 5)
    again = _power(animals_per_arm=(5,), replicates=50)
    pd.testing.assert_frame_equal(small.table, again.table)
    for arm in ("control", "treated"):
        np.testing.assert_array_equal(small.endpoint_values[arm], again.endpoint_values[arm])


def test_bad_input_is_refused():
    population = vt.Population.build(MODEL, residual={"conc_mg_per_l": vt.ResidualError(additive=SIGMA)})
    endpoint = vt.Endpoint("c200", "conc_mg_per_l", "value", 200.0)
    with pytest.raises(vt.SpecError, match="control_arm"):
        vt.power(MODEL, _arms(), population, control="vehicle", endpoint=endpoint, times_h=[200.0])
    with pytest.raises(vt.SpecError, match="animals_per_arm"):
        vt.power(MODEL, _arms(), population, control="control", endpoint=endpoint, times_h=[200.0], animals_per_arm=[1, 5])
    with pytest.raises(vt.SpecError, match="tests"):
        vt.power(MODEL, _arms(), population, control="control", endpoint=endpoint, times_h=[200.0], tests=["anova"])
    with pytest.raises(vt.SpecError, match="residual"):
        vt.power(MODEL, _arms(), vt.Population(MODEL), control="control", endpoint=endpoint, times_h=[200.0], replicates=2)


CONFIG = {
    "kind": "power", "name": "pk_power", "model": "one_compartment", "seed": 3, "replicates": 200, "chunk_size": CHUNK, "animals_per_arm": [4, 8],
    "control_arm": "low", "residual": {"conc_mg_per_l": {"additive": 0.5}}, "tests": ["welch", "mann_whitney", "dunnett"],
    "arms": [{"name": n, "doses": [{"type": "infusion", "duration_h": 240, "rate": r, "unit": "mg/h"}]}
             for n, r in (("low", 0.1), ("high", 0.15), ("higher", 0.2))],
    "output": {"end_h": 200, "every_h": 100},
    "endpoint": {"name": "c200", "observable": "conc_mg_per_l", "statistic": "value", "time_h": 200},
}


def test_the_job_writes_its_outputs(tmp_path):
    record = vt.run_config(CONFIG, out=tmp_path / "power")
    assert record.files == ("power.csv", "power.png", "run.json", "study_size.json")
    table = pd.read_csv(record.out_dir / "power.csv")
    assert len(table) == 2 * 3 * 2  # sizes x tests x comparisons
    size = json.loads((record.out_dir / "study_size.json").read_text())
    assert size["smallest_n"] == record.facts["smallest_n"] and size["correction"] == "holm"


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(vt.SpecError, match=r"arms\.0\.animals"):
        vt.run_config({**CONFIG, "arms": [{**CONFIG["arms"][0], "animals": 5}, *CONFIG["arms"][1:]]}, out=tmp_path / "a")
    with pytest.raises(vt.SpecError, match=r"residual\.conc_mg_per_l"):
        vt.run_config({**CONFIG, "residual": {}}, out=tmp_path / "b")
    with pytest.raises(vt.SpecError, match="correction"):
        vt.run_config({**CONFIG, "correction": "sidak"}, out=tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_shipped_cia_power_config_builds():
    data, _ = read_toml(ROOT / "configs" / "cia_power.toml")
    assert data.pop("kind") == "power"
    built = BuiltPower(validate(PowerConfig, data))
    assert built.endpoint.statistic == "auc" and built.cfg.control_arm == "vehicle"
    assert set(built.sampling["paw_swelling_pct"]) <= set(built.times_h)


def test_check_and_command_line_overrides():
    """`vtrial check` reports the study without solving; `--animals-per-arm` studies that n
    only, `--typical` removes the variability, `--animals` is refused by name."""
    facts = vt.check_config(CONFIG)
    assert facts["animals_per_arm"] == [4, 8] and facts["arms"] == ["low", "high", "higher"]
    assert vt.check_config(CONFIG, animals_per_arm=6)["animals_per_arm"] == [6]
    with pytest.raises(vt.SpecError, match="--animals"):
        vt.check_config(CONFIG, animals=pd.DataFrame({"animal": [1], "arm": ["low"]}))
    with pytest.raises(vt.SpecError, match="--animals-per-arm"):
        vt.check_config(CONFIG, animals_per_arm=1)
    with pytest.raises(vt.SpecError, match="replicates"):
        vt.check_config({**CONFIG, "replicates": MAX_ANIMALS})  # x 8 animals x 3 arms

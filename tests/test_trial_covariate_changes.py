"""Covariates that change within an animal in a given-animals trial (`vtrial run CONFIG
--animals FILE` with a `time_h` column): a row's covariates hold for the interval that
ends at its time (NONMEM's next observation carried back), as in a NONMEM dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vtrial.design.trial import animal_covariate_changes, check_trial
from vtrial.errors import SpecError
from vtrial.jobs.predict import predict
from vtrial.jobs.run import run_config

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from nmtests_model import nmtests_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = f"""\
kind = "trial"
name = "weight_change"
model = "{(ROOT / 'tests' / 'models' / 'nmtests_model.py').as_posix()}:nmtests_model_wt"
[parameters]
cl = 1.1
v = 20.0
ka = 1.5
[residual.cp]
additive = 1.0
[[arms]]
name = "oral"
doses = [{{ type = "bolus", route = "depot", amount = 100, unit = "mg", time_h = 0 }},
         {{ type = "bolus", route = "depot", amount = 100, unit = "mg", time_h = 24 }}]
[output]
end_h = 48
every_h = 2
"""
# Animal 1 weighs 70 kg up to 12 h and 40 kg after (the 40 on the row at 30 h holds over
# (12, 30] and on); animal 2 weighs 90 kg throughout.
ANIMALS = "arm,animal,time_h,wt\noral,1,0,70\noral,1,12,70\noral,1,30,40\noral,2,0,90\n"


def weight(animal: int, t: float) -> float:
    return 90.0 if animal == 2 else (70.0 if t <= 12 else 40.0)


@pytest.mark.long
def test_a_weight_change_mid_study_equals_the_datasets_prediction(tmp_path):
    (tmp_path / "trial.toml").write_text(CONFIG)
    (tmp_path / "animals.csv").write_text(ANIMALS)
    run_config(tmp_path / "trial.toml", out=tmp_path / "run", animals=tmp_path / "animals.csv")
    trajectories = pd.read_parquet(tmp_path / "run" / "trajectories.parquet")
    rows = ["ID,TIME,AMT,EVID,CMT,DV,MDV,WT"]
    for animal in (1, 2):
        for t in range(0, 49, 2):
            dose = t in (0, 24)
            rows.append(f"{animal},{t},{100 if dose else '.'},{int(dose)},{1 if dose else 2},.,{int(dose)},{weight(animal, t):g}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    table = predict(tmp_path / "trial.toml", tmp_path / "data.csv").table
    obs = table[table.EVID == "0"]
    expected = obs.assign(animal=obs.ID.astype(int), time_h=obs.TIME.astype(float))[["animal", "time_h", "PRED"]]
    both = trajectories.merge(expected, on=["animal", "time_h"])
    assert len(both) == 2 * 23
    np.testing.assert_allclose(both.cp, both.PRED, rtol=1e-9)
    one = both[both.animal == 1]
    cl_70, cl_40 = 1.1 * (70 / 70) ** 0.75, 1.1 * (40 / 70) ** 0.75
    tail = one[one.time_h >= 40].cp.to_numpy()  # the terminal slope is the 40 kg clearance's
    assert np.log(tail[0] / tail[-1]) / 8.0 == pytest.approx(cl_40 / 20.0, rel=2e-2)  # not cl_70 / 20
    assert abs(cl_70 - cl_40) > 0.2


def _check(animals: pd.DataFrame):
    from vtrial.design.dosing import Bolus, Regimen
    model = nmtests_model(weight=True)
    regimen = Regimen((Bolus(100.0, route="depot"),))
    return model, check_trial(model, regimen, times_h=[1.0, 2.0], animals=animals)


def test_long_form_animals_give_changes_at_the_previous_rows_time():
    animals = pd.read_csv(pd.io.common.StringIO(ANIMALS.replace("oral", "arm")))
    model, (_, _, _, table) = _check(animals)
    assert table["wt"].tolist() == [70.0, 90.0] and table["animal"].tolist() == [1, 2]
    changes = animal_covariate_changes(model, animals, table)
    wt = model.covariate_names.index("wt")
    assert changes.time_h.tolist() == [[12.0], [0.0]]
    assert changes.values[0, 0, wt] == 40.0 and np.isnan(changes.values[1, 0, wt])


@pytest.mark.parametrize("text,field,words", [
    ("arm,animal,time_h,wt\narm,1,0,70\narm,1,0,80\n", "animals.time_h", "row 2: animal 1 of arm 'arm' has two rows at 0 h"),
    ("arm,animal,time_h,wt,cl\narm,1,0,70,1\narm,1,5,80,2\n", "animals.cl", "row 2: animal 1 changes parameter cl"),
    ("arm,animal,time_h,wt\narm,1,-1,70\n", "animals.time_h", "row 1: -1 h is before"),
    ("arm,animal,time_h,wt\narm,1,0,70\narm,1,5,x\n", "animals.wt", "row 2"),
    ("arm,animal,time_h,wt\narm,1,0,70\narm,1,5,-3\n", "animals", "wt"),
])
def test_bad_long_form_animals_are_named(text, field, words):
    with pytest.raises(SpecError) as info:
        _check(pd.read_csv(pd.io.common.StringIO(text)))
    assert info.value.field.startswith(field) and words in str(info.value), str(info.value)

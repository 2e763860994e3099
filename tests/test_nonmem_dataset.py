"""The NONMEM dataset reader (`vtrial.io.nonmem.read_nonmem`): every malformed row is a
`DatasetError` naming the row, the column and the rule; what reads, reads right (ADDL/II
expansion equals the doses written out, infusions, CMT by number or name, DVID,
covariates, units, case, "." as missing), and the Bolus_2CPT reference set reads into its
120 subjects and 2,280 observations."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from vtrial.errors import DatasetError, SpecError
from vtrial.io.nonmem import DataSpec, read_nonmem
from vtrial.io.nonmem_writer import dose_cmt
from vtrial.models import get_model

from conftest import REPO_ROOT, shared_data

BOLUS = "data/bolus_2cpt/bolus_2cpt_nonmem.csv"  # reference data outside the repository (shared_data)
IV = get_model("two_compartment")
ORAL = get_model("one_compartment_absorption")


def write(tmp_path, text: str, name="data.csv"):
    path = tmp_path / name
    path.write_text("\n".join(line.strip() for line in text.strip().splitlines()) + "\n")
    return path


GOOD = """
ID,TIME,AMT,RATE,EVID,CMT,DV,MDV,WT
1,0,100,.,1,1,.,1,70
1,1,.,.,0,1,2.5,0,.
1,2,0,0,0,1,1.5,0,70
2,0,50,.,1,1,.,1,80
2,0.5,.,.,0,1,0.9,0,80
2,4,.,.,2,.,.,1,80
"""


def test_a_good_dataset_reads_with_rows_covariates_and_padding(tmp_path):
    d = read_nonmem(write(tmp_path, GOOD), IV, {"covariates": {"bw": "WT"}})
    assert d.ids.tolist() == [1, 2]
    np.testing.assert_array_equal(d.doses.amount, [[100.0], [50.0]])
    np.testing.assert_array_equal(d.doses.duration_h, 0.0)
    np.testing.assert_array_equal(d.obs_mask, [[True, True], [True, False]])
    np.testing.assert_array_equal(d.obs_time_h, [[1.0, 2.0], [0.5, 0.5]])  # padded with the last time
    np.testing.assert_array_equal(d.dv[d.obs_mask], [2.5, 1.5, 0.9])
    np.testing.assert_array_equal(d.obs_row, [[2, 3], [5, -1]])  # 1-based data rows
    np.testing.assert_array_equal(d.covariates["bw"], [70.0, 80.0])
    np.testing.assert_array_equal(d.dv_scale, [1.0])


def test_wt_is_the_body_weight_when_there_is_no_bw_column(tmp_path):
    d = read_nonmem(write(tmp_path, GOOD), IV)
    np.testing.assert_array_equal(d.covariates["bw"], [70.0, 80.0])


def test_column_names_are_not_case_sensitive(tmp_path):
    lower = GOOD.replace("ID,TIME,AMT,RATE,EVID,CMT,DV,MDV,WT", "id,time,amt,rate,evid,cmt,dv,mdv,bw")
    a = read_nonmem(write(tmp_path, GOOD), IV, {"covariates": {"bw": "wt"}})
    b = read_nonmem(write(tmp_path, lower, "lower.csv"), IV)  # bw found by its own name, any case
    for x, y in zip(a[:6], b[:6]):
        for u, v in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y), strict=True):
            np.testing.assert_array_equal(np.asarray(u, dtype=object), np.asarray(v, dtype=object))
    np.testing.assert_array_equal(a.covariates["bw"], b.covariates["bw"])


def test_addl_ii_expansion_equals_the_doses_written_out(tmp_path):
    compact = write(tmp_path, """
        ID,TIME,AMT,EVID,CMT,II,ADDL,DV,MDV
        1,0,10,1,1,12,3,.,1
        1,40,.,0,1,.,.,1.0,0
    """, "compact.csv")
    written = write(tmp_path, """
        ID,TIME,AMT,EVID,CMT,DV,MDV
        1,0,10,1,1,.,1
        1,12,10,1,1,.,1
        1,24,10,1,1,.,1
        1,36,10,1,1,.,1
        1,40,.,0,1,1.0,0
    """, "written.csv")
    a, b = read_nonmem(compact, IV), read_nonmem(written, IV)
    for x, y in zip(a.doses, b.doses):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.doses.time_h, [[0.0, 12.0, 24.0, 36.0]])


def test_rate_gives_an_infusion_of_amount_over_rate(tmp_path):
    d = read_nonmem(write(tmp_path, """
        ID,TIME,AMT,RATE,EVID,CMT,DV,MDV
        1,0,100,25,1,1,.,1
        1,6,.,.,0,1,3,0
    """), IV)
    assert d.doses.duration_h[0, 0] == pytest.approx(4.0)
    assert d.doses.amount[0, 0] == 100.0


def test_units_of_amount_time_and_dv_convert(tmp_path):
    d = read_nonmem(write(tmp_path, """
        ID,TIME,AMT,RATE,EVID,CMT,DV,MDV
        1,0,5000,2500,1,1,.,1
        1,1,.,.,0,1,250,0
    """), IV, {"amt_unit": "ug", "time_unit": "day", "observables": {"conc_mg_per_l": {"unit": "ug/L"}}})
    assert d.doses.amount[0, 0] == pytest.approx(5.0)  # mg
    assert d.doses.duration_h[0, 0] == pytest.approx(48.0)  # 5000 ug at 2500 ug/day
    assert d.obs_time_h[0, 0] == pytest.approx(24.0)
    np.testing.assert_allclose(d.dv_scale, [1000.0])  # ug/L per mg/L


def test_cmt_by_number_route_name_or_state_name(tmp_path):
    text = """
        ID,TIME,AMT,EVID,CMT,DV,MDV
        1,0,10,1,{a},.,1
        1,1,10,1,{b},.,1
        1,2,.,0,{c},1,0
    """
    iv, oral = ORAL.route_index("iv"), ORAL.route_index("oral")
    for a, b, c in (("1", "2", "2"), ("oral", "iv", "."), ("depot", "central", "central")):
        d = read_nonmem(write(tmp_path, text.format(a=a, b=b, c=c)), ORAL)
        assert d.doses.route[0].tolist() == [oral, iv], (a, b)
    d = read_nonmem(write(tmp_path, text.format(a="5", b="7", c=".")), ORAL, {"routes": {"sc": [5], "iv": [7]}})
    assert d.doses.route[0].tolist() == [ORAL.route_index("sc"), iv]


def test_dvid_tells_observables_apart(tmp_path):
    model = get_model("cia_rat")
    names = model.observable_names
    text = "ID,TIME,AMT,EVID,CMT,DVID,DV,MDV\n1,0,1,1,sc,.,.,1\n1,1,.,0,.,2,5,0\n1,2,.,0,.,1,7,0\n"
    d = read_nonmem(write(tmp_path, text), model)
    assert d.obs_observable[0].tolist() == [1, 0]
    d = read_nonmem(write(tmp_path, text), model, {"observables": {names[3]: {"dvid": [2]}, names[0]: {"dvid": [1]}}})
    assert d.obs_observable[0].tolist() == [3, 0]


def test_mdv_1_observations_and_evid_2_rows_are_left_out_and_resets_at_the_start_are_harmless(tmp_path):
    d = read_nonmem(write(tmp_path, """
        ID,TIME,AMT,EVID,CMT,DV,MDV
        1,0,10,4,1,.,1
        1,1,.,0,1,.,1
        1,2,.,2,1,.,1
        1,3,.,0,1,4,0
        2,0,.,3,.,.,1
        2,0,10,1,1,.,1
        2,3,.,0,1,4,0
    """), IV)
    np.testing.assert_array_equal(d.obs_row, [[4], [7]])
    np.testing.assert_array_equal(d.doses.amount, [[10.0], [10.0]])


def test_without_evid_amounts_make_doses(tmp_path):
    d = read_nonmem(write(tmp_path, "ID,TIME,AMT,DV,MDV\n1,0,10,.,1\n1,2,0,3,0\n1,3,.,.,1\n"), IV)
    assert d.doses.amount.tolist() == [[10.0]] and d.obs_row.tolist() == [[2]]


HEADER = "ID,TIME,AMT,RATE,EVID,CMT,DV,MDV,II,ADDL,SS,WT"

#: (row 2 of the dataset, the column named in the error, words of the rule)
MALFORMED = [
    ("1,1,.,.,0,1,abc,0,.,.,.,70", "DV", "not a finite number"),
    ("1,1,.,.,0,1,.,0,.,.,.,70", "DV", "needs a value"),
    ("1,.,.,.,0,1,3,0,.,.,.,70", "TIME", "needs a time"),
    ("1,-1,.,.,0,1,3,0,.,.,.,70", "TIME", "negative"),
    ("1,1,10,-1,1,1,.,1,.,.,.,70", "RATE", "modelled rate"),  # the route names no rate
    ("1,1,10,-2,1,1,.,1,.,.,.,70", "RATE", "modelled duration"),
    ("1,1,10,-3,1,1,.,1,.,.,.,70", "RATE", "negative"),
    ("1,1,10,.,7,1,.,1,.,.,.,70", "EVID", "event type"),
    ("1,1,10,.,3,1,.,1,.,.,.,70", "AMT", "not a dose (EVID 3)"),
    ("1,1,10,.,2,1,.,1,.,.,.,70", "AMT", "not a dose (EVID 2)"),
    ("1,1,10,.,1,1,.,0,.,.,.,70", "MDV", "MDV = 1"),
    ("1,1,-5,.,1,1,.,1,.,.,.,70", "AMT", "amount >= 0"),
    ("1,1,5,.,0,1,3,0,.,.,.,70", "AMT", "not a dose"),
    ("1,1,10,.,1,1,.,1,.,.,1,70", "SS", "needs its interdose interval"),
    ("1,1,10,.,1,1,.,1,12,.,3,70", "SS", "SS = 3"),
    ("1,1,.,.,0,1,3,0,.,.,1,70", "SS", "not a dose"),
    ("1,1,10,.,1,1,.,1,.,2,.,70", "II", "interdose interval"),
    ("1,1,10,.,1,1,.,1,12,1.5,.,70", "ADDL", "whole number"),
    ("1,1,.,.,0,1,3,0,12,.,.,70", "II", "not a dose"),
    ("1,1,10,.,1,9,.,1,.,.,.,70", "CMT", "does not exist"),
    ("1,1,10,.,1,gut,.,1,.,.,.,70", "CMT", "neither a route"),
    ("1,1,.,.,0,1,3,2,.,.,.,70", "MDV", "0 or 1"),
]


@pytest.mark.parametrize("row,column,rule", MALFORMED, ids=[f"{c}-{r.split()[0]}" for _, c, r in MALFORMED])
def test_every_malformed_row_is_named_with_its_column_and_rule(tmp_path, row, column, rule):
    path = write(tmp_path, f"{HEADER}\n1,0,10,.,1,1,.,1,.,.,.,70\n{row}\n")
    with pytest.raises(DatasetError) as info:
        read_nonmem(path, IV, {"covariates": {"bw": "WT"}})
    e = info.value
    assert (e.row, e.column) == (2, column), str(e)
    assert rule in e.rule, str(e)
    assert str(path) in str(e) and "row 2" in str(e) and f"column {column}" in str(e)


def test_dataset_wide_problems_are_named(tmp_path):
    cases = [
        ("ID,TIME,DV\n", None, None, "no data rows"),
        ("TIME,DV\n0,1\n", None, "ID", "required column"),
        ("ID,TIME,EVID,DV,MDV\n1,0,0,1,0\n2,0,0,1,0\n1,1,0,1,0\n", 3, "ID", "contiguous"),
        ("ID,TIME,EVID,DV,MDV\n1,2,0,1,0\n1,1,0,1,0\n", 2, "TIME", "must not decrease"),
        ("ID,TIME,AMT,EVID,DV,MDV\n1,0,1,1,.,1\n", None, "EVID", "no observation rows"),
        ("ID,TIME,EVID,DV,MDV,BLQ\n1,1,0,1,0,2\n", 1, "BLQ", "not a censoring flag"),
        ("ID,TIME,EVID,DV,MDV,id\n1,1,0,1,0,1\n", None, "id", "appears twice"),
        ("ID,TIME,EVID,DV,MDV,WT\n1,1,0,1,0,.\n", 1, "WT", "no value"),
    ]
    for text, row, column, rule in cases:
        path = tmp_path / "bad.csv"
        path.write_text(text)
        with pytest.raises(DatasetError) as info:
            read_nonmem(path, IV, {"covariates": {"bw": "WT"}} if "WT" in text else None)
        assert (info.value.row, info.value.column) == (row, column), str(info.value)
        assert rule in info.value.rule, str(info.value)


def test_several_observables_need_dvid_or_a_mapping(tmp_path):
    model = get_model("cia_rat")
    path = write(tmp_path, "ID,TIME,EVID,DV,MDV\n1,1,0,1,0\n")
    with pytest.raises(DatasetError, match="DVID") as info:
        read_nonmem(path, model)
    assert info.value.row == 1
    path = write(tmp_path, "ID,TIME,EVID,DVID,DV,MDV\n1,1,0,9,1,0\n")
    with pytest.raises(DatasetError, match="not mapped") as info:
        read_nonmem(path, model, {"observables": {model.observable_names[0]: {"dvid": [1]}}})
    assert (info.value.row, info.value.column) == (1, "DVID")


def test_a_bad_mapping_names_its_key(tmp_path):
    path = write(tmp_path, GOOD)
    for mapping, key in (
        ({"amt_unit": "L"}, "data.amt_unit"),
        ({"time_unit": "mg"}, "data.time_unit"),
        ({"routes": {"oral": [1]}}, "data.routes.oral"),
        ({"observables": {"nope": {}}}, "data.observables.nope"),
        ({"observables": {"conc_mg_per_l": {"unit": "ug"}}}, "data.observables.conc_mg_per_l.unit"),
        ({"covariates": {"age": "AGE"}}, "data.covariates.age"),
        ({"amt_units": "ug"}, "data.amt_units"),
    ):
        try:
            read_nonmem(path, IV, mapping)
        except SpecError as e:
            assert e.field.startswith(key), (mapping, str(e))
        else:
            raise AssertionError(f"{mapping} was accepted")


def test_per_kg_amounts_need_a_body_weight_column(tmp_path):
    path = write(tmp_path, GOOD.replace(",WT", ",AGE"))
    with pytest.raises(DatasetError, match="body-weight") as info:
        read_nonmem(path, IV, {"amt_unit": "mg/kg"})
    assert info.value.column == "BW"


def test_per_kg_amounts_use_the_body_weight(tmp_path):
    d = read_nonmem(write(tmp_path, GOOD), IV, {"amt_unit": "mg/kg", "covariates": {"bw": "WT"}})
    np.testing.assert_array_equal(d.doses.per_kg, [[1.0], [1.0]])
    np.testing.assert_array_equal(d.doses.amount, [[100.0], [50.0]])


def test_written_dose_cmt_numbers_states_and_names_ambiguous_routes():
    assert dose_cmt(IV) == ["1"]
    assert dose_cmt(ORAL) == ["1", "1", "1", "2"]  # oral, sc, ip share the depot and its f and lag
    msu = get_model("msu_peritonitis_mouse")
    assert len(dose_cmt(msu)) == len(msu.routes)


def test_the_bolus_2cpt_reference_set_reads_into_120_subjects_and_2280_observations():
    bolus = shared_data(BOLUS)
    d = read_nonmem(bolus, IV, DataSpec(amt_unit="ug", observables={"conc_mg_per_l": {"unit": "ug/L"}}))
    assert d.ids.tolist() == list(range(1, 121))
    assert int(d.obs_mask.sum()) == 2280
    import pandas as pd

    raw = pd.read_csv(bolus, na_values=".")
    np.testing.assert_allclose(d.doses.amount[:, 0], 1e-3 * raw.loc[raw.EVID == 1, "AMT"].to_numpy())
    np.testing.assert_array_equal(d.dv[d.obs_mask], raw.loc[raw.EVID == 0, "DV"].to_numpy())
    np.testing.assert_array_equal(d.obs_time_h[d.obs_mask], raw.loc[raw.EVID == 0, "TIME"].to_numpy())
    np.testing.assert_array_equal(d.obs_row[d.obs_mask], np.flatnonzero(raw.EVID.to_numpy() == 0) + 1)
    np.testing.assert_allclose(d.dv_scale, [1000.0])
    assert d.doses.route.max() == 0 and d.obs_observable.max() == 0


def test_written_rows_put_doses_first_and_failed_values_as_missing(tmp_path):
    from vtrial.engine.events import DoseRecords
    from vtrial.io.nonmem_writer import DatasetWriter, dataset_columns

    doses = DoseRecords(np.array([[0.0, 2.0]]), np.array([[4.0, 0.0]]), np.array([[1.0, 0.0]]), np.zeros((1, 2)),
                        np.zeros((1, 2), np.int32))
    frame = dataset_columns(IV, np.array([7]), doses, np.array([0.0, 1.0, 2.0]),
                            {"conc_mg_per_l": np.array([[0.0, np.nan, 3.0]])}, {"conc_mg_per_l": np.array([True, True, True])},
                            {"bw": np.array([0.5])})
    assert frame["EVID"].tolist() == [1, 0, 0, 0]  # the dose at t = 0 before the observation at t = 0; padding left out
    assert frame["AMT"].tolist()[0] == 2.0  # 4 mg/kg x 0.5 kg
    path = tmp_path / "out.csv"
    with DatasetWriter(path) as w:
        w.write(frame)
    lines = path.read_text().splitlines()
    assert lines[0] == "ID,TIME,AMT,RATE,EVID,CMT,DVID,DV,MDV,BW"
    assert lines[3] == "7,1,0,0,0,.,1,.,1,0.5"  # a failed solve: DV missing, MDV 1
    d = read_nonmem(path, IV)
    assert d.obs_row.tolist() == [[2, 4]] and d.dv.tolist() == [[0.0, 3.0]]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left


def test_text_ids_are_kept_as_written_and_numeric_ids_compare_by_value(tmp_path):
    d = read_nonmem(write(tmp_path, "ID,TIME,EVID,DV,MDV\nR1,1,0,1,0\nr1,1,0,2,0\n"), IV)
    assert d.ids.tolist() == ["R1", "r1"]
    d = read_nonmem(write(tmp_path, "ID,TIME,EVID,DV,MDV\n7,1,0,1,0\n7.0,2,0,2,0\n"), IV)
    assert d.ids.tolist() == [7] and int(d.obs_mask.sum()) == 2


def _nmtests_model(**kw):
    import sys

    sys.path.insert(0, str(REPO_ROOT / "tests" / "models"))
    from nmtests_model import nmtests_model

    return nmtests_model(**kw)


def test_plain_datasets_stay_plain_dose_records(tmp_path):
    """Without PREDPP's items the records are as a config's regimen (same events, same numbers)."""
    assert read_nonmem(write(tmp_path, GOOD), IV).doses.nonmem is None


def test_predpp_records_lower_to_items(tmp_path):
    model = _nmtests_model()
    d = read_nonmem(write(tmp_path, """
        ID,TIME,AMT,RATE,EVID,CMT,SS,II,ADDL,LAGT,BIOAV,DUR2,DV,MDV
        1,0,100,-2,1,2,1,12,1,0.5,0.6,3,.,1
        1,5,.,.,0,2,0,.,.,0.5,0.6,3,1.0,0
        1,30,0,.,3,2,0,.,.,0.5,0.6,3,.,1
        1,31,50,10,4,2,0,.,.,0.7,0.8,3,.,1
        1,40,.,.,0,2,0,.,.,0.7,0.8,3,.,0
    """), model, dv_required=False)
    items = d.doses.nonmem
    assert d.doses.time_h.tolist() == [[0.0, 12.0, 30.0, 31.0]]
    assert items.ss.tolist() == [[1, 0, 0, 0]] and items.ii_h[0, 0] == 12.0
    assert items.modelled.tolist() == [[2, 2, 0, 0]] and items.rate[0, 3] == 10.0
    assert items.reset.tolist() == [[0, 0, 1, 1]] and d.doses.amount.tolist() == [[100.0, 100.0, 0.0, 50.0]]
    lagt, bioav = model.covariate_names.index("lagt"), model.covariate_names.index("bioav")
    assert items.covariates[0, :, lagt].tolist() == [0.5, 0.5, 0.5, 0.7]  # each record its own row's value
    assert items.covariates[0, :, bioav].tolist() == [0.6, 0.6, 0.6, 0.8]
    assert np.isnan(d.dv[0, 1])  # a DV to predict


def test_covariates_that_change_become_events_at_the_previous_rows_time(tmp_path):
    model = _nmtests_model(weight=True)
    d = read_nonmem(write(tmp_path, """
        ID,TIME,AMT,EVID,CMT,WT,DV,MDV
        1,0,100,1,1,60,.,1
        1,4,.,0,2,60,1,0
        1,8,.,0,2,80,1,0
        1,12,.,0,2,70,1,0
        2,0,100,1,1,50,.,1
        2,4,.,0,2,50,1,0
    """), model)
    changes = d.doses.nonmem.changes
    wt = model.covariate_names.index("wt")
    assert changes.time_h.tolist() == [[4.0, 8.0], [0.0, 0.0]]  # 80 from 4 h (NOCB), 70 from 8 h; subject 2 padded
    assert changes.values[0, :, wt].tolist() == [80.0, 70.0] and changes.values[1, :, wt].tolist() == [50.0, 50.0]
    assert d.covariates["wt"].tolist() == [60.0, 50.0]


def test_steady_state_of_a_model_with_states_outside_its_linear_pk_is_read(tmp_path):
    """SS on a PK-disease model (no closed form) is read as steady-state records; its
    periodic state is solved (tests/test_steady_state_nonlinear.py)."""
    model = get_model("cia_rat")
    text = "ID,TIME,AMT,RATE,EVID,CMT,DVID,DV,MDV,II,ADDL,SS\n1,0,10,.,1,1,.,.,1,.,.,.\n1,1,10,.,1,1,.,.,1,12,.,1\n1,2,.,.,0,.,1,7,0,.,.,.\n"
    d = read_nonmem(write(tmp_path, text), model)
    assert d.doses.nonmem.ss[0].tolist()[:2] == [0, 1] and d.doses.nonmem.ii_h[0][1] == 12.0

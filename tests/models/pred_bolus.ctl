; A $PRED model (tests/test_import_nonmem_pred.py): one-compartment single bolus, C = DOSE/V exp(-CL/V TIME),
; written out; pred_bolus_advan1.ctl is the same model as ADVAN1 (the dose as AMT). pred_bolus.csv: 8 subjects
; simulated (numpy seed 1) with CL = 5 (WT/70)^0.75 exp(eta), V = 50 exp(eta), eta SD 0.3, proportional 10% and
; additive 0.05 error; dose records have MDV = 1 (NONMEM's $PRED ignores AMT).
$PROBLEM one-compartment bolus written as $PRED (pred_bolus_advan1.ctl as $PRED; data simulated, seed 1)
$INPUT ID TIME AMT DV MDV DOSE WT
$DATA pred_bolus.csv IGNORE=@
$PRED
TVCL = THETA(1)*(WT/70)**0.75
CL = TVCL*EXP(ETA(1))
V = THETA(2)*EXP(ETA(2))
K = CL/V
IPRED = DOSE/V*EXP(-K*TIME)
Y = IPRED + IPRED*EPS(1) + EPS(2)
$THETA (0, 5) (0, 50)
$OMEGA 0.09 0.09
$SIGMA 0.01 0.0025
$ESTIMATION METHOD=1 INTERACTION MAXEVAL=9999

; The model of ../shared/data/nmtests (its README: NONMEM ADVAN2 TRANS2, CL 1.1 L/h, V 20 L,
; KA 1.5 1/h, per-record ALAG2/F2/R2/D2 from data items, CP in ug/L with amounts in mg) as a
; control stream, for vtrial import-nonmem (tests/test_import_nonmem.py predicts its scenarios).
$PROBLEM nmtests: ADVAN2 dosing scenarios (mrgsolve/nmtests)
$INPUT C ID TIME EVID AMT CMT SS II ADDL RATE LAGT MODE DUR2 RAT2 BIOAV DV
$DATA ../../../shared/data/nmtests/dosing_1001_data.csv IGNORE=@
$SUBROUTINES ADVAN2 TRANS2
$PK
  CL = THETA(1)
  V = THETA(2)
  KA = THETA(3)
  ALAG2 = LAGT
  F2 = BIOAV
  R2 = RAT2
  D2 = DUR2
  S2 = V / 1000
$ERROR
  Y = F + EPS(1)
$THETA (0, 1.1) ; CL
$THETA (0, 20) ; V
$THETA (0, 1.5) ; KA
$SIGMA 1
$ESTIMATION METHOD=0 MAXEVAL=0

; Inter-occasion variability in NONMEM's usual coding (tests/test_import_nonmem_iov.py): one-compartment
; oral absorption, IOV on CL (ETA(2), ETA(3): BLOCK(1) and BLOCK(1) SAME, selected by IF (OCC.EQ.k)).
; The data file is written by the test (tests/test_occasions.py's write_dataset: 6 subjects, 2 occasions).
$PROBLEM one-compartment oral with IOV on CL
$INPUT ID TIME AMT EVID MDV CMT DV OCC
$DATA iov_oral.csv IGNORE=@
$SUBROUTINES ADVAN2 TRANS2
$PK
OCC1 = 0
IF (OCC.EQ.1) OCC1 = 1
OCC2 = 0
IF (OCC.EQ.2) OCC2 = 1
IOVCL = OCC1*ETA(2) + OCC2*ETA(3)
CL = THETA(1)*EXP(ETA(1) + IOVCL)
V = THETA(2)
KA = THETA(3)
S2 = V
$ERROR
Y = F + F*EPS(1)
$THETA (0, 0.1) (0, 1) (0, 1)
$OMEGA 0.09
$OMEGA BLOCK(1) 0.04
$OMEGA BLOCK(1) SAME
$SIGMA 0.01
$ESTIMATION METHOD=1 INTERACTION MAXEVAL=9999

"""Layer 4, estimation: fitting models to data with optax.

- `least_squares`: named-parameter least-squares and likelihood fits with uncertainty;
- `curvefit`: four-parameter logistic concentration-response fits and Cheng-Prusoff Ki.
"""

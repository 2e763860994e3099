"""Layer 2, the engine: JAX only (no pandas, files or pydantic).

- `events`: dose records (a pytree) lowered to one event table per animal;
- `linear_pk`: closed-form propagation of a model's declared linear PK;
- `solvers`: the diffrax solvers by name;
- `solve`: one animal through its events (diffrax for the nonlinear part);
- `exposure`: AUCs and peaks from the solve (an integrated state, peaks refined between
  output and event times), exact whatever the output grid;
- `inputs`: host-side checks of a population solve's inputs;
- `runner`: the one batched computation (vmap, chunks, devices, streaming, resume);
- `distributed`: the device mesh and JAX's multi-process runtime;
- `optimize`: the optax L-BFGS loop every estimation and optimisation uses.
"""

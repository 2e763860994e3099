"""The step-size control of the one-solve path (`vtrial.engine.solve._solve_jumps`).

Its own module because it subclasses a diffrax class: `vtrial.engine.solve` imports it,
and with it diffrax, only when a solve is first traced (a warm run reads its solve from
`vtrial.engine.export_cache` and never imports diffrax)."""

from __future__ import annotations

import diffrax as dfx
import jax.numpy as jnp


class ToleranceOnState(dfx.AbstractAdaptiveStepSizeController):
    r"""A step-size controller whose relative tolerance applies to the state, not to the
    integrated variable $\tilde y = y - H(t)$ of the one-solve path.

    Without it, after boluses adding up to $H$ the error allowed in a state would be
    `rtol * |y - H|`, which is `rtol * |H|` once the boluses have been cleared: with
    repeated doses the accuracy of a decaying concentration would degrade with every
    dose. The jumps are put back before the wrapped controller sees the values.
    """

    controller: dfx.PIDController
    event_t: jnp.ndarray
    jumped: jnp.ndarray  # (n_events + 1, n_solved): the boluses after the first k events

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm

    def _state(self, t, y_tilde):
        return y_tilde + self.jumped[jnp.searchsorted(self.event_t, t, side="right", method="compare_all")]

    def wrap(self, direction):
        return type(self)(self.controller.wrap(direction), self.event_t, self.jumped)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        return self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        # Steps never straddle an event (jump_ts), so the jumps at t0 and t1 are the
        # step's own: after the events at t0, before those at t1.
        return self.controller.adapt_step_size(
            t0, t1, self._state(t0, y0), self._state(t1, y1_candidate), args, y_error, error_order, controller_state
        )

"""Shared by the recipe tests: move a recipe's complete training state into
another one the way a checkpoint round trip does (JSON state, module and
optimiser tensors), without files."""

from __future__ import annotations

import copy
import json


def transplant(a, b) -> dict:
    """Load `a`'s state, modules and optimisers into `b` (whose networks
    `begin_epoch` has already built for the same epoch); returns the
    JSON-round-tripped state."""
    state = json.loads(json.dumps(a.state()))  # must be JSON-able
    mods = {k: copy.deepcopy(m.state_dict()) for k, m in a.modules().items()}
    opts = {k: copy.deepcopy(o.state_dict()) for k, o in a.optimizers().items()}
    b.load_state(state)
    for k, m in b.modules().items():
        m.load_state_dict(mods[k])
    for k, o in b.optimizers().items():
        o.load_state_dict(opts[k])
    return state

"""Typed configs: every stage kind's hyperparameters, the stage models built from them, and the
backend registry. A leaf package (it imports only `identity`), so that the spec schema, the
planner, the contract and the backends can all use the same classes without import cycles."""

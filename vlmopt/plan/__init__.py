"""Planning stage: memory fit, performance model, spot model, MILP optimizer, explanation, plan assembly.

Import the submodules directly (vlmopt.plan.planner, vlmopt.plan.optimizer, ...); this package imports nothing
so that light users (the emitters, the report) do not pay for scipy.
"""

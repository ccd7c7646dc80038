"""Neutral shared types: value syntaxes, host topology and the plan.

Every layer may import these (the kernel layer reads plans and topologies without
importing the planner that makes them); they import nothing of nxr but errors.
"""

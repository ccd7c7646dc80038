"""The latency-SLO controller: latency sources, observations, the control law, actuation."""

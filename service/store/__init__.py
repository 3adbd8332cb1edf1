"""The only package that speaks SQL: the event log, its projections, keys and the listener."""

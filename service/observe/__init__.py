"""What a process tells its operator: metrics (``metrics.py``), structured logs with the run
or request they concern (``logs.py``), and optional OpenTelemetry traces (``traces.py``).

A leaf: every layer may record into it, and it imports no other part of the service.
"""

"""task-pulse: live progress of long agent jobs.

This package is the light side that writers and readers import. It never imports watchdog,
apscheduler or `daemon`, so a `task-pulse heartbeat` call stays cheap.
"""

__version__ = "0.1.0"

"""Memory of recurring tasks: the runs that finished, and what they say about the one running now.

* `runs`: a finished run as the state db keeps it (`Run`), and what the daemon observed of a run
  while it watched it (`Observed`: each step's longest silence, the overdue notices given).
* `forecast`: pure maths over past runs (`Profile`): the time left (ETA), when a step or the task is
  overdue, the stall threshold a step has learned. Functions of (runs, task, now), nothing else.
* `reader`: the state db's runs for readers (`task-pulse history`, `status`), opened read-only.

The daemon's worker is the only writer of the runs (task_pulse/state/outbox.py); nothing here writes.
"""

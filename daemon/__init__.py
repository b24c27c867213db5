"""task-pulsed: watches the tasks dir and turns every change into chat notifications.

Imports `task_pulse`; `task_pulse` never imports this package.
"""

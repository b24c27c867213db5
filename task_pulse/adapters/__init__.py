"""Adapters: writers that turn an agent harness's own events into task files, through the writer path.

Each harness is a package of its own. An adapter is a writer like any other (`task_pulse.store`'s locked,
atomic writes), so the daemon, the card, the stall alarm and the history need to know nothing of it.
"""

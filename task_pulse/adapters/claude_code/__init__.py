"""Claude Code: its hook events become tasks (`task-pulse hook claude-code`), and
`task-pulse claude-code setup` puts that command into Claude Code's settings.

  hook.py      the command Claude Code runs: one event on stdin, never a failure
  events.py    what each event does to the tasks of its session
  session.py   per Claude Code session: which task is whose, in `<tasks>/.pulse/claude-code/`
  text.py      pure: task names, summaries of tool calls, todo lists as steps
  settings.py  the hook entries in a settings.json: merge, undo

This package's `__init__` imports nothing: the hook runs on every tool call and pays for what it loads.
"""

"""The board: `task-pulse board`, one live page with every task of every host (the `board` extra).

* `view`: pure. What the page shows of a task, of a run, of a notification: every text made safe as
  in the chat (`chat_text`), times as unix seconds, the order worth reading in.
* `source`: where it reads. A tasks dir (its files, and its state db opened read-only: which tasks to
  show at scale, the history, the doorbell), or every host's tasks in a shared PostgreSQL state db
  (woken by its LISTEN/NOTIFY). It never writes a task file, the state db or the outbox.
* `live`: one thread reads (`Refresher`) and hands each new view to the event loop (`Hub`), which
  pushes what changed to every open page as Server-Sent Events. The browser never polls.
* `server`: the Starlette app and uvicorn: loopback only unless given a token, then every request
  needs it; a Content-Security-Policy without inline script; the page and its script are package
  data (`static/`), no build step, no CDN.

Nothing here is imported by a writer call, by the daemon or by the other commands.
"""

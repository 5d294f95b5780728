"""`tunesmith ui`: a web dashboard over the workspace's runs.

    from tunesmith.ui.server import serve_ui
    serve_ui(UIConfig(port=8080))          # http://127.0.0.1:8080/ until Ctrl-C

app.py is the HTTP side (pages, JSON API, server-sent events), readmodel.py and records.py read
the run store, actions.py stops and deletes runs, playground.py streams samples from a cached
model, security.py decides who may connect, static/ holds the page, its scripts and styles.

Only the config is imported here: the CLI reads its flags without loading FastAPI or torch
(the `ui` extra may not even be installed).
"""

from tunesmith.ui.config import UIConfig

__all__ = ["UIConfig"]

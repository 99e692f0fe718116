"""JS scripting in the hub (docs/SCRIPTS.md): ES5 scripts with hooks, helpers and cron jobs,
each in its own quickjs context with time and memory limits, run by one scripting thread."""

from __future__ import annotations

from hub.scripts.routes import ScriptsController
from hub.scripts.service import ScriptSettings, Scripting
from hub.scripts.store import ConfigMapScriptStore, FileScriptStore, MemoryScriptStore, ScriptStore

__all__ = ["ConfigMapScriptStore", "FileScriptStore", "MemoryScriptStore", "ScriptSettings", "ScriptStore", "Scripting", "ScriptsController"]

"""The control-plane store: the only place that speaks SQL to the control-plane database."""

from agentdb.store.db import Database
from agentdb.store.repository import Store

__all__ = ["Database", "Store"]

"""Lifecycle use cases: users, workspaces, members, and their tenant databases."""

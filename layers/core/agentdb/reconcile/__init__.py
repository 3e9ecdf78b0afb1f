"""Reconciliation of what the provider holds with the control plane's records (README "Reconciliation")."""

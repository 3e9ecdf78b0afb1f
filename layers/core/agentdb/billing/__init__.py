"""Billing: consumption sync, costs against budgets, and the limits that keep upstream APIs happy."""

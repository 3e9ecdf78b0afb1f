"""Powertools Logger, Tracer and Metrics, created once and shared by every handler and use case."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service="agentdb")
tracer = Tracer(service="agentdb")
metrics = Metrics(namespace="agentdb", service="agentdb")

__all__ = ["MetricUnit", "logger", "metrics", "tracer"]

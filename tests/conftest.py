"""Shared by every test directory: only what both unit and integration tests need."""

from __future__ import annotations

import os

import pytest


def pytest_report_header(config: pytest.Config) -> str:
    servers = os.environ.get("JOBLOG_BOOTSTRAP_SERVERS")
    if servers:
        return f"joblog integration tests: Kafka at JOBLOG_BOOTSTRAP_SERVERS={servers}"
    return "joblog integration tests: Kafka from testcontainers if Docker answers, else local KRaft"

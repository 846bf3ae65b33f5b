"""What ``make e2e-distributed`` runs: CeleryExecutor on PostgreSQL and Redis, with faults."""

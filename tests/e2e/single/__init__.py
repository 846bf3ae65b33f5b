"""What ``make e2e`` runs: the UI run in Chromium, then the tampering run."""

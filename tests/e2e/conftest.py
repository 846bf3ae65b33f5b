"""
The end-to-end runs are scripts (``make e2e``, ``make e2e-distributed``, ``make tryout``), not
part of the unit suite: they start whole Airflow deployments, PostgreSQL, Redis and a browser.
Keep a plain ``pytest`` run from collecting anything here, in every package below.
"""

collect_ignore_glob = ["*.py"]

"""
The distributed run is a script (``make e2e-distributed``), not part of the unit suite: it starts
PostgreSQL, Redis and a whole Airflow deployment. Keep a plain ``pytest`` run from collecting it.
"""

collect_ignore_glob = ["*.py"]

"""connscope benchmark: connection churn, overhead and completeness (see bench/__main__.py)."""

"""Memory checks that pass or fail: the regression gate against a baseline (``gate``, reads results
only; ``gate_markdown``, its report for CI summaries), a budget on one step of your own model
(``budget``, ``memprof.assert_memory``) and the pytest plugin's ``memprof_budget`` fixture."""

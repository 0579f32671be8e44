"""The benchmark's parts; ``run_benchmark.py`` and ``profile_steps.py`` beside it are the scripts.

Modules import only the standard library at the top: the measured child process must choose
its process policy (``blofin_assets.process``) before pandas, Dagster or the product load.
"""

"""The forward record: every served (or backtested) version scored on bars it never saw.

``outcomes.outcome_rows`` turns one version's predictions on labelled bars into
``prediction_outcomes`` rows; ``live`` finds which served version predicted which bars.
Imports no Dagster.
"""

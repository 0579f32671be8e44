"""Alerts: what happened (a failed run, a failed ERROR check, a rejected candidate, a live_skill
ERROR) as one JSON message posted to a webhook, at most once and never lost.

``payload`` turns plain facts about an event into the message; ``webhook`` posts it and says
whether it arrived; ``delivery`` walks events in order and keeps the position (the sensor's
cursor) behind the first one that did not arrive. Imports no Dagster: the sensors in
``blofin_assets/defs/sensors.py`` read the instance and call these.
"""

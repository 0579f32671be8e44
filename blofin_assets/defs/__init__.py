"""The Dagster floor: assets, checks, resources, jobs, schedules and the executor, declared
over the plain packages. Nothing below this package imports Dagster."""

from blofin_assets.defs.code_location import build_definitions

__all__ = ["build_definitions"]

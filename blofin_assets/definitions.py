"""The code location's entry point: ``blofin_assets.definitions:defs``.

Loading the code location is the one place that sets process-wide policy (see process.py);
tests and other programs build definitions with ``blofin_assets.defs.build_definitions``,
which leaves their process as it was.
"""

from blofin_assets import process

process.prefer_passive_openmp()  # before anything below loads libgomp

from blofin_assets.defs.code_location import build_definitions  # noqa: E402

defs = build_definitions()

process.freeze_loaded_heap()

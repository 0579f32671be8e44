"""direction_ensemble: the sixth model, stacked on its members' out-of-fold predictions.

Its members are the versions each model asset serves after this run; each never saw a bar
from its own test block on, and the stacker learns only from those bars (ml/ensemble.py
refuses any other). It has every contract of the five: served files, a results row, the same
gates plus its own (beats_members: better than its strongest member and the strongest naive
rule beyond noise, or it is kept but not served), the drift checks, the forward record.
"""

import pandas as pd
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    asset,
)

from blofin_assets.defs.assets.candles import candles
from blofin_assets.defs.assets.features import features
from blofin_assets.defs.assets.metadata import OWNERS
from blofin_assets.defs.assets.models import (
    GATE_DESCRIPTIONS,
    MODEL_FRESHNESS,
    model_result,
    read_training_inputs,
)
from blofin_assets.defs.assets.targets import targets
from blofin_assets.defs.resources import BlofinSettings, DuckDBWarehouse, ModelStoreResource
from blofin_assets.ml.ensemble import ENSEMBLE_SPEC, Member, members_gate, train_ensemble
from blofin_assets.ml.publish import publish_trained
from blofin_assets.ml.specs import ModelSpec
from blofin_assets.serving.loading import load_served
from blofin_assets.serving.model import ServedModel

ENSEMBLE_GATES = {
    **GATE_DESCRIPTIONS,
    "beats_members": "ERROR unless the ensemble beats both its strongest member's own direction "
    "call and the strongest naive rule beyond noise, on walk-forward blocks of bars no member "
    "saw. On failure it is kept in history, recorded as not better, and not served.",
}


def member_of(model: ServedModel) -> Member:
    """A served version as the stacker sees it: what it predicts, and which bars it saw."""
    window = model.metadata["data_window"]
    return Member(
        name=model.name,
        version=model.version,
        estimator=model.estimator,
        scaler=model.scaler,
        features=model.features,
        task=model.config["task"],
        target_transform=model.config.get("target_transform", "none"),
        train_end=window["train_end"],
        test_start=window["test_start"],
    )


def build_ensemble_asset(
    member_assets: list[AssetsDefinition], spec: ModelSpec = ENSEMBLE_SPEC
) -> AssetsDefinition:
    member_names = [a.key.to_user_string() for a in member_assets]

    @asset(
        name=spec.name,
        deps=[candles, features, targets, *member_assets],
        group_name="models",
        description=spec.description,
        kinds={"scikit-learn"},
        owners=OWNERS,
        code_version=spec.code_version,
        freshness_policy=MODEL_FRESHNESS,
        check_specs=[
            AssetCheckSpec(name=name, asset=spec.name, description=description)
            for name, description in ENSEMBLE_GATES.items()
        ],
        metadata={"target": spec.target, "members": member_names},
    )
    def direction_ensemble(
        context: AssetExecutionContext,
        settings: BlofinSettings,
        warehouse: DuckDBWarehouse,
        model_store: ModelStoreResource,
    ) -> MaterializeResult:
        store = model_store.store()
        members = [
            member_of(load_served(name, store.root, duckdb_path=warehouse.path))
            for name in member_names
        ]
        with warehouse.connect(read_only=True) as con:
            # Rows from the earliest member's train_end on: all the stacker and its guard
            # read (each member's later bars), a fraction of the whole window.
            since = min(pd.Timestamp(m.train_end) for m in members)
            inputs = read_training_inputs(con, spec, settings, since=since)
        context.log.info("members: " + ", ".join(f"{m.name} {m.version}" for m in members))
        trained = train_ensemble(spec, inputs.frame, members, horizon=settings.horizon)
        published = publish_trained(
            trained,
            store=store,
            horizon=settings.horizon,
            promoted_skills=inputs.history,
            run_id=context.run.run_id,
            data_sources=inputs.sources,
            data_until=inputs.data_until,
            hash_record=warehouse.file(),
            extra_gates=(members_gate(trained),),
        )
        return model_result(context, published, inputs.sources)

    return direction_ensemble

"""The transparency report: how the current overall snapshot's votes were gathered and counted.

Per model: the share of battles it was drawn into (up to the snapshot's data cut-off) beside
the sampling policy's target share now, the votes counted and the votes left out by reason,
when it was added and when it was last deactivated or retired; then the rating method and
its parameters, and every staff change to a model's status or weight (when, never who).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Count

from battles.models import Battle, Mode
from battles.services import sampling_target_shares
from leaderboard.categories import OVERALL
from leaderboard.models import Snapshot
from leaderboard.selectors import snapshot_current
from llm_providers.models import LLMModel, ModelChange

# Reason keys as the snapshot stores them, in the order the recompute applies them, with the
# words the report uses.
REASON_LABELS = {
    "identity_leak": "identity leak",
    "flagged_invalid": "staff-invalidated",
    "model_status": "inactive / retired",
    "prompt_dedup": "hot prompt",
    "voter_flagged": "outlier voter",
}
CHANGES_SHOWN = 200


@dataclass
class ModelReport:
    model: LLMModel
    battles: int
    battle_share: float | None  # of all battles up to the cut-off (two models per battle)
    target_share: float | None  # the policy's chance now; None: not sampled now
    counted: int
    excluded: dict[str, int]
    deactivated_at: object = None
    retired_at: object = None

    @property
    def excluded_total(self) -> int:
        return sum(self.excluded.values())

    @property
    def excluded_cells(self) -> list[int]:
        """The left-out votes in the report's column order."""
        return [self.excluded.get(key, 0) for key in REASON_LABELS]

    @property
    def battle_percent(self) -> float | None:
        return None if self.battle_share is None else 100 * self.battle_share

    @property
    def target_percent(self) -> float | None:
        return None if self.target_share is None else 100 * self.target_share


@dataclass
class Report:
    snapshot: Snapshot | None
    battles: int = 0
    models: list[ModelReport] = field(default_factory=list)
    reasons: list[tuple[str, str]] = field(default_factory=list)
    changes: list[ModelChange] = field(default_factory=list)


def transparency_report() -> Report:
    snapshot = snapshot_current(category=OVERALL, matrices=False)
    changes = list(ModelChange.objects.select_related("model")[:CHANGES_SHOWN])
    if snapshot is None:
        return Report(snapshot=None, changes=changes)
    counted = dict(snapshot.rows.values_list("model_id", "votes"))
    excluded = {int(pk): reasons for pk, reasons in snapshot.excluded_by_model.items()}
    # Only blind battles are drawn by the sampling policy (side by side and chat are chosen).
    battles = Battle.objects.filter(mode=Mode.BLIND)
    if snapshot.data_cutoff is not None:
        battles = battles.filter(created_at__lte=snapshot.data_cutoff)
    per_model: dict[int, int] = {}
    for column in ("model_a", "model_b"):
        for pk, n in battles.order_by().values_list(column).annotate(n=Count("pk")):
            per_model[pk] = per_model.get(pk, 0) + n
    total = battles.count()
    targets = sampling_target_shares()
    last_status = _last_status_changes()
    reasons = list(REASON_LABELS)
    rows = []
    ids = set(counted) | set(excluded) | set(per_model) | set(targets)
    for model in LLMModel.objects.filter(pk__in=ids).order_by("name"):
        rows.append(
            ModelReport(
                model=model,
                battles=per_model.get(model.pk, 0),
                battle_share=per_model.get(model.pk, 0) / total if total else None,
                target_share=targets.get(model.pk),
                counted=counted.get(model.pk, 0),
                excluded={key: excluded.get(model.pk, {}).get(key, 0) for key in reasons},
                deactivated_at=last_status.get((model.pk, LLMModel.Status.INACTIVE)),
                retired_at=last_status.get((model.pk, LLMModel.Status.RETIRED)),
            )
        )
    return Report(
        snapshot=snapshot,
        battles=total,
        models=rows,
        reasons=[(key, REASON_LABELS[key]) for key in reasons],
        changes=changes,
    )


def _last_status_changes() -> dict[tuple[int, str], object]:
    """When each model last entered each status (the latest change wins)."""
    found: dict[tuple[int, str], object] = {}
    for pk, new, at in (
        ModelChange.objects.filter(field="status")
        .order_by("at")
        .values_list("model_id", "new", "at")
    ):
        found[(pk, new)] = at
    return found

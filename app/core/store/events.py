"""A job's progress, evaluation history and event log."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from app.core.schemas import (
    Evaluation,
    Event,
    Progress,
)
from app.core.store.base import EVENTS_MAXLEN, HISTORY_MAX, StoreBase, now


def json_safe(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers, and the API refuses to send them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _step(evaluation: Evaluation) -> int:
    return evaluation.step


class EventLog(StoreBase):
    # -- progress, metrics, events ----------------------------------------------------------------
    def set_progress(self, job_id: str, progress: Progress) -> None:
        self.r.set(self._progress(job_id), progress.model_dump_json(), ex=30 * 24 * 3600)

    def add_evaluation(self, job_id: str, record: Evaluation) -> None:
        """Evaluations are keyed by step, so one repeated after a resume replaces, not adds.
        At most HISTORY_MAX are kept: past that, every other older one is dropped (the curve
        keeps its shape at half the resolution; the job's own history.json has them all)."""
        key = self._history(job_id)
        existing = [Evaluation.model_validate_json(h) for h in self.r.lrange(key, 0, -1)]
        kept = sorted([e for e in existing if e.step != record.step] + [record], key=_step)
        if len(kept) > HISTORY_MAX:
            kept = [*kept[:-1:2], kept[-1]]  # thin the older ones; the newest always stays
        with self.r.pipeline() as pipe:
            pipe.delete(key)
            pipe.rpush(key, *(e.model_dump_json() for e in kept))
            pipe.execute()

    @staticmethod
    def event_fields(type: str, message: str, data: dict[str, Any]) -> dict[str, str]:
        return {
            "type": type,
            "message": message,
            "time": now().isoformat(),
            "data": json.dumps(json_safe(data), default=str),
        }

    def add_event(self, job_id: str, type: str, message: str, **data: Any) -> str:
        event_id: str = self.r.xadd(
            self._events(job_id),
            self.event_fields(type, message, data),
            maxlen=EVENTS_MAXLEN,
            approximate=True,
        )
        return event_id

    def events(self, job_id: str, after: str | None, limit: int) -> tuple[list[Event], bool]:
        start = f"({after}" if after else "-"
        entries = self.r.xrange(self._events(job_id), min=start, max="+", count=limit + 1)
        events = [
            Event(
                id=entry_id,
                time=datetime.fromisoformat(f["time"]),
                type=f["type"],
                message=f["message"],
                data=json.loads(f.get("data") or "{}"),
            )
            for entry_id, f in entries[:limit]
        ]
        return events, len(entries) > limit

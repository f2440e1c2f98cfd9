"""Uploaded dataset records, per tenant."""

from __future__ import annotations

from app.core.store.base import FileRecord, StoreBase


class Files(StoreBase):
    # -- files ----------------------------------------------------------------------------------
    def put_file(self, record: FileRecord) -> None:
        score = record.public.created_at.timestamp()
        with self.r.pipeline() as pipe:
            pipe.set(self._file(record.public.id), record.model_dump_json())
            pipe.zadd(self._tenant_files(record.tenant), {record.public.id: score})
            pipe.zadd(self.FILES_BY_AGE, {record.public.id: score})
            pipe.execute()

    def files_older_than(self, cutoff: float, limit: int = 100) -> list[FileRecord]:
        """Uploads made before `cutoff` (epoch seconds), oldest first, for retention."""
        ids = self.r.zrangebyscore(self.FILES_BY_AGE, "-inf", f"({cutoff}", start=0, num=limit)
        raws = self.r.mget([self._file(i) for i in ids]) if ids else []
        found = [FileRecord.model_validate_json(raw) for raw in raws if raw]
        gone = set(ids) - {r.public.id for r in found}
        if gone:  # deleted by their tenant meanwhile
            self.r.zrem(self.FILES_BY_AGE, *gone)
        return found

    def get_file(self, tenant: str, file_id: str) -> FileRecord | None:
        raw = self.r.get(self._file(file_id))
        if raw is None:
            return None
        record = FileRecord.model_validate_json(raw)
        return record if record.tenant == tenant else None

    def list_files(self, tenant: str, limit: int = 1000) -> list[FileRecord]:
        ids = self.r.zrevrange(self._tenant_files(tenant), 0, limit - 1)
        raws = self.r.mget([self._file(i) for i in ids]) if ids else []
        return [FileRecord.model_validate_json(raw) for raw in raws if raw]

    def delete_file(self, tenant: str, file_id: str) -> FileRecord | None:
        record = self.get_file(tenant, file_id)
        if record is None:
            return None
        with self.r.pipeline() as pipe:
            pipe.delete(self._file(file_id))
            pipe.zrem(self._tenant_files(tenant), file_id)
            pipe.zrem(self.FILES_BY_AGE, file_id)
            pipe.execute()
        return record

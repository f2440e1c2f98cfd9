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
            pipe.execute()

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
            pipe.execute()
        return record

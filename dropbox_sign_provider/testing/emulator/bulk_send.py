"""
Bulk send jobs: the signature requests each job sent, and the two calls that read them,
``GET /bulk_send_job/{bulk_send_job_id}`` and ``GET /bulk_send_job/list``.

A job's requests are stored with every other request, in the
:class:`~dropbox_sign_provider.testing.emulator.store.SignatureRequestStore`, and behave as any
other (get, cancel, remove, lists, events); they only carry their job's ``bulk_send_job_id``.
Dropbox Sign has no bulk cancel: a job's requests are listed by the job's call and cancelled one
by one.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dropbox_sign_provider.testing.emulator import clock
from dropbox_sign_provider.testing.emulator.errors import ApiError
from dropbox_sign_provider.testing.emulator.store import SignatureRequestStore, page_of, paging, render

#: The most signature requests one bulk send job sends ("up to 250 signers", Dropbox Sign's docs).
MAX_JOB_REQUESTS = 250
#: Fields of a request that a job decides for each of its requests, so a seed may not set them.
_SET_BY_THE_JOB = ("signature_request_id", "forbidden", "bulk_send_job_id", "requester_email_address")


@dataclass(frozen=True)
class BulkSendJob:
    """One stored job: its id, when it was sent and the ids of the requests it sent, in that order."""

    bulk_send_job_id: str
    created_at: int
    request_ids: tuple[str, ...]

    def render(self) -> dict[str, Any]:
        """The job as the API answers it (BulkSendJobResponse)."""
        return {
            "bulk_send_job_id": self.bulk_send_job_id,
            "total": len(self.request_ids),
            "is_creator": True,
            "created_at": self.created_at,
        }


class BulkSendJobs:
    """
    Every stored job. Not thread-safe: the emulator's lock guards every call.

    :param store: where the jobs' requests are stored, with every other request.
    """

    def __init__(self, store: SignatureRequestStore) -> None:
        self.jobs: dict[str, BulkSendJob] = {}
        self._store = store

    def create(
        self, count: int, fields: dict[str, Any], requester_email: str, bulk_send_job_id: str | None = None
    ) -> dict[str, Any]:
        """
        Store a job that sent ``count`` requests; see :meth:`DropboxSignEmulator.create_bulk_send_job`.

        Nothing is stored unless the job and every request are valid.

        :return: ``{"bulk_send_job": ..., "signature_requests": [...]}``, each request as ``GET``
            answers it, in the order the job sent them.
        :raises TypeError: for an unknown field, or one the job sets itself.
        :raises ValueError: for a count out of range, inconsistent values or a duplicate id.
        """
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_JOB_REQUESTS:
            raise ValueError(f"count {count!r} must be an integer from 1 to {MAX_JOB_REQUESTS}")
        own = sorted(set(fields) & set(_SET_BY_THE_JOB))
        if own:
            raise TypeError(f"field(s) set by the bulk send job itself: {', '.join(own)}")
        job_id = str(bulk_send_job_id or secrets.token_hex(20))
        if "/" in job_id or not job_id.strip():
            raise ValueError(f"invalid bulk_send_job_id {job_id!r}")
        if job_id in self.jobs:
            raise ValueError(f"bulk send job {job_id!r} already exists")
        # A job sends all its requests at once: they share its created_at.
        created_at = int(fields.get("created_at") or clock.now())
        each = {**fields, "created_at": created_at}
        records = [self._store.build(each, requester_email) for _ in range(count)]
        for record in records:
            record.body["bulk_send_job_id"] = job_id
            self._store.add(record)
        job = self.jobs[job_id] = BulkSendJob(job_id, created_at, tuple(r.request_id for r in records))
        return {"bulk_send_job": job.render(), "signature_requests": [render(record) for record in records]}

    def get(self, bulk_send_job_id: str, query: Mapping[str, str]) -> dict[str, Any]:
        """
        One page of ``GET /bulk_send_job/{bulk_send_job_id}`` (BulkSendJobGetResponse).

        :raises ApiError: 400 naming a bad parameter, 404 for an unknown job.
        """
        page, page_size = paging(query)
        job = self.jobs.get(bulk_send_job_id)
        if job is None:
            raise ApiError(404, "Not found.")
        # Undocumented (bulk send job lists): a job's requests come in the order it sent them, and
        # cancelled, removed and forbidden ones are left out as signature request lists leave them
        # out (GET answers 410 for them); the job's total still counts every request it sent.
        records = [self._store.records[request_id] for request_id in job.request_ids]
        listed = [render(record) for record in records if self._store.listed(record)]
        return {"bulk_send_job": job.render(), **page_of("signature_requests", listed, page, page_size)}

    def list(self, query: Mapping[str, str]) -> dict[str, Any]:
        """
        One page of ``GET /bulk_send_job/list`` (BulkSendJobListResponse).

        :raises ApiError: 400 naming a bad parameter.
        """
        page, page_size = paging(query)
        # Undocumented (bulk send job lists): newest first, as signature request lists are.
        jobs = sorted(self.jobs.values(), key=lambda job: (-job.created_at, job.bulk_send_job_id))
        return page_of("bulk_send_jobs", [job.render() for job in jobs], page, page_size)

"""What every route module of the public API shares: the router, the strict camelCase body
model, the error model the document shows, and the way to the daemon's state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from cross_instance.daemon.hosted import Hosted, hosted_of
from cross_instance.daemon.replies import MAX_REQUEST_ID
from cross_instance.daemon.state import Daemon


class ErrorOut(BaseModel):
    """Every error (4xx): a stable ``code``, a message, and the fields the code defines."""
    model_config = ConfigDict(extra="allow")
    code: str
    message: str
    retryable: bool


# errors are ErrorOut with status 400 (invalid_request), never FastAPI's 422 body
router = APIRouter(prefix="/v1", responses={"4XX": {"model": ErrorOut,
                                                    "description": "JSON error with a code"}})
RequestId = Annotated[str | None, Header(alias="X-Pi-Request-Id", max_length=MAX_REQUEST_ID)]
Name = Annotated[str, Field(min_length=1, max_length=1024)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=False,
                              strict=True)


def daemon_of(request: Request) -> Daemon:
    return request.app.state.daemon  # type: ignore[no-any-return]


def hosted_for(request: Request) -> Hosted:
    return hosted_of(daemon_of(request))


"""Path parameters shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

# Ids are INTEGER on PostgreSQL: a larger one in a lookup is a DataError (a 500) there, so it is a 422 here.
RowId = Annotated[int, Path(ge=1, le=2**31 - 1, description="a row id")]

"""The framework floor for reads: a bare Starlette route serving the same bytes.

It loads every current resource's stored bytes (and the headers fhirpm sends with them) from
the fhirpm SQLite file once at startup and answers `GET /fhir/{type}/{id}` from a dict, under
uvicorn with the same options as `fhirpm serve`. What fhirpm spends above this is the price
of being a FHIR server (routing, negotiation, the store read).

    python -m bench.floor_app --port 8099 --db var/fhirpm.db
"""

from __future__ import annotations

import argparse
import sqlite3
from datetime import datetime
from email.utils import format_datetime

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

MEDIA = "application/fhir+json; charset=utf-8"


def load(db: str) -> dict[tuple[str, str], tuple[bytes, dict[str, str]]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT h.type, h.id, h.version, h.last_updated, h.body "
                            "FROM resources r JOIN history h ON h.seq = r.seq "
                            "WHERE r.deleted = 0").fetchall()
    finally:
        conn.close()
    return {(t, i): (bytes(body), {
        "ETag": f'W/"{v}"',
        "Last-Modified": format_datetime(datetime.fromisoformat(lu), usegmt=True)})
        for t, i, v, lu, body in rows}


def create_app(db: str) -> Starlette:
    stored = load(db)

    async def read(request: Request) -> Response:
        found = stored.get((request.path_params["type"], request.path_params["id"]))
        if found is None:
            return Response(b"{}", status_code=404, media_type=MEDIA)
        return Response(found[0], headers=found[1], media_type=MEDIA)

    return Starlette(routes=[Route("/fhir/{type}/{id}", read, methods=["GET"])])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True)
    args = parser.parse_args()
    uvicorn.run(create_app(args.db), host="127.0.0.1", port=args.port, log_config=None,
                access_log=False)


if __name__ == "__main__":
    main()

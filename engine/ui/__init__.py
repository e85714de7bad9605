"""``joblog ui``: the REST API of joblog and a live web dashboard, served by one process.

The pieces, one concern each:

* :mod:`engine.ui.config`: the settings (address, bearer token, projection file) and the
  designed limits of the API (page sizes, SQL rows and deadline, request sizes, streams);
* :mod:`engine.ui.http`: the HTTP server (the standard library's threading server), routing,
  bearer-token authentication, JSON errors and server-sent event streams;
* :mod:`engine.ui.reads`: the read side, SQL on the DuckDB projection through
  :class:`projections.reader.ProjectionReader` (the projector's endpoint, else the file);
* :mod:`engine.ui.streams`: live events from the ``events`` topic (:mod:`engine.watch` for
  one submission or job, one shared tail of every partition for the dashboard's counts) and
  the as-of fold of a submission's events with the core's read model;
* :mod:`engine.ui.api`: the routes: reads, commands through :class:`engine.api.Joblog`
  (answered with the scheduler's decision), streams, the OpenAPI document;
* :mod:`engine.ui.server`: the process (``joblog ui``, :func:`serve`) and the static pages
  in ``engine/ui/static`` (plain HTML and JavaScript modules, no build step).

``docs/ui.md`` describes the pages, the API, authentication and the limits.
"""

"""The embedded local farm, one concept per module.

State lives under one directory (``FARM_STATE_DIR``, default
``$XDG_CACHE_HOME/pachyderm-farm`` or ``~/.cache/pachyderm-farm``)::

    repos/<repo>/<job>/...          a repo's files, as the head commit would hold them
    datums/<pipeline>/<datum-id>/   the output of every datum that succeeded (the resume cache)
    work/<run>/<slot>/pfs/          a worker's /pfs: each input (files hard-linked), out/, .env
    logs/<pipeline>/<job>/          worker logs
    locks/<job>.lock                one run per job at a time

``farm`` runs the stages (``LocalFarm``, the ``Backend``), ``store`` keeps the
datums' outputs and publishes the repos, ``scheduler`` hands datums to workers,
``workers`` runs the worker processes, ``worker_pfs`` lays out their ``/pfs``,
``worker_api_server`` answers their ``NextDatum`` calls, and ``progress`` reports.
``LocalFarm(faithful=True)`` (``FARM_FAITHFUL=1``) runs the stages by a pachd worker's
rules instead, without those fast paths: ``faithful`` (datum sets, one process per
set, retries, ``err_cmd``, skipping), ``datum_data`` (fresh copies, ``lazy`` pipes) and
``pachd_rules`` (IDs, set sizes).
"""

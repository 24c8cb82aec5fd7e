"""Collection: prepare the host and run the plan, batch by batch, into a results directory.

    engine        the Docker engine connection         host       host facts for provenance
    runtimes      the runtime catalog                  daemon_json  registers runtimes with dockerd
    kata          Kata variants (one config each)
    image         the offline Node image                library    the shared library (any language), its mounts
    pyimage       the Python interpreter and its image  pylibrary  pip install --target, the Python manifest
    probe         the probe protocol (ready, go, one JSON line); probes/load.js and load.py run inside
    docker_batch  a batch of probe containers          native_batch  a batch of probes on the host
    records       outcomes -> tidy rows (the row contract of shlib.results.schema)
    cleanup       remove what shlib made, by label     runner     run_experiment: all of the above

Importing this package imports nothing: ``python -m shlib.collect.daemon_json`` runs before any
dependency is installed.
"""

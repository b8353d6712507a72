"""capsactl's library: the lifecycle manager (libpod's role) over capsa's containers.

Layers, top to bottom (each module calls only those below it; none knows about the CLI,
which is capsa.ctl):

    containers   create/start/stop/kill/rm/... of managed containers: an OCI spec made from
                 an image and options (ocispec), a rootfs from storage, a monitor per running
                 container
    monitor      the process that keeps a running container's stdio, writes its log, records
                 its exit and runs the clean-up (podman's conmon + `container cleanup`)
    runtime      how a container is run: capsa's library in process, or a runc-compatible
                 binary (runc, crun, capsa) through its command line
    images       images: names, manifests, configs, layers (layers: unpacking; archive:
                 docker-archive and OCI archives; registry: the distribution API)
    storage      a container's rootfs: overlayfs of its image's layers plus its own upper
    logs, events the k8s-file container logs and the JSON-lines event log
    volumes      named volumes
    store        the SQLite database (one transaction per change), boot-id refresh
    paths        where everything lives, for root and for an unprivileged user
"""

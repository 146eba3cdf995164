"""The imperative shell's Kafka part: a small exactly-once stream driver on confluent-kafka (librdkafka).

    clients.py      the slot's consumer, transactional producer and plain readers, configured once
    loop.py         consume in batches, run the processor, punctuate on the wall clock, rebalance callbacks
    transaction.py  the commit sequence, written once (outputs + changelog -> offsets -> commit -> local)
    store.py        one RocksDB per owned partition holding only committed writes; one memory budget
    restore.py      a partition's store brought up to date from its changelog tail
    web.py          /metrics, /healthz, /readyz
    metrics.py      commits, restores, assignment, lag

No module here reaches into a private attribute of a library.
"""

"""`stream-app import` (issue #17): vendor exports -> Segment-spec events -> the input topic or a file.

    readers.py          rows out of JSON lines, Parquet, Avro or CSV files
    mapping.yaml        the shipped mapping table (package data); mapping_table.py loads and checks it
    ga4.py, mixpanel.py, segment_archive.py, csv_rows.py
                        one vendor each: a row's timestamp, and the events it becomes (or why not)
    segment_events.py   building events, derived message ids, rejections
    prepare.py          map, check with the worker's decoder, deduplicate, sort by time (external_sort.py)
    kafka_sender.py     batches in Kafka transactions with their checkpoint: exactly once, resumable
    file_output.py      --output: JSON lines
    progress.py         the progress bar and the summary; rejects.py: the rejects file
    work_files.py       an import's identity, atomic JSON files
    command.py          the command's options and its steps

docs/import.md describes the mappings, the order, deduplication and the exactly-once design.
"""

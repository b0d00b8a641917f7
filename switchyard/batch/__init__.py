"""The Batch API: input files checked line by line, run in the background at batch prices.

`jsonl` reads input files and writes output lines, `records` is the database side, `runner`
claims batches and runs their lines through the gateway.
"""

from switchyard.batch.records import BatchRecord, BatchRecords, Tally, batch_object
from switchyard.batch.runner import BatchRunner

__all__ = ["BatchRecord", "BatchRecords", "BatchRunner", "Tally", "batch_object"]

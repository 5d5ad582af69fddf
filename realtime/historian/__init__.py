"""The historian: a port (`AbstractHistorian`), its adapters and store-and-forward.

Adapters: `realtime.historian.duckdb.DuckDBHistorian` (embedded default) and
`realtime.historian.questdb.QuestDBHistorian`; import them from their modules (only the
composition root and tests do), so that importing the port loads neither database client.
`realtime.historian.buffer.StoreAndForward` keeps batches durable while a historian is down.
"""

from realtime.historian.base import AGGREGATES as AGGREGATES
from realtime.historian.base import AbstractHistorian as AbstractHistorian
from realtime.historian.base import BucketSeries as BucketSeries
from realtime.historian.base import HistorianError as HistorianError
from realtime.historian.base import HistorianRejected as HistorianRejected
from realtime.historian.base import HistorianUnavailable as HistorianUnavailable
from realtime.historian.base import Point as Point

__all__ = [
    "AGGREGATES",
    "AbstractHistorian",
    "BucketSeries",
    "HistorianError",
    "HistorianRejected",
    "HistorianUnavailable",
    "Point",
]

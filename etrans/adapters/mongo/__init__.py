"""MongoDB (pymongo): the delivery-log collection, read side (GET /logs) and write side
(fetchlog)."""

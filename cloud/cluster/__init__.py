"""The receiver at fleet scale on RabbitMQ (docs/cloud.md, "Scale-out on RabbitMQ").

Devices stay on MQTT (RabbitMQ's MQTT plugin); a consistent-hash exchange spreads devices
over a fixed set of durable quorum queues (partitions); workers share the partitions out
among themselves and hand what they consume to the receiver's own ingest path.
"""

"""Wire contracts (Kafka messages, HTTP bodies) and configuration shared by every process."""

"""The erasure fan-out worker: Kafka erasure requests out to marketing SaaS vendors."""
